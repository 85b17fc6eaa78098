"""`python -m tools.compact`: the CLI over `snapshot.compact` (the plan, and compaction itself, live there).

`--dry-run` prints the plan and changes nothing; a real run prints the plan's head, compacts, and reports.
"""

from __future__ import annotations

import json
import sys

from snapshot.compact import CompactPlan, CompactResult, compact, make_plan
from snapshot.errors import StorageBusy
from snapshot.formatting import size_text, when
from tools.cli_common import EXIT_OK, NoStorage, ProgressPrinter, make_parser, open_backend, run, settings_from_args

PROG = "tgsnap-compact"
DESCRIPTION = """\
Fold the delta chain into a new snapshot: restore the latest state, write it as a snapshot whose base
is the last delta, switch the manifest to it, delete the superseded documents. Takes the writer lease,
so it refuses (exit 3, naming the holder and when its lease expires) while a live writer such as the
bot holds the storage; --wait waits for the lease instead. --dry-run prints the plan and changes
nothing. Progress (parts fetched and uploaded) goes to stderr."""
EXAMPLES = """\
  # what would happen? (reads the manifest and the deltas only, writes nothing)
  tgsnap-compact --storage-dir ./data --dry-run

  # compact while the bot is stopped
  tgsnap-compact --storage-dir ./data

  # wait up to 2 minutes for a writer that is shutting down to release its lease
  python -m tools.compact --storage-dir ./data --wait 120

  # Telegram storage, configured through the same environment/.env as the bot
  TGSNAP_STORAGE_CHAT=-1001234567890 TGSNAP_BOT_TOKEN=... tgsnap-compact --dry-run
"""


__all__ = ["CompactPlan", "CompactResult", "build_parser", "compact", "main", "make_plan"]


def build_parser():
    parser = make_parser(PROG, DESCRIPTION, EXAMPLES)
    parser.add_argument("--dry-run", "-n", action="store_true", help="print the plan; read only, change nothing")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="wait up to SECONDS for a live writer's lease to be released or expire (default 0)")
    parser.add_argument("--force", action="store_true", help="write a new snapshot even with no deltas to fold")
    parser.add_argument("--json", action="store_true", help="print the plan / result as JSON on stdout")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.wait < 0:
        parser.error("--wait must not be negative")

    async def body() -> int:
        settings = settings_from_args(args)
        backend = await open_backend(settings, writes=not args.dry_run)
        progress = ProgressPrinter(quiet=args.quiet)
        try:
            p = await make_plan(backend, settings.encryption_key, progress)
            if p.empty:
                raise NoStorage(f"storage is empty ({settings.describe()}): nothing to compact")
            if args.dry_run or (p.nothing_to_do and not args.force):
                _emit(args.json, {"dry_run": args.dry_run, "plan": p.as_dict()}, str(p))
                return EXIT_OK
            if not args.quiet:
                sys.stderr.write(str(p).split("\n\n")[0] + "\n")
            try:
                result = await compact(backend, settings.encryption_key, wait=args.wait, progress=progress)
            except StorageBusy as exc:
                raise busy_advice(exc, args.wait) from None
        finally:
            await backend.close()
        _emit(args.json, {"dry_run": False, "plan": p.as_dict(), "result": result.__dict__},
              f"compacted: {result.deltas_folded} delta(s) folded into a snapshot at seq {result.base_seq} "
              f"({result.parts} part(s), {size_text(result.size)}) in {result.seconds:.1f} s")
        return EXIT_OK

    return run(PROG, body)


def busy_advice(exc: StorageBusy, waited: float, command: str = "compact") -> StorageBusy:
    """The library's StorageBusy, told in this command's terms: what to stop, and the flag that waits."""
    if exc.writer_id is None:
        return StorageBusy(f"{exc} ({command}: --wait SECONDS waits for it)")
    who = f"writer {exc.writer_id}" + (f" (host {exc.host}, pid {exc.pid})" if exc.host else "")
    until = f" until {when(exc.expires_at)}" if exc.expires_at is not None else ""
    waited_text = f" after waiting {waited:g} s" if waited else ""
    return StorageBusy(f"{who} holds the storage{until}{waited_text}: stop it (a clean shutdown releases the "
                       f"lease), or run {command} with --wait SECONDS to wait for it to go",
                       writer_id=exc.writer_id, host=exc.host, pid=exc.pid, expires_at=exc.expires_at,
                       epoch=exc.epoch)


def _emit(as_json: bool, data: dict, text: str) -> None:
    sys.stdout.write((json.dumps(data, indent=2) if as_json else text) + "\n")


if __name__ == "__main__":
    sys.exit(main())
