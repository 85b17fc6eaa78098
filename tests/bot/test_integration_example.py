"""The example in examples/notes_bot.py, run as docs/integration.md shows it, against the emulator."""

from __future__ import annotations

import asyncio

from examples import notes_bot
from tools.emulator.testing import running_emulator
from tools.loadgen.control import Control


async def test_the_example_bot_keeps_its_dialogue_and_notes_across_a_restart(tmp_path):
    async with running_emulator(tmp_path / "tg", rate_limits=False) as emu, Control(emu.control_url) as control:
        demo = emu.demo()
        user = await control.create_user("Ann")

        async def say(text: str) -> list[str]:
            return (await control.say(user, demo.bot_username, text, wait=10.0)).replies

        for restart_mid_dialogue in (True, False):
            stop = asyncio.Event()
            serving = asyncio.create_task(notes_bot.run(demo.bot_token, str(tmp_path / "state"), emu.bot_api_url,
                                                        stop=stop))
            try:
                if restart_mid_dialogue:
                    assert await say("/notes") == ["No notes yet."]
                    assert await say("/note") == ["Send the note's text."]
                else:  # the dialogue step survived the restart
                    assert await say("milk") == ["Saved (1 notes)."]
                    assert await say("/note") == ["Send the note's text."]
                    assert await say("bread") == ["Saved (2 notes)."]
                    assert await say("/notes") == ["1. milk\n2. bread"]
            finally:
                stop.set()
                await serving


async def test_a_redelivered_update_is_applied_once(tmp_path):
    """What Telegram does after a crash: the same update again, after its effect was already durable."""
    from aiogram import Bot, Dispatcher
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer

    from bot.fsm_storage import StoreStorage
    from core import Store, StoreConfig
    from snapshot.backends.local import LocalDirBackend

    async with running_emulator(tmp_path / "tg", rate_limits=False) as emu, Control(emu.control_url) as control:
        demo = emu.demo()
        user = await control.create_user("Ann")
        store = await Store.open(LocalDirBackend(tmp_path / "state"), schema=StoreStorage.SCHEMA,
                                 config=StoreConfig(flush_interval=0.1))
        bot = Bot(demo.bot_token, session=AiohttpSession(api=TelegramAPIServer.from_base(emu.bot_api_url)))
        dispatcher = Dispatcher(storage=StoreStorage(store))
        dispatcher.include_router(notes_bot.router())
        try:
            for text in ("/note", "milk"):
                await control.request("POST", "/say", {"user_id": user, "bot": demo.bot_username, "text": text,
                                                       "wait": 0, "expect": 0})
            updates = await bot.get_updates(timeout=0)
            assert len(updates) == 2
            await dispatcher.feed_update(bot, updates[0])
            await dispatcher.feed_update(bot, updates[1])
            await dispatcher.feed_update(bot, updates[1])  # redelivered
            key = StoreStorage(store)
            from aiogram.fsm.storage.base import StorageKey

            data = await key.get_data(StorageKey(bot_id=demo.bot_id, chat_id=user, user_id=user))
            assert data["notes"] == ["milk"]
            texts = [m["text"] for m in await control.bot_messages(user, demo.bot_username)]
            # The redelivery found the dialogue step already taken (state and note became durable
            # together), so no handler matched it: applied once, and not answered again.
            assert texts == ["Send the note's text.", "Saved (1 notes)."]
        finally:
            await store.close()
            await bot.session.close()
