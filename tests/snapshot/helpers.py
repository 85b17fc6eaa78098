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
