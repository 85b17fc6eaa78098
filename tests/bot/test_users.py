"""The clicker's table and queries, on a real Store: registration, idempotent clicks, the rating."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.users import MIGRATIONS, PREVIOUS_SCHEMA, SCHEMA, Users
from core import ConfigError, Migration, Store
from snapshot.backends.memory import MemoryBackend, MemoryStorage
from snapshot.restore import restore

HOSTILE = [
    "O'Brien", "'); DROP TABLE users;--", '"; DELETE FROM users; --', "<b>x</b>", "&lt;i&gt;", "🙂👩‍💻",
    "مرحبا", "שָׁלוֹם", "N" * 200, "%s {0} {name}", "\\x00\\n", " leading and trailing ",
]


async def test_register_is_idempotent_and_keeps_the_first_name(store):
    users = Users(store)
    assert users.register(10, "Алиса") == "Алиса"
    users.click(10, 1)
    assert users.register(10, "Другое имя") == "Алиса"
    assert users.name(10) == "Алиса"
    assert users.rating(15).top == [("Алиса", 1)]


async def test_click_counts_once_per_message_and_never_for_strangers(store):
    users = Users(store)
    users.register(1, "a")
    assert users.click(1, 5) == 1
    assert users.click(1, 5) == 1  # the same message delivered again
    assert users.click(1, 4) == 1  # an older one, already counted
    assert users.click(1, 6) == 2
    assert users.click(2, 7) is None
    assert users.name(2) is None


async def test_rating_orders_by_clicks_then_chat_id_and_counts_everyone(store):
    users = Users(store)
    clicks = {30: 2, 10: 2, 20: 5, 40: 0, 50: 2}
    for chat_id, n in clicks.items():
        users.register(chat_id, f"u{chat_id}")
        for m in range(n):
            users.click(chat_id, m + 1)
    rating = users.rating(4)
    assert rating.total == 5
    assert rating.top == [("u20", 5), ("u10", 2), ("u30", 2), ("u50", 2)]


async def test_rating_reads_the_index_without_sorting(store):
    plan = " ".join(str(row) for row in store.execute(
        "EXPLAIN QUERY PLAN SELECT name, clicks FROM users ORDER BY clicks DESC, chat_id ASC LIMIT 15"))
    assert "users_by_clicks" in plan
    assert "TEMP B-TREE" not in plan


async def test_hostile_names_survive_a_restart_exactly(open_store):
    store = await open_store()
    users = Users(store)
    for i, name in enumerate(HOSTILE):
        assert users.register(i + 1, name) == name
    await store.close()
    store = await open_store()
    users = Users(store)
    assert [users.name(i + 1) for i in range(len(HOSTILE))] == HOSTILE
    assert users.rating(100).total == len(HOSTILE)
    assert store.execute("SELECT count(*) FROM sqlite_schema WHERE name = 'users'").fetchone()[0] == 1
    await store.close()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 6), st.integers(1, 40)), max_size=60))
async def test_clicks_match_a_model_of_distinct_messages(events):
    # A fresh store per example: hypothesis does not mix with function-scoped fixtures.
    from bot.app import SCHEMA
    from core import Store
    from snapshot.backends.memory import MemoryBackend

    store = await Store.open(MemoryBackend(), schema=SCHEMA)
    try:
        users = Users(store)
        registered = {1, 2, 3}
        for chat_id in registered:
            users.register(chat_id, str(chat_id))
        last: dict[int, int] = {}
        model: dict[int, int] = {}
        for chat_id, message_id in events:
            got = users.click(chat_id, message_id)
            if chat_id not in registered:
                assert got is None
                continue
            if message_id > last.get(chat_id, 0):
                last[chat_id] = message_id
                model[chat_id] = model.get(chat_id, 0) + 1
            assert got == model.get(chat_id, 0)
        expected = sorted(((model.get(c, 0), c) for c in registered), key=lambda t: (-t[0], t[1]))
        assert users.rating(15).top == [(str(c), n) for n, c in expected]
    finally:
        await store.abandon()


async def test_the_migration_runs_once_on_the_previous_release_storage_and_keeps_every_row():
    medium = MemoryStorage()
    old = await Store.open(MemoryBackend(medium), schema=PREVIOUS_SCHEMA)
    old.execute("INSERT INTO users (chat_id, name, clicks, last_message_id) VALUES (1, 'Ann', 3, 9)")
    await old.close()

    store = await Store.open(MemoryBackend(medium), schema=SCHEMA, migrations=MIGRATIONS)
    assert store.schema_version == 1
    users = Users(store)
    assert users.profile(1) == ("Ann", None, None)  # registered before the release: time unknown
    assert users.register(1, "Other", "ann_tg") == "Ann"  # the name stays, the username is learnt
    assert users.register(2, "Bob", "bob") == "Bob"
    _name, username, registered_at = users.profile(2)
    assert username == "bob" and registered_at > 0
    assert users.profile(1)[1] == "ann_tg"
    assert users.click(1, 10) == 4
    await store.flush()
    await store.close()

    got = (await restore(MemoryBackend(medium))).conn
    assert got.execute("PRAGMA user_version").fetchone() == (1,)
    assert [r[1] for r in got.execute("PRAGMA table_info(users)")][-2:] == ["username", "registered_at"]

    again = await Store.open(MemoryBackend(medium), schema=SCHEMA, migrations=MIGRATIONS)
    assert again.schema_version == 1 and Users(again).profile(1)[:2] == ("Ann", "ann_tg")  # not migrated twice
    await again.close()


async def test_a_crash_right_after_the_migration_keeps_it():
    medium = MemoryStorage()
    old = await Store.open(MemoryBackend(medium), schema=PREVIOUS_SCHEMA)
    old.execute("INSERT INTO users (chat_id, name) VALUES (1, 'Ann')")
    await old.close()
    store = await Store.open(MemoryBackend(medium), schema=SCHEMA, migrations=MIGRATIONS)
    await store.abandon()  # open returned: the migration and its version are durable
    got = (await restore(MemoryBackend(medium))).conn
    assert got.execute("PRAGMA user_version").fetchone() == (1,)
    rows = got.execute("SELECT chat_id, name, username, registered_at FROM users").fetchall()
    assert rows == [(1, "Ann", None, None)]


async def test_storage_of_a_newer_release_is_refused_by_name():
    medium = MemoryStorage()
    newer = [*MIGRATIONS, Migration(2, "ALTER TABLE users ADD COLUMN language TEXT")]
    store = await Store.open(MemoryBackend(medium), schema=PREVIOUS_SCHEMA, migrations=newer)
    await store.close()
    with pytest.raises(ConfigError, match="schema version 2, newer than this code knows \\(1\\)"):
        await Store.open(MemoryBackend(medium), schema=SCHEMA, migrations=MIGRATIONS)


async def test_a_declared_table_that_differs_from_storage_is_refused_not_kept():
    medium = MemoryStorage()
    store = await Store.open(MemoryBackend(medium), schema=PREVIOUS_SCHEMA)
    await store.close()
    with pytest.raises(ConfigError, match="declared but not stored: registered_at, username"):
        await Store.open(MemoryBackend(medium), schema=SCHEMA)  # no migrations given


async def test_a_failing_migration_is_rolled_back_and_named():
    medium = MemoryStorage()
    old = await Store.open(MemoryBackend(medium), schema=PREVIOUS_SCHEMA)
    old.execute("INSERT INTO users (chat_id, name) VALUES (1, 'Ann')")
    await old.close()
    broken = [Migration(1, "ALTER TABLE users ADD COLUMN username TEXT", "ALTER TABLE nope ADD COLUMN x")]
    with pytest.raises(ConfigError, match="migration 1 failed and was rolled back .*stays at schema version 0"):
        await Store.open(MemoryBackend(medium), schema=SCHEMA, migrations=broken)
    store = await Store.open(MemoryBackend(medium), schema=SCHEMA, migrations=MIGRATIONS)  # the fixed release
    assert store.schema_version == 1 and Users(store).profile(1) == ("Ann", None, None)
    await store.close()
