"""The writer side of storage: ships deltas and snapshots through a Backend, keeps the hash chain, the
manifest and the claim. `core.Store` owns one Replica.

Single writer without compare-and-swap (docs/formats.md, "Claim protocol"): `acquire` creates a new
manifest slot, newer than every other, holding a *claim*; checks that it is still the newest; only then
reads its predecessor (through the slot the claim names), restores, and publishes its full manifest in
its own slot. From then on every acknowledgement is **store, then check**: a delta `put`, a manifest
replacement (inline delta, snapshot switch, renewal, release) counts only after a check made after the
store found our slot still the newest. A newcomer's claim is ordered by the backend against our stores:
a store before its claim is read by the newcomer's restore; a store after it is never acknowledged by
us (the check sees the newer slot) and never applied by readers (its claim id is not the newcomer's).
A failed check fences for good (FencedError naming the rival), and a fenced writer deletes nothing.
Nothing in this rests on clocks; the lease only tells a polite newcomer to wait.

Nothing is acknowledged before it is findable: on backends that cannot discover documents (Bot API), a
delta is durable once a manifest listing it is stored and checked. A snapshot becomes current only
through the manifest switch after every part is stored (and read back).
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
from functools import partial
from typing import Any

from snapshot import image as image_mod
from snapshot import proc_identity, retention
from snapshot.backend import Backend, SlotRace
from snapshot.changes import ChangeSet
from snapshot.cipher import Cipher
from snapshot.delta import encode_body
from snapshot.envelope import GENESIS, Kind, document_hash, encode, overhead
from snapshot.errors import (
    BackendError,
    ConfigError,
    DocumentNotFound,
    FencedError,
    OversizeRow,
    StorageBusy,
    TgsnapError,
)
from snapshot.manifest import (
    IDS_FORMAT,
    STATE_CLAIM,
    STATE_FULL,
    DeltaEntry,
    HistoryPoint,
    Lease,
    Manifest,
    PartEntry,
    ShardEntry,
    SnapshotEntry,
    decode_manifest,
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
    #: no longer used: claims are arbitrated by the backend's slot order, not by waiting (kept so
    #: existing configurations still load).
    claim_settle: float | None = None
    #: backends that cannot discover (Bot API): deltas ride inside the manifest while together they stay
    #: under this many stored bytes, so a delta costs one manifest edit; past it, the inline deltas and the
    #: new one go out as one pack document (one send + the edit). 0: every delta is its own document.
    inline_delta_bytes: int = 2 * 1024 * 1024
    #: retention (snapshot/retention.py): at a snapshot switch keep this many older snapshots, with the
    #: deltas between them, listed in the manifest's `history`, so restore and export reach back past the
    #: current snapshot. 0 (default): keep nothing older, the storage holds only what the latest state
    #: needs (retained history grows the storage, and on Telegram what ages past 48 h can never be
    #: deleted again).
    keep_snapshots: int = 0
    #: retention: also keep every older snapshot needed to reach any moment of the last this many seconds.
    keep_for: float = 0.0

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


def _split_cut(changes: ChangeSet, fits, limit: int) -> list[ChangeSet]:
    """`changes` cut into change sets that each `fits`, rows kept in order, halving until they do. The
    first piece keeps everything but rows (tables without rows, and any other field of the change set);
    the others carry rows only."""
    items = [(name, kind, row) for name, t in changes.tables.items()
             for kind, rows in (("d", t.deletes), ("u", t.upserts)) for row in rows]

    def build(part: list, head: bool) -> ChangeSet:
        tables = {}
        for name, t in changes.tables.items():
            ups = [r for n, k, r in part if n == name and k == "u"]
            dels = [r for n, k, r in part if n == name and k == "d"]
            if ups or dels or (head and not len(t)):
                tables[name] = dataclasses.replace(t, upserts=ups, deletes=dels)
        if head:
            return dataclasses.replace(changes, tables=tables)
        rest = {}
        for f in dataclasses.fields(changes):
            if f.name in ("captured_at", "tables", "user_version"):
                continue  # every piece is at the same cut, so it carries the cut's user_version too
            if f.default is not dataclasses.MISSING:
                rest[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                rest[f.name] = f.default_factory()
        return dataclasses.replace(changes, tables=tables, **rest)

    out: list[ChangeSet] = []

    def split(lo: int, hi: int) -> None:
        cs = build(items[lo:hi], head=not out)
        if fits(cs):
            out.append(cs)
            return
        if hi - lo <= 1:
            table = items[lo][0] if hi > lo else None
            what = f"a row of table {table!r}" if table is not None else "the change set's schema part"
            raise OversizeRow(f"{what} alone is over the backend's document limit of {limit} bytes once "
                              "encoded: it cannot be shipped as a delta (take a snapshot)", table=table, limit=limit)
        mid = (lo + hi) // 2
        split(lo, mid)
        split(mid, hi)

    split(0, len(items))
    return out


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
        retention.check_policy(config.keep_snapshots, config.keep_for)
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
        self._chain_sum: tuple[list[DeltaEntry] | None, int, int] = (None, 0, 0)  # see _chain_bytes
        self._history: list[HistoryPoint] = []  # retained older points, oldest first
        self._generation = 0
        self._manifest_hash = GENESIS
        self._lease_expires_at: float | None = None
        self._last_publish = float("-inf")  # monotonic
        self._bytes_shipped = 0
        self._age_origin = time.time()
        self._orphans: list[str] = []
        #: our manifest slot (None before the claim), storage id and claim id (16 bytes each).
        self._slot: str | None = None
        self._claimed_from: str | None = None
        self._storage = bytes(16)
        self._claim = bytes(16)
        self._fence_fields: dict = {}
        #: PRAGMA user_version of the state, written into every manifest (core sets it).
        self.schema_version: int | None = None
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
    def claim_id(self) -> bytes:
        """This writer's claim id (zeros before `acquire`)."""
        return self._claim

    @property
    def storage_id(self) -> bytes:
        return self._storage

    @property
    def history(self) -> list[HistoryPoint]:
        """The retained older points listed in our manifest, oldest first (a copy)."""
        return list(self._history)

    @property
    def slot(self) -> str | None:
        """The ref of this writer's manifest slot."""
        return self._slot

    def _check_live(self) -> None:
        if self._fenced is not None:
            raise FencedError(self._fenced, **self._fence_fields)
        if self._released:
            raise FencedError(f"writer {self.writer_id} released the storage lease; it accepts no more writes",
                              claim=self._claim.hex())
        if not self._acquired:
            raise TgsnapError("the replica has not acquired the storage yet: call acquire() first")

    def _fence(self, reason: str, **fields) -> FencedError:
        self._fenced = reason
        self._fence_fields = {"claim": self._claim.hex(), **fields}
        return FencedError(reason, **self._fence_fields)

    # -- manifest --------------------------------------------------------------------------------------

    def _lease(self, now: float, released: bool = False) -> Lease:
        return Lease(writer_id=self.writer_id, host=self.host, pid=self.pid, epoch=self._epoch,
                     expires_at=now if released else now + self.config.lease_seconds, released=released,
                     **proc_identity.identity())

    def _compose(self, now: float, *, snapshot: SnapshotEntry | None, extra: DeltaEntry | None,
                 released: bool, deltas: list[DeltaEntry] | None = None, last_ref: str | None = None,
                 state: str = STATE_FULL, history: list[HistoryPoint] | None = None) -> Manifest:
        base = snapshot.base_seq if snapshot else 0
        listed = self._deltas if deltas is None else deltas
        deltas = [d for d in listed if d.seq > base] + ([extra] if extra else [])
        last_ref = last_ref or (extra.ref if extra else self._tip_ref)
        history = list(self._history if history is None else history)
        if state == STATE_CLAIM:
            snapshot, deltas, last_ref, history = None, [], None, []
        return Manifest(epoch=self._epoch, generation=self._generation, created_at=now,
                        lease=self._lease(now, released), snapshot=snapshot, deltas=deltas, last_ref=last_ref,
                        format=IDS_FORMAT, storage_id=self._storage.hex(), claim_id=self._claim.hex(),
                        state=state, claimed_from=self._claimed_from, schema_version=self.schema_version,
                        history=history)

    async def _rival(self, ref: str | None) -> dict[str, Any]:
        """What a newer slot says about its claimer (best effort: the fence stands either way)."""
        if ref is None:
            return {}
        try:
            # the newest slot through the cheap read (Bot API: getChat; no edit of the rival's message)
            slot = await self.backend.newest_slot()
            raw = slot.data if slot is not None and slot.ref == ref else await self.backend.read_slot(ref)
            m, _h = decode_manifest(raw, cipher=self.cipher, allow_plaintext=self.config.allow_plaintext,
                                    ref=f"manifest slot {ref}")
        except (TgsnapError, ValueError):
            return {}
        out: dict[str, Any] = {"rival_claim": m.claim_id, "rival_epoch": m.epoch}
        if m.lease is not None:
            out["rival_writer"] = m.lease.writer_id
            out["_lease"] = m.lease
        return out

    async def _check_newest(self, *, stored: str | None = None) -> None:
        """The check of "store, then check": FencedError (for good) unless our slot is still the newest,
        as read after the store that just returned."""
        try:
            assert self._slot is not None, "checked only after the claim made the slot"
            newer = await self.backend.newer_slot(self._slot, stored=stored)
        except DocumentNotFound:
            raise self._fence(f"writer {self.writer_id} (epoch {self._epoch}) was fenced: its manifest slot "
                              f"{self._slot} vanished from storage {self.backend.info.name}; this writer stops "
                              "accepting writes") from None
        if newer is None:
            return
        rival = await self._rival(newer)
        lease = rival.pop("_lease", None)
        holder = lease.describe() if lease is not None else f"the claim in slot {newer}"
        raise self._fence(f"writer {self.writer_id} (epoch {self._epoch}, claim {self._claim.hex()}) was fenced: "
                          f"storage {self.backend.info.name} now belongs to {holder} (slot {newer}, claim "
                          f"{rival.get('rival_claim') or '?'}); this writer stops accepting writes and "
                          "deletes nothing", **rival)

    async def _publish(self, *, snapshot: SnapshotEntry | None = None, extra: DeltaEntry | None = None,
                       released: bool = False, deltas: list[DeltaEntry] | None = None,
                       last_ref: str | None = None, history: list[HistoryPoint] | None = None) -> Manifest:
        """Store our view in our slot (plus `extra` / a new `snapshot`; `deltas` replaces the delta list),
        then check our slot is still the newest. Updates state only once stored; FencedError if the
        check fails (then nothing of it counts)."""
        async with self._manifest_lock:
            interval = self.backend.info.manifest_min_interval
            wait = self._last_publish + interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if self._released:
                raise FencedError(f"writer {self.writer_id} released the storage lease; it publishes nothing more",
                                  claim=self._claim.hex())
            if self._fenced is not None:
                raise FencedError(self._fenced, **self._fence_fields)
            now = time.time()
            self._generation += 1
            new_snap = snapshot if snapshot is not None else self._snapshot
            m = self._compose(now, snapshot=new_snap, extra=extra, released=released, deltas=deltas,
                              last_ref=last_ref, history=history)
            data = encode_manifest(m, cipher=self.cipher, prev=self._manifest_hash)
            try:
                assert self._slot is not None, "published only after the claim made the slot"
                await self.backend.replace_slot(self._slot, data)
            except DocumentNotFound:
                raise self._fence(f"writer {self.writer_id} (epoch {self._epoch}) was fenced: its manifest slot "
                                  f"{self._slot} vanished from storage {self.backend.info.name}") from None
            self._manifest_hash = document_hash(data)
            self._last_publish = time.monotonic()
            self._bytes_shipped += len(data)
            await self._check_newest()
            self._lease_expires_at = m.lease.expires_at if m.lease else None
            self._released = released
            if deltas is not None:
                self._deltas = [d for d in deltas if d.seq > (new_snap.base_seq if new_snap else 0)]
            if snapshot is not None:
                self._snapshot = snapshot
                self._deltas = [d for d in self._deltas if d.seq > snapshot.base_seq]
            if history is not None:
                self._history = list(history)
            orphans, self._orphans = self._orphans, []
        if orphans:
            # Parts of a switch whose publication failed: the manifest just published no longer lists them.
            await self._delete_quietly(orphans)
        return m

    async def _delete_quietly(self, refs: list[str]) -> None:
        if not refs or not self.config.delete_superseded or self._fenced is not None:
            return
        try:
            # A fenced writer deletes nothing: check again right before (a successor may read these).
            await self._check_newest()
        except (FencedError, BackendError):
            return
        try:
            await self.backend.delete(refs)
        except BackendError:
            pass  # best effort: superseded documents are never read again

    async def _sweep(self, snap: SnapshotEntry) -> None:
        """Delete what no reader will ever need again that the manifest never listed: duplicates of
        deltas up to the new base (lost acknowledgements) and parts of snapshots that never switched."""
        from snapshot.retention import garbage

        try:
            refs = await garbage(self.backend, snap, self._claim,
                                 keep=retention.needed(snap, self._deltas, self._history))
        except BackendError:
            return
        await self._delete_quietly(refs)

    async def _ensure_lease(self, margin: float | None = None) -> None:
        if self._lease_expires_at is None:
            return
        left = self._lease_expires_at - time.time()
        if left < (self.config.lease_seconds / 2 if margin is None else margin):
            await self._publish()

    @property
    def _margin(self) -> float:
        # Renew this long before the lease runs out, so a polite newcomer keeps waiting.
        return min(5.0, self.config.lease_seconds / 5)

    # -- the contract ----------------------------------------------------------------------------------

    def _busy(self, message: str, lease: Lease | None) -> StorageBusy:
        if lease is None:
            return StorageBusy(message)
        return StorageBusy(message, writer_id=lease.writer_id, host=lease.host, pid=lease.pid,
                           expires_at=lease.expires_at, epoch=lease.epoch)

    async def _lost_race(self, what: str, newer: str | None) -> StorageBusy:
        rival = await self._rival(newer)
        lease = rival.get("_lease")
        holder = lease.describe() if lease is not None else f"the claim in slot {newer}"
        return self._busy(f"lost the claim race for storage {self.backend.info.name} ({what}): it now belongs "
                          f"to {holder}", lease)

    async def acquire(self, progress: Progress | None = None) -> Restored:
        """Claim the storage (waiting up to `takeover_wait` for a live holder; then StorageBusy naming
        it), restore everything acknowledged before the claim, publish our full manifest, and check.

        StorageBusy: a live lease, or another newcomer's claim won. MissingManifest: documents but no
        manifest. FencedError never (a claim lost while restoring is StorageBusy: we never served)."""
        from snapshot.formatting import when
        from snapshot.restore import execute, plan, read_head, refuse_orphaned_documents

        if self._acquired:
            raise TgsnapError("this replica already holds the storage")
        t0 = time.monotonic()
        deadline = t0 + self.config.takeover_wait
        while True:
            slot = await self.backend.newest_slot()
            m, mhash = (None, GENESIS)
            if slot is None:
                await refuse_orphaned_documents(self.backend)
            else:
                m, mhash = decode_manifest(slot.data, cipher=self.cipher, allow_plaintext=self.config.allow_plaintext,
                                           ref=f"manifest slot {slot.ref}")
            lease = m.lease if m else None
            now = time.time()
            if lease is None or lease.writer_id == self.writer_id or not lease.live(now):
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._busy(
                    f"storage {self.backend.info.name} is held by writer {lease.describe()} until "
                    f"{when(lease.expires_at)}; stop that writer (it releases the lease on a clean shutdown), "
                    f"wait for the lease to expire, or give this writer a longer ReplicaConfig.takeover_wait", lease)
            await asyncio.sleep(max(0.01, min(remaining, lease.expires_at - now, 0.25)))

        self._epoch = max(m.epoch, lease.epoch if lease else 0) + 1 if m else 1
        self._generation = m.generation if m else 0
        self._manifest_hash = mhash
        self._claim = os.urandom(16)
        self._storage = (m.storage if m is not None else None) or os.urandom(16)
        self._claimed_from = slot.ref if slot is not None else None
        self.schema_version = m.schema_version if m is not None else None
        # 1. the claim: a new slot, newer than every other
        self._generation += 1
        now = time.time()
        claim = self._compose(now, snapshot=None, extra=None, released=False, state=STATE_CLAIM)
        data = encode_manifest(claim, cipher=self.cipher, prev=mhash)
        try:
            self._slot = await self.backend.create_slot(data, after=self._claimed_from)
        except SlotRace as e:
            raise await self._lost_race("another newcomer claimed first", e.newer) from None
        except BackendError:
            # A lost answer: the slot may exist. Ours if the newest slot holds our claim id.
            self._slot = await self._find_own_claim()
            if self._slot is None:
                raise
        self._manifest_hash = document_hash(data)
        self._lease_expires_at = claim.lease.expires_at if claim.lease else None
        self._last_publish = time.monotonic()
        self._bytes_shipped += len(data)
        # 2. check it is the newest: else another claim was made after ours and won
        newer = await self.backend.newer_slot(self._slot)
        if newer is not None:
            raise await self._lost_race("a newer claim followed ours", newer)
        # 3. only now read the predecessor: everything acknowledged before our claim is in it (or found
        # after it by discovery with its claim id); nothing acknowledged after it can exist.
        try:
            head = await read_head(self.backend, self.cipher, self.config.allow_plaintext, start=self._slot)
            p = await plan(self.backend, self.cipher, progress=progress, parallelism=self.config.parallelism * 2,
                           allow_plaintext=self.config.allow_plaintext, head=head)
            restored = await execute(p, self.backend, self.cipher, progress=progress,
                                     parallelism=self.config.parallelism * 2,
                                     allow_plaintext=self.config.allow_plaintext)
        except BaseException:
            # We cannot serve: hand the claim's lease back so a fixed retry need not wait for it to expire.
            try:
                self._generation += 1
                back = self._compose(time.time(), snapshot=None, extra=None, released=True, state=STATE_CLAIM)
                await self.backend.replace_slot(self._slot, encode_manifest(back, cipher=self.cipher,
                                                                            prev=self._manifest_hash))
            except Exception:
                pass
            raise
        full = p.manifest
        if full is not None and full.schema_version is not None:
            self.schema_version = full.schema_version
        self._snapshot = p.snapshot
        self._deltas = list(p.chain)
        self._history = list(full.history) if full is not None else []
        self._last_seq, self._last_hash, _e = p.tip
        self._tip_ref = full.last_ref if full else None
        docs = [d.document for d in p.chain if d.document is not None]
        if docs:
            self._tip_ref = max([*docs, *([self._tip_ref] if self._tip_ref else [])],
                                key=self._order_or_zero)
        self._last_durable_at = p.chain[-1].captured_at if p.chain else (
            p.snapshot.captured_at if p.snapshot else None)
        self._age_origin = (p.snapshot.captured_at if p.snapshot else
                            p.chain[0].captured_at if p.chain else time.time())
        # 4. publish the full manifest in our slot, then check: only then serve
        self._acquired = True
        try:
            await self._publish()
        except FencedError as e:
            self._acquired = False
            restored.conn.close()
            raise self._busy(f"lost storage {self.backend.info.name} to a newer claim while restoring: {e}",
                             None) from None
        except BaseException:
            self._acquired = False
            raise
        restored.epoch = self._epoch
        restored.elapsed = time.monotonic() - t0
        return restored

    def _order_or_zero(self, ref: str) -> tuple:
        try:
            return self.backend.order_key(ref)
        except ValueError:
            return ()

    async def _find_own_claim(self) -> str | None:
        try:
            slot = await self.backend.newest_slot()
        except BackendError:
            return None
        if slot is None:
            return None
        try:
            m, _h = decode_manifest(slot.data, cipher=self.cipher, allow_plaintext=self.config.allow_plaintext)
        except TgsnapError:
            return None
        return slot.ref if m.claim == self._claim else None

    async def write_delta(self, changes: ChangeSet) -> DeltaReceipt:
        """Store `changes` as the next delta. On BackendError nothing advanced: the caller keeps the rows
        dirty and tries again later (the retry reuses the same seq). FencedError if a newer writer took over."""
        self._check_live()
        async with self._delta_lock:
            self._check_live()
            await self._ensure_lease()
            # a cut split over several documents that failed half-way left entries past the last durable seq
            while self._deltas and self._deltas[-1].seq > self._last_seq:  # in seq order: only the tail
                self._deltas.pop()
                self._chain_sum = (None, 0, 0)
            first = self._last_seq + 1
            kw = dict(epoch=self._epoch, cipher=self.cipher, level=self.config.zstd_level,
                      storage_id=self._storage, claim_id=self._claim)
            limit = self.backend.info.max_document_size
            if len(changes) > _THREAD_ROWS:
                docs = await asyncio.to_thread(self._encode_cut, changes, first, self._last_hash, limit, kw)
            else:
                docs = self._encode_cut(changes, first, self._last_hash, limit, kw)
            from snapshot.naming import delta_name

            entries: list[DeltaEntry] = []
            for i, data in enumerate(docs):
                entry = DeltaEntry(seq=first + i, ref="", size=len(data), hash=document_hash(data).hex(),
                                   epoch=self._epoch, captured_at=float(changes.captured_at))
                if not self.backend.info.can_discover:
                    # Findable only through the manifest: durable once a manifest listing it is stored and
                    # checked (for a split cut: the last piece's; readers never apply a cut without it).
                    entry = await self._publish_listed(entry, data)
                else:
                    entry.ref = await self.backend.put(delta_name(entry.seq), data)
                    self._bytes_shipped += len(data)
                entries.append(entry)
            last = entries[-1]
            if self.backend.info.can_discover:
                await self._check_newest(stored=last.ref)  # store, then check: only then acknowledged
                await self._ensure_lease(margin=self._margin)
                self._deltas.extend(entries)
                self._tip_ref = last.ref
            self._last_seq, self._last_hash = last.seq, bytes.fromhex(last.hash)
            self._last_durable_at = time.time()
            return DeltaReceipt(seq=last.seq, ref=last.ref, size=sum(e.size for e in entries))

    @classmethod
    def _encode_cut(cls, changes: ChangeSet, first: int, prev: bytes, limit: int, kw: dict) -> list[bytes]:
        """The delta documents of one cut: one, or (a change set over the backend's document limit)
        several consecutive seqs, all but the last flagged `continued`, so a cut never stalls on the
        limit. A single row over the limit cannot be split: BackendError(retryable=False)."""
        data = cls._encode_delta(changes, {**kw, "seq": first, "prev": prev})
        if len(data) <= limit:
            return [data]
        pieces = _split_cut(changes, lambda cs: len(cls._encode_delta(cs, {**kw, "seq": first, "prev": prev}))
                            <= limit, limit)
        docs = []
        for i, piece in enumerate(pieces):
            doc = cls._encode_delta(piece, {**kw, "seq": first + i, "prev": prev,
                                            "continued": i < len(pieces) - 1})
            docs.append(doc)
            prev = document_hash(doc)
        return docs

    @staticmethod
    def _encode_delta(changes: ChangeSet, kw: dict) -> bytes:
        return encode(Kind.DELTA, encode_body(changes), **kw)

    async def _publish_listed(self, entry: DeltaEntry, data: bytes) -> DeltaEntry:
        """Make a delta durable on a backend that cannot discover: inside the manifest while the inline
        deltas stay small (one edit), else packed with them into one document (one send + one edit)."""
        from snapshot.naming import inline_ref, pack_name

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
            group: list[tuple[DeltaEntry, bytes]] = []
            size = 0
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
            from snapshot.concurrency import gather_limited
            from snapshot.naming import part_name

            stored: list[str] = []
            done = 0

            async def upload(sh: image_mod.Shard, j: int, piece: memoryview) -> PartEntry:
                nonlocal done
                data = await asyncio.to_thread(encode, Kind.SNAPSHOT_PART, piece, epoch=self._epoch,
                                               seq=base_seq, prev=built.image_sha256, cipher=self.cipher,
                                               compress=False, storage_id=self._storage, claim_id=self._claim)
                sha = await asyncio.to_thread(document_hash, data)
                ref = await self.backend.put(part_name(base_seq, sh.index, j, self._claim), data)
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
                entries = await gather_limited([partial(upload, *a) for a in jobs], cfg.parallelism)
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
                                 image_sha256=built.image_sha256.hex(), shards=shards, digest=built.digest)
            old = self._snapshot
            before = list(self._deltas)
            # The old current snapshot and the deltas up to the new base become an older point; the
            # retention policy (default: none) says which points stay listed in `history`.
            points = list(self._history)
            folded = [d for d in before if d.seq <= base_seq]
            if base_seq > (old.base_seq if old else 0) and (old is not None or folded):
                points.append(HistoryPoint(snapshot=old, deltas=folded))
            now = time.time()
            kept, dropped = retention.select_points(points, snap, cfg.keep_snapshots, cfg.keep_for, now)
            if base_seq == (old.base_seq if old else 0) and old is not None:
                dropped = [*dropped, HistoryPoint(snapshot=old)]  # rewritten at the same base: old parts go
            try:
                kept = await self._stored_points(kept)
                await self._publish(snapshot=snap, history=kept)
            except FencedError:
                raise  # a fenced writer deletes nothing, not even its own parts: a successor may list them
            except BackendError:
                # The publication may have taken effect: the parts can only go once a later manifest is out.
                self._orphans.extend(stored)
                raise
            # A pack goes only when none of its deltas is still listed (current or retained); inline deltas
            # went with the edit. (Best effort, as always: a Telegram refusal past its delete window is
            # tolerated by the backend; prune is where that window is judged and reported.)
            keep = retention.needed(snap, self._deltas, kept)
            superseded, _none = retention.documents_to_delete(dropped, keep, None, now)
            await self._delete_quietly(superseded)
            if self.backend.info.can_discover and cfg.delete_superseded:
                await self._sweep(snap)
            self._age_origin = float(captured_at)
            self._last_durable_at = time.time()
            return SnapshotReceipt(base_seq=base_seq, parts=len(entries), size=snap.stored_size)

    async def _stored_points(self, points: list[HistoryPoint]) -> list[HistoryPoint]:
        """`points` with their inline deltas written out as one pack document: retained deltas must not
        ride in the manifest (it would grow with the history); the pack is findable once the manifest
        listing it is out (until then the inline copies stay listed where they are)."""
        from snapshot.naming import pack_name

        inline = [d for h in points for d in h.deltas if d.inline is not None]
        if not inline:
            return points
        limit = self.backend.info.max_document_size
        moved: dict[int, DeltaEntry] = {}
        while inline:
            group: list[DeltaEntry] = []
            size = 0
            while inline and (not group or size + inline[0].size <= limit):
                group.append(inline.pop(0))
                size += group[-1].size
            blob = b"".join(d.inline_bytes() for d in group)
            ref = await self.backend.put(pack_name(group[0].seq, group[-1].seq), blob)
            self._bytes_shipped += len(blob)
            offset = 0
            for d in group:
                moved[d.seq] = dataclasses.replace(d, ref=f"{ref}@{offset}", inline=None, pack=ref, offset=offset)
                offset += d.size
        return [dataclasses.replace(h, deltas=[moved.get(d.seq, d) for d in h.deltas]) for h in points]

    async def prune(self, now: float | None = None) -> retention.PrunePlan:
        """Apply the retention policy of this replica's config now (snapshot/retention.py): publish the
        manifest without the points it drops (store, then check), then delete what only they (and no
        listed document) needed, and unlisted leftovers found by name. FencedError if fenced: then
        nothing is deleted."""
        self._check_live()
        async with self._snapshot_lock, self._delta_lock:
            self._check_live()
            cfg = self.config
            now = time.time() if now is None else now
            kept, _dropped = retention.select_points(self._history, self._snapshot, cfg.keep_snapshots,
                                                     cfg.keep_for, now)
            left = await retention.leftovers(self.backend, self._snapshot, None,
                                             retention.needed(self._snapshot, self._deltas, kept))
            p = retention.compute(self.backend.info, self._snapshot, self._deltas, self._history, left,
                                  cfg.keep_snapshots, cfg.keep_for, now)
            if p.dropped:
                await self._publish(history=p.kept)
            if p.delete:
                self._check_live()
                await self._check_newest()  # a fenced writer deletes nothing
                await self.backend.delete(p.delete)
            return p

    def snapshot_due(self) -> bool:
        if not self._acquired or self._fenced or self._released or self._snapshot_lock.locked():
            return False
        cfg = self.config
        n = len(self._deltas)
        if n >= cfg.snapshot_every_deltas or self._chain_bytes() >= cfg.snapshot_every_bytes:
            return True
        return n > 0 and time.time() - self._age_origin >= cfg.snapshot_max_age

    def _chain_bytes(self) -> int:
        """Stored bytes of the deltas since the snapshot. The flush loop asks several times per delta and
        the chain can be a thousand long: the sum is kept for the list it was taken of (the chain only
        grows at the end between reassignments) and extended by what was appended since."""
        chain, (seen, count, total) = self._deltas, self._chain_sum
        if seen is not chain or count > len(chain):
            count, total = 0, 0
        if count < len(chain):
            total += sum(d.size for d in chain[count:])
        self._chain_sum = (chain, len(chain), total)
        return total

    def status(self) -> ReplicaStatus:
        s = self._snapshot
        return ReplicaStatus(
            epoch=self._epoch, last_seq=self._last_seq, last_durable_at=self._last_durable_at,
            bytes_shipped=self._bytes_shipped, deltas_since_snapshot=len(self._deltas),
            bytes_since_snapshot=self._chain_bytes(),
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
