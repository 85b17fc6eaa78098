"""`python -m tools.verify`: check every document the current manifest depends on, and name each one at fault.

Unlike restore, which stops at the first bad document, verify keeps going so one run lists every
problem: the manifest; each snapshot part (present, stored size, SHA-256 against the manifest, envelope
checksum, kind); each shard (decompresses, raw SHA-256) and the whole image (state digest); each delta in
the chain (present, size and hash against the manifest, envelope, seq, link to its predecessor, body
decodes), including deltas stored after the manifest was last published; finally the rebuilt state
(snapshot + deltas applied, `PRAGMA integrity_check`). Nothing is written.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
from dataclasses import asdict, dataclass, field

import zstandard

from snapshot import reading
from snapshot.apply import apply_changes
from snapshot.backend import Backend
from snapshot.changes import ChangeSet
from snapshot.cipher import as_cipher
from snapshot.delta import decode_body
from snapshot.envelope import Kind, decode, document_hash
from snapshot.errors import (
    BackendError,
    DocumentNotFound,
    EncryptionError,
    MissingManifest,
    RestoreError,
    TgsnapError,
)
from snapshot.manifest import MANIFEST_REF, DeltaEntry, Manifest, decode_manifest
from snapshot.restore import entry_bytes, plan, read_head, refuse_orphaned_documents
from snapshot.restored import Progress
from tools.cli_common import EXIT_FAILED, EXIT_OK, ProgressPrinter, make_parser, open_backend, run, settings_from_args

PROG = "tgsnap-verify"
DESCRIPTION = """\
Check every document the current manifest depends on and name each one at fault (kind, seq, ref, reason):
the manifest, every snapshot part, every shard and the state digest, every delta and its chain link
(including deltas stored after the last manifest), then the rebuilt state (PRAGMA integrity_check).
Reads only; exit 0 when everything passes, 1 when anything is at fault."""
EXAMPLES = """\
  # verify the local storage the bot writes to; silent but for faults and a summary
  tgsnap-verify --storage-dir ./data

  # list every document checked, and write a machine-readable report
  python -m tools.verify --storage-dir ./data --verbose --json > verify.json

  # storage in Telegram, configured through the same environment/.env as the bot
  TGSNAP_STORAGE_CHAT=-1001234567890 TGSNAP_BOT_TOKEN=... tgsnap-verify
"""


@dataclass
class Check:
    """One verified thing: a document (ref) or a derived whole (a shard, the image, the state)."""

    kind: str  # manifest | snapshot part | shard | snapshot | delta | state
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
class Report:
    checks: list[Check] = field(default_factory=list)
    empty: bool = False
    #: documents restore passes over on purpose (superseded retries, fenced writers): not faults.
    notes: list[str] = field(default_factory=list)
    #: the seq restore would reach if every check passes.
    last_seq: int = 0

    @property
    def faults(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def add(self, check: Check) -> Check:
        self.checks.append(check)
        return check


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
            raise  # an outage is not a verdict on the data: let the caller exit 4 and retry later
        return f"storage refused it: {exc}"


def _open(data: bytes, ref: str, expect: Kind, cipher) -> tuple[object | None, str]:
    try:
        return decode(data, ref=ref, cipher=cipher, expect=expect), ""
    except TgsnapError as exc:  # CorruptDocument, EncryptionError
        return None, getattr(exc, "reason", None) or str(exc)


async def verify_storage(backend: Backend, *, encryption_key: bytes | None = None,
                         progress: Progress | None = None, check_state: bool = True) -> Report:
    """Check everything the current manifest depends on; never raises for bad data, only for outages."""
    cipher = as_cipher(encryption_key)
    report = Report()
    try:
        # the newest full manifest, through claim-only slots (snapshot/restore.py read_head)
        head = await read_head(backend, cipher)
        if head.newest is None:
            await refuse_orphaned_documents(backend)
            report.empty = True
            return report
        if head.full is None:
            report.empty = True  # the first claim of an empty storage, still restoring
            return report
        raw = await backend.read_slot(head.full_ref)  # type: ignore[arg-type]
        manifest, _mhash = decode_manifest(raw, cipher=cipher, ref=MANIFEST_REF)
    except MissingManifest as exc:
        report.add(Check("manifest", MANIFEST_REF, None, False, str(exc)))
        return report
    except EncryptionError as exc:
        if "authentication failed" not in str(exc):
            raise  # no key, another key, or a key for plaintext storage: configuration (exit 2), not data
        report.add(Check("manifest", MANIFEST_REF, None, False, str(exc)))
        return report
    except TgsnapError as exc:
        report.add(Check("manifest", MANIFEST_REF, None, False, getattr(exc, "reason", None) or str(exc)))
        return report
    report.add(Check("manifest", MANIFEST_REF, manifest.generation, True, size=len(raw)))

    image = await _verify_snapshot(backend, manifest, cipher, report, progress)
    changes = await _verify_deltas(backend, manifest, _mhash, cipher, report, progress)
    if check_state and not report.faults and image is not None and changes is not None:
        _verify_state(image, changes, report)
    return report


async def verify_settled(backend: Backend, *, encryption_key: bytes | None = None,
                         progress: Progress | None = None, check_state: bool = True,
                         attempts: int = reading.ATTEMPTS) -> Report:
    """`verify_storage` beside a live writer: a fault found while the manifest moved on (a snapshot
    switch deleted what this run was reading) is no verdict; the run is repeated on the newer manifest.
    Faults under an unchanged manifest are reported as found (snapshot/reading.py)."""
    def moved(report: Report, n: int) -> None:
        report.notes.append(f"the manifest changed {n} time(s) while verifying (a live writer); these faults "
                            "were found on the last manifest read")

    return await reading.settled(
        backend, lambda _at: verify_storage(backend, encryption_key=encryption_key, progress=progress,
                                            check_state=check_state),
        failed=lambda r: bool(r.faults), key=encryption_key, attempts=attempts, moved=moved)


async def _verify_snapshot(backend: Backend, manifest: Manifest, cipher, report: Report,
                           progress: Progress | None) -> bytes | None:
    snap = manifest.snapshot
    if snap is None:
        return b""  # no snapshot yet: state is the deltas applied to an empty database
    total = len(snap.parts)
    done = 0
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
            reason = ""
            if isinstance(data, str):
                reason = data
            elif len(data) != part.size:
                reason = f"stored size {len(data)} differs from the manifest's {part.size} (truncated or replaced)"
            elif document_hash(data).hex() != part.sha256:
                reason = "SHA-256 differs from the manifest's: the part is corrupt or foreign"
            if not reason:
                doc, reason = _open(data, part.ref, Kind.SNAPSHOT_PART, cipher)
            if not reason and (doc.header.seq != snap.base_seq  # type: ignore[union-attr]
                               or doc.header.prev_hash.hex() != snap.image_sha256):  # type: ignore[union-attr]
                reason = "belongs to another snapshot (its seq or image digest differs from the manifest's)"
            if reason:
                report.add(Check("snapshot part", part.ref, snap.base_seq, False, reason))
                shard_ok = False
                continue
            bodies.append(doc.body)  # type: ignore[union-attr]
            report.add(Check("snapshot part", part.ref, snap.base_seq, True, size=part.size))
        if not shard_ok:
            whole_ok = False
            continue
        name = f"shard {shard.index}"
        try:
            raw = zstandard.ZstdDecompressor().decompress(b"".join(bodies), max_output_size=shard.raw_size)
        except zstandard.ZstdError as exc:
            report.add(Check("shard", name, snap.base_seq, False, f"does not decompress ({exc})"))
            whole_ok = False
            continue
        if len(raw) != shard.raw_size or hashlib.sha256(raw).hexdigest() != shard.sha256:
            report.add(Check("shard", name, snap.base_seq, False,
                             "decompressed bytes differ from the manifest's size or SHA-256"))
            whole_ok = False
            continue
        raws.append(raw)
    if not whole_ok:
        return None
    image = b"".join(raws)
    if len(image) != snap.image_size or hashlib.sha256(image).hexdigest() != snap.image_sha256:
        report.add(Check("snapshot", None, snap.base_seq, False,
                         "state digest mismatch: the rebuilt image's size or SHA-256 differs from the manifest's"))
        return None
    report.add(Check("snapshot", None, snap.base_seq, True, size=snap.stored_size))
    return image


async def _verify_deltas(backend: Backend, manifest: Manifest, mhash: bytes, cipher, report: Report,
                         progress: Progress | None) -> list[ChangeSet] | None:
    """Each listed delta on its own (so every bad one is named), then the chain restore would follow."""
    prev = manifest.base_hash
    expected_seq = manifest.base_seq + 1
    total = len(manifest.deltas)
    packs: dict[str, bytes] = {}
    for i, entry in enumerate(manifest.deltas, 1):
        data = await _fetch(backend, entry.ref, entry, packs)
        if progress:
            progress("verify deltas", i, total)
        reason = ""
        if isinstance(data, str):
            reason = data
        elif len(data) != entry.size:
            reason = f"stored size {len(data)} differs from the manifest's {entry.size} (truncated or replaced)"
        elif document_hash(data).hex() != entry.hash:
            reason = "SHA-256 differs from the manifest's: the delta is corrupt or foreign"
        prev, expected_seq = _check_delta(report, entry.ref, entry.seq, data, reason, prev, expected_seq, cipher,
                                          claimed=bytes.fromhex(entry.hash))
    # The chain as restore selects it: also finds deltas stored after the manifest was last published.
    try:
        p = await plan(backend, cipher, manifest=(manifest, mhash))
    except TgsnapError as exc:
        named = [c for c in report.faults if c.ref and (c.ref == getattr(exc, "ref", None) or c.ref in str(exc))]
        if not named:
            report.add(Check("chain", getattr(exc, "ref", None), None, False, str(exc)))
        return None
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
    return [p.changes[d.ref] for d in p.deltas]


def _check_delta(report: Report, ref: str, seq: int, data: bytes | str, reason: str, prev: bytes,
                 expected_seq: int, cipher, *, claimed: bytes) -> tuple[bytes, int]:
    """Check one delta; return (the hash the next delta must link to, the next expected seq)."""
    doc = None
    if not reason:
        assert isinstance(data, bytes)
        doc, reason = _open(data, ref, Kind.DELTA, cipher)
    if not reason:
        h = doc.header  # type: ignore[union-attr]
        if h.seq != seq or seq != expected_seq:
            reason = f"chain gap or reorder: header seq {h.seq}, manifest seq {seq}, expected {expected_seq}"
        elif h.prev_hash != prev:
            reason = "chain link broken: its predecessor hash does not match the previous document"
    if not reason:
        try:
            decode_body(doc.body, ref, version=doc.header.version)  # type: ignore[union-attr]
        except TgsnapError as exc:
            reason = getattr(exc, "reason", None) or str(exc)
    if reason:
        report.add(Check("delta", ref, seq, False, reason))
        # later deltas are still judged on their own: the chain continues from what the manifest claims
        return claimed, expected_seq + 1
    report.add(Check("delta", ref, seq, True, size=doc.size))  # type: ignore[union-attr]
    return doc.hash, expected_seq + 1  # type: ignore[union-attr]


def _verify_state(image: bytes | None, changes: list[ChangeSet], report: Report) -> None:
    conn = sqlite3.connect(":memory:")
    try:
        if image:
            conn.deserialize(image)
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
        conn.close()


def build_parser():
    parser = make_parser(PROG, DESCRIPTION, EXAMPLES)
    parser.add_argument("--verbose", "-v", action="store_true", help="print every check, not only faults")
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    async def body() -> int:
        settings = settings_from_args(args)
        backend = await open_backend(settings)
        try:
            report = await verify_settled(backend, encryption_key=settings.encryption_key,
                                          progress=ProgressPrinter(quiet=args.quiet))
        finally:
            await backend.close()
        out = sys.stdout
        if args.json:
            json.dump({"storage": settings.describe(), "empty": report.empty, "last_seq": report.last_seq,
                       "ok": not report.faults, "notes": report.notes,
                       "checks": [asdict(c) for c in report.checks]}, out, indent=2)
            out.write("\n")
        else:
            for c in report.checks:
                if args.verbose or not c.ok:
                    out.write(c.line() + "\n")
            if args.verbose:
                for note in report.notes:
                    out.write(f"note  {note}\n")
            if report.empty:
                out.write(f"storage is empty ({settings.describe()}): nothing to verify\n")
            elif report.faults:
                out.write(f"{len(report.faults)} fault(s) in {len(report.checks)} checks; "
                          "see docs/operations.md, 'When verify fails'\n")
            else:
                out.write(f"all {len(report.checks)} checks passed; state at seq {report.last_seq}\n")
        return EXIT_FAILED if report.faults else EXIT_OK

    return run(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
