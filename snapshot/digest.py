"""A logical digest of a SQLite state: equal for equal contents, whatever the page layout.

Restore rebuilds a database whose bytes differ from the live one (free pages, page order, a VACUUM), so
the image's SHA-256 cannot compare a restored state with a live one. This digest covers what the state
*means*: `PRAGMA user_version`, the SQL of every schema object, and every row of every table in
primary-key order, each value with its storage class (1 and 1.0 and '1' differ, as they do in SQLite).
tgsnap's own `_tgsnap_*` objects (change tracking, which differs between a writer and a reader by
design) and SQLite's `sqlite_*` tables are left out.
"""

from __future__ import annotations

import hashlib
import sqlite3

from snapshot.apply import INTERNAL_PREFIX, quote


def _feed(h, *parts: object) -> None:
    for p in parts:
        if p is None:
            h.update(b"N")
        elif isinstance(p, int):
            h.update(b"I" + str(p).encode() + b";")
        elif isinstance(p, float):
            h.update(b"R" + p.hex().encode() + b";")
        elif isinstance(p, bytes):
            h.update(b"B" + str(len(p)).encode() + b":" + p)
        else:
            data = str(p).encode("utf-8", "surrogateescape")
            h.update(b"T" + str(len(data)).encode() + b":" + data)


def state_digest(conn: sqlite3.Connection) -> str:
    """Hex SHA-256 over the schema and rows of `conn`'s main database (see the module docstring).

    TEXT that is not valid UTF-8 (SQLite stores what it is given) is digested byte for byte: the
    connection's text_factory is switched for the duration of the call."""
    old = conn.text_factory
    conn.text_factory = lambda b: b.decode("utf-8", "surrogateescape")
    try:
        return _digest(conn)
    finally:
        conn.text_factory = old


def _digest(conn: sqlite3.Connection) -> str:
    h = hashlib.sha256()
    _feed(h, "user_version", conn.execute("PRAGMA user_version").fetchone()[0])
    objects = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
                           "ORDER BY type, name").fetchall()
    tables = []
    for kind, name, tbl, sql in objects:
        if name.startswith(INTERNAL_PREFIX) or tbl.startswith(INTERNAL_PREFIX):
            continue
        _feed(h, "object", kind, name, tbl, sql)
        if kind == "table":
            tables.append(name)
    for table in tables:
        info = conn.execute(f"PRAGMA table_info({quote(table)})").fetchall()
        pk = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5]]
        order = ", ".join(quote(c) for c in pk) if pk else "rowid"
        cols = ", ".join(quote(r[1]) for r in info)
        _feed(h, "table", table)
        for row in conn.execute(f"SELECT {cols} FROM {quote(table)} ORDER BY {order}"):
            _feed(h, "row", *row)
    return h.hexdigest()
