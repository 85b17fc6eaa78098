"""`python -m tools.export`: restore the stored state (latest or at a point in time) into a file.

Three targets. `--to postgresql://...` loads the state into PostgreSQL (snapshot/postgres.py: types by storage
class, keys, indexes, NOT NULL/DEFAULT, COPY, checksums compared before the one commit; a follow cursor is
recorded so `python -m tools.follow` can continue from the export). Two file formats: `sqlite` (the default)
writes a standalone SQLite database: open it with `sqlite3`, Datasette or anything else. `jsonl` writes one
JSON object per row, `{"table": name, "row": {column: value}}`, tables in name order and rows in primary-key
order, so two exports of the same state are byte-identical and diff cleanly. tgsnap's internal tables
(`_tgsnap_*`) are left out of both.

JSON has no bytes and no NaN/Infinity: a BLOB is written as `{"$base64": "..."}`, a non-finite float as
`{"$float": "nan" | "inf" | "-inf"}`. Integers are exact (Python's JSON has arbitrary precision). The
writing itself is library code (snapshot/export.py, shared with `tgsnap restore`); this module is the
command line. Export reads only; it takes no lease and can run beside a live bot.
"""

from __future__ import annotations

import re
import sys
from functools import partial
from pathlib import Path

from snapshot import export as files
from snapshot import postgres as pg
from snapshot.formatting import when
from tools.cli_common import (
    EXIT_BACKEND,
    EXIT_OK,
    add_point_args,
    fail,
    make_parser,
    parse_time,
    read_point,
    run,
    settings_from_args,
    write_restored,
)

PROG = "tgsnap export"
DESCRIPTION = """\
Restore the stored state (the latest, or as it was at --at-seq / --at-time) and write it out: as a
standalone SQLite database (--format sqlite, the default) or as JSON lines, one row per line
({"table": ..., "row": {...}}; BLOBs as {"$base64": ...}). Reads only: takes no lease, safe beside a
live bot. Refuses to overwrite an existing file unless --force.

--to postgresql://user:password@host:port/db loads it into PostgreSQL instead (schema --schema, default
public), all in one transaction; refuses existing tables of the same names unless --force. Put the
password in PGPASSWORD or ~/.pgpass rather than on the command line."""
EXAMPLES = """\
  # the current state as a SQLite file, then look at it
  tgsnap export --storage-dir ./data --to users.sqlite
  sqlite3 users.sqlite 'SELECT name, clicks FROM users ORDER BY clicks DESC LIMIT 15'

  # every row as JSON lines on stdout
  python -m tools.export --storage-dir ./data --format jsonl --to - | head

  # the state as it was after delta 1200, or at a moment (ISO 8601, UTC unless given; or unix seconds)
  tgsnap export --storage-dir ./data --at-seq 1200 --to at-1200.sqlite
  tgsnap export --storage-dir ./data --at-time 2026-11-26T17:30:00 --to before-incident.sqlite

  # into PostgreSQL (schema "clicker"), then keep it current with tools.follow
  PGPASSWORD=... tgsnap export --storage-dir ./data --to postgresql://bot@127.0.0.1:5432/bot --schema clicker
"""


def build_parser():
    parser = make_parser(PROG, DESCRIPTION, EXAMPLES)
    parser.add_argument("--to", metavar="FILE", default=None,
                        help="output file ('-' = stdout, jsonl only); default export.sqlite / export.jsonl")
    parser.add_argument("--format", choices=("sqlite", "jsonl"), default=None,
                        help="output format (default: from --to's extension, else sqlite)")
    add_point_args(parser)
    parser.add_argument("--schema", default=None, metavar="NAME",
                        help="PostgreSQL schema to load into (created if missing; default public)")
    parser.add_argument("--force", action="store_true",
                        help="overwrite an existing output file (PostgreSQL: replace existing tables)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if pg.is_postgres_url(args.to):
        if args.format is not None:
            parser.error("--format is for files; a postgresql:// target is loaded into PostgreSQL")
        return export_postgres(args)
    if args.to and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", args.to):
        parser.error(f"--to {pg.redact(args.to)!r}: the only database target is postgresql://...; "
                     "anything else is a file path")
    if args.schema is not None:
        parser.error("--schema is for a postgresql:// target")
    fmt = args.format or ("jsonl" if args.to and (args.to == "-" or args.to.endswith((".jsonl", ".ndjson")))
                          else "sqlite")
    target = args.to or f"export.{fmt}"
    if target == "-" and fmt == "sqlite":
        parser.error("a SQLite export needs a file: give --to FILE (or --format jsonl for stdout)")
    if target != "-" and Path(target).exists() and not args.force:
        parser.error(f"{target} exists; use --force to overwrite it")

    async def body() -> int:
        _settings, _p, restored = await read_point(args, "export")
        assert restored is not None  # not a dry run
        where = "stdout" if target == "-" else target
        return write_restored(PROG, restored, target, partial(files.write, fmt=fmt, target=target),
                              lambda rows: f"exported {rows} row(s) at seq {restored.seq} (captured "
                                           f"{when(restored.captured_at)}) to {where} as {fmt}")

    return run(PROG, body)


def export_postgres(args) -> int:
    """Restore (latest or at the point asked), then load into PostgreSQL with the chain position as cursor."""
    schema = args.schema or "public"
    report: list[pg.LoadReport] = []

    async def body() -> int:
        pg.check_url(args.to)
        pg.check_schema_name(schema)
        if args.at_time is not None:
            parse_time(args.at_time)  # a bad --at-time is a configuration error before anything connects
        settings = settings_from_args(args)
        try:
            conn = await pg.connect(args.to)  # first: a wrong password shows before a long restore
        except pg.PostgresUnreachable as exc:
            fail(f"{PROG}: {exc}")
            return EXIT_BACKEND
        try:
            _settings, p, restored = await read_point(args, "export", settings=settings)
            assert restored is not None  # not a dry run
            try:
                report.append(await pg.load_state(conn, restored.conn, schema, replace=args.force,
                                                  position=pg.position_of(p, pg.location_of(settings)), url=args.to))
            finally:
                restored.conn.close()
        except pg.PostgresUnreachable as exc:
            fail(f"{PROG}: {exc}")
            return EXIT_BACKEND
        finally:
            await conn.close()
        r = report[0]
        for note in r.notes:
            sys.stderr.write(f"note: {note}\n")
        for t in r.tables:
            sys.stderr.write(f"  {schema}.{t.name}: {t.rows} row(s), checksum {t.checksum} matches; "
                             + ", ".join(f"{c} {ty}" for c, ty in t.types.items()) + "\n")
        sys.stderr.write(f"exported {r.rows} row(s) in {len(r.tables)} table(s) at seq {p.seq} (captured "
                         f"{when(p.captured_at)}) to {pg.redact(args.to)} schema {schema} in {r.elapsed:.1f} s"
                         + (f", replacing {', '.join(r.replaced)}" if r.replaced else "") + "\n")
        return EXIT_OK

    return run(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
