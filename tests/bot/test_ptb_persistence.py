"""python-telegram-bot on a tgsnap store: real python-telegram-bot polling the emulator, its persistence
in `bot.ptb_persistence.StorePersistence`, restarted mid-conversation on a fresh store."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from telegram import Update
from telegram.ext import (
    Application,
    CommandHandler,
    ContextTypes,
    ConversationHandler,
    MessageHandler,
    filters,
)

from bot.ptb_persistence import StorePersistence, dumps, loads
from core import Store, StoreConfig
from snapshot.backends.local import LocalDirBackend
from tools.emulator.testing import running_emulator
from tools.loadgen.control import Control

scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
           | st.binary())
hashables = st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                         lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3), max_leaves=6)
values = st.recursive(
    scalars,
    lambda inner: (st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4)
                   | st.dictionaries(hashables, inner, max_size=4) | st.tuples(inner, inner)
                   | st.sets(hashables, max_size=4)),
    max_leaves=20,
)


@given(values)
def test_values_come_back_with_their_types(value):
    assert loads(dumps(value)) == value
    assert type(loads(dumps(value))) is type(value)


def test_what_it_cannot_hold_is_refused_before_writing():
    class Thing:
        pass

    with pytest.raises(TypeError, match="Thing"):
        dumps({"x": Thing()})
    for odd in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(TypeError, match="JSON has no"):
            dumps({"x": [odd]})


async def _open(tmp_path) -> Store:
    return await Store.open(LocalDirBackend(tmp_path / "storage"), schema=StorePersistence.SCHEMA,
                            config=StoreConfig(flush_interval=0.2, writer_id="ptb"))


async def test_store_persistence_round_trips_every_kind(tmp_path):
    store = await _open(tmp_path)
    p = StorePersistence(store)
    await p.update_user_data(1, {"n": 1, 7: (1, 2)})
    await p.update_chat_data(-5, {"s": {1, 2}})
    await p.update_bot_data({"total": 3})
    await p.update_callback_data(([("uuid", 12.5, {"btn": ("a", 1)})], {"m1": "uuid"}))
    await p.update_conversation("conv", (5, 6), 2)
    await p.update_conversation("conv", (7, 8), "ASK")
    await p.update_conversation("conv", (7, 8), None)  # ended: removed
    await p.flush()
    await store.close()
    store = await _open(tmp_path)
    try:
        p = StorePersistence(store)
        assert await p.get_user_data() == {1: {"n": 1, 7: (1, 2)}}
        assert await p.get_chat_data() == {-5: {"s": {1, 2}}}
        assert await p.get_bot_data() == {"total": 3}
        assert await p.get_callback_data() == ([("uuid", 12.5, {"btn": ("a", 1)})], {"m1": "uuid"})
        assert await p.get_conversations("conv") == {(5, 6): 2}
        await p.drop_user_data(1)
        await p.drop_chat_data(-5)
        assert await p.get_user_data() == {} and await p.get_chat_data() == {}
    finally:
        await store.close()


NAME = 1


def build(token: str, base: str, persistence: StorePersistence) -> Application:
    async def count(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        context.user_data["n"] = context.user_data.get("n", 0) + 1
        context.chat_data["seen"] = context.chat_data.get("seen", 0) + 1
        context.bot_data["total"] = context.bot_data.get("total", 0) + 1
        await update.message.reply_text(f"n={context.user_data['n']} total={context.bot_data['total']}")

    async def ask(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
        await update.message.reply_text("name?")
        return NAME

    async def named(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
        context.user_data["name"] = update.message.text
        await update.message.reply_text(f"hello {update.message.text}")
        return ConversationHandler.END

    app = (Application.builder().token(token).base_url(f"{base}/bot").base_file_url(f"{base}/file/bot")
           .persistence(persistence).build())
    app.add_handler(ConversationHandler(entry_points=[CommandHandler("name", ask)],
                                        states={NAME: [MessageHandler(filters.TEXT & ~filters.COMMAND, named)]},
                                        fallbacks=[], name="naming", persistent=True))
    app.add_handler(CommandHandler("count", count))
    return app


async def run_app(app: Application):
    await app.initialize()
    await app.start()
    await app.updater.start_polling(poll_interval=0.0, timeout=1)


async def stop_app(app: Application) -> None:
    await app.updater.stop()
    await app.stop()
    await app.shutdown()  # flushes the persistence


@pytest.mark.timeout(60)
async def test_python_telegram_bot_keeps_data_and_conversations_across_a_restart(tmp_path):
    async with running_emulator(tmp_path / "tg", rate_limits=False) as emu, Control(emu.control_url) as control:
        demo = emu.demo()
        user = await control.create_user("Ann")

        async def say(text: str) -> list[str]:
            return (await control.say(user, demo.bot_username, text, wait=10.0)).replies

        store = await _open(tmp_path)
        app = build(demo.bot_token, emu.bot_api_url, StorePersistence(store))
        await run_app(app)
        try:
            assert await say("/count") == ["n=1 total=1"]
            assert await say("/count") == ["n=2 total=2"]
            assert await say("/name") == ["name?"]  # the conversation waits for the name ...
        finally:
            await stop_app(app)
            await store.close()
        # ... across a restart on a freshly restored store.
        store = await _open(tmp_path)
        app = build(demo.bot_token, emu.bot_api_url, StorePersistence(store))
        await run_app(app)
        try:
            assert await say("Bob") == ["hello Bob"]
            assert await say("/count") == ["n=3 total=3"]
        finally:
            await stop_app(app)
            await store.close()
        store = await _open(tmp_path)
        try:
            assert await StorePersistence(store).get_user_data() == {user: {"n": 3, "name": "Bob"}}
            assert await StorePersistence(store).get_conversations("naming") == {}
        finally:
            await store.close()
