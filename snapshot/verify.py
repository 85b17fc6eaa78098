"""Verify: check every document the current manifest depends on, and name each one at fault.

One importable call, `verify(backend, key)`, returns a `VerifyReport` (data, with a stable `to_json()`);
`tools/verify.py` only prints it. Unlike restore, which stops at the first bad document, verify keeps
going so one run lists every problem. It decides nothing restore does not: documents are opened with
the same functions restore uses (`snapshot.envelope.decode` for parts, `snapshot.restore`'s delta reader
for deltas, `snapshot.image` for shards), and the chain is the one `snapshot.restore.plan` selects, so
verify can never pass storage restore would refuse, or the other way round. What verify adds is the
finer verdict: each listed document is first compared with the manifest's record (present, size,
SHA-256) so a missing, truncated or replaced document is named as such instead of as a broken chain.

Every document is read once: reads go through a per-run cache, which the chain selection reuses, so
verify over Telegram costs one download per document, and the verdicts and the chain all judge the
same bytes even while a live writer keeps adding documents. Nothing is written, no lease is taken.

Outages are not verdicts: a retryable `BackendError` propagates (the CLI exits 4; a reader-retry
wrapper, `verify_settled`, calls `verify` again), a missing or refused document is a fault in the
report. Beside a live writer use `verify_settled`: a fault seen while the manifest moved on is read again
on the newer manifest instead of being reported (snapshot/reading.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
from dataclasses import asdict, dataclass, field
from typing import Any, cast

from snapshot import image as image_mod
from snapshot import reading
from snapshot.apply import apply_changes
from snapshot.backend import Backend
from snapshot.changes import ChangeSet
from snapshot.cipher import Cipher, as_cipher
from snapshot.envelope import Kind, decode, document_hash
from snapshot.errors import (
    BackendError,
    DocumentNotFound,
    EncryptionError,
    MissingManifest,
    RestoreError,
    TgsnapError,
)
from snapshot.manifest import MANIFEST_REF, DeltaEntry, Manifest, SnapshotEntry, decode_manifest
from snapshot.restore import Head, _fetch_delta, entry_bytes, plan, read_head, refuse_orphaned_documents
from snapshot.restore_plan import RestorePlan
from snapshot.restored import Progress

#: version of the `to_json()` layout; bumped only when a key changes meaning or disappears.
REPORT_FORMAT = 1


@dataclass
class Check:
    """One verified thing: a document (ref) or a derived whole (a shard, the image, the chain, the state)."""

    kind: str  # manifest | snapshot part | shard | snapshot | delta | chain | fork | foreign | state
    ref: str | None
    seq: int | None
    ok: bool
    reason: str = ""
    size: int | None = None

    def line(self) -> str:
        where = " ".join(x for x in (self.kind, f"seq {self.seq}" if self.seq is not None else "",
                                     f"ref {self.ref}" if self.ref is not None else "") if x)
        if self.ok:
            return f"ok    {where}" + (f" ({self.size} bytes)" if self.size is not None else "") + (
                f" ({self.reason})" if self.reason else "")
        return f"FAIL  {where}: {self.reason}"


@dataclass
class VerifyReport:
    checks: list[Check] = field(default_factory=list)
    #: storage holds no manifest and no document at all.
    empty: bool = False
    #: documents restore passes over on purpose (superseded retries, fenced writers): not faults.
    notes: list[str] = field(default_factory=list)
    #: the seq restore would reach if every check passes.
    last_seq: int = 0

    @property
    def faults(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    @property
    def ok(self) -> bool:
        return not self.empty and not self.faults

    def add(self, check: Check) -> Check:
        self.checks.append(check)
        return check

    def to_json(self) -> dict[str, Any]:
        """A stable, JSON-serialisable form (`REPORT_FORMAT`); tools add their own keys beside it."""
        return {"report_format": REPORT_FORMAT, "empty": self.empty, "last_seq": self.last_seq,
                "ok": not self.faults, "notes": list(self.notes), "checks": [asdict(c) for c in self.checks]}


#: the name the CLI and older callers know the report by.
Report = VerifyReport


class _ReadOnce:
    """A read-through view of a backend: each document is fetched once per verify run.

    Not a `Backend` subclass on purpose: it forwards everything it does not override, so it stays
    correct when the interface grows, and it has no way to write (put/publish/delete raise).
    """

    def __init__(self, backend: Backend):
        self._backend = backend
        self._cache: dict[str, bytes] = {}

    def __getattr__(self, name: str) -> Any:
        if name in ("put", "publish_manifest", "delete", "create_slot", "replace_slot"):
            raise AttributeError(f"verify reads only: {name} is not available")
        return getattr(self._backend, name)

    async def get(self, ref: str) -> bytes:
        data = self._cache.get(ref)
        if data is None:
            data = await self._backend.get(ref)
            self._cache[ref] = data
        return data

    def forget(self, ref: str) -> None:
        self._cache.pop(ref, None)


async def _fetch(backend: Backend, ref: str, entry: DeltaEntry | None = None,
                 packs: dict[str, bytes] | None = None) -> bytes | str:
    """The document's bytes (a listed delta's wherever it lives: own document, pack or inline in the
    manifest), or the reason they cannot be had."""
    try:
        if entry is not None:
            return await entry_bytes(backend, entry, packs)
        return await backend.get(ref)
    except DocumentNotFound:
        return "missing from storage (deleted, or never stored)"
    except BackendError as exc:
        if exc.retryable:
            raise  # an outage is not a verdict on the data: the caller exits 4 and may retry later
        return f"storage refused it: {exc}"


def _reason(exc: TgsnapError) -> str:
    return getattr(exc, "reason", None) or str(exc)


def _record_mismatch(data: bytes | str, size: int, sha256: str, what: str) -> str:
    """Compare stored bytes with the manifest's record of them; '' when they match."""
    if isinstance(data, str):
        return data
    if len(data) != size:
        return f"stored size {len(data)} differs from the manifest's {size} (truncated or replaced)"
    if document_hash(data).hex() != sha256:
        return f"SHA-256 differs from the manifest's: the {what} is corrupt or foreign"
    return ""


async def verify(backend: Backend, key: bytes | Cipher | None = None, *, progress: Progress | None = None,
                 check_state: bool = True) -> VerifyReport:
    """Check everything the current manifest depends on.

    Never raises for bad data (every fault is a `Check` in the report); raises `EncryptionError` for a
    key that does not fit the storage at all (no key, a key for plaintext storage: configuration), and a
    retryable `BackendError` for an outage.
    """
    cipher = as_cipher(key)
    reader = cast(Backend, _ReadOnce(backend))
    report = VerifyReport()
    try:
        # the newest full manifest, through claim-only slots: the reader rule of snapshot/restore.py
        head = await read_head(reader, cipher)
        if head.newest is None:
            await refuse_orphaned_documents(reader)  # documents without any manifest slot: a fault
            report.empty = True
            return report
        if head.full is None or head.full_ref is None:
            report.empty = True  # the first claim of an empty storage, still restoring: nothing to read yet
            return report
        raw = await reader.read_slot(head.full_ref)
        manifest, mhash = decode_manifest(raw, cipher=cipher, ref=MANIFEST_REF)
    except MissingManifest as exc:
        report.add(Check("manifest", MANIFEST_REF, None, False, str(exc)))
        return report
    except EncryptionError as exc:
        if "authentication failed" not in str(exc):
            raise  # no key, another key, or a key for plaintext storage: configuration (exit 2), not data
        report.add(Check("manifest", MANIFEST_REF, None, False, str(exc)))
        return report
    except TgsnapError as exc:
        report.add(Check("manifest", MANIFEST_REF, None, False, _reason(exc)))
        return report
    report.add(Check("manifest", MANIFEST_REF, manifest.generation, True, size=len(raw)))

    image = await _verify_snapshot(backend, manifest.snapshot, cipher, report, progress)
    changes = await _verify_deltas(reader, manifest, mhash, head, cipher, report, progress)
    if check_state and not report.faults and image is not None and changes is not None:
        _verify_state(image, changes, report)
    await _verify_points(backend, reader, manifest, mhash, head, cipher, report, progress, check_state)
    return report


async def _verify_points(backend: Backend, reader: Backend, manifest: Manifest, mhash: bytes, head: Head,
                         cipher: Cipher | None, report: VerifyReport, progress: Progress | None,
                         check_state: bool) -> None:
    """Retained points (manifest `history`, snapshot/retention.py) are checked like the current state:
    every part and listed delta, their chain up to the next point, and the rebuilt state, so a point
    restore would reach is never found broken only at the moment of need."""
    last_seq = report.last_seq
    for point in manifest.history:
        view = dataclasses.replace(manifest, snapshot=point.snapshot, deltas=list(point.deltas), history=[],
                                   last_ref=None)
        before = len(report.faults)
        image = await _verify_snapshot(backend, point.snapshot, cipher, report, progress)
        changes = await _verify_deltas(reader, view, mhash, head, cipher, report, progress, discover=False)
        if check_state and len(report.faults) == before and image is not None and changes is not None:
            _verify_state(image, changes, report)
    report.last_seq = last_seq


async def verify_settled(backend: Backend, key: bytes | Cipher | None = None, *, progress: Progress | None = None,
                         check_state: bool = True, attempts: int = reading.ATTEMPTS) -> VerifyReport:
    """`verify` beside a live writer: a fault found while the manifest moved on (a snapshot switch deleted
    what this run was reading) is no verdict; the run is repeated on the newer manifest. Faults under an
    unchanged manifest are reported as found (snapshot/reading.py)."""
    def moved(report: VerifyReport, n: int) -> None:
        report.notes.append(f"the manifest changed {n} time(s) while verifying (a live writer); these faults "
                            "were found on the last manifest read")

    return await reading.settled(
        backend, lambda _at: verify(backend, key, progress=progress, check_state=check_state),
        failed=lambda r: bool(r.faults), key=key, attempts=attempts, moved=moved)


async def _verify_snapshot(backend: Backend, snap: SnapshotEntry | None, cipher: Cipher | None,
                           report: VerifyReport, progress: Progress | None) -> bytes | None:
    """Every part against the manifest and its envelope, every shard, the state digest; the image or None.

    Parts are read from the backend directly (not through the read-once cache): they are the bulk of
    the storage and nothing reads them twice.
    """
    if snap is None:
        return b""  # no snapshot yet: state is the deltas applied to an empty database
    total, done = len(snap.parts), 0
    raws: list[bytes] = []
    whole_ok = True
    for shard in snap.shards:
        bodies: list[bytes] = []
        shard_ok = True
        for part in shard.parts:
            data = await _fetch(backend, part.ref)
            done += 1
            if progress:
                progress("verify snapshot parts", done, total)
            reason = _record_mismatch(data, part.size, part.sha256, "part")
            body = b""
            if not reason:
                assert isinstance(data, bytes)
                try:
                    doc = decode(data, ref=part.ref, cipher=cipher, expect=Kind.SNAPSHOT_PART)
                except TgsnapError as exc:  # CorruptDocument, EncryptionError
                    reason = _reason(exc)
                else:
                    if doc.header.seq != snap.base_seq or doc.header.prev_hash.hex() != snap.image_sha256:
                        reason = ("belongs to another snapshot (its seq or image digest differs from the "
                                  "manifest's)")
                    body = doc.body
            if reason:
                report.add(Check("snapshot part", part.ref, snap.base_seq, False, reason))
                shard_ok = False
                continue
            bodies.append(body)
            report.add(Check("snapshot part", part.ref, snap.base_seq, True, size=part.size))
        if not shard_ok:
            whole_ok = False
            continue
        try:
            raws.append(image_mod.inflate_shard(shard.index, b"".join(bodies), shard.raw_size,
                                                bytes.fromhex(shard.sha256)))
        except RestoreError as exc:
            report.add(Check("shard", f"shard {shard.index}", snap.base_seq, False, str(exc)))
            whole_ok = False
    if not whole_ok:
        return None
    image = b"".join(raws)
    if len(image) != snap.image_size or hashlib.sha256(image).hexdigest() != snap.image_sha256:
        report.add(Check("snapshot", None, snap.base_seq, False,
                         "state digest mismatch: the rebuilt image's size or SHA-256 differs from the manifest's"))
        return None
    report.add(Check("snapshot", None, snap.base_seq, True, size=snap.stored_size))
    return image


async def _verify_deltas(reader: Backend, manifest: Manifest, mhash: bytes, head: Head, cipher: Cipher | None,
                         report: VerifyReport, progress: Progress | None, *, discover: bool = True
                         ) -> list[ChangeSet] | None:
    """Each listed delta on its own (so every bad one is named), then the chain restore would follow."""
    prev = manifest.base_hash
    expected_seq = manifest.base_seq + 1
    total = len(manifest.deltas)
    packs: dict[str, bytes] = {}
    for i, entry in enumerate(manifest.deltas, 1):
        data = await _fetch(reader, entry.ref, entry, packs)
        if progress:
            progress("verify deltas", i, total)
        reason = _record_mismatch(data, entry.size, entry.hash, "delta")
        if not reason:
            reason = await _open_delta(reader, entry, cipher, packs, prev, expected_seq)
        if reason:
            report.add(Check("delta", entry.ref, entry.seq, False, reason))
            # later deltas are still judged on their own: the chain continues from what the manifest claims
            prev = bytes.fromhex(entry.hash)
        else:
            report.add(Check("delta", entry.ref, entry.seq, True, size=entry.size))
            prev = document_hash(data)  # type: ignore[arg-type]
        expected_seq += 1
    # The chain as restore selects it: also finds deltas stored after the manifest was last published.
    try:
        p = await plan(reader, cipher, manifest=(manifest, mhash), head=head, _discover=discover)
    except TgsnapError as exc:
        named = [c for c in report.faults if c.ref and (c.ref == getattr(exc, "ref", None) or c.ref in str(exc))]
        if not named:
            report.add(Check("chain", getattr(exc, "ref", None), None, False, str(exc)))
        return None
    _chain_checks(p, manifest, report)
    return [p.changes[d.ref] for d in p.deltas]


async def _open_delta(reader: Backend, entry: DeltaEntry, cipher: Cipher | None, packs: dict[str, bytes],
                      prev: bytes, expected_seq: int) -> str:
    """Open a listed delta exactly as restore does (envelope, body); then its place in the chain."""
    try:
        cand = await _fetch_delta(reader, entry.ref, cipher, False, entry, packs)
    except TgsnapError as exc:  # an unreadable header of a listed document
        return _reason(exc)
    if cand is None:
        return "not a delta document"
    if cand.error is not None:
        return _reason(cand.error)
    if cand.seq != expected_seq:
        return f"chain gap or reorder: header seq {cand.seq}, manifest seq {entry.seq}, expected {expected_seq}"
    if cand.prev != prev:
        return "chain link broken: its predecessor hash does not match the previous document"
    return ""


def _chain_checks(p: RestorePlan, manifest: Manifest, report: VerifyReport) -> None:
    """What the chain restore selected adds to the per-document verdicts: documents found beyond the
    manifest, documents of a claim this storage never made (a fork) or of another storage (foreign),
    which restore never applies but which mean the storage was copied or shared, and the notes on
    documents passed over on purpose."""
    listed = {e.ref for e in manifest.deltas}
    for d in p.chain:
        if d.ref not in listed:
            report.add(Check("delta", d.ref, d.seq, True, "found after the manifest", size=d.size))
    for note in p.forks:
        report.add(Check("fork", None, None, False, note))
    for note in p.foreign:
        report.add(Check("foreign", None, None, False, note))
    report.notes.extend(p.ignored)
    report.last_seq = p.seq


def _verify_state(image: bytes, changes: list[ChangeSet], report: VerifyReport) -> None:
    """Rebuild the state as restore does (image loaded, deltas applied), then PRAGMA integrity_check."""
    conn: sqlite3.Connection | None = None
    try:
        conn = image_mod.load(image)
        for cs in changes:
            apply_changes(conn, cs)
        result = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        if result != ["ok"]:
            report.add(Check("state", None, report.last_seq, False, "integrity_check: " + "; ".join(result[:5])))
        else:
            tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
            report.add(Check("state", None, report.last_seq, True, f"{tables} tables"))
    except (sqlite3.Error, RestoreError) as exc:
        report.add(Check("state", None, report.last_seq, False, f"rebuilding the state failed: {exc}"))
    finally:
        if conn is not None:
            conn.close()
