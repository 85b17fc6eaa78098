"""StoreStorage behaves like aiogram's MemoryStorage, and keeps FSM state and data across a restart."""

from __future__ import annotations

import pytest
from aiogram.exceptions import DataNotDictLikeError
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.fsm.storage.base import StorageKey
from aiogram.fsm.storage.memory import MemoryStorage
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.fsm_storage import TABLE, StoreStorage
from core import Store
from snapshot.backends.memory import MemoryBackend


class Form(StatesGroup):
    name = State()
    age = State()


KEY = StorageKey(bot_id=1, chat_id=100, user_id=100)


async def test_state_and_data_round_trip(store):
    storage = StoreStorage(store)
    assert await storage.get_state(KEY) is None
    assert await storage.get_data(KEY) == {}
    await storage.set_state(KEY, Form.name)
    assert await storage.get_state(KEY) == "Form:name"
    await storage.set_data(KEY, {"name": "O'Brien <b>", "tags": ["a", 1, None], "n": 1.5})
    assert await storage.get_data(KEY) == {"name": "O'Brien <b>", "tags": ["a", 1, None], "n": 1.5}
    assert await storage.update_data(KEY, {"age": 7}) == {"name": "O'Brien <b>", "tags": ["a", 1, None],
                                                          "n": 1.5, "age": 7}
    assert await storage.get_value(KEY, "age") == 7
    assert await storage.get_value(KEY, "missing", "dflt") == "dflt"


async def test_returned_data_is_a_copy(store):
    storage = StoreStorage(store)
    await storage.set_data(KEY, {"a": 1})
    data = await storage.get_data(KEY)
    data["a"] = 2
    assert await storage.get_data(KEY) == {"a": 1}


async def test_non_dict_data_is_refused_like_memory_storage(store):
    with pytest.raises(DataNotDictLikeError):
        await StoreStorage(store).set_data(KEY, [("a", 1)])  # type: ignore[arg-type]


async def test_unserialisable_data_writes_nothing(store):
    storage = StoreStorage(store)
    await storage.set_data(KEY, {"a": 1})
    with pytest.raises(TypeError):
        await storage.set_data(KEY, {"a": object()})
    assert await storage.get_data(KEY) == {"a": 1}


async def test_finished_conversations_leave_no_rows(store):
    storage = StoreStorage(store)
    await storage.set_state(KEY, "s")
    await storage.set_data(KEY, {"a": 1})
    assert store.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0] == 1
    await storage.set_state(KEY, None)
    await storage.set_data(KEY, {})
    assert store.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0] == 0


async def test_every_key_field_separates_records(store):
    storage = StoreStorage(store)
    keys = [
        KEY,
        StorageKey(bot_id=2, chat_id=100, user_id=100),
        StorageKey(bot_id=1, chat_id=101, user_id=100),
        StorageKey(bot_id=1, chat_id=100, user_id=101),
        StorageKey(bot_id=1, chat_id=100, user_id=100, thread_id=5),
        StorageKey(bot_id=1, chat_id=100, user_id=100, business_connection_id="bc"),
        StorageKey(bot_id=1, chat_id=100, user_id=100, destiny="other"),
    ]
    for i, key in enumerate(keys):
        await storage.set_state(key, f"s{i}")
        await storage.set_data(key, {"i": i})
    for i, key in enumerate(keys):
        assert await storage.get_state(key) == f"s{i}"
        assert await storage.get_data(key) == {"i": i}


async def test_state_and_data_survive_a_store_restart(open_store):
    store = await open_store()
    await StoreStorage(store).set_state(KEY, Form.age)
    await StoreStorage(store).set_data(KEY, {"name": "Алиса 🙂"})
    await store.close()  # final flush, lease released
    store = await open_store()
    storage = StoreStorage(store)
    assert await storage.get_state(KEY) == "Form:age"
    assert await storage.get_data(KEY) == {"name": "Алиса 🙂"}
    await store.close()


async def test_flushed_state_survives_a_crash(open_store):
    store = await open_store()
    await StoreStorage(store).set_state(KEY, Form.name)
    await store.flush()
    await store.abandon()  # a crash: no final flush, no hand-over
    store = await open_store()
    assert await StoreStorage(store).get_state(KEY) == "Form:name"
    await store.close()


async def test_works_under_aiogram_fsm_context(store):
    ctx = FSMContext(storage=StoreStorage(store), key=KEY)
    await ctx.set_state(Form.name)
    await ctx.update_data(name="Bob")
    assert await ctx.get_state() == Form.name.state
    assert await ctx.get_data() == {"name": "Bob"}
    await ctx.clear()
    assert await ctx.get_state() is None
    assert await ctx.get_data() == {}


# --- the model: aiogram's own MemoryStorage ------------------------------------------------------

# Telegram never issues thread id 0 or an empty business connection id; StoreStorage (like RedisStorage's
# key builder) treats those as absent, so the model only draws real ones.
keys = st.builds(StorageKey, bot_id=st.integers(1, 2), chat_id=st.integers(-2, 2), user_id=st.integers(1, 2),
                 thread_id=st.none() | st.integers(1, 2), business_connection_id=st.none() | st.just("bc"),
                 destiny=st.sampled_from(["default", "x"]))
json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                                        max_size=3), max_leaves=6)
datas = st.dictionaries(st.text(max_size=4), json_values, max_size=3)
ops = st.one_of(
    st.tuples(st.just("set_state"), keys, st.none() | st.sampled_from(["a", "b:c", "Form:name"])),
    st.tuples(st.just("set_data"), keys, datas),
    st.tuples(st.just("update_data"), keys, datas),
    st.tuples(st.just("restart"), st.none(), st.none()),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(ops, max_size=30), st.lists(keys, min_size=1, max_size=5))
async def test_matches_memory_storage_across_restarts(steps, probes):
    backend_medium = MemoryBackend().storage
    store = await Store.open(MemoryBackend(backend_medium), schema=StoreStorage.SCHEMA)
    model = MemoryStorage()
    try:
        touched: list[StorageKey] = list(probes)
        for op, key, value in steps:
            if op == "restart":
                await store.close()
                store = await Store.open(MemoryBackend(backend_medium), schema=StoreStorage.SCHEMA)
                continue
            touched.append(key)
            storage = StoreStorage(store)
            if op == "update_data":
                assert await storage.update_data(key, value) == await model.update_data(key, value)
            else:
                await getattr(storage, op)(key, value)
                await getattr(model, op)(key, value)
        storage = StoreStorage(store)
        for key in touched:
            assert await storage.get_state(key) == await model.get_state(key)
            assert await storage.get_data(key) == await model.get_data(key)
    finally:
        await store.close()
