"""`python -m tools.verify`: the CLI over `snapshot.verify.verify` (what is checked, and why, is there).

Prints the faults (every check with --verbose) and a summary line, or the report as JSON; exits 0 when
everything passes, 1 when anything is at fault. Nothing is written.
"""

from __future__ import annotations

import json
import sys

from snapshot import reading
from snapshot.backend import Backend
from snapshot.cipher import as_cipher
from snapshot.restored import Progress
from snapshot.verify import Check, Report, VerifyReport, verify
from snapshot.verify import verify_settled as _verify_settled
from tools.cli_common import (
    EXIT_EMPTY,
    EXIT_FAILED,
    EXIT_OK,
    ProgressPrinter,
    make_parser,
    open_backend,
    run,
    settings_from_args,
)

__all__ = ["Check", "Report", "VerifyReport", "build_parser", "main", "verify_settled", "verify_storage"]

PROG = "tgsnap verify"
DESCRIPTION = """\
Check every document the current manifest depends on and name each one at fault (kind, seq, ref, reason):
the manifest, every snapshot part, every shard and the state digest, every delta and its chain link
(including deltas stored after the last manifest), then the rebuilt state (PRAGMA integrity_check).
Reads only; exit 0 when everything passes, 1 when anything is at fault, 5 when the storage is empty."""
EXAMPLES = """\
  # verify the local storage the bot writes to; silent but for faults and a summary
  tgsnap verify --storage-dir ./data

  # list every document checked, and write a machine-readable report
  python -m tools.verify --storage-dir ./data --verbose --json > verify.json

  # storage in Telegram, configured through the same environment/.env as the bot
  TGSNAP_STORAGE_CHAT=-1001234567890 TGSNAP_BOT_TOKEN=... tgsnap verify
"""


async def verify_storage(backend: Backend, *, encryption_key: bytes | None = None,
                         progress: Progress | None = None, check_state: bool = True) -> VerifyReport:
    """Kept for callers of the earlier API: `snapshot.verify.verify`."""
    return await verify(backend, as_cipher(encryption_key), progress=progress, check_state=check_state)


async def verify_settled(backend: Backend, *, encryption_key: bytes | None = None,
                         progress: Progress | None = None, check_state: bool = True,
                         attempts: int = reading.ATTEMPTS) -> VerifyReport:
    """`snapshot.verify.verify_settled` under the keyword names of `verify_storage`."""
    return await _verify_settled(backend, as_cipher(encryption_key), progress=progress, check_state=check_state,
                                 attempts=attempts)


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
            json.dump({"storage": settings.describe(), **report.to_json()}, out, indent=2)
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
                return EXIT_EMPTY
            elif report.faults:
                out.write(f"{len(report.faults)} fault(s) in {len(report.checks)} checks; "
                          "see docs/operations.md, 'When verify fails'\n")
            else:
                out.write(f"all {len(report.checks)} checks passed; state at seq {report.last_seq}\n")
        if report.empty:
            return EXIT_EMPTY
        return EXIT_FAILED if report.faults else EXIT_OK

    return run(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
