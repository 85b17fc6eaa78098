"""A tiny live store for tests: a SQLite table plus the dirty rows not yet shipped, like core/ keeps."""

from __future__ import annotations

import hashlib
import sqlite3
import time

from snapshot.changes import ChangeSet, TableChanges
from snapshot.errors import BackendError
from snapshot.image import capture
from snapshot.replica import Replica

DDL = "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT, clicks INTEGER)"
COLUMNS = ["id", "name", "clicks"]


class Live:
    def __init__(self, conn: sqlite3.Connection | None = None):
        self.conn = conn or sqlite3.connect(":memory:")
        self.conn.execute("CREATE TABLE IF NOT EXISTS users(id INTEGER PRIMARY KEY, name TEXT, clicks INTEGER)")
        self.conn.commit()
        self.dirty: set[int] = set()
        self.clock = 1_700_000_000.0

    def set(self, id: int, clicks: int, name: str | None = None) -> None:
        # hex noise keeps snapshots from compressing to nothing, so tiny part sizes give many parts
        name = name or f"user {id} {hashlib.sha256(str((id, clicks)).encode()).hexdigest()}"
        self.conn.execute("INSERT OR REPLACE INTO users VALUES (?, ?, ?)", (id, name, clicks))
        self.conn.commit()
        self.dirty.add(id)

    def delete(self, id: int) -> None:
        self.conn.execute("DELETE FROM users WHERE id = ?", (id,))
        self.conn.commit()
        self.dirty.add(id)

    def changes(self) -> ChangeSet:
        """Full images of dirty rows that exist, deletions of those that do not; a fresh cut time."""
        self.clock += 1.0
        ups, dels = [], []
        for id in sorted(self.dirty):
            row = self.conn.execute("SELECT id, name, clicks FROM users WHERE id = ?", (id,)).fetchone()
            if row is None:
                dels.append((id,))
            else:
                ups.append(row)
        return ChangeSet(self.clock, {"users": TableChanges("users", DDL, COLUMNS, ["id"], ups, dels)})

    async def flush(self, replica: Replica) -> bool:
        """Ship the dirty rows; on a backend failure keep them dirty (the next delta is a superset)."""
        cs = self.changes()
        shipped = set(self.dirty)
        try:
            await replica.write_delta(cs)
        except BackendError:
            return False
        self.dirty -= shipped
        return True

    async def snapshot(self, replica: Replica, **kw):
        """A snapshot at a cut with nothing dirty (flush first), as core does it."""
        assert not self.dirty, "flush before snapshotting"
        return await replica.write_snapshot(capture(self.conn), replica.last_seq, self.clock, **kw)

    def rows(self) -> list[tuple]:
        return state(self.conn)


def state(conn: sqlite3.Connection) -> list[tuple]:
    """The users rows; a database without the table (nothing restored yet) holds none."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'users'").fetchone() is None:
        return []
    return sorted(conn.execute("SELECT id, name, clicks FROM users"))


def now() -> float:
    return time.time()


def ops_strategy(keys: int, min_size: int, max_size: int):
    """Random writer scripts: set/delete rows, flush, snapshot, crash."""
    from hypothesis import strategies as st

    return st.lists(st.one_of(
        st.tuples(st.just("set"), st.integers(0, keys), st.integers(0, 1000)),
        st.tuples(st.just("delete"), st.integers(0, keys), st.just(0)),
        st.tuples(st.just("flush"), st.just(0), st.just(0)),
        st.tuples(st.just("snapshot"), st.just(0), st.just(0)),
        st.tuples(st.just("crash"), st.just(0), st.just(0)),
    ), min_size=min_size, max_size=max_size)


async def drive(ops, acquire, read) -> Replica:
    """Run a writer script through faults; the invariant of restore-equals-state, checked at every step.

    `acquire(previous)` returns a fresh (replica, restored) after dropping `previous` (None at the start);
    `read()` returns a connection rebuilt by an independent reader. After every acknowledged flush or
    snapshot the reader must rebuild exactly the live state; after a crash the restarted writer must hold
    the last acknowledged state or a later attempted one (a lost acknowledgement may have landed).
    Returns the last replica, for the caller to close.
    """
    r, got = await acquire(None)
    live = Live(got.conn)
    candidates = [live.rows()]  # acceptable restored states: last acked, then later attempts
    for op, k, v in ops:
        if op == "set":
            live.set(k, clicks=v)
        elif op == "delete":
            live.delete(k)
        elif op == "flush":
            attempt = live.rows()
            if await live.flush(r):
                candidates = [attempt]
                assert state(await read()) == attempt
            else:
                candidates.append(attempt)
        elif op == "snapshot":
            if not await live.flush(r):
                candidates.append(live.rows())
                continue
            candidates = [live.rows()]
            try:
                await r.write_snapshot(capture(live.conn), r.last_seq, live.clock)
            except BackendError:
                pass
            assert state(await read()) == live.rows()
        elif op == "crash":
            r, got = await acquire(r)
            assert state(got.conn) in candidates
            live = Live(got.conn)
            candidates = [live.rows()]
    return r
