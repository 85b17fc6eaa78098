"""The writer side of storage: ships deltas and snapshots through a Backend, keeps the hash chain, the
manifest and the writer lease. `core.Store` owns one Replica.

Nothing is acknowledged before it is findable: a delta is durable when `put` returned and, on backends
that cannot discover documents (Bot API), when a manifest listing it is published. A snapshot becomes
current only through the manifest switch after every part is stored (and read back). Before every
manifest publication the writer re-reads the manifest and stops with FencedError if a newer epoch owns
the storage. See docs/formats.md for the formats and the rules a reader applies.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import socket
import time
import uuid
from dataclasses import dataclass

from snapshot import image as image_mod
from snapshot import proc_identity
from snapshot.backend import Backend
from snapshot.changes import ChangeSet
from snapshot.cipher import Cipher
from snapshot.delta import encode_delta
from snapshot.envelope import GENESIS, Kind, document_hash, encode, overhead
from snapshot.errors import BackendError, ConfigError, FencedError, StorageBusy, TgsnapError
from snapshot.manifest import (
    DeltaEntry,
    Lease,
    Manifest,
    PartEntry,
    ShardEntry,
    SnapshotEntry,
    encode_manifest,
)
from snapshot.restored import Progress, Restored

__all__ = ["Progress", "ReplicaConfig", "DeltaReceipt", "SnapshotReceipt", "ReplicaStatus", "Restored", "Replica"]

#: deltas larger than this many rows are encoded in a worker thread so the event loop keeps serving.
_THREAD_ROWS = 2000


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
    lease_seconds: float = 60.0
    #: how long `acquire` waits for a live holder to release or expire before StorageBusy.
    takeover_wait: float = 0.0
    #: max parallel uploads/downloads of parts.
    parallelism: int = 4
    #: read every snapshot part back and compare hashes before switching the manifest to it.
    verify_snapshot: bool = True
    #: delete the documents a new snapshot supersedes (old parts, deltas up to its base).
    delete_superseded: bool = True
    #: with a key configured, accept plaintext documents on restore (migrating to encryption).
    allow_plaintext: bool = False
    #: seconds to wait after claiming an expired lease before checking the claim stuck (no backend
    #: offers compare-and-swap); None: min(1 s, lease_seconds / 10).
    claim_settle: float | None = None
    #: backends that cannot discover (Bot API): deltas ride inside the manifest while together they stay
    #: under this many stored bytes, so a delta costs one manifest edit; past it, the inline deltas and the
    #: new one go out as one pack document (one send + the edit). 0: every delta is its own document.
    inline_delta_bytes: int = 2 * 1024 * 1024

    def __repr__(self) -> str:  # the key stays out of logs
        fields = {k: v for k, v in self.__dict__.items() if k != "encryption_key"}
        enc = "set" if self.encryption_key else None
        return f"ReplicaConfig(encryption_key={enc}, " + ", ".join(f"{k}={v!r}" for k, v in fields.items()) + ")"


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


class Replica:
    def __init__(self, backend: Backend, config: ReplicaConfig | None = None, *, writer_id: str | None = None):
        self.backend = backend
        self.config = config = config or ReplicaConfig()
        self.cipher = Cipher(config.encryption_key) if config.encryption_key is not None else None
        info = backend.info
        if config.part_size > info.max_document_size:
            raise ConfigError(f"part_size {config.part_size} exceeds what backend {info.name} accepts "
                              f"({info.max_document_size} bytes)")
        if config.part_size < overhead(True) + 1024:
            raise ConfigError(f"part_size {config.part_size} is too small (minimum {overhead(True) + 1024})")
        if config.inline_delta_bytes < 0:
            raise ConfigError("inline_delta_bytes must be 0 (off) or positive")
        if config.shard_size <= 0 or config.parallelism < 1 or config.lease_seconds <= 0:
            raise ConfigError("shard_size, parallelism and lease_seconds must be positive")
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.writer_id = writer_id or f"{self.host}:{self.pid}:{uuid.uuid4().hex[:8]}"
        self._epoch = 0
        self._acquired = False
        self._released = False
        self._fenced: str | None = None
        self._last_seq = 0
        self._last_hash = GENESIS
        self._tip_ref: str | None = None
        self._last_durable_at: float | None = None
        self._snapshot: SnapshotEntry | None = None
        self._deltas: list[DeltaEntry] = []  # durable, after the current snapshot's base
        self._generation = 0
        self._manifest_hash = GENESIS
        self._lease_expires_at: float | None = None
        self._last_publish = float("-inf")  # monotonic
        self._bytes_shipped = 0
        self._age_origin = time.time()
        self._orphans: list[str] = []
        self._delta_lock = asyncio.Lock()
        self._manifest_lock = asyncio.Lock()
        self._snapshot_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"Replica({self.backend.info.name}, writer={self.writer_id}, epoch={self._epoch})"

    # -- small facts -----------------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def fenced(self) -> bool:
        return self._fenced is not None

    @property
    def _margin(self) -> float:
        # Stop acknowledging this long before the lease runs out, so a successor waiting for expiry never
        # overlaps with us even with a little clock skew.
        return min(5.0, self.config.lease_seconds / 5)

    def _check_live(self) -> None:
        if self._fenced is not None:
            raise FencedError(self._fenced)
        if self._released:
            raise FencedError(f"writer {self.writer_id} released the storage lease; it accepts no more writes")
        if not self._acquired:
            raise TgsnapError("the replica has not acquired the storage yet: call acquire() first")

    def _fence(self, reason: str) -> FencedError:
        self._fenced = reason
        return FencedError(reason)

    # -- manifest --------------------------------------------------------------------------------------

    def _lease(self, now: float, released: bool = False) -> Lease:
        return Lease(writer_id=self.writer_id, host=self.host, pid=self.pid, epoch=self._epoch,
                     expires_at=now if released else now + self.config.lease_seconds, released=released,
                     **proc_identity.identity())

    def _compose(self, now: float, *, snapshot: SnapshotEntry | None, extra: DeltaEntry | None,
                 released: bool, deltas: list[DeltaEntry] | None = None, last_ref: str | None = None) -> Manifest:
        base = snapshot.base_seq if snapshot else 0
        listed = self._deltas if deltas is None else deltas
        deltas = [d for d in listed if d.seq > base] + ([extra] if extra else [])
        last_ref = last_ref or (extra.ref if extra else self._tip_ref)
        m = Manifest(epoch=self._epoch, generation=self._generation, created_at=now,
                     lease=self._lease(now, released), snapshot=snapshot, deltas=deltas, last_ref=last_ref)
        m.format = 2 if m.needs_v2 else 1
        return m

    async def _check_fence(self, *, strict: bool = False) -> None:
        """FencedError if a newer epoch (or another writer at ours) holds the storage. `strict`: the
        manifest must be exactly our own claim (after publishing, to catch a concurrent claim)."""
        from snapshot.restore import read_current_manifest

        m, _h = await read_current_manifest(self.backend, self.cipher, self.config.allow_plaintext)
        if m is None:
            raise self._fence(f"the manifest vanished from storage {self.backend.info.name}: refusing to write")
        lease = m.lease
        lost = m.epoch > self._epoch or (lease is not None and lease.writer_id != self.writer_id
                                         and lease.epoch >= self._epoch)
        if strict:
            lost = lost or lease is None or lease.writer_id != self.writer_id or m.epoch != self._epoch
        if lost:
            holder = lease.describe() if lease else f"epoch {m.epoch}"
            raise self._fence(f"writer {self.writer_id} (epoch {self._epoch}) was fenced: storage now belongs "
                              f"to {holder}; this writer stops accepting writes")

    @property
    def _settle(self) -> float:
        # Longer than a publish round trip: a rival claim made from the same stale view lands by then.
        if self.config.claim_settle is not None:
            return self.config.claim_settle
        return min(1.0, self.config.lease_seconds / 10)

    async def _publish(self, *, snapshot: SnapshotEntry | None = None, extra: DeltaEntry | None = None,
                       released: bool = False, check: bool = True, deltas: list[DeltaEntry] | None = None,
                       last_ref: str | None = None) -> Manifest:
        """Publish our view (plus `extra` / a new `snapshot`; `deltas` replaces the delta list). Updates
        state only on success."""
        async with self._manifest_lock:
            interval = self.backend.info.manifest_min_interval
            wait = self._last_publish + interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if self._released:
                raise FencedError(f"writer {self.writer_id} released the storage lease; it publishes nothing more")
            if check:
                await self._check_fence()
            now = time.time()
            # A lease renewed after it ran out may race a successor that saw it expired: verify after.
            lapsed = (check and not released and self._lease_expires_at is not None
                      and now >= self._lease_expires_at - self._margin)
            self._generation += 1
            new_snap = snapshot if snapshot is not None else self._snapshot
            m = self._compose(now, snapshot=new_snap, extra=extra, released=released, deltas=deltas,
                              last_ref=last_ref)
            data = encode_manifest(m, cipher=self.cipher, prev=self._manifest_hash)
            await self.backend.publish_manifest(data)
            self._manifest_hash = document_hash(data)
            self._last_publish = time.monotonic()
            self._lease_expires_at = m.lease.expires_at if m.lease else None
            self._bytes_shipped += len(data)
            self._released = released
            if deltas is not None:
                self._deltas = [d for d in deltas if d.seq > (new_snap.base_seq if new_snap else 0)]
            if lapsed:
                await asyncio.sleep(self._settle)
                await self._check_fence(strict=True)
            if snapshot is not None:
                self._snapshot = snapshot
                self._deltas = [d for d in self._deltas if d.seq > snapshot.base_seq]
            orphans, self._orphans = self._orphans, []
        if orphans:
            # Parts of a switch whose publication failed: the manifest just published no longer lists them.
            await self._delete_quietly(orphans)
        return m

    async def _delete_quietly(self, refs: list[str]) -> None:
        if not refs or not self.config.delete_superseded:
            return
        try:
            await self.backend.delete(refs)
        except BackendError:
            pass  # best effort: superseded documents are never read again

    async def _sweep(self, snap: SnapshotEntry) -> None:
        """Delete what no reader will ever need again that the manifest never listed: duplicates of
        deltas up to the new base (lost acknowledgements) and parts of snapshots that never switched."""
        from snapshot.restore import garbage

        try:
            refs = await garbage(self.backend, snap)
        except BackendError:
            return
        await self._delete_quietly(refs)

    async def _ensure_lease(self, margin: float | None = None) -> None:
        if self._lease_expires_at is None:
            return
        left = self._lease_expires_at - time.time()
        if left < (self.config.lease_seconds / 2 if margin is None else margin):
            await self._publish()

    # -- the contract ----------------------------------------------------------------------------------

    async def acquire(self, progress: Progress | None = None) -> Restored:
        """Take the writer lease (waiting up to `takeover_wait` for a live holder; then StorageBusy naming
        it), bump the epoch, restore the latest state, publish the manifest with our lease."""
        from snapshot.restore import execute, plan, read_current_manifest, when

        if self._acquired:
            raise TgsnapError("this replica already holds the storage")
        t0 = time.monotonic()
        deadline = t0 + self.config.takeover_wait
        while True:
            m, mhash = await read_current_manifest(self.backend, self.cipher, self.config.allow_plaintext)
            lease = m.lease if m else None
            now = time.time()
            if lease is None or lease.writer_id == self.writer_id or not lease.live(now):
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StorageBusy(
                    f"storage {self.backend.info.name} is held by writer {lease.describe()} until "
                    f"{when(lease.expires_at)}; stop that writer (it releases the lease on a clean shutdown), "
                    f"wait for the lease to expire, or raise takeover_wait")
            await asyncio.sleep(max(0.01, min(remaining, lease.expires_at - now, 0.25)))

        self._epoch = max(m.epoch, lease.epoch if lease else 0) + 1 if m else 1
        self._generation = m.generation if m else 0
        self._manifest_hash = mhash
        self._snapshot = m.snapshot if m else None
        self._deltas = list(m.deltas) if m else []
        self._tip_ref = m.last_ref if m else None
        # Claim first, restore second: from here on an old writer's next manifest check finds our epoch.
        await self._publish(check=False)
        if lease is not None and not lease.released and lease.writer_id != self.writer_id:
            await asyncio.sleep(self._settle)  # taking over an expired lease: let a rival claim land
        try:
            await self._check_fence(strict=True)
        except FencedError as e:
            self._fenced = None
            raise StorageBusy(f"lost the takeover race: {e}") from None

        try:
            p = await plan(self.backend, self.cipher, progress=progress,
                           parallelism=self.config.parallelism * 2, allow_plaintext=self.config.allow_plaintext)
            restored = await execute(p, self.backend, self.cipher, progress=progress,
                                     parallelism=self.config.parallelism * 2,
                                     allow_plaintext=self.config.allow_plaintext)
        except BaseException:
            # We cannot serve: hand the lease back so a fixed retry need not wait for it to expire.
            try:
                await self._publish(released=True)
            except Exception:
                pass
            self._released = False
            raise
        self._snapshot = p.snapshot
        self._deltas = list(p.chain)
        self._last_seq, self._last_hash, _e = p.tip
        if p.chain:
            self._tip_ref = p.chain[-1].ref
        self._last_durable_at = p.chain[-1].captured_at if p.chain else (
            p.snapshot.captured_at if p.snapshot else None)
        self._age_origin = (p.snapshot.captured_at if p.snapshot else
                            p.chain[0].captured_at if p.chain else time.time())
        self._acquired = True
        if [d.ref for d in p.chain] != [d.ref for d in (m.deltas if m else [])]:
            try:
                await self._publish()  # list what discovery found, so the next reader needs less of it
            except BackendError:
                pass  # an optimisation only: discovery finds them again
        restored.epoch = self._epoch
        restored.elapsed = time.monotonic() - t0
        return restored

    async def write_delta(self, changes: ChangeSet) -> DeltaReceipt:
        """Store `changes` as the next delta. On BackendError nothing advanced: the caller keeps the rows
        dirty and tries again later (the retry reuses the same seq). FencedError if a newer writer took over."""
        self._check_live()
        async with self._delta_lock:
            self._check_live()
            await self._ensure_lease()
            seq = self._last_seq + 1
            kw = dict(epoch=self._epoch, seq=seq, prev=self._last_hash, cipher=self.cipher,
                      level=self.config.zstd_level)
            if len(changes) > _THREAD_ROWS:
                data = await asyncio.to_thread(encode_delta, changes, **kw)
            else:
                data = encode_delta(changes, **kw)
            from snapshot.restore import delta_name

            limit = self.backend.info.max_document_size
            if len(data) > limit:
                raise BackendError(f"delta seq {seq} is {len(data)} bytes compressed, over backend "
                                   f"{self.backend.info.name}'s document limit of {limit}: take a snapshot "
                                   "instead of shipping this many changed rows", retryable=False)
            entry = DeltaEntry(seq=seq, ref="", size=len(data), hash=document_hash(data).hex(),
                               epoch=self._epoch, captured_at=float(changes.captured_at))
            if not self.backend.info.can_discover:
                # Findable only through the manifest: the delta is durable once a manifest lists it.
                entry = await self._publish_listed(entry, data)
            else:
                entry.ref = ref = await self.backend.put(delta_name(seq), data)
                self._bytes_shipped += len(data)
                await self._ensure_lease(margin=self._margin)
                self._deltas.append(entry)
                self._tip_ref = ref
            self._last_seq, self._last_hash = seq, bytes.fromhex(entry.hash)
            self._last_durable_at = time.time()
            return DeltaReceipt(seq=seq, ref=entry.ref, size=len(data))

    async def _publish_listed(self, entry: DeltaEntry, data: bytes) -> DeltaEntry:
        """Make a delta durable on a backend that cannot discover: inside the manifest while the inline
        deltas stay small (one edit), else packed with them into one document (one send + one edit)."""
        from snapshot.restore import inline_ref, pack_name

        inline = [d for d in self._deltas if d.inline is not None]
        # base64 in the manifest's JSON grows them by a third: the manifest must stay one document
        bound = min(self.config.inline_delta_bytes, self.backend.info.max_document_size // 2)
        if sum(d.size for d in inline) + len(data) <= bound:
            entry.ref, entry.inline = inline_ref(entry.seq), base64.b64encode(data).decode("ascii")
            await self._publish(deltas=[*self._deltas, entry])
            self._bytes_shipped += len(data)
            return entry
        docs = [(d, d.inline_bytes()) for d in inline] + [(entry, data)]
        limit = self.backend.info.max_document_size
        packed: list[DeltaEntry] = []
        while docs:
            group, size = [], 0
            while docs and (not group or size + len(docs[0][1]) <= limit):
                group.append(docs.pop(0))
                size += len(group[-1][1])
            blob = b"".join(b for _e, b in group)
            ref = await self.backend.put(pack_name(group[0][0].seq, group[-1][0].seq), blob)
            self._bytes_shipped += len(blob)
            offset = 0
            for e, b in group:
                packed.append(dataclasses.replace(e, ref=f"{ref}@{offset}", inline=None, pack=ref, offset=offset))
                offset += len(b)
        # The pack is findable only once this manifest is out; until then the inline copies stay listed.
        kept = [d for d in self._deltas if d.inline is None]
        await self._publish(deltas=sorted(kept + packed, key=lambda d: d.seq), last_ref=packed[-1].pack)
        self._tip_ref = packed[-1].pack
        return packed[-1]

    def _hash_of(self, seq: int) -> bytes:
        if seq == 0:
            return GENESIS
        for d in self._deltas:
            if d.seq == seq:
                return bytes.fromhex(d.hash)
        if self._snapshot is not None and self._snapshot.base_seq == seq:
            return bytes.fromhex(self._snapshot.base_hash)
        if seq > self._last_seq:
            raise ValueError(f"snapshot base seq {seq} is not durable yet (last durable delta is "
                             f"{self._last_seq})")
        raise ValueError(f"snapshot base seq {seq} is older than the current snapshot "
                         f"(base {self._snapshot.base_seq if self._snapshot else 0})")

    async def write_snapshot(self, image: bytes, base_seq: int, captured_at: float,
                             progress: Progress | None = None) -> SnapshotReceipt:
        """Store a full snapshot (a SQLite image equal to the state after delta `base_seq`), then switch
        the manifest to it atomically and delete what it supersedes."""
        self._check_live()
        async with self._snapshot_lock:
            self._check_live()
            cfg = self.config
            base_hash = self._hash_of(base_seq)
            built = await asyncio.to_thread(image_mod.build, image, shard_size=cfg.shard_size,
                                            level=cfg.zstd_level, parallelism=cfg.parallelism)
            if progress:
                progress("compress", len(built.shards), len(built.shards))
            body_max = cfg.part_size - overhead(self.cipher is not None)
            jobs = [(sh, j, piece) for sh in built.shards for j, piece in enumerate(sh.cut(body_max))]
            from snapshot.restore import gather_limited, part_name

            stored: list[str] = []
            done = 0

            async def upload(sh: image_mod.Shard, j: int, piece: memoryview) -> PartEntry:
                nonlocal done
                data = await asyncio.to_thread(encode, Kind.SNAPSHOT_PART, piece, epoch=self._epoch,
                                               seq=base_seq, prev=built.image_sha256, cipher=self.cipher,
                                               compress=False)
                sha = await asyncio.to_thread(document_hash, data)
                ref = await self.backend.put(part_name(base_seq, sh.index, j), data)
                stored.append(ref)
                self._bytes_shipped += len(data)
                if cfg.verify_snapshot:
                    back = await self.backend.get(ref)
                    if back != data:
                        raise BackendError(f"snapshot part {ref!r} reads back different bytes than were stored")
                done += 1
                if progress:
                    progress("upload", done, len(jobs))
                return PartEntry(ref=ref, size=len(data), sha256=sha.hex())

            try:
                entries = await gather_limited([lambda a=a: upload(*a) for a in jobs], cfg.parallelism)
            except BaseException:
                # The manifest never saw these parts: remove them (best effort) and keep the old snapshot.
                await self._delete_quietly(stored)
                raise
            shards, k = [], 0
            for sh in built.shards:
                n = len(sh.cut(body_max))
                shards.append(ShardEntry(index=sh.index, raw_size=sh.raw_size, sha256=sh.sha256.hex(),
                                         compressed_size=len(sh.compressed), parts=entries[k:k + n]))
                k += n
            snap = SnapshotEntry(base_seq=base_seq, base_hash=base_hash.hex(), captured_at=float(captured_at),
                                 epoch=self._epoch, image_size=built.image_size,
                                 image_sha256=built.image_sha256.hex(), shards=shards)
            old = self._snapshot
            before = list(self._deltas)
            try:
                await self._publish(snapshot=snap)
            except BackendError:
                # The publication may have taken effect: the parts can only go once a later manifest is out.
                self._orphans.extend(stored)
                raise
            # A pack goes only when none of its deltas is still listed; inline deltas went with the edit.
            keep = {d.document for d in self._deltas}
            superseded = list(dict.fromkeys(d.document for d in before if d.seq <= base_seq
                                            and d.document is not None and d.document not in keep))
            if old is not None:
                superseded += [p.ref for p in old.parts]
            await self._delete_quietly(superseded)
            if self.backend.info.can_discover and cfg.delete_superseded:
                await self._sweep(snap)
            self._age_origin = float(captured_at)
            self._last_durable_at = time.time()
            return SnapshotReceipt(base_seq=base_seq, parts=len(entries), size=snap.stored_size)

    def snapshot_due(self) -> bool:
        if not self._acquired or self._fenced or self._released or self._snapshot_lock.locked():
            return False
        cfg = self.config
        n = len(self._deltas)
        if n >= cfg.snapshot_every_deltas or sum(d.size for d in self._deltas) >= cfg.snapshot_every_bytes:
            return True
        return n > 0 and time.time() - self._age_origin >= cfg.snapshot_max_age

    def status(self) -> ReplicaStatus:
        s = self._snapshot
        return ReplicaStatus(
            epoch=self._epoch, last_seq=self._last_seq, last_durable_at=self._last_durable_at,
            bytes_shipped=self._bytes_shipped, deltas_since_snapshot=len(self._deltas),
            bytes_since_snapshot=sum(d.size for d in self._deltas),
            snapshot_seq=s.base_seq if s else None, snapshot_at=s.captured_at if s else None,
            snapshot_size=s.stored_size if s else None, backend=self.backend.info.name,
            lease_expires_at=self._lease_expires_at)

    async def renew(self) -> None:
        """Extend the lease (republish the manifest) if it is due; FencedError if we lost it."""
        self._check_live()
        await self._ensure_lease()

    async def release(self) -> None:
        """Publish the manifest with the lease released, so a successor can take over at once."""
        if not self._acquired or self._released or self._fenced:
            return
        async with self._delta_lock:
            await self._publish(released=True)
