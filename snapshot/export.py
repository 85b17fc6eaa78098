"""A restored state written out as files: a SQLite database or JSON lines, each appearing atomically.

`tgsnap export` and `tgsnap restore` write through here. A SQLite file is the whole restored database
(`internal=True`: tgsnap's `_tgsnap_*` tables kept, the exact state a writer would resume from) or the
application's tables only (the default). JSON lines hold one row per line, `{"table": name, "row":
{column: value}}`, tables in name order and rows in primary-key order, so two exports of the same state
are byte-identical and diff cleanly. JSON has no bytes and no NaN/Infinity: a BLOB is written as
`{"$base64": "..."}`, a non-finite float as `{"$float": "nan" | "inf" | "-inf"}`; integers are exact.

A file is written beside its target as `NAME.tmp` and renamed over it when complete, so a reader never
sees half of one (and a failed write leaves the old file in place).
"""

from __future__ import annotations

import base64
import json
import math
import sqlite3
import sys
from pathlib import Path
from typing import TextIO

from snapshot.apply import INTERNAL_PREFIX, quote

FORMATS = ("sqlite", "jsonl")


def user_tables(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        if not r[0].startswith(INTERNAL_PREFIX)]


def write_sqlite(conn: sqlite3.Connection, path: Path, *, internal: bool = False) -> int:
    """Copy the restored database to `path` (without tgsnap's internal objects unless `internal`);
    returns the rows of the application's tables written."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    out = sqlite3.connect(tmp)
    try:
        conn.backup(out)
        if not internal:
            found = out.execute("SELECT type, name FROM sqlite_master WHERE name LIKE ? ESCAPE '\\'",
                                (INTERNAL_PREFIX.replace("_", "\\_") + "%",)).fetchall()
            for kind, name in sorted(found, key=lambda r: r[0] != "trigger"):  # triggers before their tables
                if kind in ("table", "trigger", "index", "view"):
                    out.execute(f"DROP {kind.upper()} IF EXISTS {quote(name)}")
            out.commit()
            out.execute("VACUUM")
        rows = sum(out.execute(f"SELECT count(*) FROM {quote(t)}").fetchone()[0] for t in user_tables(out))
    finally:
        out.close()
    tmp.replace(path)  # a reader never sees a half-written file
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


def write(conn: sqlite3.Connection, fmt: str, target: str, *, internal: bool = False) -> int:
    """Write the restored state in `fmt` to `target` ('-' = stdout, jsonl only); returns rows written.
    `internal` keeps tgsnap's tables (SQLite only: JSON lines hold the application's rows)."""
    if fmt == "sqlite":
        return write_sqlite(conn, Path(target), internal=internal)
    if fmt != "jsonl":
        raise ValueError(f"unknown export format {fmt!r}: one of {', '.join(FORMATS)}")
    if target == "-":
        return write_jsonl(conn, sys.stdout)
    tmp = Path(target + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        rows = write_jsonl(conn, f)
    tmp.replace(target)
    return rows
