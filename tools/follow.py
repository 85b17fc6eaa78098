"""`python -m tools.follow --to postgresql://...`: keep a PostgreSQL replica of the stored state current.

Thin over `snapshot.postgres_follow.Follower` (docs/migrating.md walks through a zero-downtime move).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time

from snapshot import postgres as pg
from snapshot.postgres_follow import Follower, FollowError, StepResult
from tools.cli_common import (
    EXIT_BACKEND,
    EXIT_FAILED,
    EXIT_OK,
    fail,
    make_parser,
    open_backend,
    run,
    settings_from_args,
)

PROG = "tgsnap-follow"
DESCRIPTION = """\
Follow the storage chain into PostgreSQL: seed the schema from the current state (or continue from a
`tgsnap-export --to postgresql://...`), then apply every new delta as upserts and deletes, one
PostgreSQL transaction per delta, with the cursor (seq, hash, storage) kept in <schema>._tgsnap_follow.
Re-seeds atomically when its deltas were compacted away or the chain moved to a newer writer's. Takes no
lease and writes nothing to storage: run it beside the live bot. Survives restarts and outages of either
side (retries with backoff). Put the password in PGPASSWORD or ~/.pgpass, not on the command line."""
EXAMPLES = """\
  # follow until stopped (Ctrl-C), one line per pass that moved
  PGPASSWORD=... tgsnap-follow --storage-dir ./data --to postgresql://bot@127.0.0.1/bot --schema clicker

  # one catch-up pass (the final one of a migration), exit 0 when PostgreSQL equals storage
  tgsnap-follow --storage-dir ./data --to postgresql://bot@127.0.0.1/bot --schema clicker --once
"""


def build_parser():
    parser = make_parser(PROG, DESCRIPTION, EXAMPLES)
    parser.add_argument("--to", required=True, metavar="URL", help="postgresql://user@host:port/database")
    parser.add_argument("--schema", default="public", metavar="NAME", help="PostgreSQL schema (default public)")
    parser.add_argument("--interval", type=float, default=2.0, metavar="SECONDS",
                        help="pause between passes (default 2)")
    parser.add_argument("--once", action="store_true", help="one catch-up pass, then exit")
    parser.add_argument("--check", action="store_true",
                        help="after one pass, compare every table's rows and checksum with the restored state "
                             "(implies --once; exit 1 on any difference)")
    parser.add_argument("--force", action="store_true",
                        help="take over tables that are not this storage's replica (replacing them)")
    parser.add_argument("--quiet", "-q", action="store_true", help="print only problems")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not pg.is_postgres_url(args.to):
        parser.error(f"--to {pg.redact(args.to)!r}: expected a postgresql:// URL")
    if args.check:
        args.once = True
    if args.interval <= 0:
        parser.error("--interval must be positive")
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.WARNING, format=f"{PROG}: %(message)s",
                        stream=sys.stderr)

    def show(r: StepResult) -> None:
        if args.quiet or (not r.applied and not r.reseeded and not args.once):
            return
        what = f"re-seeded ({r.reseeded})" if r.reseeded else f"applied {r.applied} delta(s)"
        behind = "" if r.lag_seconds is None or not r.lag else f" ({r.lag_seconds:.1f} s of writes)"
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} {what}; at seq {r.seq}, storage at seq {r.tip}, "
                         f"lag {r.lag}{behind}\n")
        for n in r.notes:
            sys.stderr.write(f"note: {n}\n")

    async def body() -> int:
        settings = settings_from_args(args)
        follower = Follower(lambda: open_backend(settings), settings.encryption_key, args.to, schema=args.schema,
                            location=pg.location_of(settings), force=args.force)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        try:
            last = await follower.run(interval=args.interval, once=args.once, stop=stop, report=show,
                                      max_failures=1 if args.once else None)
            if args.check:
                res = await follower.check()
                for t in res.tables:
                    sys.stderr.write(f"  {args.schema}.{t.name}: {t.rows} row(s), checksum {t.checksum} matches\n")
                # what of storage's schema PostgreSQL does not carry (views, triggers, ...): named, not a failure
                for n in res.notes:
                    sys.stderr.write(f"note: not in PostgreSQL: {n}\n")
                for problem in res.problems:
                    fail(f"{PROG}: check: {problem}")
                if not res.ok:
                    return EXIT_FAILED
                version = "" if res.user_version is None else f" (schema version {res.user_version})"
                extra = f"; {len(res.notes)} schema note(s) above" if res.notes else ""
                sys.stderr.write(f"check: the replica equals the stored state at seq {res.tip}{version}{extra}\n")
        except pg.PostgresUnreachable as exc:
            fail(f"{PROG}: {exc}")
            return EXIT_BACKEND
        except (FollowError, pg.PostgresError) as exc:
            fail(f"{PROG}: {exc}")
            return EXIT_FAILED
        finally:
            await follower.close()
        if last is not None and not args.quiet:
            sys.stderr.write(f"stopped at seq {last.seq} (storage at seq {last.tip}, lag {last.lag})\n")
        return EXIT_OK

    return run(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
