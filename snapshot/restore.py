"""The reader: manifest → snapshot parts → shards → image → deltas in order, every byte verified.

`plan()` reads the manifest and the (small) delta documents, picks the chain (docs/formats.md, "Chain
selection") and returns a `RestorePlan`, a value that prints what a restore would fetch, without
downloading a single snapshot part. `execute()` carries a plan out; `restore()` does both. Every
failure names the document at fault.

The manifest a reader starts from is the newest *full* manifest: the newest slot, or, while that slot
holds only a claim (a newcomer restoring), the slot its `claimed_from` names, followed through
claim-only slots (docs/formats.md, "Claim protocol"). Listed entries are authoritative; documents found
by discovery count only when their storage id and claim id are the manifest's: a fenced writer's late
uploads are ignored, documents of an unknown claim are a fork and of another storage foreign, both
named in the plan (and failed by verify).
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from dataclasses import dataclass, field

from snapshot import image as image_mod
from snapshot.apply import apply_changes
from snapshot.backend import Backend
from snapshot.changes import ChangeSet
from snapshot.cipher import Cipher, as_cipher
from snapshot.concurrency import gather_limited
from snapshot.delta import decode_body
from snapshot.envelope import GENESIS, NO_ID, Kind, decode, document_hash, read_header
from snapshot.errors import (
    ChainError,
    CorruptDocument,
    DocumentNotFound,
    MissingManifest,
    RestoreError,
    TgsnapError,
)
from snapshot.formatting import when
from snapshot.manifest import DeltaEntry, Lease, Manifest, SnapshotEntry, decode_manifest
from snapshot.naming import DELTA_NAME
from snapshot.restore_plan import RestorePlan
from snapshot.restored import Progress, Restored


async def entry_bytes(backend: Backend, e: DeltaEntry, packs: dict[str, bytes] | None = None) -> bytes:
    """The stored bytes of a listed delta wherever it lives: its own document, a pack, or the manifest.
    `packs` caches pack documents across calls."""
    if e.inline is not None:
        return e.inline_bytes()
    if e.pack is None:
        return await backend.get(e.ref)
    if packs is None or e.pack not in packs:
        data = await backend.get(e.pack)
        if packs is not None:
            packs[e.pack] = data
    else:
        data = packs[e.pack]
    return data[e.offset:e.offset + e.size]  # a short slice fails the hash check, named by the entry


@dataclass
class Candidate:
    """One delta document found in storage (listed in the manifest or discovered)."""

    ref: str
    seq: int
    epoch: int
    prev: bytes
    hash: bytes
    size: int
    order: tuple
    listed: bool
    captured_at: float = 0.0
    changes: ChangeSet | None = None
    error: TgsnapError | None = None
    #: the manifest's entry, when listed (keeps where an inline or packed delta lives).
    src: DeltaEntry | None = None
    storage_id: bytes = NO_ID
    claim_id: bytes = NO_ID
    #: not the last document of its cut (an oversize change set split over several deltas).
    continued: bool = False

    def entry(self) -> DeltaEntry:
        if self.src is not None:
            return self.src
        return DeltaEntry(seq=self.seq, ref=self.ref, size=self.size, hash=self.hash.hex(), epoch=self.epoch,
                          captured_at=self.captured_at)


def _notify(progress: Progress | None, stage: str, done: int, total: int) -> None:
    if progress is not None:
        progress(stage, done, total)


@dataclass
class Head:
    """What the slots say: the newest slot, and the newest full manifest reached from it."""

    #: the newest slot's ref and manifest (None: empty storage).
    newest_ref: str | None = None
    newest: Manifest | None = None
    #: the newest full manifest (the newest slot itself unless that holds only a claim) and its hash.
    full: Manifest | None = None
    full_hash: bytes = GENESIS
    full_ref: str | None = None
    #: slot refs read, newest first.
    slots: list[str] = field(default_factory=list)
    #: claim id (bytes) -> slot ref of every slot read so far (the lineage, extended on demand).
    claims: dict[bytes, str] = field(default_factory=dict)
    #: where the lineage walk stopped (the `claimed_from` of the oldest slot read), None: at the start.
    _next: str | None = None

    @property
    def lease(self) -> Lease | None:
        return self.newest.lease if self.newest else None


#: claimed_from steps a reader follows before it calls the chain of slots broken (a cycle, a forgery).
_MAX_SLOT_STEPS = 10_000


async def _read_slot_manifest(backend: Backend, ref: str, cipher: Cipher | None,
                              allow_plaintext: bool) -> tuple[Manifest, bytes]:
    try:
        raw = await backend.read_slot(ref)
    except DocumentNotFound:
        raise RestoreError(f"manifest slot {ref} is named by a newer claim (claimed_from) but is missing from "
                           "storage: a slot was deleted by hand") from None
    return decode_manifest(raw, cipher=cipher, allow_plaintext=allow_plaintext, ref=f"manifest slot {ref}")


async def read_head(backend: Backend, cipher: Cipher | None, allow_plaintext: bool = False, *,
                    start: str | None = None) -> Head:
    """The newest slot (or slot `start`: a claimer's own), then `claimed_from` through claim-only slots
    to the newest full manifest."""
    head = Head()
    if start is not None:
        m, h = await _read_slot_manifest(backend, start, cipher, allow_plaintext)
        ref = start
    else:
        slot = await backend.newest_slot()
        if slot is None:
            return head
        m, h = decode_manifest(slot.data, cipher=cipher, allow_plaintext=allow_plaintext,
                               ref=f"manifest slot {slot.ref}")
        ref = slot.ref
    head.newest_ref, head.newest = ref, m
    while True:
        head.slots.append(ref)
        if m.claim is not None:
            head.claims.setdefault(m.claim, ref)
        head._next = m.claimed_from
        if not m.is_claim:
            head.full, head.full_hash, head.full_ref = m, h, ref
            return head
        if m.claimed_from is None:
            return head  # the first claim of an empty storage, still restoring: nothing to read yet
        if len(head.slots) > _MAX_SLOT_STEPS or m.claimed_from in head.slots:
            raise RestoreError(f"manifest slot {ref} claims over {m.claimed_from}, which does not lead to a "
                               "full manifest (a cycle): the slots are corrupt")
        ref = m.claimed_from
        m, h = await _read_slot_manifest(backend, ref, cipher, allow_plaintext)


async def _known_claim(backend: Backend, head: Head, claim: bytes, cipher: Cipher | None,
                       allow_plaintext: bool) -> bool:
    """Whether `claim` is one of this storage's claims: walk older slots through `claimed_from` on
    demand (each claim names the slot it was made over, so the walk visits every claim that ever
    became newest before the full manifest's)."""
    while claim not in head.claims and head._next is not None and len(head.slots) <= _MAX_SLOT_STEPS:
        ref = head._next
        if ref in head.slots:
            break
        try:
            m, _h = await _read_slot_manifest(backend, ref, cipher, allow_plaintext)
        except TgsnapError:
            head._next = None
            break
        head.slots.append(ref)
        if m.claim is not None:
            head.claims.setdefault(m.claim, ref)
        head._next = m.claimed_from
    return claim in head.claims


async def read_current_manifest(backend: Backend, cipher: Cipher | None,
                                allow_plaintext: bool = False) -> tuple[Manifest | None, bytes]:
    """The newest full manifest and its hash ((None, GENESIS) when there is none yet)."""
    head = await read_head(backend, cipher, allow_plaintext)
    return head.full, head.full_hash


async def current_lease(backend: Backend, cipher: Cipher | None, allow_plaintext: bool = False) -> Lease | None:
    """The lease in the newest slot: who holds the storage now (a claimer while it restores)."""
    slot = await backend.newest_slot()
    if slot is None:
        return None
    m, _h = decode_manifest(slot.data, cipher=cipher, allow_plaintext=allow_plaintext,
                            ref=f"manifest slot {slot.ref}")
    return m.lease


async def refuse_orphaned_documents(backend: Backend) -> None:
    """MissingManifest when storage has documents but no manifest slot (deleted by hand, or a copy made
    without it): starting over it would present an empty state and sweep the old documents."""
    if not backend.info.can_discover:
        return
    found = await backend.discover(None)
    if found:
        raise MissingManifest(
            f"storage {backend.info.name} holds {len(found)} document(s) but no manifest: the manifest was "
            "deleted or not copied. Restore the manifest file(s) (MANIFEST, MANIFEST.*) from a backup, or "
            "move the documents away to start an empty storage; nothing was changed")


def _order(backend: Backend, listed: DeltaEntry | None, ref: str) -> tuple:
    if listed is not None and listed.document is None:
        return ()  # inline: no storage position (listed entries are one per seq anyway)
    return backend.order_key(listed.document if listed is not None else ref)


async def _fetch_delta(backend: Backend, ref: str, cipher: Cipher | None, allow_plaintext: bool,
                       listed: DeltaEntry | None, packs: dict[str, bytes] | None = None) -> Candidate | None:
    """A candidate for `ref`; None if it is not a delta. Verification failures are kept on the candidate
    (or raised, when even the header is unreadable and the manifest lists the document)."""
    data = await entry_bytes(backend, listed, packs) if listed is not None else await backend.get(ref)
    order = _order(backend, listed, ref)
    try:
        h = read_header(data, ref)
    except CorruptDocument as e:
        if listed is None:
            # Unreadable header: we cannot tell what it is. Report it rather than silently skip it.
            raise
        return Candidate(ref, listed.seq, listed.epoch, GENESIS, bytes.fromhex(listed.hash), listed.size, order,
                         True, listed.captured_at, error=e, src=listed)
    if h.kind != Kind.DELTA:
        if listed is not None:
            raise CorruptDocument(ref, f"the manifest lists a delta here, found a {h.kind.label}")
        return None
    c = Candidate(ref, h.seq, h.epoch, h.prev_hash, document_hash(data), len(data), order, listed is not None,
                  src=listed, storage_id=h.storage_id, claim_id=h.claim_id, continued=h.continued)
    try:
        if listed is not None:
            if c.hash.hex() != listed.hash or c.seq != listed.seq:
                raise CorruptDocument(ref, f"does not match the manifest's entry for delta seq {listed.seq} "
                                           "(hash or seq differs)")
        doc = decode(data, ref=ref, cipher=cipher, expect=Kind.DELTA, allow_plaintext=allow_plaintext)
        c.changes = decode_body(doc.body, ref, version=doc.header.version)
        c.captured_at = c.changes.captured_at
    except TgsnapError as e:
        c.error = e
    return c


def _select(cands: list[Candidate], base_seq: int, base_hash: bytes, ignored: list[str]) -> list[Candidate]:
    """The chain from the snapshot base, by the selection rules of docs/formats.md."""
    by_link: dict[tuple[int, bytes], list[Candidate]] = {}
    for c in cands:
        by_link.setdefault((c.seq, c.prev), []).append(c)

    def children(seq: int, hsh: bytes, epoch: int) -> list[Candidate]:
        return [c for c in by_link.get((seq + 1, hsh), ()) if c.epoch >= epoch]

    # Height of the best chain hanging below each candidate (longest first, processed from the top),
    # counting only chains that end at a complete cut: a continued delta without its cut's last document
    # below it has height 0 and loses to any complete sibling (the retry of a split cut that failed
    # half-way), however many pieces the failed attempt left.
    height: dict[int, int] = {}
    for c in sorted(cands, key=lambda c: -c.seq):
        if c.error is not None:
            height[id(c)] = -1
            continue
        kids = [height[id(k)] for k in children(c.seq, c.hash, c.epoch) if height[id(k)] > 0]
        if c.continued:
            height[id(c)] = 1 + max(kids) if kids else 0
        else:
            height[id(c)] = 1 + max(kids, default=0)

    chain: list[Candidate] = []
    seq, hsh, epoch = base_seq, base_hash, 0
    while True:
        kids = children(seq, hsh, epoch)
        good = [k for k in kids if k.error is None]
        if not good:
            bad = [k for k in kids if k.error is not None]
            if bad:
                raise bad[0].error  # type: ignore[misc]
            break
        best = max(good, key=lambda k: (k.epoch, height[id(k)], k.captured_at, k.order))
        for k in kids:
            # A corrupt sibling stored after the best one may be the acknowledged retry: falling back to an
            # earlier attempt would silently lose what it acknowledged, so name it instead.
            if k.error is not None and (k.epoch, k.order) > (best.epoch, best.order):
                raise k.error
        for k in kids:
            if k is not best:
                why = "an older epoch (fenced writer)" if k.epoch < best.epoch else "a superseded attempt"
                ignored.append(f"delta {k.ref} (seq {k.seq}, epoch {k.epoch}): {why}; chose {best.ref}")
        chain.append(best)
        seq, hsh, epoch = best.seq, best.hash, best.epoch
    return chain


def _check_chain(chain: list[Candidate], cands: list[Candidate], base_seq: int, base_hash: bytes,
                 ignored: list[str]) -> None:
    tip_seq = chain[-1].seq if chain else base_seq
    tip_hash = chain[-1].hash if chain else base_hash
    tip_epoch = chain[-1].epoch if chain else 0
    tip_ref = chain[-1].ref if chain else "snapshot base"
    chosen = {id(c) for c in chain}
    by_hash = {c.hash: c for c in cands}

    on_chain = {c.hash for c in chain} | {base_hash}

    def unfinished_cut(c: Candidate) -> bool:
        # c is, or follows, a piece of a split cut that was superseded before its last document landed: a
        # branch off the chosen chain (never a branch off nothing: that is a missing delta, named below)
        found, seen = False, 0
        while seen <= len(cands):
            found = found or c.continued
            if c.prev in on_chain:
                return found
            nxt = by_hash.get(c.prev)
            if nxt is None or id(nxt) in chosen:
                return False
            c, seen = nxt, seen + 1
        return False

    for c in sorted(cands, key=lambda c: (c.seq, c.order)):
        if id(c) in chosen:
            continue
        if not c.listed and c.error is None and unfinished_cut(c):
            ignored.append(f"delta {c.ref} (seq {c.seq}, epoch {c.epoch}): part of a split cut superseded "
                           "before its last document landed (its retry is on the chain)")
            continue
        if c.seq <= tip_seq and not c.listed:
            if not any(n.startswith(f"delta {c.ref} ") for n in ignored):
                ignored.append(f"delta {c.ref} (seq {c.seq}, epoch {c.epoch}): not on the chain")
            continue
        if c.listed and c.seq <= tip_seq:
            # The manifest's own list forks from the chain we picked: a newer epoch overrode it.
            ignored.append(f"delta {c.ref} (seq {c.seq}, epoch {c.epoch}) listed in the manifest: replaced on "
                           "the chain by a newer epoch")
            continue
        if c.epoch < tip_epoch and not c.listed:
            ignored.append(f"delta {c.ref} (seq {c.seq}, epoch {c.epoch}): from a fenced writer (epoch "
                           f"{tip_epoch} holds the chain)")
            continue
        if c.error is not None:
            raise c.error
        if c.seq == tip_seq + 1:
            raise ChainError(f"delta seq {c.seq} ({c.ref}) does not link to seq {tip_seq} ({tip_ref}): its "
                             f"predecessor hash is {c.prev.hex()[:16]}…, seq {tip_seq} hashes to "
                             f"{tip_hash.hex()[:16]}…")
        raise ChainError(f"delta seq {tip_seq + 1} is missing: storage holds seq {c.seq} ({c.ref}) but no "
                         f"document for seq {tip_seq + 1} links to seq {tip_seq} ({tip_ref})")


async def plan(backend: Backend, key: bytes | Cipher | None = None, to_seq: int | None = None,
               to_time: float | None = None, *, progress: Progress | None = None, parallelism: int = 8,
               allow_plaintext: bool = False, manifest: tuple[Manifest | None, bytes] | None = None,
               head: Head | None = None, _discover: bool = True) -> RestorePlan:
    """Read the manifest and every delta after the snapshot, select and verify the chain, cut it at the
    target. Fetches no snapshot part. MissingManifest for documents without any manifest slot.

    A target before the current snapshot is reached through the manifest's retained points (`history`,
    snapshot/retention.py): the newest point at or before it, and the deltas it lists.

    `head`: the slots as already read (a claimer passes what it read after its claim); `manifest`: a
    manifest to plan from instead (tools that hold one)."""
    if to_seq is not None and to_time is not None:
        raise ValueError("give to_seq or to_time, not both")
    if to_seq is not None and to_seq < 0:
        raise RestoreError(f"cannot restore to seq {to_seq}: deltas are numbered from 1 (0 is the empty state)")

    def beyond(seq: int) -> bool:
        # The documented rescue (`export --at-seq N-1` when delta N is damaged) needs nothing after the
        # target: damage there must not stop it. Only what is at or before the target is judged.
        return to_seq is not None and seq > to_seq

    cipher = as_cipher(key)
    if head is None:
        head = await read_head(backend, cipher, allow_plaintext)
    if manifest is not None:
        m, _mhash = manifest
    else:
        m, _mhash = head.full, head.full_hash
    if head.newest is None and m is None:
        await refuse_orphaned_documents(backend)
    _notify(progress, "manifest", 1, 1)
    snap = m.snapshot if m else None
    base_seq = snap.base_seq if snap else 0
    base_hash = bytes.fromhex(snap.base_hash) if snap else GENESIS
    if m is not None and m.history and (to_seq is not None and to_seq < base_seq
                                        or to_time is not None and snap is not None and to_time < snap.captured_at):
        return await _plan_point(backend, cipher, m, head, to_seq, to_time, progress=progress,
                                 parallelism=parallelism, allow_plaintext=allow_plaintext)

    listed = {e.ref: e for e in (m.deltas if m else [])}
    todo: list[tuple[str, DeltaEntry | None]] = list(listed.items())
    discovered = 0
    names: dict[str, str] = {}  # discovered ref -> the name it was stored under (when the backend knows it)
    packs: dict[str, bytes] = {}
    pack_refs = {e.pack for e in listed.values() if e.pack is not None}
    if pack_refs:
        # One download per pack, before the per-delta fetches slice it.
        async def fetch_pack(ref: str) -> None:
            try:
                packs[ref] = await backend.get(ref)
            except DocumentNotFound:
                seqs = [e.seq for e in listed.values() if e.pack == ref]
                span = f"{seqs[0]}..{seqs[-1]}" if len(seqs) > 1 else f"{seqs[0]}"
                raise ChainError(f"delta seq {span} (pack {ref}) is listed in the manifest but missing from "
                                 "storage") from None

        await gather_limited([lambda r=r: fetch_pack(r) for r in pack_refs], parallelism)
    if backend.info.can_discover and _discover:
        known_parts = {p.ref for p in snap.parts} if snap else set()
        for ref, name in await backend.discover_named(m.last_ref if m else None):
            if ref in listed or ref in known_parts or ref in pack_refs:
                continue
            if name is not None:
                mt = DELTA_NAME.match(name)
                if not mt or int(mt.group(1)) <= base_seq:
                    continue
                names[ref] = name
            todo.append((ref, None))
            discovered += 1
    _notify(progress, "discover", discovered, discovered)

    done = 0

    async def fetch(ref: str, entry: DeltaEntry | None) -> Candidate | None:
        nonlocal done
        try:
            c = await _fetch_delta(backend, ref, cipher, allow_plaintext, entry, packs)
        except CorruptDocument:
            mt = DELTA_NAME.match(names.get(ref, "")) if entry is None else None
            if mt and beyond(int(mt.group(1))):
                return None  # unreadable, and past the target by its name: a rescue does not need it
            raise
        except DocumentNotFound:
            if entry is None or beyond(entry.seq):
                return None  # deleted between listing and reading: superseded (or past the target)
            raise ChainError(f"delta seq {entry.seq} ({ref}) is listed in the manifest but missing from "
                             "storage") from None
        done += 1
        _notify(progress, "fetch-deltas", done, len(todo))
        return c

    found = await gather_limited([lambda r=r, e=e: fetch(r, e) for r, e in todo], parallelism)
    ignored: list[str] = []
    forks: list[str] = []
    foreign: list[str] = []
    cands = []
    own_storage = m.storage if m is not None else None
    own_claim = (m.claim if m is not None else None) or NO_ID
    for c in found:
        if c is None or c.seq <= base_seq or beyond(c.seq) and c.error is not None:
            continue
        if c.listed or c.claim_id == own_claim and (own_storage is None or c.storage_id == own_storage):
            cands.append(c)
            continue
        what = f"delta {c.ref} (seq {c.seq}, epoch {c.epoch}, claim {c.claim_id.hex()[:8]})"
        if own_storage is not None and c.storage_id != own_storage:
            kind = "no storage id (written by an older tgsnap)" if c.storage_id == NO_ID else \
                f"storage {c.storage_id.hex()}"
            foreign.append(f"{what}: belongs to {kind}, not to this storage ({own_storage.hex()}); never applied")
        elif c.claim_id != NO_ID and await _known_claim(backend, head, c.claim_id, cipher, allow_plaintext):
            ignored.append(f"{what}: a late document of claim {c.claim_id.hex()} (slot "
                           f"{head.claims[c.claim_id]}), fenced by a newer claim; never applied")
        else:
            forks.append(f"{what}: written by a claim this storage never made (a diverged copy of it was "
                         "continued elsewhere); never applied, never preferred")
    chain = _select(cands, base_seq, base_hash, ignored)
    raw_tip = chain[-1].seq if chain else base_seq  # before incomplete cuts are dropped below
    reached = to_seq is not None and raw_tip >= to_seq
    _check_chain(chain, [c for c in cands if not beyond(c.seq)] if reached else cands, base_seq, base_hash,
                 ignored)
    # Only complete cuts count: the documents of a split cut whose last one never landed are not applied,
    # and a writer continues after the last complete cut (its next seq supersedes them). With a target
    # seq, discovery stops at it, so a cut running past the target is not incomplete, only cut short.
    while chain and chain[-1].continued:
        c = chain.pop()
        if not reached:
            ignored.append(f"delta {c.ref} (seq {c.seq}, epoch {c.epoch}): part of a cut whose last document "
                           "is missing (an oversize change set split over several deltas, never completed)")

    deltas = list(chain)
    if to_seq is not None:
        if to_seq < base_seq:
            raise RestoreError(f"cannot restore to seq {to_seq}: the earliest restorable point is seq {base_seq} "
                               f"(the current snapshot, captured {when(snap.captured_at if snap else None)}); "
                               "older history was compacted away")
        if to_seq > raw_tip:
            raise RestoreError(f"cannot restore to seq {to_seq}: the last delta in storage is seq {raw_tip}")
        deltas = [c for c in chain if c.seq <= to_seq]
        while deltas and deltas[-1].continued:
            deltas.pop()  # point-in-time stops only at the end of a cut
    elif to_time is not None:
        if snap is not None and to_time < snap.captured_at:
            raise RestoreError(f"cannot restore to {when(to_time)}: the earliest restorable point is "
                               f"{when(snap.captured_at)} (seq {base_seq}, the current snapshot); older "
                               "history was compacted away")
        deltas = []
        for c in chain:
            if c.captured_at > to_time:
                break
            deltas.append(c)
        while deltas and deltas[-1].continued:
            deltas.pop()
    return RestorePlan(manifest=m, snapshot=snap, chain=[c.entry() for c in chain],
                       deltas=[c.entry() for c in deltas], target_seq=to_seq, target_time=to_time,
                       discovered=discovered, ignored=ignored,
                       changes={c.ref: c.changes for c in deltas if c.changes is not None},
                       forks=forks, foreign=foreign,
                       slots=head.slots[:head.slots.index(head.full_ref) + 1] if head.full_ref in head.slots
                       else list(head.slots),
                       holder=head.lease)


async def _plan_point(backend: Backend, cipher: Cipher | None, m: Manifest, head: Head, to_seq: int | None,
                      to_time: float | None, **kw) -> RestorePlan:
    """The plan for a target before the current snapshot: from the newest retained point at or before
    it, applying the deltas that point lists (authoritative; nothing is discovered there: every delta up
    to the current snapshot's base was listed when the point was retained)."""
    points = m.history
    if to_seq is not None:
        usable = [h for h in points if h.base_seq <= to_seq]
    else:
        usable = [h for h in points if h.captured_at is None or h.captured_at <= to_time]  # type: ignore[operator]
    if not usable:
        oldest = points[0]
        target = f"seq {to_seq}" if to_seq is not None else when(to_time)
        raise RestoreError(f"cannot restore to {target}: the earliest restorable point is seq {oldest.base_seq} "
                           f"(the oldest retained snapshot, captured {when(oldest.captured_at)}); older history "
                           "was compacted away")
    point = usable[-1]
    view = dataclasses.replace(m, snapshot=point.snapshot, deltas=list(point.deltas), history=[],
                               last_ref=None)
    p = await plan(backend, cipher, to_seq, to_time, manifest=(view, GENESIS), head=head, _discover=False, **kw)
    return dataclasses.replace(p, manifest=m)


async def fetch_image(backend: Backend, snap: SnapshotEntry, cipher: Cipher | None, *,
                      progress: Progress | None = None, parallelism: int = 8, allow_plaintext: bool = False
                      ) -> bytes:
    """Download, verify and reassemble a snapshot's image; check the state digest."""
    if [sh.index for sh in snap.shards] != list(range(len(snap.shards))):
        # docs/formats.md §3: shards are listed in index order, 0, 1, 2, ...; the image is their
        # concatenation in that order. A manifest that says otherwise is not guessed at.
        raise RestoreError(f"snapshot at base seq {snap.base_seq}: shard indexes "
                           f"{[sh.index for sh in snap.shards]} are not 0..{len(snap.shards) - 1} in order")
    parts = [(sh, j, p) for sh in snap.shards for j, p in enumerate(sh.parts)]
    image_sha = bytes.fromhex(snap.image_sha256)
    done = 0

    async def one(sh, j, p) -> bytes:
        nonlocal done
        where = f"snapshot part (shard {sh.index}, part {j} of {len(sh.parts)}, base seq {snap.base_seq})"
        try:
            data = await backend.get(p.ref)
        except DocumentNotFound:
            raise RestoreError(f"{where} {p.ref!r} is missing from storage") from None

        def check() -> bytes:
            if len(data) != p.size or document_hash(data).hex() != p.sha256:
                read_header(data, p.ref)  # a damaged header is named as such
                raise CorruptDocument(p.ref, f"{where}: bytes differ from the manifest's record (size "
                                             f"{len(data)} vs {p.size}, or SHA-256)")
            doc = decode(data, ref=p.ref, cipher=cipher, expect=Kind.SNAPSHOT_PART,
                         allow_plaintext=allow_plaintext)
            if doc.header.seq != snap.base_seq or doc.header.prev_hash != image_sha:
                raise CorruptDocument(p.ref, f"{where}: belongs to another snapshot")
            return doc.body

        body = await asyncio.to_thread(check)
        done += 1
        _notify(progress, "download", done, len(parts))
        return body

    bodies = await gather_limited([lambda a=a: one(*a) for a in parts], parallelism)
    frames, k = [], 0
    for sh in snap.shards:
        n = len(sh.parts)
        frames.append((b"".join(bodies[k:k + n]), sh.raw_size, bytes.fromhex(sh.sha256)))
        k += n
    img = await asyncio.to_thread(image_mod.assemble, frames, image_size=snap.image_size,
                                  image_sha256=image_sha, parallelism=parallelism)
    _notify(progress, "decompress", len(frames), len(frames))
    return img


async def execute(p: RestorePlan, backend: Backend, key: bytes | Cipher | None = None, *,
                  progress: Progress | None = None, into: sqlite3.Connection | None = None,
                  parallelism: int = 8, allow_plaintext: bool = False) -> Restored:
    """Carry out a plan: rebuild the snapshot image (or start empty), then apply the planned deltas."""
    cipher = as_cipher(key)
    conn = into if into is not None else image_mod.connect()
    if p.snapshot is None and into is not None and into.execute(
            "SELECT count(*) FROM sqlite_master").fetchone()[0]:
        raise RestoreError("the target connection is not empty and storage holds no snapshot to replace it "
                           "with: restore into an empty database")
    if p.snapshot is not None:
        img = await fetch_image(backend, p.snapshot, cipher, progress=progress, parallelism=parallelism,
                                allow_plaintext=allow_plaintext)
        image_mod.load(img, conn)
    for i, d in enumerate(p.deltas, 1):
        changes = p.changes.get(d.ref)
        if changes is None:
            raise RestoreError(f"delta seq {d.seq} ({d.ref}) was not fetched by the plan")
        apply_changes(conn, changes, what=f"delta seq {d.seq} ({d.ref})")
        _notify(progress, "apply", i, len(p.deltas))
    epoch = p.manifest.epoch if p.manifest else 0
    return Restored(conn=conn, seq=p.seq, captured_at=p.captured_at, epoch=epoch,
                    snapshot_seq=p.snapshot.base_seq if p.snapshot else None, deltas_applied=len(p.deltas))


async def restore(backend: Backend, key: bytes | Cipher | None = None, to_seq: int | None = None,
                  to_time: float | None = None, progress: Progress | None = None, *,
                  into: sqlite3.Connection | None = None, parallelism: int = 8,
                  allow_plaintext: bool = False) -> Restored:
    """Rebuild the state from storage (latest, or at `to_seq` / `to_time`) into a new in-memory
    connection or into `into` (whose main database is replaced)."""
    t0 = time.monotonic()
    p = await plan(backend, key, to_seq, to_time, progress=progress, parallelism=parallelism,
                   allow_plaintext=allow_plaintext)
    r = await execute(p, backend, key, progress=progress, into=into, parallelism=parallelism,
                      allow_plaintext=allow_plaintext)
    r.elapsed = time.monotonic() - t0
    return r
