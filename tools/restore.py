"""`tgsnap restore`: rebuild the stored state into a local SQLite file, exactly as the bot would load it.

Unlike `export`, which writes the application's tables only, restore writes the whole database the
snapshot and deltas describe, tgsnap's `_tgsnap_*` tables included: the file is the state a writer
would resume from, byte for byte what `snapshot.restore.restore` rebuilds in memory. `--dry-run` prints
the restore plan (every part to fetch and delta to apply) and downloads no snapshot part.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

from snapshot import export as files
from snapshot.formatting import when
from tools.cli_common import (
    EXIT_OK,
    add_point_args,
    make_parser,
    read_point,
    run,
    write_restored,
)

PROG = "tgsnap restore"
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
    add_point_args(parser)
    parser.add_argument("--dry-run", "-n", action="store_true", help="print the restore plan; write nothing")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    target = str(args.to)
    if not args.dry_run and Path(target).exists() and not args.force:
        parser.error(f"{target} exists; use --force to overwrite it")

    async def body() -> int:
        _settings, p, restored = await read_point(args, "restore", dry_run=args.dry_run)
        if restored is None:
            sys.stdout.write(str(p) + "\n")
            return EXIT_OK
        return write_restored(
            PROG, restored, target, partial(files.write, fmt="sqlite", target=target, internal=True),
            lambda rows: f"restored seq {restored.seq} (captured {when(restored.captured_at)}, "
                         f"{restored.deltas_applied} delta(s) after the snapshot; {rows} row(s) in the "
                         f"application's tables) to {target}")

    return run(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
