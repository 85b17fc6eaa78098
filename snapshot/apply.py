"""Replay a ChangeSet onto a SQLite connection.

In one transaction: the schema statements first (in the order the writer ran them), then per table
deletes, then `INSERT OR REPLACE` of full row images, then `PRAGMA user_version`. The row part is
idempotent; the schema part is replayed exactly once per delta by restore's chain. Replay must reproduce
the writer's rows, not re-run its side effects, so foreign keys are off and the application's triggers
are dropped for the duration and recreated from their own SQL; tgsnap's own objects (names starting
`_tgsnap_`) are left exactly as they are.
"""

from __future__ import annotations

import sqlite3

from snapshot.changes import ChangeSet, RawText
from snapshot.errors import RestoreError

INTERNAL_PREFIX = "_tgsnap_"


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_xinfo({quote(table)})")]


def apply_changes(conn: sqlite3.Connection, changes: ChangeSet, *, what: str = "delta") -> None:
    """Apply `changes` to `conn` (main schema). Raises RestoreError naming `what` on a schema mismatch."""
    tables = [t for t in changes.tables.values() if len(t) or t.ddl]
    if not tables and not changes.schema and changes.user_version is None:
        return
    if conn.in_transaction:
        raise RestoreError("cannot apply a delta inside an open transaction; commit first")
    fk = conn.execute("PRAGMA foreign_keys").fetchone()[0]
    if fk:
        conn.execute("PRAGMA foreign_keys = OFF")  # only takes effect outside a transaction
    saved_isolation = conn.isolation_level
    conn.isolation_level = None  # we manage the transaction ourselves
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for i, stmt in enumerate(changes.schema, 1):
                try:
                    conn.execute(stmt)
                except sqlite3.Error as e:
                    raise RestoreError(f"{what}: schema statement {i} of {len(changes.schema)} failed ({e}): "
                                       f"{stmt[:200]!r}") from None
            existing = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            triggers = [(n, sql) for n, sql in conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND sql IS NOT NULL")
                if not n.startswith(INTERNAL_PREFIX)]
            for name, _sql in triggers:
                conn.execute(f"DROP TRIGGER {quote(name)}")
            for t in tables:
                if t.name not in existing:
                    if not t.ddl:
                        raise RestoreError(f"{what}: table {t.name!r} does not exist and the delta carries no DDL")
                    try:
                        conn.execute(t.ddl)
                    except sqlite3.Error as e:
                        raise RestoreError(f"{what}: cannot create table {t.name!r} from its DDL: {e}") from None
                    existing.add(t.name)
                have = set(_columns(conn, t.name))
                missing = [c for c in (*t.columns, *t.pk) if c not in have and c.lower() not in
                           ("rowid", "_rowid_", "oid")]
                if missing:
                    raise RestoreError(f"{what}: table {t.name!r} has no column(s) {', '.join(missing)}; the "
                                       "schema changed without a snapshot after it")
                qt = quote(t.name)
                if t.deletes:
                    where = " AND ".join(f"{quote(c)} IS ?" for c in t.pk)
                    conn.executemany(f"DELETE FROM {qt} WHERE {where}", t.deletes)
                if t.upserts:
                    cols = ", ".join(quote(c) for c in t.columns)
                    marks = ", ".join("?" * len(t.columns))
                    plain = [r for r in t.upserts if not any(type(v) is RawText for v in r)]
                    conn.executemany(f"INSERT OR REPLACE INTO {qt} ({cols}) VALUES ({marks})", plain)
                    if len(plain) != len(t.upserts):
                        _upsert_raw(conn, qt, cols, [r for r in t.upserts if any(type(v) is RawText for v in r)])
            for _name, sql in triggers:
                conn.execute(sql)
            if changes.user_version is not None:
                conn.execute(f"PRAGMA user_version = {int(changes.user_version)}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    except sqlite3.Error as e:
        raise RestoreError(f"{what}: SQLite refused the change set: {e}") from None
    finally:
        conn.isolation_level = saved_isolation
        if fk:
            conn.execute("PRAGMA foreign_keys = ON")


def _upsert_raw(conn: sqlite3.Connection, qt: str, cols: str, rows: list[tuple]) -> None:
    """Rows holding TEXT that is not valid UTF-8: bound as a blob and cast, so the bytes land unchanged
    and `typeof()` is text (a bytes parameter alone would store a BLOB)."""
    for row in rows:
        marks = ", ".join("CAST(? AS TEXT)" if type(v) is RawText else "?" for v in row)
        params = [bytes(v) if type(v) is RawText else v for v in row]
        conn.execute(f"INSERT OR REPLACE INTO {qt} ({cols}) VALUES ({marks})", params)
