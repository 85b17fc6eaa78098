"""Status: what a storage holds and how healthy it looks, as one value (`StorageStatus`) with a stable JSON form.

`status(backend, key)` reads what a restore plan reads (the manifest and the small delta documents, never a
snapshot part) and reports: the manifest (generation, epoch, format, claim fields when the manifest has
them), the writer lease and whether it is live, the snapshot (age, image and stored size, shards,
parts), the delta chain restore would apply (length, bytes, listed vs found beyond the manifest), the
newest durable cut and its age ("lag" as storage sees it), an estimated restore time, and how many
documents the storage holds where the backend can tell cheaply. A chain that restore would refuse does
not make status fail: the error is a field (`chain.error`), so `tgsnap status` still shows the rest.

The lag seen from storage is the age of the newest durable cut. A writer with nothing to write makes it
grow while nothing is lost: read it together with the lease (a live lease and a growing lag is an
idle bot or a stuck one; the bot's own `/metrics` tells which).

The restore estimate is arithmetic over stated assumptions, not a measurement: bytes to fetch at a
nominal rate per backend kind (`NOMINAL_RATES`), one round trip per document spread over restore's
parallelism, and decompression plus load at the rate measured in docs/benchmarks.md. `tgsnap bench`
measures the real figures.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from snapshot import reading
from snapshot.backend import Backend
from snapshot.cipher import Cipher, as_cipher
from snapshot.errors import CorruptDocument, RestoreError, TgsnapError
from snapshot.formatting import size_text, when
from snapshot.manifest import Manifest
from snapshot.restore import plan, read_head

#: version of the `to_json()` layout; bumped only when a key changes meaning or disappears (new keys may
#: be added without a bump).
STATUS_FORMAT = 1

#: assumed transfer rates (bytes/s) and round-trip times (s) per backend kind, for the restore estimate.
#: local: the directory restore of docs/benchmarks.md (11.9 MB fetched, verified and loaded in ~0.1 s)
#: rounded down; mtproto: parallel transfers against Telegram's data centres, a conservative guess (the
#: emulator on 127.0.0.1 measures ~60 MB/s, Telegram is slower and farther); botapi: one getFile
#: download at a time through the Bot API server.
NOMINAL_RATES: dict[str, tuple[float, float]] = {
    "local": (100e6, 0.0005),
    "memory": (1e9, 0.0),
    "mtproto": (10e6, 0.15),
    "botapi": (2e6, 0.3),
    "multi": (10e6, 0.15),
}
#: decompress + verify + load, bytes of stored snapshot per second (docs/benchmarks.md, local restore).
LOAD_RATE = 150e6
#: documents restore fetches at once (snapshot.restore's default parallelism).
PARALLELISM = 8


@runtime_checkable
class KnowsTip(Protocol):
    """A backend that knows the highest message id in its channel (MTProto: ids are sequential)."""

    @property
    def tip(self) -> int: ...


@dataclass
class LeaseStatus:
    holder: str
    writer_id: str
    host: str
    pid: int
    epoch: int
    expires_at: float
    released: bool
    #: not released and not expired at `checked_at` (by this machine's clock: advice, never safety).
    live: bool


@dataclass
class ManifestStatus:
    generation: int
    epoch: int
    format: int
    written_at: float
    #: format 3 (claims): hex ids and the slot state; None on older manifests.
    storage_id: str | None = None
    claim_id: str | None = None
    state: str | None = None


@dataclass
class SnapshotStatus:
    base_seq: int
    captured_at: float
    age_seconds: float
    image_bytes: int
    stored_bytes: int
    shards: int
    parts: int


@dataclass
class ChainStatus:
    #: deltas after the snapshot restore would apply (listed in the manifest + found beyond it).
    deltas: int = 0
    bytes: int = 0
    listed: int = 0
    discovered: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    #: why restore would refuse the chain (then the counts are the manifest's list only); None when fine.
    error: str | None = None
    #: documents restore passes over on purpose (superseded attempts, fenced writers).
    ignored: int = 0
    #: documents of a claim this storage never made / of another storage: never applied; verify fails them.
    forks: int = 0
    foreign: int = 0


@dataclass
class RetentionStatus:
    """Older snapshots kept for point-in-time reach (manifest `history`, snapshot/retention.py)."""

    points: int = 0
    #: the earliest seq / time a restore or export can reach (the current snapshot without history).
    earliest_seq: int | None = None
    earliest_captured_at: float | None = None
    #: stored bytes of the retained points' snapshot parts and deltas.
    bytes: int = 0


@dataclass
class StorageStatus:
    backend: str
    checked_at: float
    empty: bool = False
    manifest: ManifestStatus | None = None
    lease: LeaseStatus | None = None
    snapshot: SnapshotStatus | None = None
    chain: ChainStatus = field(default_factory=ChainStatus)
    retention: RetentionStatus = field(default_factory=RetentionStatus)
    #: the seq and capture time of the newest durable state (what a restore of the latest yields).
    last_seq: int = 0
    last_captured_at: float | None = None
    #: seconds from the newest durable cut to `checked_at`; None for empty storage.
    lag_seconds: float | None = None
    restore_bytes: int = 0
    restore_documents: int = 0
    estimated_restore_seconds: float | None = None
    #: documents stored (files, messages), where the backend lists them cheaply; else None.
    documents: int | None = None
    #: the highest message id in the storage channel, where the backend knows it; else None.
    channel_tip: int | None = None
    #: why the manifest cannot be read (then nothing else is known); None when it reads.
    manifest_error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (not self.empty and self.manifest_error is None and self.chain.error is None
                and not self.chain.forks and not self.chain.foreign)

    def to_json(self) -> dict[str, Any]:
        """A stable, JSON-serialisable form: `status_format` plus every field above, always present."""
        return {"status_format": STATUS_FORMAT, **asdict(self), "ok": self.ok}

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs for a human table."""
        out: list[tuple[str, str]] = [("storage", self.backend)]
        if self.empty:
            out.append(("state", "empty: no manifest and no documents"))
            return out
        if self.manifest_error:
            out.append(("manifest error", self.manifest_error))
            return out
        m = self.manifest
        if m is not None:
            out.append(("manifest", f"generation {m.generation}, epoch {m.epoch}, format {m.format}, "
                                    f"written {when(m.written_at)}"))
            if m.storage_id or m.claim_id:
                out.append(("claim", f"storage {m.storage_id or '-'}, claim {m.claim_id or '-'}, "
                                     f"state {m.state or '-'}"))
        else:
            out.append(("manifest", "none"))
        lease = self.lease
        if lease is None:
            out.append(("writer", "none"))
        else:
            state = ("live until " if lease.live else "released at " if lease.released else "expired at ")
            out.append(("writer", f"{lease.holder}, {state}{when(lease.expires_at)}"))
        s = self.snapshot
        out.append(("snapshot", "none (restore starts from an empty database)" if s is None else
                    f"base seq {s.base_seq}, captured {when(s.captured_at)} ({_age(s.age_seconds)} ago), "
                    f"{size_text(s.stored_bytes)} stored in {s.parts} part(s) / {s.shards} shard(s), "
                    f"image {size_text(s.image_bytes)}"))
        c = self.chain
        span = f" (seq {c.first_seq}..{c.last_seq})" if c.deltas else ""
        beyond = f", {c.discovered} beyond the manifest" if c.discovered else ""
        out.append(("chain", f"{c.deltas} delta(s){span}, {size_text(c.bytes)}{beyond}"
                             + (f", {c.ignored} passed over" if c.ignored else "")))
        if c.forks or c.foreign:
            out.append(("alien documents", f"{c.forks} of an unknown claim (fork), {c.foreign} of another "
                                           "storage: never applied; see the notes, and run verify"))
        if c.error:
            out.append(("chain error", c.error))
        r = self.retention
        if r.points:
            out.append(("retained", f"{r.points} older snapshot(s), {size_text(r.bytes)}; restore reaches back to "
                                    f"seq {r.earliest_seq} (captured {when(r.earliest_captured_at)})"))
        out.append(("newest state", f"seq {self.last_seq}, captured {when(self.last_captured_at)}"))
        out.append(("lag", "-" if self.lag_seconds is None else f"{_age(self.lag_seconds)} since the newest "
                                                                 "durable cut"))
        est = self.estimated_restore_seconds
        out.append(("restore", f"{size_text(self.restore_bytes)} in {self.restore_documents} document(s), "
                               + ("-" if est is None else f"about {_age(est)} (estimate)")))
        if self.documents is not None:
            out.append(("documents", f"{self.documents} stored"))
        if self.channel_tip is not None:
            out.append(("channel", f"highest message id {self.channel_tip}"))
        return out

    def table(self) -> str:
        rows = self.rows()
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def estimate_restore(kind: str, stored_bytes: int, documents: int, snapshot_bytes: int) -> float:
    """Seconds a restore of `documents` totalling `stored_bytes` takes, by `NOMINAL_RATES` (see above)."""
    rate, rtt = NOMINAL_RATES.get(kind, NOMINAL_RATES["mtproto"])
    return stored_bytes / rate + documents * rtt / PARALLELISM + snapshot_bytes / LOAD_RATE


def _manifest_status(m: Manifest) -> ManifestStatus:
    return ManifestStatus(generation=m.generation, epoch=m.epoch, format=m.format, written_at=m.created_at,
                          storage_id=m.storage_id, claim_id=m.claim_id, state=m.state)


async def status(backend: Backend, key: bytes | Cipher | None = None, *, now: float | None = None,
                 count_documents: bool = True) -> StorageStatus:
    """The status of the storage behind `backend`. Raises only for configuration (a key that does not fit)
    and outages; a manifest or chain restore would refuse is reported in the value. Beside a live writer
    a chain error seen while the manifest moved on (a snapshot switch deleted what was being read) is no
    verdict: the status is read again on the newer manifest (snapshot/reading.py)."""
    cipher = as_cipher(key)
    return await reading.settled(
        backend, lambda _at: _status_once(backend, cipher, now=now, count_documents=count_documents),
        failed=lambda st: st.manifest_error is not None or (st.chain is not None and st.chain.error is not None),
        key=cipher)


async def _status_once(backend: Backend, cipher: Cipher | None, *, now: float | None,
                       count_documents: bool) -> StorageStatus:
    st = StorageStatus(backend=backend.info.name, checked_at=time.time() if now is None else now)
    kind = st.backend.split(":", 1)[0]
    try:
        head = await read_head(backend, cipher)
    except (CorruptDocument, RestoreError) as exc:
        st.manifest_error = str(exc)
        return st
    m, mhash = head.full, head.full_hash
    if head.lease is not None:  # the newest slot's: who holds the storage now (a claimer while it restores)
        le = head.lease
        st.lease = LeaseStatus(holder=le.describe(), writer_id=le.writer_id, host=le.host, pid=le.pid,
                               epoch=le.epoch, expires_at=le.expires_at, released=le.released,
                               live=le.live(st.checked_at))
    if m is not None:
        st.manifest = _manifest_status(m)
        if m.snapshot is not None:
            s = m.snapshot
            st.snapshot = SnapshotStatus(base_seq=s.base_seq, captured_at=s.captured_at,
                                         age_seconds=st.checked_at - s.captured_at, image_bytes=s.image_size,
                                         stored_bytes=s.stored_size, shards=len(s.shards), parts=len(s.parts))
    if m is not None:
        oldest = m.history[0] if m.history else None
        st.retention = RetentionStatus(
            points=len(m.history),
            earliest_seq=oldest.base_seq if oldest else m.base_seq,
            earliest_captured_at=(oldest.captured_at if oldest else
                                  m.snapshot.captured_at if m.snapshot else None),
            bytes=sum((h.snapshot.stored_size if h.snapshot else 0) + sum(d.size for d in h.deltas)
                      for h in m.history))
    if count_documents and backend.info.can_discover and kind in ("local", "memory"):
        st.documents = len(await backend.discover(None))  # a directory listing: cheap
    try:
        p = await plan(backend, cipher, manifest=(m, mhash), head=head)
    except TgsnapError as exc:
        listed = m.deltas if m is not None else []
        st.chain = ChainStatus(deltas=len(listed), bytes=sum(d.size for d in listed), listed=len(listed),
                               first_seq=listed[0].seq if listed else None,
                               last_seq=listed[-1].seq if listed else None, error=str(exc))
        st.last_seq = listed[-1].seq if listed else (m.base_seq if m else 0)
        st.last_captured_at = (listed[-1].captured_at if listed else
                               m.snapshot.captured_at if m is not None and m.snapshot else None)
    else:
        listed_refs = {e.ref for e in (m.deltas if m else [])}
        beyond = sum(1 for d in p.chain if d.ref not in listed_refs)
        st.chain = ChainStatus(deltas=len(p.chain), bytes=sum(d.size for d in p.chain),
                               listed=len(p.chain) - beyond, discovered=beyond,
                               first_seq=p.chain[0].seq if p.chain else None,
                               last_seq=p.chain[-1].seq if p.chain else None, ignored=len(p.ignored),
                               forks=len(p.forks), foreign=len(p.foreign))
        st.notes.extend(p.ignored)
        st.notes.extend(f"FORK: {n}" for n in p.forks)
        st.notes.extend(f"FOREIGN: {n}" for n in p.foreign)
        st.last_seq, st.last_captured_at = p.seq, p.captured_at
        if m is None and not p.chain:
            st.empty = True  # no manifest (or only a first claim still restoring) and nothing to restore
    if isinstance(backend, KnowsTip):
        tip = backend.tip
        st.channel_tip = tip if tip else None
    if st.last_captured_at is not None:
        st.lag_seconds = max(0.0, st.checked_at - st.last_captured_at)
    snap_bytes = st.snapshot.stored_bytes if st.snapshot else 0
    st.restore_bytes = snap_bytes + st.chain.bytes
    st.restore_documents = (st.snapshot.parts if st.snapshot else 0) + st.chain.deltas
    if not st.empty:
        st.estimated_restore_seconds = round(estimate_restore(kind, st.restore_bytes, st.restore_documents,
                                                              snap_bytes), 6)
    return st
