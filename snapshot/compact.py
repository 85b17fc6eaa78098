"""Compaction: fold the delta chain into a new snapshot, on any backend (the library `tgsnap compact` wraps).

The plan is a value (`CompactPlan`, from `make_plan`) that prints what would be read, written and deleted
before anything is done. `compact` takes the writer lease like any writer (so it never interleaves with a
live bot), restores the state through the same reader the bot uses, writes it as a new snapshot whose
base is the last delta, switches the manifest to it and deletes the documents it supersedes, then
releases the lease. An interruption at any point leaves the previous snapshot and chain usable.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from dataclasses import dataclass

from snapshot.backend import Backend
from snapshot.cipher import as_cipher
from snapshot.formatting import size_text, when
from snapshot.manifest import Lease
from snapshot.replica import Replica, ReplicaConfig
from snapshot.restore import plan
from snapshot.restore_plan import RestorePlan
from snapshot.restored import Progress


@dataclass
class CompactPlan:
    """What a compaction would read and write, computed from the manifest and the (small) deltas."""

    restore: RestorePlan
    lease: Lease | None
    now: float

    @property
    def empty(self) -> bool:
        return self.restore.manifest is None and not self.restore.chain

    @property
    def deltas_folded(self) -> int:
        return len(self.restore.deltas)

    @property
    def new_base_seq(self) -> int:
        return self.restore.seq

    @property
    def read_bytes(self) -> int:
        return self.restore.total_bytes

    @property
    def superseded_bytes(self) -> int:
        """Stored bytes the new snapshot makes deletable: the old snapshot's parts and every folded delta."""
        return self.restore.total_bytes

    @property
    def retains(self) -> bool:
        """The storage retains history: compaction keeps what it supersedes as a point (compact())."""
        return self.restore.manifest is not None and bool(self.restore.manifest.history)

    @property
    def nothing_to_do(self) -> bool:
        return self.deltas_folded == 0

    @property
    def busy(self) -> bool:
        return self.lease is not None and self.lease.live(self.now)

    def as_dict(self) -> dict[str, object]:
        r = self.restore
        return {
            "empty": self.empty,
            "current_snapshot_seq": r.snapshot.base_seq if r.snapshot else None,
            "current_snapshot_bytes": r.snapshot_bytes,
            "deltas_folded": self.deltas_folded,
            "delta_bytes": sum(d.size for d in r.deltas),
            "read_bytes": self.read_bytes,
            "new_snapshot_base_seq": self.new_base_seq,
            "new_snapshot_captured_at": r.captured_at,
            "documents_superseded": 0 if self.retains else (len(r.snapshot.parts) if r.snapshot else 0)
            + self.deltas_folded,
            "retained_points": len(r.manifest.history) if r.manifest else 0,
            "nothing_to_do": self.nothing_to_do,
            "lease_holder": self.lease.describe() if self.busy and self.lease else None,
            "lease_expires_at": self.lease.expires_at if self.busy and self.lease else None,
        }

    def __str__(self) -> str:
        if self.empty:
            return "storage is empty: nothing to compact"
        r = self.restore
        lines = ["compaction plan:"]
        snap = r.snapshot
        base = (f"snapshot base seq {snap.base_seq}, {len(snap.parts)} part(s), {size_text(snap.stored_size)}"
                if snap else "no snapshot (start from an empty database)")
        lines.append(f"  read: {base} + {self.deltas_folded} delta(s), {size_text(sum(d.size for d in r.deltas))}"
                     f" = {size_text(self.read_bytes)}")
        if self.nothing_to_do:
            lines.append(f"  nothing to fold: the state at seq {self.new_base_seq} is already a snapshot"
                         " (use --force to rewrite it anyway)")
        else:
            lines.append(f"  write: a new snapshot with base seq {self.new_base_seq} (state captured "
                         f"{when(r.captured_at)}), folding seq {r.deltas[0].seq}..{r.deltas[-1].seq}"
                         if r.deltas else f"  write: a new snapshot with base seq {self.new_base_seq}")
            if self.retains:
                lines.append(f"  then keep: the superseded snapshot and its deltas as a retained point (the "
                             f"storage keeps {len(r.manifest.history)} older snapshot(s); `prune` lets them go)"
                             if r.manifest else "")
            else:
                lines.append(f"  then delete: {self.as_dict()['documents_superseded']} superseded document(s), "
                             f"{size_text(self.superseded_bytes)}")
        if self.busy and self.lease:
            lines.append(f"  lease: held by {self.lease.describe()} until {when(self.lease.expires_at)}: a real "
                         "run would refuse (exit 3) unless --wait outlasts it")
        elif self.lease:
            lines.append(f"  lease: {'released' if self.lease.released else 'expired'} "
                         f"(last holder {self.lease.describe()}): a real run may take over")
        for note in r.ignored:
            lines.append(f"  ignored: {note}")
        lines.append("\n" + "restore plan:\n" + "\n".join("  " + line for line in str(r).splitlines()))
        return "\n".join(lines)


async def make_plan(backend: Backend, key: bytes | None, progress: Progress | None = None) -> CompactPlan:
    r = await plan(backend, as_cipher(key), progress=progress)
    return CompactPlan(restore=r, lease=r.manifest.lease if r.manifest else None, now=time.time())


@dataclass
class CompactResult:
    deltas_folded: int
    base_seq: int
    parts: int
    size: int
    seconds: float


async def compact(backend: Backend, key: bytes | None = None, *, wait: float = 0.0,
                  progress: Progress | None = None, config: ReplicaConfig | None = None) -> CompactResult:
    """Take the lease, restore, write the state as a snapshot at the last delta, release the lease.

    Raises StorageBusy (naming the holder) when a live writer keeps the lease past `wait` seconds.

    Retention: with no `config`, a storage that retains history (snapshot/retention.py) keeps every
    retained point and gains the one this compaction supersedes: compaction never lets history go,
    `prune` does. A storage without history is compacted as before (the superseded documents go).
    """
    t0 = time.monotonic()
    cfg = dataclasses.replace(config or ReplicaConfig(), encryption_key=key, takeover_wait=wait)
    replica = Replica(backend, cfg, writer_id=f"tgsnap-compact@{socket.gethostname()}:{os.getpid()}")
    restored = await replica.acquire(progress=progress)
    if config is None and replica.history:
        replica.config.keep_snapshots = len(replica.history) + 1
    try:
        folded = replica.status().deltas_since_snapshot
        image = restored.conn.serialize()
        restored.conn.close()
        receipt = await replica.write_snapshot(image, restored.seq, restored.captured_at or time.time(),
                                               progress=progress)
    finally:
        await replica.release()
    return CompactResult(deltas_folded=folded, base_seq=receipt.base_seq, parts=receipt.parts,
                         size=receipt.size, seconds=time.monotonic() - t0)
