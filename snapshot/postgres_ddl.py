"""Schema statements of a delta replayed into a PostgreSQL replica, in the delta's own transaction.

A delta (body version 2) carries the schema statements the writer ran since the previous cut, as SQLite
SQL text. Translating that text to PostgreSQL's dialect would be guesswork (SQLite's grammar is not
PostgreSQL's, and one statement can change more than it names: a RENAME TO rewrites the indexes on the
table). Instead the follower keeps the SQLite schema its replica stands at (`postgres.schema_of`, stored
beside the cursor), rebuilds it in an in-memory SQLite database (the *shadow*: schema only, no rows), runs
each statement there and compares the schema before and after it (`pragma table_xinfo`, the index list,
views, triggers). What changed is then said in PostgreSQL, with every name quoted by psycopg's
`sql.Identifier`:

- a table appears: CREATE TABLE (types as export maps them: by declared affinity, joined with the storage
  classes the delta's own rows have for it), with its primary key, NOT NULL, DEFAULTs and indexes;
- a table disappears: DROP TABLE; one disappears and one with the very same columns appears: RENAME TO
  (and the UNIQUE constraints named after the table follow the new name);
- a column is appended: ADD COLUMN, typed the same way, NOT NULL and the DEFAULT as a literal of the value
  SQLite gives existing rows (evaluated by SQLite itself on a probe row, so `DEFAULT '5'` on an INTEGER
  column is 5 and `DEFAULT 'x'` there makes the column text); one is removed: DROP COLUMN; one changes
  its name only: RENAME COLUMN;
- an index appears or disappears: CREATE INDEX / UNIQUE constraint, DROP INDEX / DROP CONSTRAINT;
- views and triggers are reported and not carried (a trigger's effects arrive as rows already), as are
  indexes PostgreSQL cannot hold the same way (partial, expression, rowid): a `Note`.

Generated columns are plain columns there; deltas leave their values out (SQLite computes them), so
`Generated` computes them for each upserted row the same way, on a rows-free copy of the schema.

A change to a table's shape that none of these describe, a statement that does not run on the shadow, or
an added generated column (existing rows' values only SQLite can compute) is not guessed at: the delta
is not applied in place, and the follower re-seeds from the current state (`NeedsReseed`: all rows
exact, in one transaction), or stops with `FollowError` when no re-seed could
hold it either (a name longer than PostgreSQL's 63 bytes). Nothing is ever silently dropped.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass

from snapshot import postgres as pgm
from snapshot.apply import INTERNAL_PREFIX, quote
from snapshot.changes import ChangeSet, RawText, TableChanges
from snapshot.errors import TgsnapError

log = logging.getLogger("tgsnap.follow")


class FollowError(TgsnapError):
    """The follower cannot continue without an operator's decision (named in the message)."""


class NeedsReseed(Exception):
    """Internal: this delta cannot be applied in place; re-seed from the current state."""


@dataclass
class PgTable:
    """A replica table as the follower knows it: columns (name -> PostgreSQL type, in order) and key."""

    columns: dict[str, str]
    pk: list[str]


#: a column as `pragma table_xinfo` describes it: (name, declared type, notnull, dflt_value, pk, hidden)
Col = tuple


@dataclass
class Shape:
    tables: dict[str, tuple[Col, ...]]
    indexes: dict[str, str]  # explicit index (CREATE INDEX) name -> its table
    others: dict[tuple[str, str], str]  # (view | trigger, name) -> sql


def entries(text: str) -> list[list[str]]:
    return json.loads(text)


def table_names(text: str) -> set[str]:
    return {name for typ, name, _sql in entries(text) if typ == "table"}


def shadow(text: str) -> sqlite3.Connection:
    """An in-memory SQLite database holding the schema `text` (`postgres.schema_of`) describes, no rows."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    items = entries(text)
    # Tables first (nothing they declare is checked against other objects), then indexes; views and
    # triggers may depend on each other in an order sqlite_schema's does not show, so they are retried
    # until no more succeed (one that never does only costs a note about it, never a table).
    for typ, _name, sql in items:
        if typ == "table":
            conn.execute(sql)
    for typ, _name, sql in items:
        if typ == "index":
            conn.execute(sql)
    pending = [sql for typ, _name, sql in items if typ not in ("table", "index")]
    while pending:
        failed = []
        for sql in pending:
            try:
                conn.execute(sql)
            except sqlite3.Error:
                failed.append(sql)
        if len(failed) == len(pending):
            log.debug("%d view(s)/trigger(s) of the recorded schema could not be rebuilt", len(failed))
            break
        pending = failed
    return conn


def shape(conn: sqlite3.Connection) -> Shape:
    tables = {t: tuple(conn.execute('SELECT name, type, "notnull", dflt_value, pk, hidden FROM pragma_table_xinfo(?)',
                                    (t,)).fetchall()) for t in pgm.user_tables(conn)}
    indexes = {n: t for n, t in conn.execute(
        "SELECT name, tbl_name FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL") if t in tables}
    others = {(ty, n): sql for ty, n, sql in conn.execute(
        "SELECT type, name, sql FROM sqlite_schema WHERE type IN ('view', 'trigger') AND sql IS NOT NULL")
        if not n.startswith(INTERNAL_PREFIX)}
    return Shape(tables, indexes, others)


def _class(v) -> tuple[str | None, bool]:
    """The storage class of a delta value, and whether it is text PostgreSQL's text cannot hold."""
    t = type(v)
    if v is None:
        return None, False
    if t is int or t is bool:
        return "integer", False
    if t is float:
        return "real", False
    if t is RawText:
        return "text", True
    if t is str:
        return "text", "\x00" in v
    return "blob", False


def delta_classes(changes: ChangeSet, table: str) -> dict[str, tuple[set[str], bool]]:
    """Per column of `table`, the storage classes its values have in this delta's rows."""
    t = changes.tables.get(table)
    out: dict[str, tuple[set[str], bool]] = {}
    if t is None:
        return out
    for k, c in enumerate(t.columns):
        classes: set[str] = set()
        bad = False
        for r in t.upserts:
            cls, b = _class(r[k])
            if cls is not None:
                classes.add(cls)
            bad = bad or b
        out[c] = (classes, bad)
    return out


def _check_name(name: str, what: str) -> None:
    if len(name.encode()) > 63:
        raise FollowError(f"{what}: the name {name!r} is {len(name.encode())} bytes; PostgreSQL identifiers are at "
                          "most 63 (it would cut the name). The follower stops here: rename it in the bot (a "
                          "migration), then compact storage (tgsnap-compact) so the follower re-seeds past it")


def _existing_value(decl: str, dflt: str):
    """The value SQLite gives rows that existed before `ADD COLUMN <decl> DEFAULT <dflt>`: asked of SQLite
    itself, on a probe row (its affinity rules, not a reimplementation). `decl` and `dflt` are SQLite's own
    renderings from pragma table_xinfo, so they parse as they did in the writer."""
    probe = sqlite3.connect(":memory:")
    try:
        probe.execute("CREATE TABLE p (x)")
        probe.execute("INSERT INTO p VALUES (0)")
        probe.execute(f"ALTER TABLE p ADD COLUMN c {decl} DEFAULT {dflt}")
        return probe.execute("SELECT c FROM p").fetchone()[0]
    finally:
        probe.close()


class Replay:
    """The schema statements of one delta, replayed on the shadow and said in PostgreSQL (see the module)."""

    def __init__(self, schema: str, recorded: str, tables: dict[str, PgTable], changes: ChangeSet, what: str):
        self.schema = schema
        self.sh = shadow(recorded)
        self.before = shape(self.sh)
        self.tables = tables  # the follower's view of the replica, updated as statements change it
        self.changes = changes
        self.what = what
        self.notes: list[pgm.Note] = []
        self.seq = 0
        self._stmt: tuple[int, str] | None = None

    def close(self) -> None:
        self.sh.close()

    def recorded(self) -> str:
        return pgm.schema_of(self.sh)

    def add_table_ddl(self, name: str, ddl: str) -> None:
        """A table a delta carries only as DDL (a body without schema statements): into the shadow too."""
        if name not in self.before.tables:
            self.sh.execute(ddl)
            self.before = shape(self.sh)

    def _note(self, text: str) -> None:
        i, sql = self._stmt if self._stmt else (None, None)
        n = pgm.Note(self.seq, i, sql, text)
        log.warning("%s", n)
        self.notes.append(n)

    def _where(self) -> str:
        """The statement at hand, for messages (a NeedsReseed's reason is prefixed with the delta by the
        follower; a FollowError's and the log's name it here)."""
        i, sql = self._stmt if self._stmt else (0, "")
        return f"schema statement {i} ({pgm._short(sql, 120)!r})"

    def _q(self, name: str):
        """`schema.name`, both quoted: every object the follower touches is in its schema."""
        from psycopg import sql as q

        return q.SQL("{}.{}").format(q.Identifier(self.schema), q.Identifier(name))

    async def run(self, cur, i: int, stmt: str) -> None:
        self._stmt = (i, stmt)
        try:
            self.sh.execute(stmt)
        except sqlite3.Error as e:
            # restore runs the same statement on the same schema: it fails there too, or the recorded schema
            # is not storage's; either way nothing here can be trusted to apply in place
            raise NeedsReseed(f"{self._where()} does not run on the schema the replica recorded ({e})") from None
        after = shape(self.sh)
        b = self.before
        gone = [t for t in b.tables if t not in after.tables]
        new = [t for t in after.tables if t not in b.tables]
        if len(gone) == 1 and len(new) == 1 and b.tables[gone[0]] == after.tables[new[0]]:
            await self._rename_table(cur, gone[0], new[0])
        else:
            for t in gone:
                await self._drop_table(cur, t)
            for t in new:
                await self._create_table(cur, t)
        for t, cols in after.tables.items():
            if t in b.tables and b.tables[t] != cols:
                await self._alter(cur, t, b.tables[t], cols)
        for n, t in b.indexes.items():
            if n not in after.indexes and t in after.tables:
                await self._drop_index(cur, n, t)
        for n, t in after.indexes.items():
            if n not in b.indexes and t not in new:
                await self._create_index(cur, n, t)
        for typ, name in sorted(after.others.keys() - b.others.keys()):
            self._note(f"{typ} {name!r} is not carried to PostgreSQL (views and triggers are not replicated; a "
                       "trigger's effects arrive as rows); create it there yourself if the PostgreSQL bot needs it")
        for typ, name in sorted(b.others.keys() - after.others.keys()):
            self._note(f"{typ} {name!r} was dropped in storage (it was never in PostgreSQL; drop yours if you "
                       "made one)")
        self.before = after

    # ---- tables

    async def _create_table(self, cur, t: str) -> None:
        _check_name(t, f"{self.what}, {self._where()}")
        if t in self.tables:
            raise FollowError(f"{self.what}, {self._where()}: creates table {t!r}, which PostgreSQL schema "
                              f"{self.schema!r} already has and the replica's record does not: not the follower's "
                              "table; drop or rename it")
        try:
            spec = pgm.describe(self.sh, t, classes=delta_classes(self.changes, t))
        except pgm.PostgresError as e:
            raise FollowError(f"{self.what}, {self._where()}: {e}") from None
        for st in pgm.create_statements(self.schema, spec):
            await cur.execute(st)
        for n in spec.notes:
            self._note(n)
        self.tables[t] = PgTable({c.name: c.type for c in spec.columns}, list(spec.pk))
        log.info("%s, %s: table %r created in PostgreSQL", self.what, self._where(), t)

    async def _drop_table(self, cur, t: str) -> None:
        from psycopg import sql as q

        if t in self.tables:
            # no CASCADE: a view of the operator's on it makes PostgreSQL refuse, named, rather than vanish
            await cur.execute(q.SQL("DROP TABLE {}").format(self._q(t)))
            del self.tables[t]
            log.info("%s, %s: table %r dropped in PostgreSQL", self.what, self._where(), t)

    async def _rename_table(self, cur, old: str, new: str) -> None:
        from psycopg import sql as q

        _check_name(new, f"{self.what}, {self._where()}")
        if old not in self.tables:
            await self._create_table(cur, new)
            return
        await cur.execute(q.SQL("ALTER TABLE {} RENAME TO {}").format(self._q(old), q.Identifier(new)))
        self.tables[new] = self.tables.pop(old)
        # UNIQUE constraints made from SQLite's automatic indexes are named after their table (export's
        # rule): follow the rename, so a later table of the old name can have its own
        for _seq, iname, _u, origin, _p in self.sh.execute(f"PRAGMA index_list({quote(new)})").fetchall():
            if origin != "u":
                continue
            cols = [r[2] for r in self.sh.execute(f"PRAGMA index_info({quote(iname)})")]
            was, now = pgm.autoindex_name(old, cols), pgm.autoindex_name(new, cols)
            if len(now.encode()) <= 63 and await self._constraint(cur, was):
                await cur.execute(q.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                    self._q(new), q.Identifier(was), q.Identifier(now)))
        log.info("%s, %s: table %r renamed to %r in PostgreSQL", self.what, self._where(), old, new)

    async def _constraint(self, cur, name: str) -> bool:
        await cur.execute("SELECT 1 FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
                          "WHERE n.nspname = %s AND c.conname = %s", (self.schema, name))
        return await cur.fetchone() is not None

    # ---- columns

    async def _alter(self, cur, t: str, bc: tuple[Col, ...], ac: tuple[Col, ...]) -> None:
        if t not in self.tables:
            raise NeedsReseed(f"{self._where()}: table {t!r} is not in PostgreSQL")
        if len(ac) == len(bc):
            diff = [k for k in range(len(bc)) if bc[k] != ac[k]]
            if len(diff) == 1 and bc[diff[0]][1:] == ac[diff[0]][1:]:
                await self._rename_column(cur, t, bc[diff[0]][0], ac[diff[0]][0])
                return
        elif len(ac) == len(bc) + 1 and ac[:-1] == bc:
            await self._add_column(cur, t, ac[-1])
            return
        elif len(ac) == len(bc) - 1:
            for k in range(len(bc)):
                if bc[:k] + bc[k + 1:] == ac:
                    await self._drop_column(cur, t, bc[k][0])
                    return
        raise NeedsReseed(f"{self._where()} changed table {t!r} in a way follow does not replay in place (columns "
                          f"{[c[0] for c in bc]} -> {[c[0] for c in ac]})")

    async def _rename_column(self, cur, t: str, old: str, new: str) -> None:
        from psycopg import sql as q

        _check_name(new, f"{self.what}, {self._where()}")
        pt = self.tables[t]
        await cur.execute(q.SQL("ALTER TABLE {} RENAME COLUMN {} TO {}").format(
            self._q(t), q.Identifier(old), q.Identifier(new)))
        pt.columns = {(new if c == old else c): ty for c, ty in pt.columns.items()}
        pt.pk = [new if c == old else c for c in pt.pk]
        log.info("%s, %s: column %r of %r renamed to %r in PostgreSQL", self.what, self._where(), old, t, new)

    async def _drop_column(self, cur, t: str, c: str) -> None:
        from psycopg import sql as q

        pt = self.tables[t]
        if c in pt.columns:
            await cur.execute(q.SQL("ALTER TABLE {} DROP COLUMN {}").format(self._q(t), q.Identifier(c)))
            del pt.columns[c]
        log.info("%s, %s: column %r of %r dropped in PostgreSQL", self.what, self._where(), c, t)

    async def _add_column(self, cur, t: str, col: Col) -> None:
        from psycopg import sql as q

        name, decl, notnull, dflt, _pk, hidden = col
        _check_name(name, f"{self.what}, {self._where()}")
        if hidden:
            # SQLite computes it for the rows that exist; PostgreSQL has only a plain column to fill, and the
            # rows are not in this delta: copy them afresh rather than leave NULL there
            raise NeedsReseed(f"{self._where()} adds generated column {t}.{name}, whose values for existing rows "
                              "only SQLite can compute")
        classes, bad = delta_classes(self.changes, t).get(name, (set(), False))
        value = None
        if dflt is not None and not hidden:
            try:
                value = _existing_value(decl or "", dflt)
            except sqlite3.Error as e:
                raise NeedsReseed(f"{self._where()}: the DEFAULT of new column {t}.{name} cannot be evaluated ({e})") \
                    from None
            cls, b = _class(value)
            if cls is not None:
                classes = classes | {cls}
                bad = bad or b
        ty = pgm.pg_type(decl, classes, bad)
        parts: list[q.Composable] = [
            q.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(self._q(t), q.Identifier(name), q.SQL(ty))]
        if value is not None:
            # a constant (SQLite refuses ADD COLUMN with any other DEFAULT): PostgreSQL fills the existing rows
            # with it, as SQLite reads them, and keeps it for rows a PostgreSQL bot inserts later
            parts.append(q.SQL("DEFAULT {}").format(q.Literal(pgm.convert(value, ty))))
        if notnull:
            parts.append(q.SQL("NOT NULL"))
        await cur.execute(q.SQL(" ").join(parts))
        self.tables[t].columns[name] = ty
        log.info("%s, %s: column %r added to %r in PostgreSQL as %s", self.what, self._where(), name, t, ty)

    # ---- indexes

    async def _create_index(self, cur, n: str, t: str) -> None:
        if t not in self.tables:
            return
        spec = pgm.describe(self.sh, t, by_values=False)
        mine = [ix for ix in spec.indexes if ix[0] == n]
        if not mine:
            for note in spec.notes:
                if note.startswith(f"index {n}:"):
                    self._note(note)
            return
        if len(n.encode()) > 63:
            self._note(f"index {n}: the name is longer than PostgreSQL's 63 bytes; not created")
            return
        spec.indexes = mine
        for st in pgm.index_statements(self.schema, spec):
            await cur.execute(st)
        log.info("%s, %s: index %r created in PostgreSQL", self.what, self._where(), n)

    async def _drop_index(self, cur, n: str, t: str) -> None:
        from psycopg import sql as q

        if await self._constraint(cur, n):  # a UNIQUE index is a constraint there (see index_statements)
            await cur.execute(q.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(self._q(t), q.Identifier(n)))
        else:
            await cur.execute(q.SQL("DROP INDEX IF EXISTS {}").format(self._q(n)))
        log.info("%s, %s: index %r dropped in PostgreSQL", self.what, self._where(), n)


def differences(old: str, conn: sqlite3.Connection) -> list[str]:
    """What changed between the recorded schema `old` and the schema of `conn`, for a re-seed's report
    (a snapshot switch or compaction carries no schema statements: the re-seed applies the difference)."""
    sh = shadow(old)
    try:
        a, b = shape(sh), shape(conn)
    finally:
        sh.close()
    out = [f"table {t!r} is no longer in storage: dropped from PostgreSQL"
           for t in sorted(a.tables.keys() - b.tables.keys())]
    out += [f"table {t!r} is new in storage: created in PostgreSQL" for t in sorted(b.tables.keys() - a.tables.keys())]
    for t in sorted(a.tables.keys() & b.tables.keys()):
        was, now = [c[0] for c in a.tables[t]], [c[0] for c in b.tables[t]]
        if a.tables[t] != b.tables[t]:
            out.append(f"table {t!r}: columns {was} are now {now}: re-created in PostgreSQL")
    return out


class Generated:
    """Values of generated columns (`GENERATED ALWAYS AS (…)`, virtual or stored) for a delta's rows.

    Deltas leave them out: SQLite computes them from the other columns. A replica column holds values, so
    the follower asks SQLite the same way: each row image is inserted into a rows-free copy of the recorded
    schema (its triggers dropped: replay reproduces rows, not side effects, as restore does) and the
    generated columns read back, inside a savepoint rolled back after the delta, so the copy stays empty."""

    def __init__(self, recorded: str):
        self.recorded = recorded
        self.sh = shadow(recorded)
        for (name,) in self.sh.execute("SELECT name FROM sqlite_schema WHERE type = 'trigger'").fetchall():
            self.sh.execute(f"DROP TRIGGER {quote(name)}")
        self.columns = {t: [r[1] for r in self.sh.execute(f"PRAGMA table_xinfo({quote(t)})") if r[6] in (2, 3)]
                        for t in pgm.user_tables(self.sh)}

    def close(self) -> None:
        self.sh.close()

    def of(self, t: TableChanges) -> TableChanges:
        """`t` with its table's generated columns appended to its columns and values to its rows."""
        gen = [c for c in self.columns.get(t.name, []) if c not in t.columns]
        if not gen or not t.upserts:
            return t
        qt = quote(t.name)
        cols = ", ".join(quote(c) for c in t.columns)
        where = " AND ".join(f"{quote(c)} IS ?" for c in t.pk)
        select = f"SELECT {', '.join(quote(c) for c in gen)} FROM {qt} WHERE {where}"
        at = [t.columns.index(c) for c in t.pk]
        rows = []
        self.sh.execute("SAVEPOINT tgsnap_generated")
        try:
            for r in t.upserts:
                # TEXT that is not UTF-8 bound as its bytes inside CAST, as restore binds it (docs/formats.md §2)
                marks = ", ".join("CAST(? AS TEXT)" if type(v) is RawText else "?" for v in r)
                self.sh.execute(f"INSERT OR REPLACE INTO {qt} ({cols}) VALUES ({marks})",
                                [bytes(v) if type(v) is RawText else v for v in r])
                key = [r[k] for k in at]
                got = self.sh.execute(select, [bytes(v) if type(v) is RawText else v for v in key]).fetchone()
                rows.append((*r, *got))
        finally:
            self.sh.execute("ROLLBACK TO tgsnap_generated")
            self.sh.execute("RELEASE tgsnap_generated")
        return TableChanges(t.name, t.ddl, [*t.columns, *gen], t.pk, rows, t.deletes)
