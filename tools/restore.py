"""`tgsnap restore`: rebuild the stored state into a local SQLite file, exactly as the bot would load it.

Unlike `export`, which writes the application's tables only, restore writes the whole database the
snapshot and deltas describe, tgsnap's `_tgsnap_*` tables included: the file is the state a writer
would resume from, byte for byte what `snapshot.restore.restore` rebuilds in memory. `--dry-run` prints
the restore plan (every part to fetch and delta to apply) and downloads no snapshot part.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

from snapshot import reading
from snapshot.formatting import when
from snapshot.restore import execute, plan
from snapshot.restored import Restored
from tools.cli_common import (
    EXIT_FAILED,
    EXIT_OK,
    NoStorage,
    ProgressPrinter,
    fail,
    make_parser,
    open_backend,
    prog_name,
    run,
    seq_number,
    settings_from_args,
)
from tools.export import parse_time

PROG = "tgsnap-restore"
DESCRIPTION = """\
Rebuild the stored state (the latest, or as it was at --at-seq / --at-time) into a local SQLite file,
tgsnap's internal tables included: the exact database a writer would resume from (use export for the
application's tables only, or for JSON lines). Every byte is verified on the way. Reads only: takes no
lease, safe beside a live bot. The file appears atomically; an existing one is kept unless --force.
--dry-run prints the restore plan and fetches no snapshot part."""
EXAMPLES = """\
  # what a restore would fetch and apply (no snapshot part is downloaded)
  tgsnap restore --storage-dir ./data --dry-run

  # the latest state, then look at it
  tgsnap restore --storage-dir ./data --to state.sqlite
  sqlite3 state.sqlite 'SELECT count(*) FROM users'

  # the state right after delta 1200 (e.g. the last good one before a damaged delta 1201)
  tgsnap restore --storage-dir ./data --at-seq 1200 --to at-1200.sqlite
"""


def build_parser():
    parser = make_parser(PROG, DESCRIPTION, EXAMPLES)
    parser.add_argument("--to", metavar="FILE", default="restored.sqlite",
                        help="the SQLite file to write (default restored.sqlite)")
    when_group = parser.add_mutually_exclusive_group()
    when_group.add_argument("--at-seq", type=seq_number, metavar="SEQ",
                            help="the state right after delta SEQ (0: before the first delta)")
    when_group.add_argument("--at-time", metavar="TIME",
                            help="the state as of TIME: the last delta captured at or before it "
                                 "(ISO 8601, UTC unless an offset is given, or unix seconds)")
    parser.add_argument("--dry-run", "-n", action="store_true", help="print the restore plan; write nothing")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    return parser


def write_database(conn: sqlite3.Connection, path: Path) -> None:
    """Copy `conn`'s main database to `path` atomically (a reader never sees half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    out = sqlite3.connect(tmp)
    try:
        conn.backup(out)
    finally:
        out.close()
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    target = Path(args.to)
    if not args.dry_run and target.exists() and not args.force:
        parser.error(f"{target} exists; use --force to overwrite it")

    async def body() -> int:
        at_time = parse_time(args.at_time) if args.at_time is not None else None
        settings = settings_from_args(args)
        backend = await open_backend(settings)
        progress = ProgressPrinter(quiet=args.quiet)
        try:
            async def once(at: reading.Current | None) -> Restored | None:
                p = await plan(backend, settings.encryption_key, args.at_seq, at_time, progress=progress,
                               manifest=at)
                if p.manifest is None and not p.chain:
                    raise NoStorage(f"storage is empty ({settings.describe()}): nothing to restore")
                if args.dry_run:
                    sys.stdout.write(str(p) + "\n")
                    return None
                return await execute(p, backend, settings.encryption_key, progress=progress)

            # beside a live writer: re-planned on the newer manifest if a snapshot switch deleted what the
            # plan needed (snapshot/reading.py)
            restored = await reading.settled(backend, once, key=settings.encryption_key)
            if restored is None:
                return EXIT_OK
        finally:
            await backend.close()
        try:
            write_database(restored.conn, target)
        except (OSError, sqlite3.Error) as exc:
            fail(f"{prog_name(PROG)}: cannot write {target}: {exc}")
            return EXIT_FAILED
        finally:
            restored.conn.close()
        sys.stderr.write(f"restored seq {restored.seq} (captured {when(restored.captured_at)}, "
                         f"{restored.deltas_applied} delta(s) after the snapshot) to {target}\n")
        return EXIT_OK

    return run(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
