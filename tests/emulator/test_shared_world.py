"""Both fronts see one world: what aiogram posts, Telethon reads, and the reverse."""

from __future__ import annotations

import pytest
from aiogram.types import BufferedInputFile

from tools.emulator.testing import aiogram_bot, running_emulator

telethon = pytest.importorskip("telethon")


async def test_bot_api_and_mtproto_share_channel_messages_and_files(tmp_path):
    from telethon import TelegramClient
    from telethon.sessions import StringSession

    async with running_emulator(tmp_path / "tg", mtproto=True, rate_limits=False) as emu:
        if emu.mtproto_port is None:
            pytest.skip(emu.mtproto_error or "MTProto front unavailable")
        demo = emu.demo()
        payload = bytes(range(256)) * 50
        async with aiogram_bot(emu, demo.bot_token) as bot:
            posted = await bot.send_document(demo.storage_chat_id, BufferedInputFile(payload, "part-1.bin"),
                                             caption="from aiogram")
            client = TelegramClient(StringSession(demo.session_string), 1, "emulator", receive_updates=False)
            await client.connect()
            try:
                (seen,) = await client.get_messages(demo.storage_chat_id, ids=[posted.message_id])
                assert seen.message == "from aiogram" and seen.file.name == "part-1.bin"
                assert await client.download_media(seen, bytes) == payload
                answer = await client.send_file(demo.storage_chat_id, b"manifest", caption="from telethon",
                                                file_name="manifest.json")
            finally:
                await client.disconnect()
            assert answer.id == posted.message_id + 1  # one sequence of ids per channel
            await bot.pin_chat_message(demo.storage_chat_id, answer.id)
            pinned = (await bot.get_chat(demo.storage_chat_id)).pinned_message
            assert pinned.caption == "from telethon"
            assert (await bot.download(pinned.document.file_id)).read() == b"manifest"
