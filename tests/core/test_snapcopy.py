"""The snapshot copy made off the event loop (core/snapcopy.py): the SQLite facts it rests on, and the
flusher's use of it. Mechanism only, no timings: that the loop runs between copy steps, that writes made
during the copy end up in the snapshot exactly as of its base delta, that a schema statement restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import snapcopy
from snapshot import image as image_mod
from tests.core.fakes import rows

BLOB = "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)"


def _live(n: int = 3000) -> sqlite3.Connection:
    conn = image_mod.connect()
    conn.isolation_level = None
    conn.execute(BLOB)
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, "x" * 200) for i in range(n)])
    return conn


def _state(conn: sqlite3.Connection) -> list[tuple]:
    return conn.execute("SELECT k, v FROM t ORDER BY k").fetchall()


def test_the_backup_follows_writes_made_through_the_live_connection_between_steps():
    live = _live()
    copy = snapcopy.ScratchCopy(live)
    seen = []

    def write(remaining: int, total: int) -> None:
        i = len(seen)
        seen.append(remaining)
        live.execute("UPDATE t SET v = ? WHERE k = ?", (f"u{i}", (i * 7) % 3000))
        live.execute("INSERT INTO t VALUES (?, ?)", (10_000 + i, "new" * 50))
        live.execute("DELETE FROM t WHERE k = ?", ((i * 13) % 3000,))

    copy.on_step = write
    try:
        copy.copy(pages=4)
        assert len(seen) > 20  # many steps, each followed by writes
        out = sqlite3.connect(":memory:")
        out.deserialize(bytes(copy.image()))
        assert _state(out) == _state(live)
        assert out.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        copy.close()


def test_the_copy_pauses_after_every_step_with_the_live_connection_free(monkeypatch):
    # Without the pause the copying thread re-took the live connection's mutex before the loop's thread,
    # blocked on it in an execute, woke: clicks waited across dozens of steps (core/snapcopy.py).
    live = _live()
    copy = snapcopy.ScratchCopy(live)
    paused: list[int] = []
    writer_got_in: list[bool] = []

    def pause(seconds: float) -> None:
        assert seconds == snapcopy.STEP_PAUSE
        paused.append(copy.steps)
        # another thread can take the connection now: a write there finishes inside the pause
        t = threading.Thread(target=lambda: writer_got_in.append(
            live.execute("UPDATE t SET v = 'p' WHERE k = ?", (len(paused) % 3000,)).rowcount == 1))
        t.start()
        t.join(5)
        assert not t.is_alive()

    monkeypatch.setattr(snapcopy.time, "sleep", pause)
    try:
        copy.copy(pages=4)
        assert copy.steps > 20 and paused == list(range(1, copy.steps))  # after every step but the last
        assert all(writer_got_in) and len(writer_got_in) == copy.steps - 1
        out = sqlite3.connect(":memory:")
        out.deserialize(bytes(copy.image()))
        assert _state(out) == _state(live)
    finally:
        copy.close()


def test_a_step_during_a_write_transaction_waits_so_rolled_back_pages_never_reach_the_copy():
    live = _live()
    before = _state(live)
    copy = snapcopy.ScratchCopy(live)
    calls = []

    def meddle(remaining: int, total: int) -> None:
        calls.append(remaining)
        if len(calls) == 2:
            live.execute("BEGIN")
            live.executemany("INSERT INTO t VALUES (?, ?)", [(20_000 + i, "z" * 300) for i in range(2000)])
            live.execute("DELETE FROM t WHERE k < 1500")
        elif len(calls) == 6:
            live.execute("ROLLBACK")

    copy.on_step = meddle
    try:
        copy.copy(pages=8, sleep=0.0)
        # Steps 3..6 found a write transaction open: SQLITE_BUSY, retried (same `remaining`).
        assert calls[2] == calls[3]
        out = sqlite3.connect(":memory:")
        out.deserialize(bytes(copy.image()))
        assert _state(out) == before == _state(live)
    finally:
        copy.close()


def test_a_plain_memory_database_restarts_the_backup_at_every_commit_so_restore_hands_out_memdb():
    plain = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    plain.execute(BLOB)
    plain.executemany("INSERT INTO t VALUES (?, ?)", [(i, "x" * 200) for i in range(3000)])
    copy = snapcopy.ScratchCopy(plain)
    copy.on_step = lambda remaining, total: plain.execute("INSERT INTO t VALUES ((SELECT max(k) FROM t) + 1, 'w')")
    try:
        with pytest.raises(snapcopy.CopyAbandoned, match="restarted"):
            copy.copy(pages=4)  # never finishes: detected, the flusher then serializes in the cut
    finally:
        copy.close()


def test_a_change_set_with_schema_statements_abandons_the_copy():
    from snapshot.changes import ChangeSet

    live = _live(10)
    copy = snapcopy.ScratchCopy(live)
    try:
        copy.copy()
        changes = ChangeSet(tables={}, captured_at=0.0)
        changes.schema = ["CREATE TABLE u (k INTEGER PRIMARY KEY)"]
        with pytest.raises(snapcopy.CopyAbandoned):
            copy.apply(changes)
    finally:
        copy.close()


def _slow_steps(monkeypatch, between=None):
    """Copy one page per step, and give the event loop the GIL after each step."""
    import time

    monkeypatch.setattr(snapcopy, "STEP_PAGES", 1)
    real = snapcopy.ScratchCopy.__init__
    made = []

    def init(self, *a, **kw):
        real(self, *a, **kw)
        made.append(self)

        def step(remaining, total):
            if between is not None:
                between(self, remaining)
            time.sleep(0.0005)

        self.on_step = step

    monkeypatch.setattr(snapcopy.ScratchCopy, "__init__", init)
    return made


async def _fill(store, n=1500):
    store.executemany("INSERT INTO users (chat_id, name) VALUES (?, ?)", [(i, "n" * 300) for i in range(n)])
    await store.flush()


async def test_the_loop_runs_and_writes_between_copy_steps_and_the_snapshot_equals_its_base(
        open_store, replica, monkeypatch):
    from snapshot.apply import apply_changes

    store = await open_store()
    await _fill(store)
    writes_at_step: list[int] = []
    writes = 0
    made = _slow_steps(monkeypatch, lambda copy, remaining: writes_at_step.append(writes))
    done = asyncio.Event()

    async def writer():
        nonlocal writes
        i = 0
        while not done.is_set():
            store.execute("UPDATE users SET clicks = clicks + 1 WHERE chat_id = ?", (i % 1500,))
            store.execute("INSERT OR REPLACE INTO users (chat_id, name) VALUES (?, 'late')", (5000 + i,))
            if i % 3 == 0:
                store.execute("DELETE FROM users WHERE chat_id = ?", (i % 1500,))
            writes += 1
            i += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(writer())
    receipt = await asyncio.wait_for(store.snapshot(), 30)
    done.set()
    await task
    assert len(made) == 1 and len(writes_at_step) > 50  # one copy (not restarted, not the fallback), many steps ...
    assert writes_at_step[-1] > writes_at_step[0]  # ... with the loop running (and writing) between them
    image, base, _ = replica.snapshots[-1]
    assert receipt.base_seq == base
    # The image equals the state after delta `base` exactly: replay deltas 1..base from empty.
    expected = sqlite3.connect(":memory:", isolation_level=None)
    for changes in replica.deltas[:base]:
        apply_changes(expected, changes)
    got = sqlite3.connect(":memory:")
    got.deserialize(bytes(image))
    assert rows(got, "users") == rows(expected, "users")
    await store.flush()
    assert rows(replica.state(), "users") == rows(store._conn, "users")


async def test_a_schema_statement_during_the_copy_restarts_it(open_store, replica, monkeypatch):
    store = await open_store()
    await _fill(store)
    ran = threading.Event()
    copying = asyncio.Event()
    loop = asyncio.get_running_loop()

    def between(copy, remaining):
        if not ran.is_set():
            loop.call_soon_threadsafe(copying.set)  # from the copying thread, between two steps

    made = _slow_steps(monkeypatch, between)

    async def ddl_when_copying():
        await copying.wait()
        store.execute("CREATE TABLE extra (k INTEGER PRIMARY KEY)")
        store.execute("INSERT INTO extra VALUES (1)")
        ran.set()

    task = asyncio.create_task(ddl_when_copying())
    await asyncio.wait_for(store.snapshot(), 30)
    await task
    assert len(made) >= 2  # the first copy was abandoned, a new one made the snapshot
    await store.flush()
    state = replica.state()
    assert rows(state, "extra") == [(1,)]
    assert rows(state, "users") == rows(store._conn, "users")


async def test_a_failing_copy_keeps_marks_and_waiters_and_the_snapshot_still_comes(open_store, replica, monkeypatch):
    store = await open_store()
    await _fill(store, 10)
    real = snapcopy.ScratchCopy.image
    failed = []

    def failing(self):
        if not failed:
            failed.append(1)
            raise OSError("disk full")
        return real(self)

    monkeypatch.setattr(snapcopy.ScratchCopy, "image", failing)
    store.execute("INSERT INTO users (chat_id, name) VALUES (100, 'a')")
    receipt = await asyncio.wait_for(store.snapshot(), 10)
    assert failed  # the copy failed once; the retry (in the cut) made the snapshot
    store.execute("INSERT INTO users (chat_id, name) VALUES (101, 'b')")
    await store.flush()
    assert receipt.base_seq == replica.snapshots[-1][1]
    assert rows(replica.state(), "users") == rows(store._conn, "users")


async def test_an_empty_store_still_snapshots(open_store, replica):
    store = await open_store(schema=())
    receipt = await asyncio.wait_for(store.snapshot(), 10)
    assert replica.snapshots and receipt.base_seq == 0
    assert replica.state().execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("upsert"), st.integers(0, 400), st.text(max_size=30)),
        st.tuples(st.just("delete"), st.integers(0, 400), st.just("")),
        st.tuples(st.just("fail"), st.just(0), st.just("")),  # the next delta upload fails
        st.tuples(st.just("flush"), st.just(0), st.just("")),
        st.tuples(st.just("rollback"), st.integers(0, 400), st.text(max_size=5)),
    ),
    max_size=60,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_OPS)
def test_property_writes_during_the_copy_the_image_equals_the_state_after_its_base(ops, monkeypatch):
    """Whatever runs while the copy is made and brought forward (writes, failed uploads, rolled-back
    transactions), the snapshot image equals the replay of deltas 1..base_seq exactly."""
    from core import Store, StoreConfig
    from snapshot.apply import apply_changes
    from snapshot.errors import BackendError
    from tests.core.conftest import USERS
    from tests.core.fakes import FakeReplica

    monkeypatch.setattr(snapcopy, "STEP_PAGES", 2)

    async def run():
        replica = FakeReplica()
        store = await Store.open_replica(replica, schema=[USERS], config=StoreConfig(
            flush_interval=3600.0, retry_min=0.001, retry_max=0.002))
        try:
            store.executemany("INSERT INTO users (chat_id, name) VALUES (?, ?)", [(i, "p" * 200) for i in range(300)])
            await store.flush()
            snap = asyncio.create_task(store.snapshot())
            for op, key, text in ops:
                if op == "upsert":
                    store.execute("INSERT OR REPLACE INTO users (chat_id, name) VALUES (?, ?)", (key, text))
                elif op == "delete":
                    store.execute("DELETE FROM users WHERE chat_id = ?", (key,))
                elif op == "fail":
                    replica.failures.append(BackendError("upload failed", retryable=True))
                elif op == "flush":
                    store._flusher.hurry()
                else:
                    with contextlib.suppress(RuntimeError):
                        async with store.transaction() as tx:
                            tx.execute("INSERT OR REPLACE INTO users (chat_id, name) VALUES (?, ?)", (key, text))
                            await asyncio.sleep(0)
                            raise RuntimeError("roll back")
                await asyncio.sleep(0)
            receipt = await asyncio.wait_for(snap, 30)
            image, base, _ = replica.snapshots[-1]
            assert receipt.base_seq == base
            expected = sqlite3.connect(":memory:", isolation_level=None)
            for changes in replica.deltas[:base]:
                apply_changes(expected, changes)
            got = sqlite3.connect(":memory:")
            if image:
                got.deserialize(bytes(image))
            assert rows(got, "users") == rows(expected, "users")
            await store.flush()
            assert rows(replica.state(), "users") == rows(store._conn, "users")
        finally:
            await store.abandon()

    asyncio.run(run())
