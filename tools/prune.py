"""`python -m tools.prune`: the CLI over `snapshot.retention` (the policy, the plan and prune live there).

`--dry-run` prints what would go and changes nothing; a real run takes the writer lease like compact,
drops the retained points the policy lets go from the manifest, deletes what only they needed, reports.
"""

from __future__ import annotations

import json
import sys

from snapshot.errors import ConfigError
from snapshot.retention import PrunePlan, make_plan, parse_duration, prune
from tools.cli_common import EXIT_OK, NoStorage, make_parser, open_backend, run, settings_from_args
from tools.compact import busy_advice

PROG = "tgsnap prune"
DESCRIPTION = """\
Let go of retained history: older snapshots (and the deltas between them) that the writer kept for
point-in-time restore (ReplicaConfig keep_snapshots / keep_for), beyond what you ask to keep, plus
unlisted leftovers (duplicates of lost acknowledgements, parts of snapshots that never switched) on
storage that can list its documents. Never deletes what the manifest or a kept point needs. On
Telegram storage a document that may be older than 48 h cannot be deleted any more: it is left in
place and listed. Takes the writer lease, so it refuses (exit 3) while a live writer holds the
storage; --wait waits for it. --dry-run lists exactly what a real run would delete and changes nothing."""
EXAMPLES = """\
  # what would go if only the 2 newest older snapshots stayed? (read only)
  tgsnap prune --storage-dir ./data --keep-snapshots 2 --dry-run

  # keep every point of the last 7 days, drop the rest
  tgsnap prune --storage-dir ./data --keep-for 7d

  # drop all retained history (the current snapshot and its deltas always stay)
  python -m tools.prune --storage-dir ./data
"""

__all__ = ["PrunePlan", "build_parser", "main"]


def build_parser():
    parser = make_parser(PROG, DESCRIPTION, EXAMPLES)
    parser.add_argument("--dry-run", "-n", action="store_true", help="list what would go; read only, change nothing")
    parser.add_argument("--keep-snapshots", type=int, default=0, metavar="N",
                        help="keep the N newest older snapshots (default 0)")
    parser.add_argument("--keep-for", default="0", metavar="DURATION",
                        help="also keep every point needed to reach the last DURATION (seconds, or 45m, 48h, "
                             "7d; default 0)")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="wait up to SECONDS for a live writer's lease to be released or expire (default 0)")
    parser.add_argument("--json", action="store_true", help="print the plan / result as JSON on stdout")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.keep_snapshots < 0:
        parser.error("--keep-snapshots must not be negative")
    if args.wait < 0:
        parser.error("--wait must not be negative")
    try:
        keep_for = parse_duration(args.keep_for)
    except ConfigError as e:
        parser.error(f"--keep-for: {e}")

    async def body() -> int:
        from snapshot.errors import StorageBusy

        settings = settings_from_args(args)
        backend = await open_backend(settings, writes=not args.dry_run)
        try:
            p = await make_plan(backend, settings.encryption_key, keep_snapshots=args.keep_snapshots,
                                keep_for=keep_for)
            if p.empty:
                raise NoStorage(f"storage is empty ({settings.describe()}): nothing to prune")
            if args.dry_run or p.nothing_to_do:
                _emit(args.json, {"dry_run": args.dry_run, "plan": p.as_dict()}, str(p))
                return EXIT_OK
            try:
                done = await prune(backend, settings.encryption_key, keep_snapshots=args.keep_snapshots,
                                   keep_for=keep_for, wait=args.wait)
            except StorageBusy as exc:
                raise busy_advice(exc, args.wait, "prune") from None
        finally:
            await backend.close()
        _emit(args.json, {"dry_run": False, "result": done.as_dict()},
              f"{done}\npruned: {len(done.dropped)} point(s) dropped, {len(done.delete)} document(s) deleted, "
              f"{len(done.too_old)} left in place")
        return EXIT_OK

    return run(PROG, body)


def _emit(as_json: bool, data: dict, text: str) -> None:
    sys.stdout.write((json.dumps(data, indent=2) if as_json else text) + "\n")


if __name__ == "__main__":
    sys.exit(main())
