"""The Store's durability contract, against a scripted replica: what flush() promises, what the loop
ships and when, what a transaction hides, what survives a failed upload, how close and fencing behave."""

from __future__ import annotations

import asyncio
import logging
import sqlite3

import pytest

from core import FencedError, StoreClosed, TransactionConflict
from snapshot.errors import BackendError
from tests.core.conftest import USERS
from tests.core.fakes import rows


async def eventually(predicate, within: float = 3.0) -> None:
    """Poll a condition the background loop will make true."""
    for _ in range(int(within / 0.005)):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"condition not met within {within}s")


def shipped(replica, table: str = "users") -> list[tuple]:
    """Every upsert of `table` shipped so far, in order."""
    return [row for cs in replica.deltas if table in cs.tables for row in cs.tables[table].upserts]


# ---- flush -------------------------------------------------------------------------------------------


async def test_flush_returns_once_the_write_is_durable(open_store, replica):
    store = await open_store()
    store.execute("INSERT INTO users (chat_id, name) VALUES (?, ?)", (42, "Ann"))
    await store.flush()
    assert shipped(replica) == [(42, "Ann", 0)]
    assert rows(replica.state(), "users") == [(42, "Ann", 0)]


async def test_flush_with_nothing_dirty_returns_at_once_and_ships_nothing(open_store, replica):
    store = await open_store()
    await store.flush(timeout=0.5)  # the declared table's CREATE (new storage) is the only change
    assert replica.calls == 1 and replica.deltas[0].schema == [USERS] and not replica.deltas[0].tables
    await store.flush(timeout=0.5)
    assert replica.calls == 1


async def test_flush_waits_for_the_delta_already_in_flight(open_store, replica):
    store = await open_store()
    replica.gate = asyncio.Event()
    store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'a')")
    first = asyncio.create_task(store.flush())
    await replica.entered.wait()
    # Nothing is dirty now, but the write is not durable yet: this flush must wait for the upload.
    second = asyncio.create_task(store.flush())
    await asyncio.sleep(0.05)
    assert not first.done() and not second.done()
    replica.gate.set()
    await asyncio.wait_for(asyncio.gather(first, second), 2)
    assert replica.calls == 1


async def test_row_rewritten_while_its_delta_is_in_flight_stays_dirty(open_store, replica):
    store = await open_store()
    replica.gate = asyncio.Event()
    store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'a')")
    first = asyncio.create_task(store.flush())
    await replica.entered.wait()
    store.execute("UPDATE users SET clicks = 5 WHERE chat_id = 1")
    stats = store.stats()
    assert (stats.in_flight_rows, stats.dirty_rows) == (1, 1)
    replica.gate.set()
    await first
    assert store.stats().dirty_rows == 1
    await store.flush()
    assert shipped(replica) == [(1, "a", 0), (1, "a", 5)]
    assert rows(replica.state(), "users") == [(1, "a", 5)]


async def test_failed_upload_loses_nothing_and_the_retry_ships_the_newest_image(open_store, replica):
    # Ordered by the gate, not by timing: key 1 comes back only through the failed delta's re-mark, and
    # the retry is a fresh capture that also carries what was written while the first attempt was out.
    store = await open_store()
    replica.failures = [BackendError("storage down")]
    replica.gate = asyncio.Event()
    store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'a')")
    flushing = asyncio.create_task(store.flush())
    await replica.entered.wait()  # the first attempt captured key 1 and is in flight
    store.execute("INSERT INTO users (chat_id, name) VALUES (2, 'b')")
    replica.gate.set()  # ... and it fails
    await asyncio.wait_for(flushing, 5)
    assert replica.calls == 2
    assert sorted(shipped(replica)) == [(1, "a", 0), (2, "b", 0)]
    assert store.stats().last_error is None and store.stats().dirty_rows == 0


async def test_flush_timeout_raises_but_keeps_the_rows_dirty(open_store, replica):
    store = await open_store()
    replica.failures = [BackendError("429", retry_after=0.3)] * 3
    store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'a')")
    with pytest.raises(TimeoutError, match="stay dirty"):
        await store.flush(timeout=0.1)
    assert store.stats().dirty_rows == 1
    assert store.stats().lag > 0
    replica.failures.clear()
    await store.flush(timeout=5)
    assert rows(replica.state(), "users") == [(1, "a", 0)]


async def test_backoff_honours_retry_after(open_store, replica):
    store = await open_store()
    replica.failures = [BackendError("flood wait", retry_after=0.3)]
    store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'a')")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await store.flush(timeout=5)
    assert loop.time() - t0 >= 0.29
    assert replica.calls == 2


# ---- the loop ----------------------------------------------------------------------------------------


async def test_loop_ships_dirty_rows_without_being_asked(open_store, replica):
    store = await open_store(flush_interval=0.02)
    store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'a')")
    await eventually(lambda: replica.deltas)
    assert shipped(replica) == [(1, "a", 0)]


async def test_idle_loop_ships_nothing_but_keeps_the_lease(open_store, replica):
    store = await open_store(flush_interval=0.01)
    await store.flush()  # the declared table's CREATE
    calls = replica.calls
    store.execute("SELECT * FROM users").fetchall()
    await asyncio.sleep(0.15)
    assert replica.calls == calls
    assert replica.renewals >= 3


async def test_one_delta_per_tick_however_many_writes(open_store, replica):
    store = await open_store()
    store.executemany("INSERT INTO users (chat_id, name) VALUES (?, ?)", [(i, f"u{i}") for i in range(100)])
    for i in range(100):
        store.execute("UPDATE users SET clicks = clicks + 1 WHERE chat_id = ?", (i % 10,))
    await store.flush()
    assert replica.calls == 1
    assert len(replica.deltas[0].tables["users"].upserts) == 100


async def test_lease_renewal_failure_is_reported_and_retried(open_store, replica):
    store = await open_store(flush_interval=0.01)
    replica.renew_error = BackendError("manifest edit failed")
    await eventually(lambda: store.stats().last_error is not None)
    assert "lease" in store.stats().last_error
    replica.renew_error = None
    store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'a')")
    await store.flush(timeout=2)
    assert not store.fenced


# ---- transactions ------------------------------------------------------------------------------------


async def test_no_capture_while_a_transaction_is_open(open_store, replica):
    store = await open_store(flush_interval=0.01)
    async with store.transaction() as tx:
        tx.execute("INSERT INTO users (chat_id, name) VALUES (1, 'a')")
        await asyncio.sleep(0.1)  # many loop ticks pass
        assert replica.calls == 0
        tx.execute("INSERT INTO users (chat_id, name) VALUES (2, 'b')")
    await store.flush()
    assert replica.calls == 1  # both rows in one delta: the transaction is never split
    assert sorted(replica.deltas[0].tables["users"].upserts) == [(1, "a", 0), (2, "b", 0)]


async def test_rollback_leaves_nothing_dirty(open_store, replica):
    store = await open_store()
    store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'a')")
    await store.flush()
    with pytest.raises(RuntimeError, match="boom"):
        async with store.transaction() as tx:
            tx.execute("UPDATE users SET clicks = 9 WHERE chat_id = 1")
            tx.execute("INSERT INTO users (chat_id, name) VALUES (2, 'b')")
            store.execute("DELETE FROM users WHERE chat_id = 1")  # the owner task may use store.execute
            raise RuntimeError("boom")
    assert store.stats().dirty_rows == 0
    assert store.execute("SELECT * FROM users").fetchall() == [(1, "a", 0)]
    await store.flush()
    assert replica.calls == 1


async def test_rollback_keeps_marks_made_before_the_transaction(open_store, replica):
    store = await open_store()
    store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'a')")
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            tx.execute("UPDATE users SET clicks = 3 WHERE chat_id = 1")
            raise RuntimeError
    assert store.stats().dirty_rows == 1
    await store.flush()
    assert shipped(replica) == [(1, "a", 0)]


async def test_upload_failing_during_a_transaction_is_not_undone_by_its_rollback(open_store, replica):
    store = await open_store()
    replica.gate = asyncio.Event()
    replica.failures = [BackendError("down")]
    store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'a')")
    flushing = asyncio.create_task(store.flush())
    await replica.entered.wait()
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            tx.execute("INSERT INTO users (chat_id, name) VALUES (2, 'b')")
            replica.gate.set()  # the upload of row 1 fails while the transaction is open
            await eventually(lambda: store.stats().last_error is not None)
            raise RuntimeError
    await asyncio.wait_for(flushing, 2)
    assert rows(replica.state(), "users") == [(1, "a", 0)]


async def test_write_from_another_task_during_a_transaction_is_refused_reads_are_not(open_store):
    store = await open_store()
    store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'a')")
    opened, release = asyncio.Event(), asyncio.Event()

    async def holder():
        async with store.transaction() as tx:
            tx.execute("UPDATE users SET clicks = 1 WHERE chat_id = 1")
            opened.set()
            await release.wait()

    task = asyncio.create_task(holder())
    await opened.wait()
    with pytest.raises(TransactionConflict, match="another task"):
        store.execute("INSERT INTO users (chat_id, name) VALUES (2, 'b')")
    with pytest.raises(TransactionConflict):
        store.executemany("INSERT INTO users (chat_id, name) VALUES (?, ?)", [(3, "c")])
    assert store.execute("SELECT count(*) FROM users").fetchone() == (1,)
    release.set()
    await task
    store.execute("INSERT INTO users (chat_id, name) VALUES (2, 'b')")  # accepted once it is over
    assert store.execute("SELECT chat_id, clicks FROM users ORDER BY 1").fetchall() == [(1, 1), (2, 0)]


async def test_transactions_of_different_tasks_run_one_after_another(open_store):
    store = await open_store()
    store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'a')")

    async def bump():
        async with store.transaction() as tx:
            (n,) = tx.execute("SELECT clicks FROM users WHERE chat_id = 1").fetchone()
            await asyncio.sleep(0.01)  # another task would interleave here without serialisation
            tx.execute("UPDATE users SET clicks = ? WHERE chat_id = 1", (n + 1,))

    await asyncio.gather(*(bump() for _ in range(10)))
    assert store.execute("SELECT clicks FROM users").fetchone() == (10,)


async def test_transaction_misuse_is_named(open_store):
    store = await open_store()
    async with store.transaction():
        with pytest.raises(TransactionConflict, match="re-entrant"):
            async with store.transaction():
                pass
        with pytest.raises(TransactionConflict, match="flush"):
            await store.flush()
    async with store.transaction() as tx:
        pass
    with pytest.raises(RuntimeError, match="already committed"):
        tx.execute("SELECT 1")


# ---- snapshots -------------------------------------------------------------------------------------


async def test_snapshot_image_equals_the_state_after_its_base_delta(open_store, replica):
    store = await open_store()
    store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'a')")
    await store.flush()
    store.execute("INSERT INTO users (chat_id, name) VALUES (2, 'b')")
    receipt = await store.snapshot()
    image, base_seq, _ = replica.snapshots[-1]
    assert base_seq == receipt.base_seq == replica.seq == 2  # the pending write shipped first
    conn = sqlite3.connect(":memory:")
    conn.deserialize(image)
    assert rows(conn, "users") == [(1, "a", 0), (2, "b", 0)]
    # tgsnap's tracking lives in TEMP: the image holds the application's objects only
    assert conn.execute("SELECT name FROM sqlite_schema").fetchall() == [("users",)]


async def test_deltas_keep_flowing_while_a_snapshot_uploads(open_store, replica):
    store = await open_store()
    replica.snapshot_gate = asyncio.Event()
    store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'a')")
    snap = asyncio.create_task(store.snapshot())
    await eventually(lambda: replica.seq == 1)
    store.execute("INSERT INTO users (chat_id, name) VALUES (2, 'b')")
    await asyncio.wait_for(store.flush(), 2)
    assert not snap.done() and replica.seq == 2
    replica.snapshot_gate.set()
    receipt = await snap
    # The base is the first durable delta captured after the off-loop copy completed: 1 or 2, depending
    # on whether the copy finished before row 2's capture. Either way the image is that state exactly.
    image, base, _ = replica.snapshots[-1]
    assert receipt.base_seq == base in (1, 2)
    conn = sqlite3.connect(":memory:")
    conn.deserialize(bytes(image))
    assert rows(conn, "users") == [(1, "a", 0), (2, "b", 0)][:base]
    assert rows(replica.state(), "users") == [(1, "a", 0), (2, "b", 0)]


async def test_loop_snapshots_when_the_replica_says_it_is_due(open_store, replica):
    store = await open_store(flush_interval=0.01)
    store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'a')")
    replica.due = True
    await eventually(lambda: replica.snapshots)
    assert replica.snapshots[0][1] == 1
    await asyncio.sleep(0.05)
    assert len(replica.snapshots) == 1  # not due any more


async def test_failed_snapshot_is_reported_to_its_caller(open_store, replica):
    store = await open_store()
    replica.snapshot_failures = [BackendError("part upload failed")]
    with pytest.raises(BackendError, match="part upload failed"):
        await store.snapshot()
    await store.snapshot()
    assert len(replica.snapshots) == 1


# ---- stats -------------------------------------------------------------------------------------------


async def test_stats_report_rows_dirt_lag_and_storage(open_store, replica):
    store = await open_store(
        schema=[
            "CREATE TABLE users (chat_id INTEGER PRIMARY KEY, name TEXT)",
            "CREATE TABLE votes (chat_id INTEGER NOT NULL, poll TEXT NOT NULL, PRIMARY KEY (chat_id, poll))",
        ]
    )
    fresh = store.stats()
    assert (fresh.rows, fresh.dirty_rows, fresh.last_flush_at) == ({"users": 0, "votes": 0}, 0, None)
    await store.flush()  # the declared tables' CREATE statements
    replica.seq = replica.calls = replica.bytes = 0
    store.executemany("INSERT INTO users VALUES (?, ?)", [(1, "a"), (2, "b")])
    store.execute("INSERT INTO votes VALUES (1, 'q')")
    await asyncio.sleep(0.05)
    dirty = store.stats()
    assert dirty.rows == {"users": 2, "votes": 1}
    assert dirty.dirty_rows == 3
    assert dirty.lag >= 0.04
    await store.flush()
    await store.snapshot()
    clean = store.stats()
    assert (clean.dirty_rows, clean.lag, clean.in_flight_rows) == (0, 0.0, 0)
    assert clean.last_flush_at is not None
    assert clean.bytes_shipped == replica.bytes > 0
    assert clean.last_seq == 1 and clean.deltas_since_snapshot == 0
    assert clean.snapshot_size == len(replica.snapshots[-1][0]) and clean.snapshot_age >= 0
    assert (clean.epoch, clean.backend, clean.fenced, clean.closed) == (1, "fake", False, False)


# ---- close -------------------------------------------------------------------------------------------


async def test_close_flushes_releases_and_is_idempotent(open_store, replica):
    store = await open_store()
    store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'a')")
    await store.close()
    assert rows(replica.state(), "users") == [(1, "a", 0)]
    assert replica.released
    await store.close()
    await asyncio.gather(store.close(), store.close())
    assert replica.calls == 1
    assert store.stats().closed
    with pytest.raises(StoreClosed):
        store.execute("INSERT INTO users (chat_id, name) VALUES (2, 'b')")
    assert store.execute("SELECT count(*) FROM users").fetchone() == (1,)  # reads still work


async def test_close_waits_for_an_open_transaction(open_store, replica):
    store = await open_store()
    opened = asyncio.Event()

    async def slow():
        async with store.transaction() as tx:
            tx.execute("INSERT INTO users (chat_id, name) VALUES (1, 'a')")
            opened.set()
            await asyncio.sleep(0.05)

    task = asyncio.create_task(slow())
    await opened.wait()
    await store.close()
    await task
    assert rows(replica.state(), "users") == [(1, "a", 0)]


async def test_close_with_timeout_during_an_outage_says_what_is_lost(open_store, replica, caplog):
    store = await open_store()
    replica.failures = [BackendError("down")] * 1000
    store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'a')")
    with caplog.at_level(logging.ERROR, logger="tgsnap.core"), pytest.raises(TimeoutError):
        await store.close(timeout=0.1)
    assert "1 row(s) not durable" in caplog.text
    assert store.stats().closed
    await store.close()  # idempotent even after a failed close


# ---- fencing -----------------------------------------------------------------------------------------


async def test_fenced_store_refuses_writes_and_says_why(open_store, replica):
    store = await open_store()
    replica.failures = [FencedError("storage now belongs to writer bot-2 (epoch 7)")]
    store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'a')")
    with pytest.raises(FencedError):
        await store.flush()
    assert store.fenced and store.stats().fenced
    with pytest.raises(FencedError, match="fenced.*bot-2.*writes are refused"):
        store.execute("UPDATE users SET clicks = 1")
    with pytest.raises(FencedError):
        async with store.transaction():
            pass
    assert store.execute("SELECT chat_id FROM users").fetchall() == [(1,)]
    await store.close()
    assert not replica.released  # the lease is the newcomer's now


async def test_fence_found_while_renewing_stops_the_loop(open_store, replica):
    store = await open_store(flush_interval=0.01)
    replica.renew_error = FencedError("lost the lease")
    await eventually(lambda: store.fenced)
    with pytest.raises(FencedError):
        store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'a')")
    with pytest.raises(FencedError):
        await store.flush()


# ---- declare -----------------------------------------------------------------------------------------


async def test_declare_adds_a_tracked_table_at_runtime(open_store, replica):
    store = await open_store()
    store.declare("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    store.declare("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")  # already there: no-op
    store.declare("CREATE INDEX notes_body ON notes (body)")
    store.execute("INSERT INTO notes VALUES (1, 'x')")
    await store.flush()
    assert replica.deltas[0].tables["notes"].ddl.startswith("CREATE TABLE notes")
    assert "notes" in store.stats().rows


async def test_abandon_is_a_crash_not_a_close(open_store, replica):
    store = await open_store()
    store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'a')")
    await store.abandon()
    await store.close()  # nothing to ship any more, and no lease release
    assert replica.calls == 0 and not replica.released
    assert store.stats().closed
    with pytest.raises(StoreClosed):
        store.execute("DELETE FROM users")
