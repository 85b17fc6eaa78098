"""The world survives an emulator restart: messages, files, file_ids, pins, pending updates, tokens."""

from __future__ import annotations

from aiogram.types import BufferedInputFile

from tools.emulator.testing import aiogram_bot, running_emulator


async def test_everything_survives_a_restart(tmp_path):
    data_dir = tmp_path / "tg"
    async with running_emulator(data_dir) as emu:
        demo = emu.demo()
        async with aiogram_bot(emu, demo.bot_token) as bot:
            first = await bot.send_document(demo.storage_chat_id, BufferedInputFile(b"snapshot-1", "s1.zst"))
            manifest = await bot.send_document(demo.storage_chat_id, BufferedInputFile(b"manifest", "m.json"))
            await bot.pin_chat_message(demo.storage_chat_id, manifest.message_id)
        emu.world.user_says(demo.user_id, demo.bot_id, "/start")  # nobody polls: stays pending
        old_port = emu.port

    async with running_emulator(data_dir) as emu:
        assert emu.demo() == demo  # same ids and token
        async with aiogram_bot(emu, demo.bot_token) as bot:
            chat = await bot.get_chat(demo.storage_chat_id)
            assert chat.pinned_message.message_id == manifest.message_id
            assert (await bot.download(first.document.file_id)).read() == b"snapshot-1"
            assert (await bot.download(chat.pinned_message.document.file_id)).read() == b"manifest"
            (update,) = await bot.get_updates()
            assert update.message.text == "/start" and update.message.from_user.id == demo.user_id
            nxt = await bot.send_message(demo.storage_chat_id, "after restart")
            assert nxt.message_id == manifest.message_id + 2  # ids keep counting (the pin took one)
    assert emu.port is not None and old_port is not None
