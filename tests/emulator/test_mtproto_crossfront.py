"""One world behind both fronts: what Telethon stores, aiogram sees, and the other way round."""

from __future__ import annotations

import io
import os

import pytest
from aiogram.types import BufferedInputFile
from telethon import TelegramClient, types
from telethon.sessions import StringSession

from tools.emulator.testing import aiogram_bot, running_emulator

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def emu(tmp_path):
    async with running_emulator(tmp_path / "tg", mtproto=True, rate_limits=False) as emu:
        TelegramClient._config = None  # Telethon caches help.getConfig per class, and ports differ per test
        yield emu


async def telethon_client(session: str) -> TelegramClient:
    client = TelegramClient(StringSession(session), api_id=1, api_hash="x" * 32, receive_updates=False)
    await client.connect()
    return client


async def test_telethon_upload_is_a_channel_post_another_bot_downloads(emu) -> None:
    demo = emu.demo()
    reader = emu.world.create_bot("reader_bot")
    emu.world.set_admin(demo.storage_chat_id, reader.user_id)
    data = os.urandom(1_500_000)

    client = await telethon_client(demo.session_string)
    try:
        stream = io.BytesIO(data)
        stream.name = "delta-000042.bin"
        sent = await client.send_file(
            types.PeerChannel(demo.storage_channel_id), stream, caption="delta 42", force_document=True
        )
    finally:
        await client.disconnect()

    async with aiogram_bot(emu, reader.token) as bot:
        updates = await bot.get_updates(timeout=0)
        posts = [u.channel_post for u in updates if u.channel_post is not None]
        assert [p.message_id for p in posts] == [sent.id]
        document = posts[0].document
        assert document.file_name == "delta-000042.bin" and document.file_size == len(data)
        assert posts[0].caption == "delta 42"
        downloaded = await bot.download(document.file_id)
        assert downloaded.read() == data


async def test_aiogram_upload_is_readable_and_editable_over_mtproto(emu) -> None:
    demo = emu.demo()
    data = os.urandom(700_000)
    async with aiogram_bot(emu, demo.bot_token) as bot:
        posted = await bot.send_document(demo.storage_chat_id, BufferedInputFile(data, "manifest.json"), caption="m")
        await bot.pin_chat_message(demo.storage_chat_id, posted.message_id, disable_notification=True)

    client = await telethon_client(demo.session_string)
    try:
        channel = types.PeerChannel(demo.storage_channel_id)
        got = await client.get_messages(channel, ids=posted.message_id)
        assert got.file.name == "manifest.json" and got.message == "m"
        assert await client.download_media(got, file=bytes) == data
        pinned = await client.get_messages(channel, ids=types.InputMessagePinned())
        assert pinned.id == posted.message_id
        await client.edit_message(channel, posted.message_id, "m v2")
    finally:
        await client.disconnect()

    async with aiogram_bot(emu, demo.bot_token) as bot:
        chat = await bot.get_chat(demo.storage_chat_id)
        assert chat.pinned_message.message_id == posted.message_id
        assert chat.pinned_message.caption == "m v2"
