"""Schema changes on a live store are durable (recorded in the delta stream), tracking follows them at
once, untrackable tables are refused before they take effect, and every SQLite value round-trips.

Each test drives the public Store API over the directory backend and restores as a stranger would
(`snapshot.restore.restore`), after an abandon() that stands for a crash: no snapshot after the DDL.
"""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from core import ConfigError, Store, StoreConfig
from snapshot.backends.local import LocalDirBackend
from snapshot.errors import RestoreError
from snapshot.replica import ReplicaConfig
from snapshot.restore import restore

USERS = "CREATE TABLE users (chat_id INTEGER PRIMARY KEY, name TEXT, clicks INTEGER NOT NULL DEFAULT 0)"
JUNK = "CREATE TABLE junk (id INTEGER PRIMARY KEY, v TEXT)"


def _config() -> StoreConfig:
    return StoreConfig(flush_interval=3600.0, retry_min=0.01, retry_max=0.05,
                       replica=ReplicaConfig(takeover_wait=0.0))


async def _open(root, **kw) -> Store:
    return await Store.open(LocalDirBackend(root, fsync=False), config=_config(), **kw)


def schema_of(conn: sqlite3.Connection) -> list[tuple]:
    return sorted(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_schema "
                               "WHERE name NOT LIKE 'sqlite_%'").fetchall())


def state_of(conn: sqlite3.Connection) -> tuple:
    saved = conn.text_factory
    conn.text_factory = bytes  # compare TEXT as its bytes: valid UTF-8 or not
    try:
        tables = [n for (n,) in conn.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        rows = {t: sorted(conn.execute(f'SELECT *, typeof(rowid) FROM "{t.decode()}"').fetchall(), key=repr)
                for t in tables}
        uv = conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.text_factory = saved
    return schema_of(conn), rows, uv


async def _restored(root) -> sqlite3.Connection:
    return (await restore(LocalDirBackend(root, fsync=False))).conn


async def test_the_issue_sequence_survives_a_crash_without_a_later_snapshot(tmp_path):
    store = await _open(tmp_path, schema=[USERS, JUNK])
    store.executemany("INSERT INTO users (chat_id, name) VALUES (?, ?)", [(1, "Ann"), (2, "Bob")])
    store.execute("INSERT INTO junk VALUES (1, 'x')")
    await store.snapshot()
    store.execute("ALTER TABLE users ADD COLUMN bonus INTEGER NOT NULL DEFAULT 7")
    store.execute("CREATE INDEX users_name ON users (name)")
    store.execute("CREATE VIEW rich AS SELECT chat_id FROM users WHERE clicks > 1")
    store.execute("DROP TABLE junk")
    store.execute("ALTER TABLE users RENAME COLUMN name TO first_name")
    store.execute("UPDATE users SET clicks = 5, bonus = 1 WHERE chat_id = 1")
    await store.flush()  # used to fail for good after the RENAME ("no such column")
    store.execute("INSERT INTO users (chat_id, first_name) VALUES (3, 'Cy')")
    store.execute("CREATE TRIGGER bump AFTER UPDATE ON users BEGIN SELECT 1; END")
    store.execute("PRAGMA user_version = 4")
    await store.flush()
    expected = state_of(store._conn)
    await store.abandon()
    got = await _restored(tmp_path)
    assert state_of(got) == expected
    assert "junk" not in {n for _, n, _, _ in schema_of(got)}
    assert got.execute("SELECT first_name, bonus FROM users WHERE chat_id = 1").fetchone() == ("Ann", 1)


async def test_a_restarted_store_continues_on_changed_schema(tmp_path):
    store = await _open(tmp_path, schema=[USERS])
    store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'Ann'), (2, 'Bob')")
    await store.snapshot()
    store.execute("ALTER TABLE users ADD COLUMN bonus INTEGER")
    store.execute("CREATE VIEW rich AS SELECT chat_id FROM users WHERE clicks > 1")
    store.execute("UPDATE users SET clicks = 5 WHERE chat_id = 1")
    await store.close()
    again = await _open(tmp_path)
    assert again.execute("SELECT count(*) FROM rich").fetchone() == (1,)
    again.execute("UPDATE users SET name = 'Di', bonus = 3 WHERE chat_id = 2")
    await again.flush()
    expected = state_of(again._conn)
    await again.close()
    assert state_of(await _restored(tmp_path)) == expected


async def test_renamed_table_keeps_its_dirty_rows_and_dropped_marks_go(tmp_path):
    store = await _open(tmp_path, schema=[USERS, JUNK])
    store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'Ann')")
    store.execute("INSERT INTO junk VALUES (1, 'x')")
    store.execute("ALTER TABLE users RENAME TO members")  # rows dirty before the rename ship under the new name
    store.execute("DROP TABLE junk")
    store.execute("INSERT INTO members (chat_id, name) VALUES (2, 'Bob')")
    assert store.tables == ["members"]
    await store.flush()
    expected = state_of(store._conn)
    await store.abandon()
    assert state_of(await _restored(tmp_path)) == expected


async def test_ddl_rolled_back_with_its_transaction_is_not_recorded(tmp_path):
    store = await _open(tmp_path, schema=[USERS])
    store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'Ann')")
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            tx.execute("ALTER TABLE users RENAME TO members")
            tx.execute("CREATE TABLE extra (id INTEGER PRIMARY KEY)")
            tx.execute("INSERT INTO extra VALUES (1)")
            raise RuntimeError("changed my mind")
    assert store.tables == ["users"]
    async with store.transaction() as tx:
        tx.execute("CREATE TABLE kept (id INTEGER PRIMARY KEY)")
        tx.execute("SAVEPOINT s")
        tx.execute("CREATE TABLE undone (id INTEGER PRIMARY KEY)")
        tx.execute("ROLLBACK TO s")
        tx.execute("INSERT INTO kept VALUES (7)")
    store.execute("UPDATE users SET clicks = 1")
    await store.flush()
    expected = state_of(store._conn)
    await store.abandon()
    got = await _restored(tmp_path)
    assert state_of(got) == expected
    assert {n for _, n, _, _ in schema_of(got)} == {"users", "kept"}


@pytest.mark.parametrize("ddl, why", [
    ("CREATE TABLE copy AS SELECT * FROM users", "no explicit PRIMARY KEY"),
    ("CREATE TABLE keyless (a, b)", "no explicit PRIMARY KEY"),
    ("CREATE TABLE nullkey (k TEXT PRIMARY KEY, v)", "must be NOT NULL"),
    ("CREATE TABLE _tgsnap_mine (id INTEGER PRIMARY KEY)", "reserved"),
])
async def test_untrackable_tables_are_refused_before_they_take_effect(tmp_path, ddl, why):
    store = await _open(tmp_path, schema=[USERS])
    store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'Ann')")
    before = schema_of(store._conn)
    with pytest.raises(ConfigError, match=why):
        store.execute(ddl)
    assert schema_of(store._conn) == before
    store.execute("UPDATE users SET clicks = 2")
    await store.flush()  # durability goes on
    expected = state_of(store._conn)
    await store.abandon()
    assert state_of(await _restored(tmp_path)) == expected


async def test_a_table_created_through_execute_is_tracked_from_its_creation(tmp_path):
    store = await _open(tmp_path)
    store.execute("/* a comment first */ CREATE TABLE b (id INTEGER PRIMARY KEY, v)")
    store.execute("INSERT INTO b VALUES (1, 'one')")
    await store.flush()
    await store.abandon()
    assert (await _restored(tmp_path)).execute("SELECT * FROM b").fetchall() == [(1, "one")]


async def test_text_that_is_not_utf8_round_trips_byte_exact_and_stalls_nothing(tmp_path):
    store = await _open(tmp_path, schema=[USERS])
    store.execute("INSERT INTO users (chat_id, name) VALUES (1, printf('%.3s', 'Аня'))")
    store.execute("INSERT INTO users (chat_id, name) VALUES (2, CAST(X'C3' AS TEXT))")
    store.execute("INSERT INTO users (chat_id, name) VALUES (3, 'fine')")
    await store.flush(timeout=5)
    store.execute("UPDATE users SET clicks = 1 WHERE chat_id = 3")
    await store.flush(timeout=5)  # later captures are not stalled either
    expected = state_of(store._conn)
    await store.abandon()
    got = await _restored(tmp_path)
    assert state_of(got) == expected
    assert got.execute("SELECT hex(name), typeof(name) FROM users WHERE chat_id = 2").fetchone() == ("C3", "text")


async def test_text_key_that_is_not_utf8_is_refused_with_a_clear_error(tmp_path):
    store = await _open(tmp_path, schema=["CREATE TABLE tags (tag TEXT PRIMARY KEY NOT NULL, n INTEGER)"])
    with pytest.raises(sqlite3.OperationalError):
        store.execute("INSERT INTO tags VALUES (CAST(X'C3' AS TEXT), 1)")
    assert store.execute("SELECT count(*) FROM tags").fetchone() == (0,)
    store.execute("INSERT INTO tags VALUES ('ok', 1)")
    await store.flush(timeout=5)
    await store.abandon()


async def test_snapshot_of_a_store_with_no_tables(tmp_path):
    store = await _open(tmp_path)
    receipt = await store.snapshot(timeout=5)  # used to retry "unable to serialize" forever
    assert receipt.size >= 0
    await store.close()
    assert schema_of(await _restored(tmp_path)) == []


async def test_a_schema_change_that_bypassed_store_is_made_durable_by_a_snapshot_at_that_cut(tmp_path, caplog):
    store = await _open(tmp_path, schema=[USERS])
    store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'Ann')")
    await store.flush()
    store._conn.execute("CREATE TABLE raw (id INTEGER PRIMARY KEY, v)")  # not through Store: not recorded
    store._conn.execute("INSERT INTO raw VALUES (1, 'untracked when written')")
    store.execute("UPDATE users SET clicks = 1")
    await store.flush()
    for _ in range(500):
        if not store.stats().snapshot_in_progress and store.stats().deltas_since_snapshot == 0:
            break
        await asyncio.sleep(0.01)
    assert "outside Store.execute" in caplog.text
    store.execute("INSERT INTO raw VALUES (2, 'tracked now')")
    await store.flush()
    expected = state_of(store._conn)
    await store.abandon()
    assert state_of(await _restored(tmp_path)) == expected


async def test_shards_listed_out_of_index_order_are_refused():
    from snapshot.manifest import ShardEntry, SnapshotEntry
    from snapshot.restore import fetch_image

    shard = {"raw_size": 1, "sha256": "00" * 32, "compressed_size": 1, "parts": []}
    snap = SnapshotEntry(base_seq=1, base_hash="00" * 32, captured_at=0.0, epoch=1, image_size=2,
                         image_sha256="00" * 32, shards=[ShardEntry(index=1, **shard), ShardEntry(index=0, **shard)])
    with pytest.raises(RestoreError, match="not 0..1 in order"):
        await fetch_image(None, snap, None)


async def test_a_drop_undone_by_a_rollback_the_body_ran_keeps_the_earlier_dirty_rows(tmp_path):
    store = await _open(tmp_path, schema=[USERS])
    await store.flush()
    store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'dirty before the transaction')")
    async with store.transaction() as tx:
        tx.execute("DROP TABLE users")
        tx.execute("ROLLBACK")  # the body ends the transaction itself
    store.execute("BEGIN")
    store.execute("ALTER TABLE users RENAME TO members")
    store.execute("ROLLBACK")  # a raw transaction, rolled back
    assert store.tables == ["users"]
    await store.flush()
    expected = state_of(store._conn)
    await store.abandon()
    assert state_of(await _restored(tmp_path)) == expected


def test_every_piece_of_a_split_cut_carries_the_cuts_user_version():
    from snapshot.changes import ChangeSet, TableChanges
    from snapshot.delta import encode_body
    from snapshot.replica import _split_cut

    rows = [(i, f"{i:02d}" + "x" * 50) for i in range(40)]  # distinct: no dictionary shrinks them (body v3)
    cs = ChangeSet(1.0, {"t": TableChanges("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, v)", ["id", "v"], ["id"],
                                           rows)}, schema=["CREATE TABLE t (id INTEGER PRIMARY KEY, v)"],
                   user_version=7, version_changed=True)
    pieces = _split_cut(cs, lambda c: len(encode_body(c)) < 1000, 1000)
    assert len(pieces) > 1 and pieces[0].schema and not any(p.schema for p in pieces[1:])
    assert {p.user_version for p in pieces} == {7}  # a later piece must not reset it to 0 on apply


async def test_a_failed_delta_follows_renames_made_after_it_even_away_and_back(open_store, replica):
    from snapshot.errors import BackendError

    store = await open_store()
    await store.flush()
    store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'Ann')")
    replica.failures = [BackendError("storage down")]
    replica.gate = asyncio.Event()
    flushing = asyncio.create_task(store.flush())
    await replica.entered.wait()
    store.execute("ALTER TABLE users RENAME TO members")  # while the delta is in flight...
    store.execute("ALTER TABLE members RENAME TO users")  # ...and back (this looped forever once)
    store.execute("ALTER TABLE users RENAME TO people")
    replica.gate.set()
    await asyncio.wait_for(flushing, 5)
    state = replica.state()
    assert state.execute("SELECT chat_id, name FROM people").fetchall() == [(1, "Ann")]
