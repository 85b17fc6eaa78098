"""Dirty-row tracking inside SQLite, and change capture at a consistent cut.

Per application table T with key (k1, ..., kn), four TEMP triggers report changed keys to a function
registered on the connection, which records them in an insertion-ordered dict (one per table):

- AFTER INSERT: the new key; AFTER UPDATE: the new key; AFTER DELETE: the old key;
- AFTER UPDATE OF k1..kn WHEN the key changed: the old key too. Naming the key columns means SQLite does
  not even code this trigger into an UPDATE that does not SET a key column.

Why this shape (measured, see docs/architecture.md): a trigger that INSERTs the key into a dirty table
pays a B-tree insert and a rollback-journal page per write; a call into `dict.setdefault` costs far
less. Any SQL that changes a row fires a trigger (REPLACE conflict deletes too: `recursive_triggers` is
on), so nothing escapes tracking. Marks are not transactional, so `store.transaction()` tells the
tracker where a transaction began (marks are ordered) and a rollback drops the marks made since. A
failed statement or a raw ROLLBACK may leave extra marks: harmless, because capture ships the row's
*current* image (or a delete if it does not exist), so an extra key only re-ships the truth. TEMP
triggers live outside the main database, so snapshot images never carry tgsnap's machinery.

Quiet mode (with a Store; see `core.plans`): most of a bot's statements provably change only the row
whose key they bind. While every write on the connection is such a statement, the triggers are dropped
and Store appends each changed key to the table's `pending` list (folded into the marks before anything
reads them); `total_changes` must then equal the changes so accounted for, else a write bypassed the
marks (`check_bypass`): the triggers come back and the next cut ships as a snapshot. Any other
statement, and every transaction, brings the triggers back first (`go_loud`, never inside a
transaction, so no rollback can undo it); a capture with no such statement since the previous one
drops them again (`go_quiet`).

Capture runs in one synchronous step outside any transaction (a consistent cut): it empties the marks,
loads their keys into TEMP key tables (declared with the key's types and collations), and reads per
table the current image of every key that still exists (an upsert) and every key that does not (a
delete).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import cast

from core.plans import READ, Plan, plan_for
from core.schema import INTERNAL_PREFIX, TableSchema, application_tables, quote, read_table
from snapshot.changes import ChangeSet, RawText, TableChanges, Value
from snapshot.errors import ConfigError

log = logging.getLogger("tgsnap.core")

_MAX_PLANS = 4096


def _text_or_raw(data: bytes) -> str | RawText:
    """text_factory for a capture that met TEXT that is not valid UTF-8: keep those bytes exactly."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return RawText(data)


def _fetch_all(conn: sqlite3.Connection, sql: str) -> list[tuple[Value, ...]]:
    """Rows of `sql`; TEXT that is not valid UTF-8 comes back as RawText instead of failing the capture.

    The fast path keeps `text_factory = str` (C code); only a capture that meets such a value pays a
    Python call per text value, for that table.
    """
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError as exc:
        if "decode" not in str(exc):
            raise
    saved = conn.text_factory
    conn.text_factory = _text_or_raw
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.text_factory = saved


class _TableTracking:
    """The marks of one table, and its precomputed SQL."""

    def __init__(self, schema: TableSchema, number: int):
        self.schema = schema
        #: dirty keys (values unused): a dict, because its order tells which marks a transaction made.
        self.marks: dict[Hashable, None] = {}
        #: keys Store's proven plans changed while quiet, not yet folded into `marks` (see `fold`): an
        #: append costs a fraction of a dict insert into a large, cache-cold table. One entry per change,
        #: so its length also counts the changes the plans account for.
        self.pending: list[Hashable] = []
        self.single = len(schema.pk) == 1
        self.function = f"{INTERNAL_PREFIX}mark_{number}"
        t = quote(schema.name)
        k_table = f"temp.{quote(INTERNAL_PREFIX + 'keys_' + schema.name)}"
        keys = [quote(k) for k in schema.pk]
        match = " AND ".join(f"t.{k} = d.{k}" for k in keys)

        def record(prefix: str) -> str:
            return f"SELECT {self.function}({', '.join(f'{prefix}.{k}' for k in keys)});"

        changed = " OR ".join(f"OLD.{k} IS NOT NEW.{k}" for k in keys)
        on = f"main.{t}"
        name = schema.name
        self.triggers = {
            f"{INTERNAL_PREFIX}{name}_ins": f"AFTER INSERT ON {on} BEGIN {record('NEW')} END",
            f"{INTERNAL_PREFIX}{name}_upd": f"AFTER UPDATE ON {on} BEGIN {record('NEW')} END",
            f"{INTERNAL_PREFIX}{name}_key": (
                f"AFTER UPDATE OF {', '.join(keys)} ON {on} WHEN {changed} BEGIN {record('OLD')} END"
            ),
            f"{INTERNAL_PREFIX}{name}_del": f"AFTER DELETE ON {on} BEGIN {record('OLD')} END",
        }
        # Same types and collations as the table's key, so keys load and compare exactly as stored.
        self.create_keys = (
            f"CREATE TABLE IF NOT EXISTS {k_table} ("
            + ", ".join(
                f"{k} {typ} COLLATE {coll}"
                for k, typ, coll in zip(keys, schema.pk_types, schema.pk_collations, strict=True)
            )
            + f", PRIMARY KEY ({', '.join(keys)})) WITHOUT ROWID"
        )
        self.load_keys = f"INSERT OR IGNORE INTO {k_table} VALUES ({', '.join('?' * len(keys))})"
        cols = ", ".join(f"t.{quote(c)}" for c in schema.columns)
        # CROSS JOIN pins the key table as the outer loop: one primary-key lookup per dirty key.
        self.select_upserts = f"SELECT {cols} FROM {k_table} AS d CROSS JOIN main.{t} AS t ON {match}"
        self.select_deletes = (
            f"SELECT {', '.join(f'd.{k}' for k in keys)} FROM {k_table} AS d "
            f"WHERE NOT EXISTS (SELECT 1 FROM main.{t} AS t WHERE {match})"
        )
        self.clear_keys = f"DELETE FROM {k_table}"

    def mark_function(self) -> Callable[..., None]:
        if self.single:
            return self.marks.setdefault  # a C call: the common case costs no Python frame
        setdefault = self.marks.setdefault

        def mark(*key: Value) -> None:
            setdefault(key)

        return mark

    def fold(self) -> int:
        """Move `pending` into `marks` (in order, duplicates once); returns how many changes it held."""
        pending = self.pending
        n = len(pending)
        if n:
            # One probe per key (dict.fromkeys then update would probe twice), all in C.
            deque(map(self.marks.setdefault, pending), maxlen=0)
            pending.clear()
        return n

    def take(self) -> list[tuple[Value, ...]]:
        keys = list(self.marks)
        self.marks.clear()
        # the marks are key values: bare ones for a one-column key (the C fast path above), tuples otherwise
        return cast("list[tuple[Value, ...]]", [(k,) for k in keys] if self.single else keys)

    def remark(self, keys: list[tuple[Value, ...]]) -> None:
        setdefault = self.marks.setdefault
        for k in keys:
            setdefault(k[0] if self.single else k)

    def forget_since(self, position: int) -> None:
        """Drop the marks made after the first `position` ones (a rolled-back transaction's)."""
        if len(self.marks) > position:
            for k in list(self.marks)[position:]:
                del self.marks[k]


class Tracker:
    """Installs tracking on tables and captures their changes. Synchronous; the caller picks the moment."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn
        self._tables: dict[str, _TableTracking] = {}
        self._installed = 0
        #: while store.transaction() is open: mark counts at BEGIN, and re-marks to apply at its end.
        self._tx_start: dict[str, int] | None = None
        self._deferred: list[ChangeSet] = []
        #: schema statements run since the last capture: (schema_version after it, SQL), in order.
        self.schema_log: list[tuple[int, str]] = []
        #: `PRAGMA schema_version` the recorded statements explain; another value at capture means a
        #: schema change that bypassed Store (the capture then follows it, see `capture`).
        self.expected_schema_version = 0
        self._captured_uv: int | None = 0  # None: the captured user_version never reached storage
        #: (old name, new name) of every table rename followed, in order (a failed delta's keys follow the
        #: ones made after its capture; a name may be renamed away and back, so no dict).
        self._renames: list[tuple[str, str]] = []
        #: root page of each tracked table (RENAME keeps it), to follow a renamed table's marks.
        self._roots: dict[str, int] = {}
        self._carried: dict[str, dict[Hashable, None]] = {}
        #: set when capture met a schema change Store did not record; the flusher forces a snapshot.
        self.unexplained_schema_change = False
        #: quiet mode (see `core.plans`): the triggers are dropped and the only writer is Store's proven
        #: statements, which mark their keys in Python; set by `go_quiet`, left by `go_loud`.
        self.quiet = False
        #: `conn.total_changes` that the marks account for while quiet; any other value means a write
        #: nobody marked (a raw connection): `bypassed` is set and the next cut ships as a snapshot.
        self.expected_changes = 0
        self.bypassed = False
        #: Store sets it: quiet mode is allowed (a bare Tracker keeps its triggers).
        self.quiet_enabled = False
        #: a statement needed the triggers since the last capture (capture then stays loud).
        self.loud_needed = False
        #: Store's proven plans (sql -> Plan), emptied whenever the schema moves (they embed its facts).
        self.plans: dict[str, Plan | None] = {}
        self.reads: set[str] = set()
        #: called after quiet changes (Store switches its fast path on or off).
        self.on_mode: Callable[[], None] | None = None
        # Tables in temp must stay in memory (the default may spill them to a file).
        conn.execute("PRAGMA temp_store = MEMORY")
        # Rows deleted by REPLACE conflict resolution fire DELETE triggers only with this on.
        conn.execute("PRAGMA recursive_triggers = ON")

    @property
    def tables(self) -> dict[str, TableSchema]:
        return {name: t.schema for name, t in self._tables.items()}

    def install(self, schema: TableSchema) -> None:
        """Register the mark function and create the key table, and the TEMP triggers unless quiet.
        Idempotent."""
        self._installed += 1
        tracking = _TableTracking(schema, self._installed)
        old = self._tables.get(schema.name)
        if old is not None:
            tracking.marks = old.marks  # keep what is already dirty
            tracking.pending = old.pending
        conn = self._conn
        conn.create_function(tracking.function, len(schema.pk), tracking.mark_function())
        conn.execute("SAVEPOINT tgsnap_install")
        try:
            conn.execute(tracking.create_keys)
            for name, body in tracking.triggers.items():
                conn.execute(f"DROP TRIGGER IF EXISTS temp.{quote(name)}")
                if not self.quiet:
                    conn.execute(f"CREATE TEMP TRIGGER {quote(name)} {body}")
        except BaseException:
            conn.execute("ROLLBACK TO tgsnap_install")
            conn.execute("RELEASE tgsnap_install")
            raise
        conn.execute("RELEASE tgsnap_install")
        self._tables[schema.name] = tracking

    def _drop_machinery(self, tracking: _TableTracking) -> None:
        conn = self._conn
        for name in tracking.triggers:
            conn.execute(f"DROP TRIGGER IF EXISTS temp.{quote(name)}")
        conn.execute(f"DROP TABLE IF EXISTS temp.{quote(INTERNAL_PREFIX + 'keys_' + tracking.schema.name)}")

    def sync(self) -> None:
        """Make tracking match the main schema after a schema change (or the rollback of one).

        New tables are tracked; a table whose columns changed gets new triggers and capture SQL (its marks
        stay); a renamed table (found by its root page, which RENAME keeps) takes its marks along; a dropped
        table's marks go (the replayed DROP removes its rows). Raises ConfigError for a table that cannot be
        tracked (no primary key, NULL-able key, virtual): the caller rolls the statement back.
        """
        conn = self._conn
        self.fold()
        self.plans.clear()
        self.reads.clear()
        reserved = conn.execute("SELECT type, name FROM main.sqlite_schema WHERE lower(name) LIKE ? ESCAPE '!'",
                                (INTERNAL_PREFIX.replace("_", "!_") + "%",)).fetchone()
        if reserved is not None:
            raise ConfigError(f"{reserved[0]} {reserved[1]!r}: names starting with {INTERNAL_PREFIX!r} are reserved "
                              "for tgsnap")
        current = {name: read_table(conn, name) for name in application_tables(conn)}
        roots = {name: page for name, page in conn.execute("SELECT name, rootpage FROM main.sqlite_schema "
                                                          "WHERE type = 'table'")}
        temp_triggers = {n for (n,) in conn.execute("SELECT name FROM temp.sqlite_schema WHERE type = 'trigger'")}
        page_to_new = {roots[n]: n for n in current if n not in self._tables}
        for name in [n for n in self._tables if n not in current]:
            old = self._tables.pop(name)
            self._drop_machinery(old)
            new = page_to_new.get(self._roots.get(name))
            if new is not None:
                self._renames.append((name, new))
                if old.marks:
                    self._carried[new] = old.marks  # renamed: the marks name rows that now live under `new`
        for name, schema in current.items():
            t = self._tables.get(name)
            if t is None or t.schema != schema or (not self.quiet and not set(t.triggers) <= temp_triggers):
                carried = self._carried.pop(name, None)
                if t is not None and t.schema.name == name:
                    self._drop_machinery(t)
                self.install(schema)
                if carried:
                    self._tables[name].marks.update(carried)  # same key shape: same table
        self._carried.clear()
        self._roots = {n: roots[n] for n in current}

    def snapshot_marks(self) -> dict[str, dict[Hashable, None]]:
        """A copy of every table's marks (restored by `restore_marks` when a schema change rolls back)."""
        self.fold()
        return {name: dict(t.marks) for name, t in self._tables.items()}

    def restore_marks(self, saved: dict[str, dict[Hashable, None]]) -> None:
        for name, marks in saved.items():
            t = self._tables.get(name)
            if t is not None:
                t.marks.update(marks)

    # ---- quiet mode ----------------------------------------------------------------------------------

    def go_quiet(self) -> None:
        """Drop the triggers: from now on every write must be one of Store's proven plans (which mark
        their keys and account for `total_changes`); anything else is caught by `check_bypass`.

        Only outside a transaction, so a rollback can never bring the triggers back (or take them away
        after `go_loud`): trigger DDL is transactional like any other."""
        conn = self._conn
        if self.quiet or conn.in_transaction or conn.execute("PRAGMA query_only").fetchone()[0]:
            return  # (a store that refuses writes gains nothing from it)
        self.fold()
        for t in self._tables.values():
            for name in t.triggers:
                conn.execute(f"DROP TRIGGER IF EXISTS temp.{quote(name)}")
        self.quiet = True
        self.expected_changes = conn.total_changes
        if self.on_mode is not None:
            self.on_mode()

    def go_loud(self) -> None:
        """Put the triggers back before a statement no plan covers (or a transaction) runs."""
        self.loud_needed = True
        if not self.quiet:
            return
        self.check_bypass()
        self.fold()
        self._loud()

    def _loud(self) -> None:
        if not self.quiet:
            return
        conn = self._conn
        if conn.in_transaction:
            # Only a raw BEGIN (not through Store) gets here: its ROLLBACK could drop these triggers.
            log.error("tgsnap: tracking triggers re-created inside a transaction begun outside Store; "
                      "a snapshot is forced")
            self.bypassed = True
        self.quiet = False
        # A closing (or fenced) store refuses writes with query_only; its tracking must still work.
        read_only = conn.execute("PRAGMA query_only").fetchone()[0]
        if read_only:
            conn.execute("PRAGMA query_only = OFF")
        try:
            for t in self._tables.values():
                for name, body in t.triggers.items():
                    conn.execute(f"DROP TRIGGER IF EXISTS temp.{quote(name)}")
                    conn.execute(f"CREATE TEMP TRIGGER {quote(name)} {body}")
        finally:
            if read_only:
                conn.execute("PRAGMA query_only = ON")
        if self.on_mode is not None:
            self.on_mode()

    def fold(self) -> None:
        """Fold every table's pending keys into its marks (their changes stay accounted for)."""
        for t in self._tables.values():
            if t.pending:
                self.expected_changes += t.fold()

    def _pending_count(self) -> int:
        return sum(len(t.pending) for t in self._tables.values())

    def check_bypass(self) -> bool:
        """True if some write was not accounted for by a plan while quiet (its rows are unknown)."""
        if self.quiet and self._conn.total_changes != self.expected_changes + self._pending_count():
            if not self.bypassed:
                log.error("tgsnap: a write bypassed Store while its triggers were off (a raw connection?); "
                          "the next cut ships as a snapshot")
            self.bypassed = True
            self.fold()
            self.expected_changes = self._conn.total_changes
            self._loud()  # whoever writes behind Store's back may go on: let the triggers see it
        return self.bypassed

    def take_bypass(self) -> bool:
        """At a cut that ships as a snapshot: the bypass is covered by it (put back if it fails)."""
        bypassed, self.bypassed = self.bypassed, False
        return bypassed

    def plan(self, sql: str) -> Plan | None:
        """The proven plan of `sql` (see `core.plans`), or None; cached until the schema moves."""
        plans = self.plans
        if sql in plans:
            return plans[sql]
        if sql in self.reads:
            return READ
        if len(plans) + len(self.reads) >= _MAX_PLANS:  # SQL built with values inside: no endless growth
            plans.clear()
            self.reads.clear()
        tables = {name.lower(): (t.schema, t.pending) for name, t in self._tables.items()}
        plan = plan_for(sql, tables, self._conn)
        if plan is READ:
            self.reads.add(sql)  # not in `plans`: Store's fast path holds writes only
        else:
            plans[sql] = plan
        return plan

    # ---- transactions ------------------------------------------------------------------------------

    def begin(self) -> None:
        """A transaction began: remember where its marks start."""
        self.fold()
        self._tx_start = {name: len(t.marks) for name, t in self._tables.items()}

    def end(self, committed: bool) -> None:
        """The transaction ended; on rollback its marks go (its rows are back as they were)."""
        start, self._tx_start = self._tx_start, None
        if not committed and start is not None:
            for name, t in self._tables.items():
                t.forget_since(start.get(name, 0))
        deferred, self._deferred = self._deferred, []
        for changes in deferred:
            self.remark(changes)

    # ---- state ---------------------------------------------------------------------------------

    def any_dirty(self) -> bool:
        return (self.check_bypass() or bool(self._deferred) or bool(self.schema_log)
                or any(t.marks or t.pending for t in self._tables.values())
                or self._user_version() != self._captured_uv)

    # ---- schema changes ----------------------------------------------------------------------------

    def schema_version(self) -> int:
        return self._conn.execute("PRAGMA main.schema_version").fetchone()[0]

    def _user_version(self) -> int:
        return self._conn.execute("PRAGMA main.user_version").fetchone()[0]

    def schema_drifted(self) -> bool:
        """The schema cookie moved without a recorded statement (a change that bypassed Store)."""
        return self.schema_version() != self.expected_schema_version

    def record_schema(self, statement: str, version_after: int) -> None:
        """A schema statement ran (and changed `PRAGMA schema_version` to `version_after`)."""
        self.schema_log.append((version_after, statement))
        self.expected_schema_version = version_after

    def schema_rolled_back(self) -> None:
        """A ROLLBACK (TO) ran: forget recorded statements it undid, and follow the schema back.

        The schema cookie only grows while statements run and returns to its earlier value on rollback,
        so every recorded statement that left a higher cookie than the current one was undone.
        """
        now = self.schema_version()
        if now == self.expected_schema_version:
            return
        self.schema_log = [(v, sql) for v, sql in self.schema_log if v <= now]
        self.expected_schema_version = now
        self.sync()

    def set_baseline(self) -> None:
        """What storage holds now is the reference: no schema statement pending, user_version shipped."""
        self.schema_log = []
        self.expected_schema_version = self.schema_version()
        self._captured_uv = self._user_version()

    def dirty_count(self) -> int:
        self.fold()
        return sum(len(t.marks) for t in self._tables.values()) + sum(len(c) for c in self._deferred)

    def clear(self) -> None:
        """Forget every mark (after restore: what storage holds is by definition durable)."""
        self.fold()  # (their changes stay accounted for)
        for t in self._tables.values():
            t.marks.clear()

    def capture(self, retry: ChangeSet | None = None) -> ChangeSet:
        """Read and clear every dirty row. Must not run inside a transaction (that would not be a cut).

        `retry` is a change set that failed to reach storage: its keys are marked again first, so the new
        change set is a superset of it.
        """
        conn = self._conn
        if conn.in_transaction:
            raise RuntimeError("capture inside an open transaction would not be a consistent cut")
        if retry is not None:
            self.remark(retry)
        self.check_bypass()
        changes = ChangeSet(captured_at=time.time(), renames_seen=len(self._renames))
        actual = self.schema_version()
        if actual != self.expected_schema_version:
            # Not through Store.execute/transaction (a raw connection): follow it so capture keeps
            # working; it is not recorded, so only a snapshot makes it durable (the flusher forces one).
            log.error("tgsnap: the schema changed outside Store.execute/transaction(); tracking follows it, "
                      "a snapshot is forced to make it durable")
            self.sync()
            self.expected_schema_version = actual
            self.unexplained_schema_change = True
        changes.schema = [sql for _, sql in self.schema_log]
        self.schema_log = []
        uv = self._user_version()
        changes.user_version = uv
        changes.version_changed = uv != self._captured_uv
        self._captured_uv = uv
        self.fold()
        dirty = [(name, t) for name, t in self._tables.items() if t.marks]
        if not dirty:
            self._after_capture()
            return changes
        # A closing (or fenced) store refuses application writes with query_only; its own key tables
        # must still be writable for the final delta.
        read_only = conn.execute("PRAGMA query_only").fetchone()[0]
        if read_only:
            conn.execute("PRAGMA query_only = OFF")
        taken: list[tuple[_TableTracking, list[tuple[Value, ...]]]] = []
        try:
            conn.execute("BEGIN")
            try:
                for name, t in dirty:
                    keys = t.take()
                    taken.append((t, keys))
                    conn.executemany(t.load_keys, keys)
                    upserts = _fetch_all(conn, t.select_upserts)
                    deletes = _fetch_all(conn, t.select_deletes)
                    conn.execute(t.clear_keys)
                    if upserts or deletes:
                        changes.tables[name] = TableChanges(
                            name=name,
                            ddl=self._ddl(name),
                            columns=list(t.schema.columns),
                            pk=list(t.schema.pk),
                            upserts=upserts,
                            deletes=deletes,
                        )
            except BaseException:
                conn.execute("ROLLBACK")
                if self.quiet:
                    self.expected_changes = conn.total_changes  # only the key tables' writes ran
                for t, keys in taken:
                    t.remark(keys)
                self._unship_schema(changes)
                raise
            conn.execute("COMMIT")
        finally:
            if read_only:
                conn.execute("PRAGMA query_only = ON")
        self._after_capture()
        return changes

    def _after_capture(self) -> None:
        """The key tables' own writes are accounted for; with no statement since the last capture that
        needed the triggers, they go (see `go_quiet`)."""
        if self.quiet:
            self.expected_changes = self._conn.total_changes
        elif self.quiet_enabled and not self.loud_needed and not self.bypassed:
            self.go_quiet()
        self.loud_needed = False

    def remark(self, changes: ChangeSet) -> None:
        """Mark again every key of a change set that did not reach storage.

        Only keys go back: the next capture re-reads their current images, so a row written again in the
        meantime ships once, in its newest state, and memory stays bounded by the live data.
        """
        if self._tx_start is not None:
            # After the transaction ends, so a rollback cannot take these marks with its own.
            self._deferred.append(changes)
            return
        self._unship_schema(changes)
        later = self._renames[changes.renames_seen:]
        for name, tc in changes.tables.items():
            for old, new in later:
                if name == old:
                    name = new
            t = self._tables.get(name)
            if t is None:
                continue
            pos = t.schema.pk_positions
            keys: list[tuple[Value, ...]] = [tuple(row[i] for i in pos) for row in tc.upserts]
            keys.extend(tuple(k) for k in tc.deletes)
            t.remark(keys)

    def _unship_schema(self, changes: ChangeSet) -> None:
        """A change set did not reach storage: its schema statements go back before the newer ones, and
        its user_version counts as not shipped."""
        if changes.schema:
            self.schema_log[:0] = [(0, sql) for sql in changes.schema]  # cookie 0: no rollback undoes them
            changes.schema = []
        self._captured_uv = None

    def _ddl(self, name: str) -> str:
        row = self._conn.execute("SELECT sql FROM main.sqlite_schema WHERE type = 'table' AND name = ?", (name,))
        return row.fetchone()[0]
