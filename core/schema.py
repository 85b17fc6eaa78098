"""What core needs to know about an application table, read from SQLite itself, and the rules it checks.

Rules (each broken one is a `ConfigError` naming the table):
- an explicit PRIMARY KEY: deltas carry full row images keyed by it;
- no NULL-able key column: SQLite lets rowid tables store NULL in a non-INTEGER primary key, and such a
  row could not be named in a delta, so those columns must say NOT NULL (an INTEGER PRIMARY KEY and a
  WITHOUT ROWID table already guarantee it);
- not a virtual table; not a name starting with `_tgsnap_` (reserved for tgsnap's own objects).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from snapshot.errors import ConfigError

#: prefix of every object tgsnap creates inside the application's database; never shipped as data.
INTERNAL_PREFIX = "_tgsnap_"


def quote(name: str) -> str:
    """An SQL identifier, safely quoted."""
    return '"' + name.replace('"', '""') + '"'


def is_internal(name: str) -> bool:
    lowered = name.lower()
    return lowered.startswith(INTERNAL_PREFIX) or lowered.startswith("sqlite_")


@dataclass(frozen=True)
class TableSchema:
    name: str
    #: stored columns in table order (generated columns are left out: SQLite recomputes them).
    columns: tuple[str, ...]
    #: primary-key columns in key order.
    pk: tuple[str, ...]
    #: declared type and collation of each key column, so the dirty table compares keys like the table.
    pk_types: tuple[str, ...]
    pk_collations: tuple[str, ...]
    without_rowid: bool

    @property
    def pk_positions(self) -> tuple[int, ...]:
        """Index of each key column inside a row image."""
        return tuple(self.columns.index(k) for k in self.pk)


def application_tables(conn: sqlite3.Connection) -> list[str]:
    """Ordinary tables of the main schema that belong to the application, in creation order."""
    rows = conn.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND sql NOT LIKE 'CREATE VIRTUAL%' ORDER BY rowid"
    ).fetchall()
    return [name for (name,) in rows if not is_internal(name)]


def read_table(conn: sqlite3.Connection, name: str) -> TableSchema:
    """Introspect `name` and check the rules above."""
    if name.lower().startswith(INTERNAL_PREFIX):
        raise ConfigError(f"table {name!r}: names starting with {INTERNAL_PREFIX!r} are reserved for tgsnap")
    row = conn.execute("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?", (name,)).fetchone()
    if row is None:
        raise ConfigError(f"table {name!r} does not exist")
    if row[0].upper().startswith("CREATE VIRTUAL"):
        raise ConfigError(f"table {name!r}: virtual tables are not supported (their rows cannot be tracked)")
    (wr,) = conn.execute("SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?", (name,)).fetchone()
    # pragma_table_xinfo: cid, name, type, notnull, dflt_value, pk, hidden (0 = ordinary column)
    info = conn.execute('SELECT name, type, "notnull", pk, hidden FROM pragma_table_xinfo(?)', (name,)).fetchall()
    columns = tuple(col for col, _, _, _, hidden in info if hidden == 0)
    keyed = sorted((pk, col, typ, notnull) for col, typ, notnull, pk, _ in info if pk > 0)
    if not keyed:
        raise ConfigError(
            f"table {name!r} has no explicit PRIMARY KEY; tgsnap ships rows keyed by their primary key, "
            f"so declare one (e.g. `id INTEGER PRIMARY KEY` or `PRIMARY KEY (a, b)`)"
        )
    pk = tuple(col for _, col, _, _ in keyed)
    pk_types = tuple(typ for _, _, typ, _ in keyed)
    collations = _pk_collations(conn, name, pk)
    if not wr and collations is not None:
        # A rowid table whose key is a real index (not the INTEGER PRIMARY KEY alias) accepts NULL keys.
        nullable = [col for _, col, _, notnull in keyed if not notnull]
        if nullable:
            raise ConfigError(
                f"table {name!r}: primary-key column(s) {', '.join(map(repr, nullable))} must be NOT NULL "
                f"(SQLite allows NULL in such keys and a NULL-keyed row cannot be replicated); add NOT NULL, "
                f"use INTEGER PRIMARY KEY, or declare the table WITHOUT ROWID"
            )
    return TableSchema(
        name=name,
        columns=columns,
        pk=pk,
        pk_types=pk_types,
        pk_collations=collations or ("BINARY",) * len(pk),
        without_rowid=bool(wr),
    )


def _pk_collations(conn: sqlite3.Connection, name: str, pk: tuple[str, ...]) -> tuple[str, ...] | None:
    """Collation of each key column from the primary-key index; None when the key is the rowid alias."""
    idx = conn.execute("SELECT name FROM pragma_index_list(?) WHERE origin = 'pk'", (name,)).fetchone()
    if idx is None:
        return None
    keys = conn.execute(
        "SELECT name, coll FROM pragma_index_xinfo(?) WHERE key = 1 ORDER BY seqno", (idx[0],)
    ).fetchall()
    by_col = {col: coll for col, coll in keys}
    return tuple(by_col.get(col) or "BINARY" for col in pk)


def declared_objects(statements: list[str], existing: tuple[str, ...] = ()) -> list[tuple[str, str, str, str]]:
    """(type, name, ddl, sql as SQLite stores it) for each object the statements create.

    Running the DDL on a scratch connection first tells us the names SQLite will use and catches bad
    SQL (and keyless tables) before the live database is touched. `existing` is DDL of tables already
    live, so a statement may refer to them (an index on an existing table).
    """
    scratch = sqlite3.connect(":memory:", isolation_level=None)
    try:
        for ddl in existing:
            scratch.execute(ddl)
        created: list[tuple[str, str, str, str]] = []
        for ddl in statements:
            before = set(scratch.execute("SELECT type, name FROM sqlite_schema").fetchall())
            try:
                scratch.execute(ddl)
            except sqlite3.Error as exc:
                raise ConfigError(f"schema statement failed: {exc}: {ddl.strip()[:200]!r}") from exc
            after = scratch.execute("SELECT type, name, sql FROM sqlite_schema ORDER BY rowid").fetchall()
            new = [
                (typ, obj, sql) for typ, obj, sql in after if (typ, obj) not in before and not obj.startswith("sqlite_")
            ]
            if not new:
                raise ConfigError(f"schema statement creates nothing new: {ddl.strip()[:200]!r}")
            for typ, obj, sql in new:
                if typ == "table":
                    read_table(scratch, obj)
                elif obj.lower().startswith(INTERNAL_PREFIX):
                    raise ConfigError(f"{typ} {obj!r}: names starting with {INTERNAL_PREFIX!r} are reserved")
                created.append((typ, obj, ddl, sql or ""))
        return created
    finally:
        scratch.close()
