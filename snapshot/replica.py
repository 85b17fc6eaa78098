"""CONTRACT STUB — to be implemented by the snapshot engineer. Signatures are agreed with core/; keep them.

The writer side of storage: ships deltas and snapshots through a Backend, keeps the hash chain, the
manifest and the writer lease. `core.Store` owns one Replica.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from snapshot.backend import Backend
from snapshot.changes import ChangeSet

#: progress callback: (stage, done, total) e.g. ("download", 3, 10)
Progress = Callable[[str, int, int], None]


@dataclass
class ReplicaConfig:
    #: a snapshot part document never exceeds this many bytes (default fits the Bot API's 20 MB getFile cap).
    part_size: int = 19 * 1024 * 1024
    #: uncompressed bytes of SQLite image per shard; shards are compressed/uploaded in parallel.
    shard_size: int = 8 * 1024 * 1024
    zstd_level: int = 3
    #: 32-byte key for AES-256-GCM at rest, or None for no encryption.
    encryption_key: bytes | None = None
    #: snapshot automatically when the chain since the last snapshot passes any of these.
    snapshot_every_deltas: int = 1000
    snapshot_every_bytes: int = 64 * 1024 * 1024
    snapshot_max_age: float = 6 * 3600.0
    #: writer lease length; the lease is renewed well before it runs out.
    lease_seconds: float = 30.0
    #: how long `acquire` waits for a live holder to release or expire before StorageBusy.
    takeover_wait: float = 0.0
    #: max parallel uploads/downloads of parts.
    parallelism: int = 4


@dataclass
class DeltaReceipt:
    seq: int
    ref: str
    size: int  # bytes stored


@dataclass
class SnapshotReceipt:
    base_seq: int
    parts: int
    size: int  # bytes stored, all parts


@dataclass
class ReplicaStatus:
    epoch: int
    last_seq: int  # last delta seq durable in storage (0 = none)
    last_durable_at: float | None  # unix time the last delta (or snapshot) became durable
    bytes_shipped: int  # total bytes stored by this replica since acquire
    deltas_since_snapshot: int
    bytes_since_snapshot: int
    snapshot_seq: int | None
    snapshot_at: float | None  # unix time of the current snapshot's cut
    snapshot_size: int | None  # stored bytes of the current snapshot
    backend: str
    lease_expires_at: float | None


@dataclass
class Restored:
    """What `Replica.acquire` (and `snapshot.restore.restore`) hands back."""

    conn: sqlite3.Connection  # in-memory database holding the restored state (empty if storage was empty)
    seq: int  # last delta applied (0 if none)
    captured_at: float | None  # cut time of that delta/snapshot


class Replica:
    def __init__(self, backend: Backend, config: ReplicaConfig | None = None, *, writer_id: str | None = None):
        raise NotImplementedError

    async def acquire(self, progress: Progress | None = None) -> Restored:
        """Take the writer lease (waiting up to `takeover_wait` for a live holder; then StorageBusy naming
        it), bump the epoch, restore the latest state, publish the manifest with our lease."""
        raise NotImplementedError

    async def write_delta(self, changes: ChangeSet) -> DeltaReceipt:
        """Store `changes` as the next delta. On BackendError nothing advanced: the caller keeps the rows
        dirty and tries again later (the retry reuses the same seq). FencedError if a newer writer took over."""
        raise NotImplementedError

    async def write_snapshot(self, image: bytes, base_seq: int, captured_at: float,
                             progress: Progress | None = None) -> SnapshotReceipt:
        """Store a full snapshot (a SQLite image equal to the state after delta `base_seq`), then switch
        the manifest to it atomically and delete what it supersedes."""
        raise NotImplementedError

    def snapshot_due(self) -> bool:
        raise NotImplementedError

    def status(self) -> ReplicaStatus:
        raise NotImplementedError

    async def renew(self) -> None:
        """Extend the lease (republish the manifest) if it is due; FencedError if we lost it."""
        raise NotImplementedError

    async def release(self) -> None:
        """Publish the manifest with the lease released, so a successor can take over at once."""
        raise NotImplementedError
