"""What a restore will do, as a value (`RestorePlan`), and its text form (`--dry-run`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from snapshot.changes import ChangeSet
from snapshot.envelope import GENESIS
from snapshot.formatting import size_text, when
from snapshot.manifest import DeltaEntry, Lease, Manifest, SnapshotEntry


@dataclass
class RestorePlan:
    """What a restore will do, as data: print it for `--dry-run`, hand it to `execute` to do it."""

    manifest: Manifest | None
    snapshot: SnapshotEntry | None
    #: the whole verified chain after the snapshot, as far as storage holds it.
    chain: list[DeltaEntry]
    #: the deltas this restore applies (the chain cut at the target).
    deltas: list[DeltaEntry]
    target_seq: int | None = None
    target_time: float | None = None
    discovered: int = 0
    #: why documents in storage were passed over (duplicates, fenced writers, superseded).
    ignored: list[str] = field(default_factory=list)
    changes: dict[str, ChangeSet] = field(default_factory=dict, repr=False)
    #: discovered documents of a claim this storage's slots never made (a diverged copy's writer).
    forks: list[str] = field(default_factory=list)
    #: discovered documents of another storage id (or of a writer that knows none).
    foreign: list[str] = field(default_factory=list)
    #: the slots read: the newest first, then through `claimed_from` to the full manifest.
    slots: list[str] = field(default_factory=list)
    #: the lease of the newest slot: who holds the storage now (a claimer while it restores).
    holder: Lease | None = None

    @property
    def base_seq(self) -> int:
        return self.snapshot.base_seq if self.snapshot else 0

    @property
    def base_hash(self) -> bytes:
        return bytes.fromhex(self.snapshot.base_hash) if self.snapshot else GENESIS

    @property
    def seq(self) -> int:
        """The seq the restored state corresponds to."""
        return self.deltas[-1].seq if self.deltas else self.base_seq

    @property
    def tip(self) -> tuple[int, bytes, int]:
        """(seq, hash, epoch) of the last document of the whole chain: where a writer continues."""
        if self.chain:
            d = self.chain[-1]
            return d.seq, bytes.fromhex(d.hash), d.epoch
        return self.base_seq, self.base_hash, self.snapshot.epoch if self.snapshot else 0

    @property
    def captured_at(self) -> float | None:
        if self.deltas:
            return self.deltas[-1].captured_at
        return self.snapshot.captured_at if self.snapshot else None

    @property
    def snapshot_bytes(self) -> int:
        return self.snapshot.stored_size if self.snapshot else 0

    @property
    def total_bytes(self) -> int:
        return self.snapshot_bytes + sum(d.size for d in self.deltas)

    def __str__(self) -> str:
        lines = []
        m = self.manifest
        if m is None:
            lines.append("manifest: none (empty storage" + (", deltas found by discovery)" if self.chain else ")"))
        else:
            lease = m.lease
            holder = "none" if lease is None else (
                f"{lease.describe()}, {'released' if lease.released else 'expires ' + when(lease.expires_at)}")
            lines.append(f"manifest: generation {m.generation}, epoch {m.epoch}, written {when(m.created_at)}"
                         + (f", slot {self.slots[-1]}" if self.slots else ""))
            if m.claim_id:
                lines.append(f"  storage {m.storage_id}, claim {m.claim_id}")
            lines.append(f"  lease: {holder}")
            if len(self.slots) > 1 and self.holder is not None:
                h = self.holder
                lines.append(f"  newest slot {self.slots[0]}: a claim by {h.describe()} (restoring, or it "
                             "stopped before publishing)")
        target = "latest"
        if self.target_seq is not None:
            target = f"seq {self.target_seq}"
        elif self.target_time is not None:
            target = f"time {when(self.target_time)}"
        lines.append(f"target: {target} -> state after seq {self.seq} (captured {when(self.captured_at)})")
        s = self.snapshot
        if s is None:
            lines.append("snapshot: none (start from an empty database)")
        else:
            lines.append(f"snapshot: base seq {s.base_seq}, captured {when(s.captured_at)}, epoch {s.epoch}, "
                         f"image {size_text(s.image_size)} sha256 {s.image_sha256[:16]}…, "
                         f"{len(s.shards)} shard(s), {len(s.parts)} part(s), {size_text(s.stored_size)} to fetch")
            for sh in s.shards:
                for j, p in enumerate(sh.parts):
                    lines.append(f"  fetch part  {p.ref}  shard {sh.index} part {j}  {size_text(p.size)}")
        lines.append(f"deltas: {len(self.deltas)} to apply (seq {self.deltas[0].seq}..{self.deltas[-1].seq})"
                     if self.deltas else "deltas: none to apply")
        for d in self.deltas:
            lines.append(f"  apply delta {d.ref}  seq {d.seq} epoch {d.epoch}  {size_text(d.size)}  "
                         f"captured {when(d.captured_at)}")
        skipped = len(self.chain) - len(self.deltas)
        if skipped:
            lines.append(f"  (not applied: {skipped} later delta(s) up to seq {self.chain[-1].seq})")
        if self.discovered:
            lines.append(f"discovered beyond the manifest: {self.discovered} document(s)")
        for note in self.ignored:
            lines.append(f"ignored: {note}")
        for note in self.forks:
            lines.append(f"FORK: {note}")
        for note in self.foreign:
            lines.append(f"FOREIGN: {note}")
        lines.append(f"total to fetch: {size_text(self.total_bytes)}")
        return "\n".join(lines)
