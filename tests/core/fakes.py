"""A scriptable stand-in for `snapshot.replica.Replica`, so core's tests control every upload exactly.

It keeps the change sets and snapshot images it was given (in memory, undecoded), can hold an upload in
flight (`gate`), fail the next ones (`failures`), and fence the writer. `state()` replays what it holds
onto a fresh database with snapshot's own `apply_changes`, i.e. what a restore would produce.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time

from snapshot.apply import apply_changes
from snapshot.changes import ChangeSet
from snapshot.replica import DeltaReceipt, ReplicaStatus, Restored, SnapshotReceipt


class FakeReplica:
    def __init__(self) -> None:
        self.deltas: list[ChangeSet] = []
        self.snapshots: list[tuple[bytes, int, float]] = []
        #: exceptions the next write_delta calls raise, in order (nothing stored for those).
        self.failures: list[BaseException] = []
        self.snapshot_failures: list[BaseException] = []
        #: when not None, write_delta waits for it: the delta is "in flight" meanwhile.
        self.gate: asyncio.Event | None = None
        self.snapshot_gate: asyncio.Event | None = None
        self.entered = asyncio.Event()  # set on each write_delta call
        self.renew_error: BaseException | None = None
        self.due = False
        self.calls = 0
        self.renewals = 0
        self.acquired = False
        self.released = False
        self.seq = 0
        self.bytes = 0

    async def acquire(self, progress=None) -> Restored:
        self.acquired = True
        from snapshot import image

        return Restored(conn=image.connect(), seq=0, captured_at=None)  # as restore hands it (memdb)

    async def write_delta(self, changes: ChangeSet) -> DeltaReceipt:
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        self.seq += 1
        self.deltas.append(changes)
        size = 10 * len(changes)
        self.bytes += size
        return DeltaReceipt(seq=self.seq, ref=f"d{self.seq}", size=size)

    async def write_snapshot(self, image: bytes, base_seq: int, captured_at: float, progress=None):
        if self.snapshot_gate is not None:
            await self.snapshot_gate.wait()
        if self.snapshot_failures:
            raise self.snapshot_failures.pop(0)
        self.snapshots.append((bytes(image), base_seq, captured_at))  # a copy, as storage keeps one
        self.due = False
        self.bytes += len(image)
        return SnapshotReceipt(base_seq=base_seq, parts=1, size=len(image))

    @property
    def last_seq(self) -> int:
        """The newest stored delta's seq, as Replica.last_seq (a snapshot shipped instead of a delta is based on it)."""
        return self.seq

    def snapshot_due(self) -> bool:
        return self.due

    def status(self) -> ReplicaStatus:
        snap = self.snapshots[-1] if self.snapshots else None
        return ReplicaStatus(
            epoch=1,
            last_seq=self.seq,
            last_durable_at=time.time() if self.seq else None,
            bytes_shipped=self.bytes,
            deltas_since_snapshot=self.seq - (snap[1] if snap else 0),
            bytes_since_snapshot=0,
            snapshot_seq=snap[1] if snap else None,
            snapshot_at=snap[2] if snap else None,
            snapshot_size=len(snap[0]) if snap else None,
            backend="fake",
            lease_expires_at=None,
        )

    async def renew(self) -> None:
        self.renewals += 1
        if self.renew_error is not None:
            raise self.renew_error

    async def release(self) -> None:
        self.released = True

    def state(self) -> sqlite3.Connection:
        """What a restore of everything stored so far yields: latest snapshot + later deltas."""
        conn = sqlite3.connect(":memory:", isolation_level=None)
        base = 0
        if self.snapshots:
            image, base, _ = self.snapshots[-1]
            conn.deserialize(image)
            conn.isolation_level = None
        for seq, changes in enumerate(self.deltas, start=1):
            if seq > base:
                apply_changes(conn, changes)
        return conn


def rows(conn: sqlite3.Connection, table: str) -> list[tuple]:
    return sorted(conn.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr)
