"""Build real storage for the tool tests: a Replica writing a chain of deltas (and snapshots) to a local
directory, beside a plain SQLite model of what the state must be after each seq."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from snapshot.apply import apply_changes
from snapshot.backends.local import LocalDirBackend
from snapshot.changes import ChangeSet, TableChanges
from snapshot.replica import Replica, ReplicaConfig

DDL = "CREATE TABLE users (chatid INTEGER PRIMARY KEY, name TEXT NOT NULL, click INTEGER NOT NULL, avatar BLOB)"
COLUMNS = ["chatid", "name", "click", "avatar"]
NAMES = ["Анна", "Дмитрий", "Alex", "Zoë", "Ярослав", "Mia"]


def rows(conn: sqlite3.Connection) -> list[tuple]:
    return conn.execute("SELECT * FROM users ORDER BY chatid").fetchall()


@dataclass
class Chain:
    path: Path
    #: the model state after each seq (0 = empty): what a restore to that seq must equal.
    states: dict[int, list[tuple]] = field(default_factory=dict)
    captured: dict[int, float] = field(default_factory=dict)
    refs: dict[int, str] = field(default_factory=dict)
    replica: Replica | None = None

    @property
    def last_seq(self) -> int:
        return max(self.states)

    def backend(self) -> LocalDirBackend:
        return LocalDirBackend(self.path, fsync=False)


def _changes(seq: int, captured_at: float) -> ChangeSet:
    # overlapping keys: later deltas update rows earlier ones inserted; some rows carry blobs
    ups = [(1000 + seq * 7 + i, f"{NAMES[(seq + i) % len(NAMES)]} {seq}-{i}", seq * 10 + i,
            bytes([seq, i, 0]) * 20 if i % 2 else None) for i in range(40)]
    dels = [(1000 + seq % 3,)] if seq % 5 == 0 else []
    return ChangeSet(captured_at, {"users": TableChanges("users", DDL, COLUMNS, ["chatid"], ups, dels)})


async def build(path: Path, deltas: int, *, snapshot_at: int | None = None, key: bytes | None = None,
                release: bool = True, lease_seconds: float = 30.0, writer_id: str = "bot-under-test") -> Chain:
    chain = Chain(path)
    cfg = ReplicaConfig(encryption_key=key, lease_seconds=lease_seconds, part_size=1400, shard_size=8192)
    replica = Replica(chain.backend(), cfg, writer_id=writer_id)
    await replica.acquire()
    model = sqlite3.connect(":memory:")
    chain.states[0] = []
    t0 = time.time() - 1000.0
    for seq in range(1, deltas + 1):
        cs = _changes(seq, t0 + seq)
        receipt = await replica.write_delta(cs)
        assert receipt.seq == seq
        apply_changes(model, cs)
        chain.states[seq] = rows(model)
        chain.captured[seq] = t0 + seq
        chain.refs[seq] = receipt.ref
        if seq == snapshot_at:
            await replica.write_snapshot(model.serialize(), seq, t0 + seq)
    if release:
        await replica.release()
    chain.replica = replica
    return chain


def build_sync(path: Path, deltas: int, **kw) -> Chain:
    return asyncio.run(build(path, deltas, **kw))


def restored_rows(path: Path, key: bytes | None = None, **kw) -> list[tuple]:
    from snapshot.restore import restore

    r = asyncio.run(restore(LocalDirBackend(path, fsync=False), key, **kw))
    try:
        return rows(r.conn)
    finally:
        r.conn.close()
