"""A continuous replica of the stored state in PostgreSQL, fed from the storage chain.

The follower reads storage exactly as a restore does (`read_chain`, the one place that does: it is
`snapshot.restore.plan`, so the chain selection rules, discovery and verification are restore's), and
keeps a cursor in PostgreSQL itself (`<schema>._tgsnap_follow`: seq, document hash, epoch, storage
identity). One pass (`Follower.step`):

- no cursor: seed. Restore the whole current state (snapshot + deltas) and load it with
  `snapshot.postgres.load_state` (one transaction, checksums compared, cursor written in it).
- the cursor is on the chain (its seq and hash are the snapshot base or a delta of the chain): apply
  each later delta in its own PostgreSQL transaction: lock the cursor row, check it is still where this
  process left it (a second follower on the same schema waits for the lock, then finds it moved and
  starts over), deletes then upserts (COPY into a staging table, INSERT ... ON CONFLICT DO UPDATE), move
  the cursor; commit. A crash anywhere leaves PostgreSQL at a delta boundary with a cursor that says which.
- the cursor is not on the chain: its deltas were compacted into a newer snapshot, or its delta was a
  superseded attempt replaced on the chain by a newer epoch (a writer crashed and its successor won),
  or PostgreSQL is ahead of storage. The first two re-seed from the current state in one transaction
  (readers see the old tables until the new ones are complete); the last is refused (storage lost
  history the replica has: an operator decision), as is a cursor that belongs to another storage.
- schema statements (delta body v2) are replayed first, in the delta's transaction, in order
  (`snapshot.postgres_ddl`: each is run on a rows-free SQLite copy of the replica's schema, recorded
  beside the cursor, and what it changed is said in PostgreSQL); views, triggers and untranslatable
  indexes are reported (`<schema>._tgsnap_follow_notes`, the log, `--check`); a change it cannot
  replay in place re-seeds, one no replica could hold stops the follower. A snapshot switch or
  compaction that carries a schema change re-seeds (the cursor is off the chain), and the re-seed drops
  the replica's tables that storage no longer has.
- what arrives without a schema statement (version-1 bodies) is applied the way a restore replays it: a
  new table is created from the delta's DDL, new columns are added (typed by declared affinity), columns
  the delta no longer carries are set to their DEFAULT (as restore's INSERT OR REPLACE does) and
  reported; a value that does not fit its column's PostgreSQL type (an INTEGER column receiving text)
  re-seeds, so the column is re-typed from the values; a changed primary key stops the follower with an
  error naming it.

It takes no writer lease and writes nothing to storage, so it runs beside the live bot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field

from snapshot import postgres as pgm
from snapshot.backend import Backend
from snapshot.changes import ChangeSet, TableChanges
from snapshot.errors import (
    BackendError,
    ChainError,
    ConfigError,
    CorruptDocument,
    DocumentNotFound,
    RestoreError,
)
from snapshot.postgres_ddl import FollowError, Generated, NeedsReseed, Replay, differences, table_names
from snapshot.postgres_ddl import PgTable as _PgTable
from snapshot.restore import execute, plan
from snapshot.restore_plan import RestorePlan

log = logging.getLogger("tgsnap.follow")

__all__ = ["CheckResult", "FollowError", "Follower", "StepResult", "read_chain"]


async def read_chain(backend: Backend, key) -> RestorePlan:
    """The one place the follower reads storage: the verified chain to the tip (restore's own rules),
    re-read on the newer manifest when a snapshot switch deleted what it was reading (snapshot.reading)."""
    from snapshot import reading

    return await reading.settled(backend, lambda at: plan(backend, key, manifest=at), key=key)


@dataclass
class StepResult:
    seq: int  # the cursor after the pass
    tip: int  # the chain's last seq as read in this pass
    applied: int = 0  # deltas applied in place
    reseeded: str | None = None  # why a (re-)seed happened
    notes: list[str] = field(default_factory=list)
    #: capture times (unix seconds) of the replica's state and of storage's tip, when known.
    seq_captured_at: float | None = None
    tip_captured_at: float | None = None

    @property
    def lag(self) -> int:
        return self.tip - self.seq

    @property
    def lag_seconds(self) -> float | None:
        """How much writing time the replica is behind storage (0 when caught up)."""
        if self.lag == 0:
            return 0.0
        if self.seq_captured_at is None or self.tip_captured_at is None:
            return None
        return max(0.0, self.tip_captured_at - self.seq_captured_at)


@dataclass
class CheckResult:
    tip: int
    seq: int | None
    tables: list[pgm.TableReport]
    problems: list[str]
    #: what of storage's schema the replica does not carry, with the seq and statement it came from.
    notes: list[pgm.Note] = field(default_factory=list)
    user_version: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


class Follower:
    """Keep `schema` in the PostgreSQL database at `url` equal to the stored state."""

    def __init__(self, open_backend: Callable, key, url: str, *, schema: str = "public", location: str,
                 force: bool = False):
        pgm.check_url(url)
        pgm.check_schema_name(schema)
        self.open_backend = open_backend  # async () -> Backend; reopened after a storage error
        self.key = key
        self.url = url
        self.schema = schema
        self.location = location
        self.force = force
        self.pg = None
        self.backend: Backend | None = None
        self._reported: set = set()
        self._known: dict[str, _PgTable] | None = None
        self._generated: Generated | None = None  # for the recorded schema it was built from

    async def close_pg(self) -> None:
        pg, self.pg = self.pg, None
        if pg is not None:
            try:
                await pg.close()
            except Exception:
                log.debug("closing the PostgreSQL connection failed", exc_info=True)

    async def close(self) -> None:
        if self._generated is not None:
            self._generated.close()
            self._generated = None
        await self.close_pg()
        await self._drop_backend()

    async def _conn(self):
        if self.pg is None or self.pg.closed or self.pg.broken:
            self.pg = await pgm.connect(self.url)
        return self.pg

    async def step(self) -> StepResult:
        """One catch-up pass: read the chain, apply what PostgreSQL lacks (or re-seed). Returns where it is."""
        if self.backend is None:
            self.backend = await self.open_backend()
        try:
            p = await read_chain(self.backend, self.key)
        except BackendError:
            await self._drop_backend()  # reopened on the next pass: an outage may have broken the session
            raise
        tip = pgm.position_of(p, self.location)
        pg = await self._conn()
        try:
            with pgm.server_errors(self.url, "following into PostgreSQL"):
                return await self._step(pg, self.backend, p, tip)
        except pgm.PostgresUnreachable:
            await self.close_pg()
            raise

    async def _drop_backend(self) -> None:
        b, self.backend = self.backend, None
        if b is not None:
            try:
                await b.close()
            except Exception:  # closing a broken session must not hide the error that broke it
                log.debug("closing the storage backend failed", exc_info=True)

    async def _step(self, pg, backend, p: RestorePlan, tip: pgm.Position) -> StepResult:
        async with pg.cursor() as cur:
            cursor = await pgm.read_cursor(cur, self.schema)
        if cursor is None:
            return await self._seed(pg, backend, p, tip, None, "no cursor in PostgreSQL yet: seeding",
                                    replace=self.force)
        if not pgm.same_storage(cursor.storage, tip.storage):
            if not self.force:
                raise FollowError(f"schema {self.schema!r} follows another storage ({cursor.storage!r}, this is "
                                  f"{tip.storage!r}); use --force to replace it, or --schema another one")
            return await self._seed(pg, backend, p, tip, cursor, "another storage's replica replaced (--force)")
        chain = [(p.base_seq, p.base_hash.hex())] + [(d.seq, d.hash) for d in p.chain]
        at = next((i for i, (s, h) in enumerate(chain) if s == cursor.seq and h == cursor.hash), None)
        if at is None:
            if cursor.seq < p.base_seq:
                why = (f"cursor seq {cursor.seq} is older than the snapshot (base seq {p.base_seq}): its deltas "
                       "were compacted away; re-seeding from the snapshot")
            elif cursor.seq <= tip.seq:
                why = (f"cursor seq {cursor.seq} (hash {cursor.hash[:16]}…) is not on the chain: a superseded "
                       "attempt replaced by a newer writer's; re-seeding")
            elif self.force:
                why = f"cursor seq {cursor.seq} is ahead of storage (seq {tip.seq}); re-seeding (--force)"
            else:
                raise FollowError(f"PostgreSQL is ahead of storage: cursor seq {cursor.seq}, storage ends at seq "
                                  f"{tip.seq}. Storage lost history the replica has; refusing to go back (use "
                                  "--force to re-seed from storage as it is)")
            return await self._seed(pg, backend, p, tip, cursor, why)
        res = StepResult(seq=cursor.seq, tip=tip.seq, seq_captured_at=cursor.captured_at,
                         tip_captured_at=tip.captured_at)
        pos = cursor
        self._known = None
        for d in p.chain[at:]:  # chain[at] is the delta after chain-list index `at` (base is index 0)
            changes = p.changes[d.ref]
            nxt = pgm.Position(seq=d.seq, hash=d.hash, epoch=d.epoch, storage=tip.storage,
                               captured_at=d.captured_at)
            try:
                try:
                    nxt, notes = await self._apply(pg, changes, pos, nxt, what=f"delta seq {d.seq}")
                    res.notes += [str(n) for n in notes]
                except BaseException:
                    self._known = None  # the transaction rolled back: so did any table it created or altered
                    raise
            except NeedsReseed as e:
                s = await self._seed(pg, backend, p, tip, pos, f"delta seq {d.seq}: {e}; re-seeding")
                s.applied = res.applied
                s.notes = res.notes + s.notes
                return s
            pos = nxt
            res.applied += 1
            res.seq, res.seq_captured_at = d.seq, d.captured_at
        return res

    async def check(self) -> CheckResult:
        """Compare the replica with the restored state at the tip, in one consistent PostgreSQL view: the
        final step of a migration. Differences are returned, named (none: the replica equals storage)."""
        import psycopg

        if self.backend is None:
            self.backend = await self.open_backend()
        p = await read_chain(self.backend, self.key)
        tip = pgm.position_of(p, self.location)
        restored = await execute(p, self.backend, self.key)
        try:
            pg = await self._conn()
            with pgm.server_errors(self.url, "checking the replica"):
                await pg.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
                try:
                    async with pg.transaction():
                        cursor = await pgm.read_cursor(pg.cursor(), self.schema)
                        if cursor is None or (cursor.seq, cursor.hash) != (tip.seq, tip.hash):
                            return CheckResult(tip.seq, cursor.seq if cursor else None, [], [
                                f"the replica is at seq {cursor.seq if cursor else 'none'}, storage at seq "
                                f"{tip.seq}: not caught up (run a pass first)"])
                        tables, problems = await pgm.compare_state(pg, restored.conn, self.schema)
                        notes = await pgm.read_notes(pg.cursor(), self.schema)
                finally:
                    await pg.set_isolation_level(None)
        finally:
            restored.conn.close()
        return CheckResult(tip.seq, cursor.seq, tables, problems, notes, cursor.user_version)

    async def _seed(self, pg, backend, p: RestorePlan, tip: pgm.Position, expect, why: str, *,
                    replace: bool = True) -> StepResult:
        log.warning("%s", why)
        restored = await execute(p, backend, self.key)
        try:
            # The tables the replica had (its recorded schema) that storage no longer has go with the re-seed:
            # a snapshot switch or compaction carries no DROP TABLE to replay, only the new schema.
            old = getattr(expect, "sqlite_schema", None)
            try:
                stale = table_names(old) if old else set()
                changed = [pgm.Note(tip.seq, None, None, f"across the re-seed: {n}")
                           for n in (differences(old, restored.conn) if old else [])]
            except (sqlite3.Error, ValueError, TypeError) as e:  # a record that does not rebuild: no summary
                log.warning("the replica's recorded SQLite schema does not rebuild (%s); tables that storage "
                            "dropped stay in PostgreSQL (--check names them)", e)
                stale, changed = set(), []
            for n in changed:
                log.warning("%s", n)
            report = await pgm.load_state(pg, restored.conn, self.schema, replace=replace, position=tip,
                                          url=self.url, expect=expect, stale=stale, notes=changed)
        finally:
            restored.conn.close()
        return StepResult(seq=tip.seq, tip=tip.seq, reseeded=why, notes=report.notes,
                          seq_captured_at=tip.captured_at, tip_captured_at=tip.captured_at)

    async def _tables(self, cur) -> dict[str, _PgTable]:
        await cur.execute("SELECT table_name, column_name, data_type FROM information_schema.columns "
                          "WHERE table_schema = %s ORDER BY table_name, ordinal_position", (self.schema,))
        out: dict[str, _PgTable] = {}
        for t, c, ty in await cur.fetchall():
            out.setdefault(t, _PgTable({}, [])).columns[c] = ty
        await cur.execute(
            "SELECT tc.table_name, kcu.column_name FROM information_schema.table_constraints tc "
            "JOIN information_schema.key_column_usage kcu ON kcu.constraint_schema = tc.constraint_schema "
            "AND kcu.constraint_name = tc.constraint_name AND kcu.table_name = tc.table_name "
            "WHERE tc.table_schema = %s AND tc.constraint_type = 'PRIMARY KEY' ORDER BY kcu.ordinal_position",
            (self.schema,))
        for t, c in await cur.fetchall():
            if t in out:
                out[t].pk.append(c)
        return out

    async def _apply(self, pg, changes: ChangeSet, pos: pgm.Position, nxt: pgm.Position, *,
                     what: str) -> tuple[pgm.Position, list[pgm.Note]]:
        """One delta in one transaction: its schema statements replayed, its rows, the cursor (checked, then
        moved, with the SQLite schema it now stands at). Returns the new cursor and what was reported."""
        async with pg.transaction():
            cur = pg.cursor()
            await pgm.lock_schema(cur, self.schema)
            now = await pgm.read_cursor(cur, self.schema, lock=True)
            if now is None or (now.seq, now.hash) != (pos.seq, pos.hash):
                raise pgm.CursorMoved(f"schema {self.schema!r}: the follow cursor moved to seq "
                                      f"{now and now.seq} under this follower (expected {pos.seq}): another "
                                      "follower works on it")
            # The replica's tables, read once per pass (information_schema is slow): only this follower
            # changes them, under the schema lock, and it updates the cache as it does.
            if self._known is None:
                self._known = await self._tables(cur)
            tables = self._known
            recorded = now.sqlite_schema
            replay: Replay | None = None
            if changes.schema and recorded is None:
                raise NeedsReseed("it carries schema statements and the replica has no record of its SQLite "
                                  "schema to replay them on (seeded by an older tgsnap)")
            if recorded is not None and (changes.schema or any(
                    t.ddl and t.name not in tables for t in changes.tables.values())):
                try:
                    replay = Replay(self.schema, recorded, tables, changes, what)
                except (sqlite3.Error, ValueError) as e:  # ValueError: not JSON (someone edited the cursor)
                    raise NeedsReseed(f"the SQLite schema recorded beside the cursor does not rebuild here ({e})") \
                        from None
                replay.seq = nxt.seq
            try:
                if replay is not None:
                    for i, stmt in enumerate(changes.schema, 1):
                        await replay.run(cur, i, stmt)
                    recorded = replay.recorded()  # the rows are images under the schema the statements leave
                generated = self._generated_for(recorded)
                for t in changes.tables.values():
                    if not len(t) and not t.ddl:
                        continue
                    if generated is not None:
                        t = generated.of(t)
                    pt = tables.get(t.name)
                    if pt is None:
                        pt = tables[t.name] = await self._create(cur, t, what)
                        if replay is not None:
                            replay.add_table_ddl(t.name, t.ddl)
                    await self._apply_table(cur, t, pt, what)
                if replay is not None:
                    recorded = replay.recorded()
                notes = replay.notes if replay is not None else []
            except sqlite3.Error as e:
                # the rows-free SQLite copy refused something the writer's SQLite did (a generated column's
                # inputs, a schema object this SQLite cannot build): not guessed at, copied afresh
                raise NeedsReseed(f"the SQLite copy of the replica's schema refused this delta ({e})") from None
            finally:
                if replay is not None:
                    replay.close()
            uv = changes.user_version if changes.user_version is not None else now.user_version
            nxt = dataclasses.replace(nxt, sqlite_schema=recorded, user_version=uv)
            # the cursor table has the schema columns once one was written (else: written by an older tgsnap)
            await pgm.write_cursor(cur, self.schema, nxt, ensure=now.sqlite_schema is None)
            await pgm.write_notes(cur, self.schema, notes, replace=False)
        return nxt, notes

    def _generated_for(self, recorded: str | None) -> Generated | None:
        """The generated-column calculator for the schema `recorded` (rebuilt only when the schema changed)."""
        if recorded is None:
            return None
        g = self._generated
        if g is None or g.recorded != recorded:
            if g is not None:
                g.close()
            try:
                g = Generated(recorded)
            except (sqlite3.Error, ValueError) as e:
                raise NeedsReseed(f"the SQLite schema recorded beside the cursor does not rebuild here ({e})") from None
            self._generated = g
        return g if any(g.columns.values()) else None

    async def _create(self, cur, t: TableChanges, what: str) -> _PgTable:
        """A table the replica lacks: create it from the delta's DDL (types by declared affinity)."""
        scratch = sqlite3.connect(":memory:")
        try:
            try:
                scratch.execute(t.ddl)
            except sqlite3.Error as e:
                raise NeedsReseed(f"table {t.name!r} is new and its DDL does not run here ({e})") from None
            spec = pgm.describe(scratch, t.name, by_values=False)
        finally:
            scratch.close()
        log.warning("%s: new table %r created in PostgreSQL from its DDL", what, t.name)
        for st in pgm.create_statements(self.schema, spec):
            await cur.execute(st)
        return _PgTable({c.name: c.type for c in spec.columns}, list(spec.pk))

    async def _apply_table(self, cur, t: TableChanges, pt: _PgTable, what: str) -> None:
        from psycopg import sql as q

        if list(t.pk) != pt.pk:
            raise FollowError(f"{what}: table {t.name!r} has primary key ({', '.join(t.pk)}) in storage but "
                              f"({', '.join(pt.pk)}) in PostgreSQL: a schema change this follower cannot apply; "
                              "re-create the replica (tgsnap-export --force) after checking the new schema")
        gone = [c for c in pt.columns if c not in t.columns]
        if gone and (t.name, tuple(gone)) not in self._reported:
            # A restore replays such a delta with INSERT OR REPLACE of the delta's columns: the others get
            # their DEFAULT. The replica does the same (below), so it still equals the restored state.
            self._reported.add((t.name, tuple(gone)))
            log.warning("%s: table %r: column(s) %s are in PostgreSQL but not in the delta (a schema change); "
                        "set to their DEFAULT as a restore does", what, t.name, ", ".join(gone))
        added = [c for c in t.columns if c not in pt.columns]
        if added:
            scratch = sqlite3.connect(":memory:")
            try:
                try:
                    scratch.execute(t.ddl)
                    decl = {r[1]: r[2] for r in scratch.execute(f"PRAGMA table_xinfo({pgm.quote(t.name)})")}
                except sqlite3.Error:
                    decl = {}
            finally:
                scratch.close()
            for c in added:
                ty = pgm.pg_type(decl.get(c), ())
                log.warning("%s: table %r gained column %r: added to PostgreSQL as %s", what, t.name, c, ty)
                await cur.execute(q.SQL("ALTER TABLE {}.{} ADD COLUMN {} {}").format(
                    q.Identifier(self.schema), q.Identifier(t.name), q.Identifier(c), q.SQL(ty)))
                pt.columns[c] = ty
        table = q.SQL("{}.{}").format(q.Identifier(self.schema), q.Identifier(t.name))
        if t.deletes:
            keys = [self._row(t.name, t.pk, pt, k) for k in t.deletes]
            await self._stage(cur, "_tgsnap_del", t.pk, pt, keys)
            await cur.execute(q.SQL("DELETE FROM {} AS t USING _tgsnap_del AS d WHERE {}").format(
                table, q.SQL(" AND ").join(q.SQL("t.{c} = d.{c}").format(c=q.Identifier(c)) for c in t.pk)))
        if t.upserts:
            rows = [self._row(t.name, t.columns, pt, r) for r in t.upserts]
            await self._stage(cur, "_tgsnap_up", t.columns, pt, rows)
            cols = q.SQL(", ").join(map(q.Identifier, t.columns))
            sets = [q.SQL("{c} = EXCLUDED.{c}").format(c=q.Identifier(c)) for c in t.columns if c not in t.pk]
            sets += [q.SQL("{} = DEFAULT").format(q.Identifier(c)) for c in gone]
            action = q.SQL("DO UPDATE SET {}").format(q.SQL(", ").join(sets)) if sets else q.SQL("DO NOTHING")
            # DISTINCT ON: one image per key, the last (ON CONFLICT may not touch a row twice in one statement)
            await cur.execute(q.SQL(
                "INSERT INTO {t} ({cols}) SELECT DISTINCT ON ({pk}) {cols} FROM _tgsnap_up ORDER BY {pk}, "
                "_tgsnap_ord DESC ON CONFLICT ({pk}) {action}").format(
                t=table, cols=cols, pk=q.SQL(", ").join(map(q.Identifier, t.pk)), action=action))

    def _row(self, table: str, cols: list[str], pt: _PgTable, values: tuple) -> tuple:
        try:
            return tuple(pgm.convert(v, pt.columns[c]) for c, v in zip(cols, values, strict=True))
        except pgm.ValueMismatch as e:
            raise NeedsReseed(f"table {table!r}: {e}") from None

    async def _stage(self, cur, name: str, cols: list[str], pt: _PgTable, rows: list[tuple]) -> None:
        from psycopg import sql as q

        await cur.execute(q.SQL("DROP TABLE IF EXISTS {}").format(q.Identifier(name)))
        await cur.execute(q.SQL("CREATE TEMP TABLE {} ({}, _tgsnap_ord bigint) ON COMMIT DROP").format(
            q.Identifier(name), q.SQL(", ").join(q.SQL("{} {}").format(q.Identifier(c), q.SQL(pt.columns[c]))
                                                 for c in cols)))
        async with cur.copy(q.SQL("COPY {} FROM STDIN").format(q.Identifier(name))) as copy:
            for i, r in enumerate(rows):
                await copy.write_row((*r, i))

    async def run(self, *, interval: float = 2.0, once: bool = False, stop: asyncio.Event | None = None,
                  report: Callable[[StepResult], None] | None = None, max_failures: int | None = None) -> StepResult:
        """Pass after pass, `interval` apart, until `stop` is set (or one pass if `once`). Outages of storage
        or PostgreSQL are retried with backoff (up to `max_failures` in a row, if given); a decision the
        operator must make (FollowError, a refused statement) ends the run with that error."""
        failures = 0
        last: StepResult | None = None
        while True:
            try:
                last = await self.step()
                failures = 0
                if report is not None:
                    report(last)
            except (pgm.PostgresUnreachable, pgm.CursorMoved, BackendError, ChainError, CorruptDocument,
                    RestoreError, OSError) as e:
                # Storage read beside a live writer can race a compaction (a listed delta deleted between
                # reading the manifest and the document): the next pass reads the new manifest.
                # (a document gone between listing and reading is a compaction's doing: read again)
                if isinstance(e, BackendError) and not e.retryable and not isinstance(e, DocumentNotFound):
                    raise
                failures += 1
                if max_failures is not None and failures >= max_failures:
                    raise
                wait = min(30.0, interval * 2 ** min(failures, 5)) * (0.5 + random.random() / 2)
                log.warning("follow pass failed (%s: %s); retrying in %.1f s", type(e).__name__, e, wait)
                if await _sleep(wait, stop):
                    break
                continue
            except ConfigError:
                raise
            if once or await _sleep(interval, stop):
                break
        assert last is not None or not once
        return last  # type: ignore[return-value]


async def _sleep(seconds: float, stop: asyncio.Event | None) -> bool:
    """Sleep; True if `stop` was set meanwhile."""
    if stop is None:
        await asyncio.sleep(seconds)
        return False
    try:
        await asyncio.wait_for(stop.wait(), seconds)
        return True
    except TimeoutError:
        return False
