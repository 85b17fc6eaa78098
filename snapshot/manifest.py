"""The manifest: the one mutable entry point that says where the current state lives.

A versioned JSON object inside an envelope of kind MANIFEST (see docs/formats.md, "Manifest"): the writer
lease, the current snapshot (its shards and their parts) and the delta chain after it. Format 3 adds the
claim protocol's fields: which storage (`storage_id`) and which claim (`claim_id`) wrote it, whether it
is a bare claim or a full manifest (`state`), the slot the claim was made over (`claimed_from`), and
the schema version of the state it describes.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import math
from dataclasses import asdict, dataclass, field, fields

from snapshot.envelope import GENESIS, NO_ID, Kind, decode, encode
from snapshot.errors import CorruptDocument

#: newest manifest format this code reads. Format 2 adds delta entries stored inside the manifest
#: (`inline`) or inside a pack document (`pack`, `offset`). Format 3 (what writers write) adds
#: `storage_id`, `claim_id`, `state`, `claimed_from` and `schema_version`. Format 4 (written when a listed
#: snapshot uses it) adds the snapshot's `digest` 2: its state digest is the SHA-256 of its shards' digests
#: (docs/formats.md §3), which a format-3 reader would check as the SHA-256 of the whole image and fail.
MANIFEST_FORMAT = 4
#: the format that carries storage and claim ids: what writers write unless a listed snapshot needs 4.
IDS_FORMAT = 3
#: `state` of a manifest that only stakes a claim (no snapshot, no deltas: follow `claimed_from`).
STATE_CLAIM = "claim"
#: `state` of a manifest that says where the state lives.
STATE_FULL = "full"
#: how errors name the manifest document.
MANIFEST_REF = "manifest"


@dataclass
class Lease:
    writer_id: str
    host: str
    pid: int
    epoch: int
    expires_at: float
    released: bool = False
    #: who the holder process is, for same-host takeover only (snapshot/proc_identity.py): this boot's
    #: id, the PID namespace `pid` is counted in, the process's start time. Absent: unknown (no proof).
    boot_id: str | None = None
    pid_ns: str | None = None
    start_time: int | None = None

    def live(self, now: float) -> bool:
        return not self.released and now < self.expires_at

    def describe(self) -> str:
        return f"{self.writer_id} (host {self.host}, pid {self.pid}, epoch {self.epoch})"


@dataclass
class PartEntry:
    ref: str
    size: int
    #: hex SHA-256 of the whole stored part document.
    sha256: str


@dataclass
class ShardEntry:
    index: int
    raw_size: int
    #: hex SHA-256 of the raw shard bytes.
    sha256: str
    compressed_size: int
    parts: list[PartEntry] = field(default_factory=list)


@dataclass
class SnapshotEntry:
    base_seq: int
    #: hex hash of delta `base_seq`'s document (GENESIS for base_seq 0): delta base_seq+1 links to it.
    base_hash: str
    captured_at: float
    epoch: int
    image_size: int
    #: hex SHA-256 of the whole SQLite image: the state digest.
    image_sha256: str
    compression: str = "zstd"
    shards: list[ShardEntry] = field(default_factory=list)
    #: how `image_sha256` is computed (snapshot.image.DIGESTS): 1, SHA-256 of the whole image (absent from
    #: the JSON); 2, SHA-256 of the shards' SHA-256 digests in index order (manifest format 4).
    digest: int = 1

    @property
    def parts(self) -> list[PartEntry]:
        return [p for s in self.shards for p in s.parts]

    @property
    def stored_size(self) -> int:
        return sum(p.size for p in self.parts)


@dataclass
class DeltaEntry:
    seq: int
    ref: str
    size: int
    #: hex SHA-256 of the whole stored delta document.
    hash: str
    epoch: int
    captured_at: float
    #: format 2: base64 of the whole delta document, carried in the manifest itself (`ref` is then a name
    #: only, "manifest#delta-…"): on backends that cannot discover, a delta costs one manifest edit.
    inline: str | None = None
    #: format 2: the delta document is bytes [offset, offset + size) of the pack document `pack`
    #: (delta documents back to back); `ref` is then "<pack>@<offset>".
    pack: str | None = None
    offset: int | None = None

    @property
    def document(self) -> str | None:
        """The ref of the stored document holding this delta (None: it lives in the manifest)."""
        if self.inline is not None:
            return None
        return self.pack if self.pack is not None else self.ref

    def inline_bytes(self) -> bytes:
        assert self.inline is not None
        return base64.b64decode(self.inline, validate=True)


@dataclass
class HistoryPoint:
    """Format 3, optional: an older snapshot kept for point-in-time reach (`ReplicaConfig.keep_snapshots`
    / `keep_for`), with the deltas after it up to the next point's base (the next older point's, or the
    current snapshot's). `snapshot` None: the empty database at seq 0 (only as the oldest point)."""

    snapshot: SnapshotEntry | None
    deltas: list[DeltaEntry] = field(default_factory=list)

    @property
    def base_seq(self) -> int:
        return self.snapshot.base_seq if self.snapshot else 0

    @property
    def base_hash(self) -> str:
        return self.snapshot.base_hash if self.snapshot else GENESIS.hex()

    @property
    def captured_at(self) -> float | None:
        return self.snapshot.captured_at if self.snapshot else None

    def documents(self) -> list[str]:
        """Refs of the stored documents this point needs (its parts, its deltas' documents)."""
        refs = [p.ref for p in self.snapshot.parts] if self.snapshot else []
        refs += [d.document for d in self.deltas if d.document is not None]
        return list(dict.fromkeys(refs))


#: the optional format-2 fields of a delta entry, left out of the JSON when unset.
_V2_FIELDS = ("inline", "pack", "offset")
#: the format-3 fields of a manifest.
_V3_FIELDS = ("storage_id", "claim_id", "state", "claimed_from", "schema_version")


@dataclass
class Manifest:
    epoch: int
    generation: int
    created_at: float
    lease: Lease | None = None
    snapshot: SnapshotEntry | None = None
    deltas: list[DeltaEntry] = field(default_factory=list)
    #: discovery starts after this ref (the last listed delta, or the snapshot's base delta).
    last_ref: str | None = None
    #: the oldest format that can hold it is written (see `to_json`).
    format: int = 1
    #: format 3: hex storage id and claim id (None in older formats).
    storage_id: str | None = None
    claim_id: str | None = None
    #: format 3: STATE_CLAIM or STATE_FULL; older formats are always full.
    state: str = STATE_FULL
    #: format 3: the slot ref this claim was made over (None: the storage was empty).
    claimed_from: str | None = None
    #: format 3: PRAGMA user_version of the state (None: not known).
    schema_version: int | None = None
    #: format 3, optional: retained older points, oldest first (docs/formats.md §5, `history`).
    history: list[HistoryPoint] = field(default_factory=list)

    @property
    def is_claim(self) -> bool:
        return self.state == STATE_CLAIM

    @property
    def claim(self) -> bytes | None:
        return bytes.fromhex(self.claim_id) if self.claim_id else None

    @property
    def storage(self) -> bytes | None:
        return bytes.fromhex(self.storage_id) if self.storage_id else None

    @property
    def base_seq(self) -> int:
        return self.snapshot.base_seq if self.snapshot else 0

    @property
    def base_hash(self) -> bytes:
        return bytes.fromhex(self.snapshot.base_hash) if self.snapshot else GENESIS

    @property
    def needs_v2(self) -> bool:
        return any(e.inline is not None or e.pack is not None for e in self.deltas)

    @property
    def needs_v4(self) -> bool:
        return any(s is not None and s.digest != 1 for s in [self.snapshot, *(h.snapshot for h in self.history)])

    def to_json(self) -> bytes:
        d = asdict(self)
        # Format 1 readers can read what uses no format-2 field: write the oldest format that suffices.
        d["format"] = max(self.format, 2 if self.needs_v2 else 1,
                          3 if self.claim_id is not None or self.state != STATE_FULL else 1,
                          4 if self.needs_v4 else 1)
        if d["format"] < 3:
            for k in _V3_FIELDS:
                del d[k]
        if not self.history or d["format"] < 3:
            del d["history"]  # absent unless there is history: readers treat absent as none
        for e in [*d["deltas"], *(e for h in d.get("history", []) for e in h["deltas"])]:
            for k in _V2_FIELDS:
                if e[k] is None:
                    del e[k]
        for sd in [d["snapshot"], *(h["snapshot"] for h in d.get("history", []))]:
            if sd is not None and sd["digest"] == 1:
                del sd["digest"]  # digest 1 is what a snapshot without the field means
        return json.dumps(d, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes, ref: str | None = MANIFEST_REF) -> Manifest:
        try:
            d = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CorruptDocument(ref, f"manifest is not valid JSON ({e})") from None
        if not isinstance(d, dict) or not isinstance(d.get("format"), int):
            raise CorruptDocument(ref, "manifest has no integer 'format' field")
        if d["format"] > MANIFEST_FORMAT:
            raise CorruptDocument(ref, f"manifest format {d['format']} is newer than this reader supports "
                                       f"({MANIFEST_FORMAT}): written by a newer tgsnap")
        try:
            snap = _snapshot_entry(d.get("snapshot"))
            lease = _known(Lease, d["lease"]) if d.get("lease") is not None else None
            deltas = [_known(DeltaEntry, e) for e in d.get("deltas", [])]
            m = cls(epoch=d["epoch"], generation=d["generation"], created_at=d["created_at"], lease=lease,
                    snapshot=snap, deltas=deltas, last_ref=d.get("last_ref"), format=d["format"])
            if d["format"] >= 3:
                m.storage_id, m.claim_id = d["storage_id"], d["claim_id"]
                m.state, m.claimed_from = d["state"], d.get("claimed_from")
                m.schema_version = d.get("schema_version")
                m.history = [HistoryPoint(snapshot=_snapshot_entry(h.get("snapshot")),
                                          deltas=[_known(DeltaEntry, e) for e in h.get("deltas", [])])
                             for h in d.get("history") or []]
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptDocument(ref, f"manifest does not follow the schema ({e!r})") from None
        m._check(ref)
        return m

    def _check(self, ref: str | None) -> None:
        if self.format >= 3:
            for name in ("storage_id", "claim_id"):
                v = getattr(self, name)
                if not isinstance(v, str) or len(v) != 32 or v != v.lower():
                    raise CorruptDocument(ref, f"manifest's {name} {v!r} is not 32 lowercase hex digits")
                bytes.fromhex(v)
            if self.state not in (STATE_CLAIM, STATE_FULL):
                raise CorruptDocument(ref, f"manifest state {self.state!r} is neither 'claim' nor 'full'")
            if self.claimed_from is not None and not isinstance(self.claimed_from, str):
                raise CorruptDocument(ref, "manifest's claimed_from is not a slot ref")
            if self.schema_version is not None and (not isinstance(self.schema_version, int)
                                                    or isinstance(self.schema_version, bool)):
                raise CorruptDocument(ref, "manifest's schema_version is not an integer")
            if self.is_claim and (self.snapshot is not None or self.deltas):
                raise CorruptDocument(ref, "a claim manifest lists a snapshot or deltas")
        seqs = [e.seq for e in self.deltas]
        if any(b <= a for a, b in itertools.pairwise(seqs)) or any(s <= self.base_seq for s in seqs):
            raise CorruptDocument(ref, "manifest's delta list is not strictly ascending after the snapshot base")
        for h in [e.hash for e in self.deltas] + ([self.snapshot.base_hash, self.snapshot.image_sha256]
                                                   if self.snapshot else []):
            if len(h) != 64:
                raise CorruptDocument(ref, f"manifest holds a malformed hash {h!r}")
            bytes.fromhex(h)
        for e in self.deltas:
            if e.inline is not None and e.pack is not None:
                raise CorruptDocument(ref, f"manifest's delta seq {e.seq} is both inline and packed")
            if e.inline is not None:
                try:
                    n = len(e.inline_bytes())
                except (binascii.Error, ValueError, TypeError):
                    raise CorruptDocument(ref, f"manifest's inline delta seq {e.seq} is not valid base64") from None
                if n != e.size:
                    raise CorruptDocument(ref, f"manifest's inline delta seq {e.seq} holds {n} bytes, "
                                               f"its entry says {e.size}")
            if e.pack is not None and (not isinstance(e.offset, int) or e.offset < 0):
                raise CorruptDocument(ref, f"manifest's packed delta seq {e.seq} has no valid offset")
            if (e.pack is not None or e.inline is not None) and self.format < 2:
                raise CorruptDocument(ref, f"manifest format {self.format} cannot hold inline or packed deltas")
        for snap in [self.snapshot, *(h.snapshot for h in self.history)]:
            if snap is None:
                continue
            if snap.digest not in (1, 2) or isinstance(snap.digest, bool):
                raise CorruptDocument(ref, f"manifest's snapshot at base seq {snap.base_seq} has an unknown state "
                                           f"digest {snap.digest!r}")
            if snap.digest != 1 and self.format < 4:
                raise CorruptDocument(ref, f"manifest format {self.format} cannot hold a snapshot of state "
                                           f"digest {snap.digest}")
        if self.snapshot and not all(math.isfinite(x) for x in (self.snapshot.captured_at,)):
            raise CorruptDocument(ref, "manifest snapshot time is not finite")
        self._check_history(ref)

    def _check_history(self, ref: str | None) -> None:
        """Each retained point's deltas run without a gap from its base to the next point's base, and
        the last one hashes to that base's `base_hash`: a point is restorable from what it lists alone."""
        if not self.history:
            return
        if self.is_claim:
            raise CorruptDocument(ref, "a claim manifest lists history")
        bases = [(h.base_seq, h.base_hash) for h in self.history[1:]] + [(self.base_seq, self.base_hash.hex())]
        for i, (h, (next_seq, next_hash)) in enumerate(zip(self.history, bases, strict=True)):
            if h.snapshot is None and i > 0:
                raise CorruptDocument(ref, f"manifest's history point {i} has no snapshot but is not the oldest")
            want = list(range(h.base_seq + 1, next_seq + 1))
            if [e.seq for e in h.deltas] != want:
                raise CorruptDocument(ref, f"manifest's history point at seq {h.base_seq} does not list exactly "
                                           f"the deltas {h.base_seq + 1}..{next_seq} up to the next point")
            last = h.deltas[-1].hash if h.deltas else h.base_hash
            if last != next_hash:
                raise CorruptDocument(ref, f"manifest's history point at seq {h.base_seq}: its last delta does "
                                           f"not hash to the next point's base hash (seq {next_seq})")
            for e in h.deltas:
                if e.inline is not None:
                    raise CorruptDocument(ref, f"manifest's history delta seq {e.seq} is inline (retained "
                                               "deltas are stored or packed documents)")
                if len(e.hash) != 64:
                    raise CorruptDocument(ref, f"manifest holds a malformed hash {e.hash!r}")


def _snapshot_entry(snap: dict | None) -> SnapshotEntry | None:
    if snap is None:
        return None
    shards = [_known(ShardEntry, s, parts=[_known(PartEntry, p) for p in s["parts"]]) for s in snap["shards"]]
    return _known(SnapshotEntry, snap, shards=shards)


def _known(cls, d: dict, **override):
    """Build `cls` from the fields it knows: later writers may add optional fields (docs/formats.md §7)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names and k not in override}, **override)


def encode_manifest(m: Manifest, *, cipher=None, prev: bytes = GENESIS) -> bytes:
    storage_id = claim_id = NO_ID
    if m.storage_id is not None and m.claim_id is not None:
        storage_id, claim_id = bytes.fromhex(m.storage_id), bytes.fromhex(m.claim_id)
    return encode(Kind.MANIFEST, m.to_json(), epoch=m.epoch, seq=m.generation, prev=prev, cipher=cipher,
                  storage_id=storage_id, claim_id=claim_id)


def decode_manifest(data: bytes, *, cipher=None, allow_plaintext: bool = False,
                    ref: str | None = MANIFEST_REF) -> tuple[Manifest, bytes]:
    """The manifest and its document hash. `ref` names it in errors (a slot ref)."""
    doc = decode(data, ref=ref, cipher=cipher, expect=Kind.MANIFEST, allow_plaintext=allow_plaintext)
    m = Manifest.from_json(doc.body, ref)
    if m.epoch != doc.header.epoch or m.generation != doc.header.seq:
        raise CorruptDocument(ref, "manifest body disagrees with its envelope (epoch/generation)")
    if m.format >= 3 and (doc.header.storage_id.hex() != m.storage_id or doc.header.claim_id.hex() != m.claim_id):
        raise CorruptDocument(ref, "manifest body disagrees with its envelope (storage id / claim id)")
    return m, doc.hash
