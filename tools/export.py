"""`python -m tools.export`: restore the stored state (latest or at a point in time) into a file.

Three targets. `--to postgresql://...` loads the state into PostgreSQL (snapshot/postgres.py: types by storage
class, keys, indexes, NOT NULL/DEFAULT, COPY, checksums compared before the one commit; a follow cursor is
recorded so `python -m tools.follow` can continue from the export). Two file formats: `sqlite` (the default)
writes a standalone SQLite database: open it with `sqlite3`, Datasette or anything else. `jsonl` writes one
JSON object per row, `{"table": name, "row": {column: value}}`, tables in name order and rows in primary-key
order, so two exports of the same state are byte-identical and diff cleanly. tgsnap's internal tables
(`_tgsnap_*`) are left out of both.

JSON has no bytes and no NaN/Infinity: a BLOB is written as `{"$base64": "..."}`, a non-finite float as
`{"$float": "nan" | "inf" | "-inf"}`. Integers are exact (Python's JSON has arbitrary precision).
Export reads only; it takes no lease and can run beside a live bot.
"""

from __future__ import annotations

import base64
import json
import math
import re
import sqlite3
import sys
from datetime import datetime
from pathlib import Path
from typing import TextIO

from snapshot import postgres as pg
from snapshot import reading
from snapshot.apply import INTERNAL_PREFIX, quote
from snapshot.errors import ConfigError
from snapshot.formatting import when
from snapshot.restore import execute, plan
from snapshot.restored import Restored
from tools.cli_common import (
    EXIT_BACKEND,
    EXIT_FAILED,
    EXIT_OK,
    NoStorage,
    ProgressPrinter,
    fail,
    make_parser,
    open_backend,
    run,
    seq_number,
    settings_from_args,
)

PROG = "tgsnap-export"
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
  tgsnap-export --storage-dir ./data --to users.sqlite
  sqlite3 users.sqlite 'SELECT name, clicks FROM users ORDER BY clicks DESC LIMIT 15'

  # every row as JSON lines on stdout
  python -m tools.export --storage-dir ./data --format jsonl --to - | head

  # the state as it was after delta 1200, or at a moment (ISO 8601, UTC unless given; or unix seconds)
  tgsnap-export --storage-dir ./data --at-seq 1200 --to at-1200.sqlite
  tgsnap-export --storage-dir ./data --at-time 2026-11-26T17:30:00 --to before-incident.sqlite

  # into PostgreSQL (schema "clicker"), then keep it current with tools.follow
  PGPASSWORD=... tgsnap-export --storage-dir ./data --to postgresql://bot@127.0.0.1:5432/bot --schema clicker
"""


def parse_time(text: str) -> float:
    """Unix seconds from a number or an ISO 8601 timestamp (naive means UTC)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--at-time {text!r} is neither unix seconds nor an ISO 8601 timestamp "
                          "(e.g. 2026-11-26T17:30:00)") from None
    if dt.tzinfo is None:
        from datetime import UTC

        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def user_tables(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        if not r[0].startswith(INTERNAL_PREFIX)]


def write_sqlite(conn: sqlite3.Connection, path: Path) -> int:
    """Copy the restored database to `path` without tgsnap's internal objects; returns rows written."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    out = sqlite3.connect(tmp)
    try:
        conn.backup(out)
        internal = out.execute("SELECT type, name FROM sqlite_master WHERE name LIKE ? ESCAPE '\\'",
                               (INTERNAL_PREFIX.replace("_", "\\_") + "%",)).fetchall()
        for kind, name in sorted(internal, key=lambda r: r[0] != "trigger"):  # triggers before their tables
            if kind in ("table", "trigger", "index", "view"):
                out.execute(f"DROP {kind.upper()} IF EXISTS {quote(name)}")
        out.commit()
        out.execute("VACUUM")
        rows = sum(out.execute(f"SELECT count(*) FROM {quote(t)}").fetchone()[0] for t in user_tables(out))
    finally:
        out.close()
    tmp.replace(path)  # a reader never sees a half-written export
    return rows


def _json_value(v: object) -> object:
    if isinstance(v, bytes):
        return {"$base64": base64.b64encode(v).decode("ascii")}
    if isinstance(v, float) and not math.isfinite(v):
        return {"$float": "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")}
    return v


def write_jsonl(conn: sqlite3.Connection, out: TextIO) -> int:
    rows = 0
    for table in user_tables(conn):
        cur = conn.execute(f"SELECT * FROM {quote(table)} ORDER BY 1")
        pk = [r[1] for r in sorted(conn.execute(f"PRAGMA table_info({quote(table)})"), key=lambda r: r[5])
              if r[5]]
        if pk:
            cur = conn.execute(f"SELECT * FROM {quote(table)} ORDER BY {', '.join(quote(c) for c in pk)}")
        cols = [d[0] for d in cur.description]
        for row in cur:
            out.write(json.dumps({"table": table, "row": {c: _json_value(v) for c, v in zip(cols, row, strict=True)}},
                                 ensure_ascii=False, allow_nan=False))
            out.write("\n")
            rows += 1
    return rows


def build_parser():
    parser = make_parser(PROG, DESCRIPTION, EXAMPLES)
    parser.add_argument("--to", metavar="FILE", default=None,
                        help="output file ('-' = stdout, jsonl only); default export.sqlite / export.jsonl")
    parser.add_argument("--format", choices=("sqlite", "jsonl"), default=None,
                        help="output format (default: from --to's extension, else sqlite)")
    when_group = parser.add_mutually_exclusive_group()
    when_group.add_argument("--at-seq", type=seq_number, metavar="SEQ",
                            help="the state right after delta SEQ (0: before the first delta)")
    when_group.add_argument("--at-time", metavar="TIME",
                            help="the state as of TIME: the last delta captured at or before it "
                                 "(ISO 8601, UTC unless an offset is given, or unix seconds)")
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

    got: list[Restored] = []

    async def body() -> int:
        at_time = parse_time(args.at_time) if args.at_time is not None else None
        settings = settings_from_args(args)
        backend = await open_backend(settings)
        try:
            progress = ProgressPrinter(quiet=args.quiet)

            async def once(at: reading.Current | None) -> Restored:
                p = await plan(backend, settings.encryption_key, args.at_seq, at_time, progress=progress, manifest=at)
                if p.manifest is None and not p.chain:
                    raise NoStorage(f"storage is empty ({settings.describe()}): nothing to export")
                return await execute(p, backend, settings.encryption_key, progress=progress)

            # beside a live writer: planned on one manifest, re-read on the newer one if a snapshot switch
            # deleted what the plan needed (snapshot/reading.py)
            got.append(await reading.settled(backend, once, key=settings.encryption_key))
        finally:
            await backend.close()
        return EXIT_OK

    code = run(PROG, body)
    if code != EXIT_OK:
        return code
    restored = got[0]
    try:
        rows = write(restored.conn, fmt, target)
    except (OSError, sqlite3.Error) as exc:
        fail(f"{PROG}: cannot write {target}: {exc}")
        return EXIT_FAILED
    finally:
        restored.conn.close()
    sys.stderr.write(f"exported {rows} row(s) at seq {restored.seq} (captured {when(restored.captured_at)}) "
                     f"to {'stdout' if target == '-' else target} as {fmt}\n")
    return EXIT_OK


def export_postgres(args) -> int:
    """Restore (latest or at the point asked), then load into PostgreSQL with the chain position as cursor."""
    schema = args.schema or "public"
    report: list[pg.LoadReport] = []

    async def body() -> int:
        pg.check_url(args.to)
        pg.check_schema_name(schema)
        at_time = parse_time(args.at_time) if args.at_time is not None else None
        settings = settings_from_args(args)
        progress = ProgressPrinter(quiet=args.quiet)
        try:
            conn = await pg.connect(args.to)  # first: a wrong password shows before a long restore
        except pg.PostgresUnreachable as exc:
            fail(f"{PROG}: {exc}")
            return EXIT_BACKEND
        try:
            backend = await open_backend(settings)
            try:
                async def once(at: reading.Current | None):
                    p = await plan(backend, settings.encryption_key, args.at_seq, at_time, progress=progress,
                                   manifest=at)
                    if p.manifest is None and not p.chain:
                        raise NoStorage(f"storage is empty ({settings.describe()}): nothing to export")
                    return p, await execute(p, backend, settings.encryption_key, progress=progress)

                # beside a live writer: re-read on the newer manifest if a snapshot switch deleted what the
                # plan needed (snapshot/reading.py), as the file export does
                p, restored = await reading.settled(backend, once, key=settings.encryption_key)
            finally:
                await backend.close()
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


def write(conn: sqlite3.Connection, fmt: str, target: str) -> int:
    """Write the restored state in `fmt` to `target` ('-' = stdout); returns rows written."""
    if fmt == "sqlite":
        return write_sqlite(conn, Path(target))
    if target == "-":
        return write_jsonl(conn, sys.stdout)
    tmp = Path(target + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        rows = write_jsonl(conn, f)
    tmp.replace(target)
    return rows


if __name__ == "__main__":
    sys.exit(main())
