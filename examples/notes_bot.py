"""A minimal aiogram 3 bot on tgsnap: an FSM dialogue whose state lives in the store, durable polling.

    TGSNAP_BOT_TOKEN=... TGSNAP_STORAGE_DIR=./state python -m examples.notes_bot

/note asks for a text, the next message is saved as a note; /notes lists them. State (the dialogue
step, the notes) is in the store, so it survives restarts, and the poller confirms an update to Telegram
only once what its handler wrote is durable: after kill -9 Telegram delivers again whatever was not, and
each handler applies a redelivered message once (it remembers the last message id it applied). See
docs/integration.md.
"""

from __future__ import annotations

import asyncio
import os
import signal

from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.filters import Command
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import Message

from bot.fsm_storage import StoreStorage
from bot.polling import Poller
from core import Store, StoreConfig
from snapshot.backends.local import LocalDirBackend


class Noting(StatesGroup):
    text = State()


def router() -> Router:
    r = Router(name="notes")

    @r.message(Command("note"))
    async def ask(message: Message, state: FSMContext) -> None:
        await state.set_state(Noting.text)  # setting a state is idempotent: a redelivery sets it again
        await message.answer("Send the note's text.")

    @r.message(Noting.text, F.text)
    async def save(message: Message, state: FSMContext) -> None:
        data = await state.get_data()
        if data.get("applied", 0) >= message.message_id:
            # Redelivered after a crash, already applied (and durable): answer again, change nothing.
            await message.answer(f"Saved ({len(data.get('notes', []))} notes).")
            return
        notes = [*data.get("notes", []), message.text]
        # No await that suspends between these writes, so they land in one capture: the note, the step
        # and the redelivery mark become durable together or not at all.
        await state.update_data(notes=notes, applied=message.message_id)
        await state.set_state(None)
        await message.answer(f"Saved ({len(notes)} notes).")

    @r.message(Command("notes"))
    async def notes(message: Message, state: FSMContext) -> None:
        saved = (await state.get_data()).get("notes", [])
        await message.answer("\n".join(f"{i}. {n}" for i, n in enumerate(saved, 1)) or "No notes yet.")

    return r


async def run(token: str, storage_dir: str, api_url: str | None = None, *, stop: asyncio.Event) -> None:
    """Serve until `stop` is set; then finish handlers, confirm what is durable, flush, hand over."""
    store = await Store.open(LocalDirBackend(storage_dir), schema=StoreStorage.SCHEMA,
                             config=StoreConfig(flush_interval=1.0))
    session = AiohttpSession(api=TelegramAPIServer.from_base(api_url)) if api_url else AiohttpSession()
    bot = Bot(token, session=session)
    dispatcher = Dispatcher(storage=StoreStorage(store))
    dispatcher.include_router(router())
    poller = Poller(dispatcher, bot, store)
    polling = asyncio.create_task(poller.run())
    try:
        await stop.wait()
    finally:
        poller.stop()
        await polling
        await store.close()
        await bot.session.close()


def main() -> None:
    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(os.environ["TGSNAP_BOT_TOKEN"], os.environ.get("TGSNAP_STORAGE_DIR", "./state"),
                  os.environ.get("TGSNAP_BOT_API_URL"), stop=stop)

    asyncio.run(_main())


if __name__ == "__main__":
    main()
