"""Dirty-row tracking inside SQLite, and change capture at a consistent cut.

Per application table T with key (k1, ..., kn) tgsnap keeps `_tgsnap_dirty_T`, a WITHOUT ROWID table of
keys, filled by four AFTER triggers:

- INSERT: the new key; UPDATE: the new key; DELETE: the old key;
- UPDATE OF k1..kn WHEN the key changed: the old key too. Listing the key columns means SQLite does not
  even code this trigger into an UPDATE that does not SET a key column, so the common case pays for one
  key insert only.

Each trigger runs `INSERT ... ON CONFLICT DO NOTHING`, not `INSERT OR IGNORE`: a conflict clause on the
application's statement (`UPDATE OR FAIL`, `INSERT OR ROLLBACK`) overrides an `OR` clause inside a
trigger, which would turn a second write to a dirty row into a constraint error; an upsert clause is not
overridden. `PRAGMA recursive_triggers` is on so rows deleted by REPLACE conflict resolution fire the
DELETE trigger.

Capture reads, per table, the current image of every dirty key that still exists (an upsert) and every
dirty key that does not (a delete), then empties the dirty tables — all in one synchronous step outside
any transaction, so it is a consistent cut.
"""

from __future__ import annotations

import sqlite3
import time

from core.schema import INTERNAL_PREFIX, TableSchema, quote
from snapshot.changes import ChangeSet, TableChanges, Value

_DIRTY = INTERNAL_PREFIX + "dirty_"
_TRIGGER_SUFFIXES = ("ins", "upd", "key", "del")


def dirty_table(table: str) -> str:
    return _DIRTY + table


class _TableTracking:
    """Precomputed SQL for one tracked table."""

    def __init__(self, schema: TableSchema):
        self.schema = schema
        t = quote(schema.name)
        d = quote(dirty_table(schema.name))
        keys = [quote(k) for k in schema.pk]
        match = " AND ".join(f"t.{k} = d.{k}" for k in keys)
        self.dirty = d
        self.create_dirty = (
            f"CREATE TABLE IF NOT EXISTS {d} ("
            + ", ".join(
                f"{k} {typ} COLLATE {coll}"
                for k, typ, coll in zip(keys, schema.pk_types, schema.pk_collations, strict=True)
            )
            + f", PRIMARY KEY ({', '.join(keys)})) WITHOUT ROWID"
        )

        def record(prefix: str) -> str:
            values = ", ".join(f"{prefix}.{k}" for k in keys)
            return f"INSERT INTO {d} VALUES ({values}) ON CONFLICT DO NOTHING;"

        changed = " OR ".join(f"OLD.{k} IS NOT NEW.{k}" for k in keys)
        name = schema.name
        self.triggers = {
            f"{INTERNAL_PREFIX}{name}_ins": f"AFTER INSERT ON {t} BEGIN {record('NEW')} END",
            f"{INTERNAL_PREFIX}{name}_upd": f"AFTER UPDATE ON {t} BEGIN {record('NEW')} END",
            f"{INTERNAL_PREFIX}{name}_key": (
                f"AFTER UPDATE OF {', '.join(keys)} ON {t} WHEN {changed} BEGIN {record('OLD')} END"
            ),
            f"{INTERNAL_PREFIX}{name}_del": f"AFTER DELETE ON {t} BEGIN {record('OLD')} END",
        }
        cols = ", ".join(f"t.{quote(c)}" for c in schema.columns)
        # CROSS JOIN pins the (small) dirty table as the outer loop: one key lookup per dirty row.
        self.select_upserts = f"SELECT {cols} FROM {d} AS d CROSS JOIN {t} AS t ON {match}"
        self.select_deletes = (
            f"SELECT {', '.join(f'd.{k}' for k in keys)} FROM {d} AS d "
            f"WHERE NOT EXISTS (SELECT 1 FROM {t} AS t WHERE {match})"
        )
        self.clear = f"DELETE FROM {d}"
        self.redirty = f"INSERT INTO {d} VALUES ({', '.join('?' * len(keys))}) ON CONFLICT DO NOTHING"
        self.exists = f"SELECT EXISTS (SELECT 1 FROM {d})"
        self.count = f"SELECT count(*) FROM {d}"


class Tracker:
    """Installs tracking on tables and captures their changes. Synchronous; the caller picks the moment."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn
        self._tables: dict[str, _TableTracking] = {}
        self._any_dirty_sql = "SELECT 0"

    @property
    def tables(self) -> dict[str, TableSchema]:
        return {name: t.schema for name, t in self._tables.items()}

    def install(self, schema: TableSchema) -> None:
        """Create the dirty table and (re)create the triggers. Idempotent: a restored image may hold them."""
        tracking = _TableTracking(schema)
        conn = self._conn
        conn.execute("SAVEPOINT tgsnap_install")
        try:
            conn.execute(tracking.create_dirty)
            for name, body in tracking.triggers.items():
                # Recreated, not kept: an image written by another tgsnap version may hold older bodies.
                conn.execute(f"DROP TRIGGER IF EXISTS {quote(name)}")
                conn.execute(f"CREATE TRIGGER {quote(name)} {body}")
        except BaseException:
            conn.execute("ROLLBACK TO tgsnap_install")
            conn.execute("RELEASE tgsnap_install")
            raise
        conn.execute("RELEASE tgsnap_install")
        self._tables[schema.name] = tracking
        self._any_dirty_sql = "SELECT " + " OR ".join(
            f"EXISTS (SELECT 1 FROM {t.dirty})" for t in self._tables.values()
        )

    def any_dirty(self) -> bool:
        return bool(self._conn.execute(self._any_dirty_sql).fetchone()[0])

    def dirty_count(self) -> int:
        return sum(self._conn.execute(t.count).fetchone()[0] for t in self._tables.values())

    def clear(self) -> None:
        """Forget every dirty mark (after restore: what storage holds is by definition durable)."""
        for t in self._tables.values():
            self._conn.execute(t.clear)

    def capture(self, retry: ChangeSet | None = None) -> ChangeSet:
        """Read and clear every dirty row. Must not run inside a transaction (that would not be a cut).

        `retry` is a change set that failed to reach storage: its keys are marked dirty again first, in
        the same step, so the new change set is a superset of it.
        """
        conn = self._conn
        if conn.in_transaction:
            raise RuntimeError("capture inside an open transaction would not be a consistent cut")
        changes = ChangeSet(captured_at=time.time())
        # A closing (or fenced) store refuses application writes with query_only; its own bookkeeping
        # must still run for the final delta.
        read_only = conn.execute("PRAGMA query_only").fetchone()[0]
        if read_only:
            conn.execute("PRAGMA query_only = OFF")
        try:
            conn.execute("BEGIN")
            try:
                if retry is not None:
                    self._mark(retry)
                for name, t in self._tables.items():
                    upserts = conn.execute(t.select_upserts).fetchall()
                    deletes = conn.execute(t.select_deletes).fetchall()
                    if upserts or deletes:
                        changes.tables[name] = TableChanges(
                            name=name,
                            ddl=self._ddl(name),
                            columns=list(t.schema.columns),
                            pk=list(t.schema.pk),
                            upserts=upserts,
                            deletes=deletes,
                        )
                        conn.execute(t.clear)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            if read_only:
                conn.execute("PRAGMA query_only = ON")
        return changes

    def _mark(self, changes: ChangeSet) -> None:
        """Mark again every key of a change set that did not reach storage.

        Only keys go back: the capture re-reads their current images, so a row written again in the
        meantime ships once, in its newest state, and memory stays bounded by the live data.
        """
        for name, tc in changes.tables.items():
            t = self._tables.get(name)
            if t is None:
                continue
            pos = t.schema.pk_positions
            keys: list[tuple[Value, ...]] = [tuple(row[i] for i in pos) for row in tc.upserts]
            keys.extend(tc.deletes)
            self._conn.executemany(t.redirty, keys)

    def _ddl(self, name: str) -> str:
        row = self._conn.execute("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?", (name,))
        return row.fetchone()[0]
