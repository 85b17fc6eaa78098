"""The live store: an in-memory SQLite database whose every committed change is shipped to storage.

    store = await Store.open(backend, schema=["CREATE TABLE users (chat_id INTEGER PRIMARY KEY, ...)"])
    store.execute("UPDATE users SET clicks = clicks + 1 WHERE chat_id = ?", (chat_id,))
    await store.flush()        # that write is now durable
    await store.close()

Writes are ordinary SQL on one connection in autocommit mode. Triggers report the key of every changed
row (see `core.tracker`); the flush loop (see `core.flusher`) ships them. Reads take no lock. Schema
statements (CREATE / ALTER / DROP ...) are recorded for the next delta and tracking follows them at once
(`_schema_statement`); migrations run at open (`core.migrations`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from core.config import StoreConfig
from core.errors import StoreClosed, TransactionConflict
from core.flusher import Flusher
from core.migrations import Migration, check_order, describe_difference, newest, table_shape
from core.plans import READ
from core.schema import application_tables, declared_objects, quote
from core.stats import StoreStats
from core.tracker import Tracker
from core.transaction import Transaction
from snapshot.backend import Backend
from snapshot.errors import BackendError, ConfigError, FencedError, copy_error
from snapshot.replica import Progress, Replica, Restored, SnapshotReceipt

log = logging.getLogger("tgsnap.core")

#: what sqlite3 binds: a sequence for `?` placeholders, a mapping for named ones.
Params = Sequence[Any] | Mapping[str, Any]

#: `Tracker.plans.get` default: a SQL text not planned yet.
_UNKNOWN: Any = object()

#: pending keys of a table that `Store.execute` folds into its marks (see Tracker.fold).
_FOLD_AT = 1 << 16



def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # called from synchronous code with no running loop
        return None


class Store:
    """Use `await Store.open(...)`; the constructor is internal."""

    def __init__(self, replica: Replica, restored: Restored, config: StoreConfig):
        conn = restored.conn
        # Autocommit: every statement outside transaction() commits at once, so the flush loop always
        # finds a cut between statements. Plain Python values in and out.
        conn.isolation_level = None
        conn.row_factory = None
        conn.text_factory = str
        self._conn = conn
        self._replica = replica
        self._config = config
        self._restored_seq = restored.seq
        self._restored_at = restored.captured_at
        self._tracker = Tracker(conn)
        self._tx_lock = asyncio.Lock()
        self._tx_idle = asyncio.Event()
        self._tx_idle.set()
        self._tx: Transaction | None = None
        self._tx_task: asyncio.Task[Any] | None = None
        #: marks as they were before the open transaction's first schema statement (restored on rollback).
        self._tx_marks: dict[str, dict[Any, None]] | None = None
        #: why writes are refused (fenced, closing), or None while the store accepts writes.
        self._refusal: Exception | None = None
        #: True when execute() must take the slow path: a transaction is open or writes are refused.
        self._guard = False
        self._flusher = Flusher(conn, self._tracker, replica, config, self._tx_idle, on_fence=self._on_fence)
        self._close_task: asyncio.Task[None] | None = None
        self._abandoned = False

    # ---- opening ---------------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        backend: Backend,
        schema: Iterable[str] = (),
        config: StoreConfig | None = None,
        progress: Progress | None = None,
        migrations: Iterable[Migration] | None = None,
    ) -> Store:
        """Take the writer lease, restore the latest state, migrate, create missing declared objects, start
        flushing.

        `schema` holds CREATE TABLE (and CREATE INDEX / VIEW / TRIGGER) statements: the schema this code
        expects. Objects storage lacks are created; a declared table that storage holds in another form is
        refused (ConfigError) unless `migrations` (see `core.migrations`) bring it there. Every
        application table must have an explicit PRIMARY KEY whose columns cannot be NULL.
        """
        config = config or StoreConfig()
        replica = Replica(backend, config.replica, writer_id=config.writer_id)
        return await cls.open_replica(replica, schema=schema, config=config, progress=progress,
                                      migrations=migrations)

    @classmethod
    async def open_replica(
        cls,
        replica: Replica,
        schema: Iterable[str] = (),
        config: StoreConfig | None = None,
        progress: Progress | None = None,
        migrations: Iterable[Migration] | None = None,
    ) -> Store:
        """`open` with a replica built by the caller (tests, tools that wrap the backend)."""
        config = config or StoreConfig()
        statements = list(schema)
        steps = check_order(migrations) if migrations is not None else None
        declared_objects(statements)  # a bad schema fails here, before the lease is taken
        restored = await replica.acquire(progress)
        store = cls(replica, restored, config)
        try:
            store._prepare()
            store._flusher.start()
            await store._migrate(statements, steps)
            store._tracker.go_quiet()  # everything so far was marked by the triggers
        except BaseException:
            await store._flusher.abandon()
            await replica.release()
            raise
        log.info(
            "tgsnap: store open at seq %d with %d table(s), schema version %d, writer lease taken",
            restored.seq,
            len(store._tracker.tables),
            store.schema_version,
        )
        return store

    def _prepare(self) -> None:
        conn = self._conn
        if conn.in_transaction:
            conn.execute("COMMIT")
        conn.execute(f"PRAGMA foreign_keys = {'ON' if self._config.foreign_keys else 'OFF'}")
        for (trigger,) in conn.execute(
            "SELECT name FROM main.sqlite_schema WHERE type = 'trigger' AND name LIKE '\\_tgsnap\\_%' ESCAPE '\\'"
        ).fetchall():
            conn.execute(f"DROP TRIGGER main.{quote(trigger)}")  # tracking lives in TEMP, never in images
        self._tracker.sync()
        # What was restored is what storage holds: nothing is dirty yet, whatever marks the image carried.
        self._tracker.clear()
        self._tracker.set_baseline()
        self._tracker.quiet_enabled = True
        self._tracker.on_mode = self._refresh_fast
        self._flusher.changes_mark = conn.total_changes
        self._tell_replica_version()

    async def _migrate(self, statements: list[str], migrations: list[Migration] | None) -> None:
        conn = self._conn
        stored = self.schema_version
        fresh = not application_tables(conn)
        if migrations is not None:
            known = newest(migrations)
            if stored > known:
                raise ConfigError(
                    f"storage has schema version {stored}, newer than this code knows ({known}): it was "
                    f"written by a newer release of the application; run that release (or add its migrations)"
                )
            if not fresh:
                for m in migrations:
                    if m.version <= stored:
                        continue
                    log.info("tgsnap: migrating storage from schema version %d to %d", stored, m.version)
                    try:
                        async with self.transaction() as tx:
                            for step in m.steps:
                                if isinstance(step, str):
                                    tx.execute(step)
                                else:
                                    result = step(tx)
                                    if hasattr(result, "__await__"):
                                        await result
                            tx.execute(f"PRAGMA user_version = {m.version}")
                    except (sqlite3.Error, ConfigError) as exc:
                        raise ConfigError(f"migration {m.version} failed and was rolled back ({exc}); storage "
                                          f"stays at schema version {stored}") from exc
                    await self.flush()  # the migration is durable (one delta) before the next one runs
                    stored = m.version
                    self._tell_replica_version()
        # Declared objects: missing ones are created (recorded like any schema statement); a declared
        # table that exists in another form is refused, never silently kept.
        live = {(t, n.lower()) for t, n in conn.execute("SELECT type, name FROM sqlite_schema")}
        scratch = sqlite3.connect(":memory:")
        try:
            done: set[str] = set()
            for typ, name, ddl, _sql in declared_objects(statements):
                if ddl not in done:
                    scratch.execute(ddl)
                if (typ, name.lower()) not in live:
                    if ddl not in done:
                        self._schema_statement(conn.execute, ddl, ())
                elif typ == "table" and table_shape(conn, name) != table_shape(scratch, name):
                    raise ConfigError(describe_difference(conn, scratch, name) + (
                        "; add a migration that changes it (Store.open(..., migrations=[...]))"
                        if migrations is None or not fresh else ""))
                done.add(ddl)
        finally:
            scratch.close()
        if migrations is not None and fresh and newest(migrations) != self.schema_version:
            self.execute(f"PRAGMA user_version = {newest(migrations)}")
        # Declared objects created here ship with the first delta (they are re-created by every open
        # until then), so open does not wait for them.
        self._tell_replica_version()

    @property
    def schema_version(self) -> int:
        """`PRAGMA user_version`: the version of the newest migration applied to this storage."""
        return self._conn.execute("PRAGMA main.user_version").fetchone()[0]

    def _tell_replica_version(self) -> None:
        # The replica records it in the manifest (format 3); older replicas simply carry the attribute.
        self._replica.schema_version = self.schema_version

    # ---- SQL -------------------------------------------------------------------------------------

    def execute(self, sql: str, params: Params = ()) -> sqlite3.Cursor:
        """Run one statement (autocommit). Writes are tracked whatever their form; schema statements
        (CREATE / ALTER / DROP ...) are recorded for the next delta and tracking follows them.

        (While quiet, `_refresh_fast` shadows this with `_quiet_execute`'s closure, which does the same.)"""
        if self._guard:
            return self._guarded(self._conn.execute, sql, params)
        tracker = self._tracker
        if tracker.quiet:  # (only when called as Store.execute(store, ...): the closure is the quiet path)
            return self._execute_slow(sql, params)
        # With the triggers on, every statement is tracked by them: just run it (as before quiet mode
        # existed), and note whether it is one that keeps the triggers wanted (no plan).
        plan = tracker.plans.get(sql, _UNKNOWN)
        if plan is _UNKNOWN and sql not in tracker.reads:
            plan = tracker.plan(sql)  # learnt once per SQL text, for when the store goes quiet
        if plan is None:
            tracker.loud_needed = True
            if _SCHEMA_WORD(sql):
                return self._schema_statement(self._conn.execute, sql, params)
        cur = self._conn.execute(sql, params)
        flusher = self._flusher
        if flusher.dirty_since is None and self._conn.total_changes != flusher.changes_mark:
            flusher.dirty_since = time.time()
        return cur

    def _quiet_execute(self) -> Callable[..., sqlite3.Cursor]:
        """`execute` for quiet mode (core.plans): the triggers are off, and a proven statement's one
        changed row is marked here. A closure over everything it needs, because every attribute lookup
        counts: the budget for all of this is a tenth of the UPDATE itself."""
        get = self._tracker.plans.get
        run = self._conn.execute
        slow = self._execute_slow
        edge = self._first_or_full
        fold_at = _FOLD_AT

        def execute(sql: str, params: Any = ()) -> sqlite3.Cursor:
            plan = get(sql)
            if plan is not None:  # (`plans` holds writes only: READ goes to `reads`)
                try:
                    key = plan.key(params)  # the item sqlite3 binds, from any container it accepts
                except (LookupError, TypeError):
                    return slow(sql, params)  # not the parameters the plan reads: the slow path decides
                cur = run(sql, params)
                if cur.rowcount == 1:
                    pending: list[Any] = plan.pending  # type: ignore[assignment]
                    pending.append(key)  # its row changed; the append also counts the change
                    n = len(pending)
                    if n == 1 or n >= fold_at:
                        edge(pending)
                return cur
            return slow(sql, params)

        execute.__doc__ = Store.execute.__doc__
        return execute

    def _execute_slow(self, sql: str, params: Params) -> sqlite3.Cursor:
        if self._guard:
            return self._guarded(self._conn.execute, sql, params)
        tracker = self._tracker
        plan = tracker.plan(sql)
        if plan is READ:
            pass  # changes nothing (a function that writes would be counted: see Tracker.check_bypass)
        elif plan is None or not plan.takes(params):
            tracker.go_loud()  # no proof: the triggers must see this statement
        elif tracker.quiet and not tracker.check_bypass():
            return self.execute(sql, params)  # the quiet closure, which now finds the plan
        return self._run_tracked(self._conn.execute, sql, params, loud=False)

    def executemany(self, sql: str, seq_of_params: Iterable[Params]) -> sqlite3.Cursor:
        if self._guard:
            return self._guarded(self._conn.executemany, sql, seq_of_params)
        return self._run_tracked(self._conn.executemany, sql, seq_of_params)

    def _run_tracked(self, fn: Callable[[str, Any], sqlite3.Cursor], sql: str, params: Any,
                     loud: bool = True) -> sqlite3.Cursor:
        if loud:
            self._tracker.go_loud()
        try:
            cur = self._schema_statement(fn, sql, params) if _SCHEMA_WORD(sql) else fn(sql, params)
        except sqlite3.OperationalError as exc:
            if self._refusal is not None and "readonly" in str(exc):
                raise _fresh(self._refusal) from exc
            raise
        flusher = self._flusher
        if flusher.dirty_since is None and self._conn.total_changes != flusher.changes_mark:
            flusher.dirty_since = time.time()
        if self._tx is not None and not self._conn.in_transaction:
            self._tx.left_transaction = True
        return cur

    def _first_or_full(self, pending: list[Any]) -> None:
        """The first pending key since a fold (a write's time is due), or enough to fold (memory stays
        bounded by the live keys: the list would otherwise hold one entry per write until a capture)."""
        if self._flusher.dirty_since is None:
            self._flusher.dirty_since = time.time()
        if len(pending) >= _FOLD_AT:
            self._tracker.fold()

    def _refresh_fast(self) -> None:
        """Quiet and no guard up: `execute` takes the proven plans' path; otherwise the method."""
        if self._tracker.quiet and not self._guard:
            self.execute = self._quiet_execute()  # type: ignore[method-assign]
        else:
            self.__dict__.pop("execute", None)

    def _schema_statement(self, fn: Callable[[str, Any], sqlite3.Cursor], sql: str, params: Any) -> sqlite3.Cursor:
        """A statement that may change the schema: run it, follow it, record it; or refuse it unchanged.

        It runs inside a SAVEPOINT; if a table it leaves cannot be tracked (no PRIMARY KEY: `CREATE TABLE
        ... AS SELECT` makes such tables, a NULL-able key, a virtual table) it is rolled back and
        ConfigError says why, so nothing untracked is ever acknowledged.
        """
        found = _SCHEMA_WORD(sql)
        assert found is not None, "execute routes only schema statements here"
        word = found.group(1).upper()
        conn, tracker = self._conn, self._tracker
        tracker.plans.clear()  # a plan's proof rests on the schema (a TEMP trigger moves no main cookie)
        tracker.go_loud()
        if word == "ROLLBACK":
            try:
                return fn(sql, params)
            finally:
                tracker.schema_rolled_back()
                if self._tx_marks is not None and self._tx is None:  # a raw BEGIN ... ROLLBACK
                    tracker.restore_marks(self._tx_marks)
                    self._tx_marks = None
        if not (isinstance(params, (tuple, list, dict)) and not params):
            raise ConfigError("a schema statement cannot take parameters (its SQL is replayed as is): "
                              f"{sql.strip()[:120]!r}")
        # Inside a transaction, a rollback may bring back tables whose marks this statement drops: keep a
        # copy of the marks from before its first schema statement (extra marks after are harmless).
        if conn.in_transaction:
            if self._tx_marks is None:
                self._tx_marks = tracker.snapshot_marks()
        elif self._tx is None:
            self._tx_marks = None
        before = tracker.schema_version()
        if word == "VACUUM":  # cannot run inside a savepoint; changes no schema object
            cur = fn(sql, params)
            tracker.sync()
            tracker.expected_schema_version = tracker.schema_version()
            return cur
        conn.execute("SAVEPOINT tgsnap_schema")
        try:
            cur = fn(sql, params)
            after = tracker.schema_version()
            if after != before:
                tracker.sync()
        except BaseException:
            conn.execute("ROLLBACK TO tgsnap_schema")
            conn.execute("RELEASE tgsnap_schema")
            tracker.sync()  # the TEMP triggers made inside were rolled back too
            raise
        conn.execute("RELEASE tgsnap_schema")
        if after != before:
            tracker.record_schema(sql.strip(), after)
            if self._flusher.dirty_since is None:  # something to ship even if no row changed
                self._flusher.dirty_since = time.time()
        return cur

    def _guarded(self, fn: Callable[[str, Any], sqlite3.Cursor], sql: str, params: Any) -> sqlite3.Cursor:
        """The slow path: writes are refused, or a transaction is open."""
        if self._refusal is None and (self._tx_task is None or _current_task() is self._tx_task):
            return self._run_tracked(fn, sql, params)  # the transaction's own task may use store.execute
        conn = self._conn
        temporary = self._refusal is None
        # `query_only` makes SQLite itself reject any write, whatever the SQL looks like; reads go on.
        if temporary:
            conn.execute("PRAGMA query_only = ON")
        try:
            return fn(sql, params)
        except sqlite3.OperationalError as exc:
            if "readonly" not in str(exc):
                raise
            if self._refusal is not None:
                raise _fresh(self._refusal) from exc
            raise TransactionConflict(
                "a write through store.execute while another task holds store.transaction() open would "
                "join that transaction; run it inside the transaction (tx.execute) or after it"
            ) from exc
        finally:
            if temporary:
                conn.execute("PRAGMA query_only = OFF")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """`BEGIN IMMEDIATE` ... `COMMIT` (`ROLLBACK` on exception); may span awaits.

        Transactions of different tasks run one after another; no capture happens while one is open.
        """
        task = _current_task()
        if task is not None and task is self._tx_task:
            raise TransactionConflict("transaction() is not re-entrant; use SAVEPOINT through tx.execute")
        self._check_writable()
        async with self._tx_lock:
            self._check_writable()
            conn = self._conn
            if conn.in_transaction:
                raise TransactionConflict("a transaction begun with a raw BEGIN is still open")
            # The triggers go back first, outside the transaction: created inside it, a ROLLBACK (or
            # ROLLBACK TO) would take them away again while the tracker believed them there.
            self._tracker.go_loud()
            conn.execute("BEGIN IMMEDIATE")
            self._tracker.begin()
            tx = Transaction(self)
            self._tx, self._tx_task, self._guard = tx, task, True
            self._refresh_fast()
            self._tx_idle.clear()
            rolled_back = False
            try:
                yield tx
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                    rolled_back = True
                raise
            else:
                if conn.in_transaction:
                    try:
                        conn.execute("COMMIT")
                    except BaseException:
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                            rolled_back = True
                        raise
            finally:
                # Marks are dropped only when our own ROLLBACK undid everything since BEGIN; if the body
                # ended the transaction itself (COMMIT through tx.execute) they stay: extra marks are
                # harmless, missing ones are not.
                self._tracker.end(committed=not rolled_back or tx.left_transaction)
                saved, self._tx_marks = self._tx_marks, None
                if rolled_back:
                    self._tracker.schema_rolled_back()
                if saved is not None:
                    # Positions mean nothing across a schema change, and a ROLLBACK run by the body may
                    # have brought back a table whose marks a statement dropped: put them back.
                    self._tracker.restore_marks(saved)
                tx.open = False
                self._tx = self._tx_task = None
                self._guard = self._refusal is not None
                self._refresh_fast()
                self._tx_idle.set()

    def declare(self, ddl: str) -> None:
        """Create a table (or index, view, trigger) at runtime if missing; tables are checked and tracked,
        and the statement is recorded for the next delta like any schema statement."""
        self._check_writable()
        conn = self._conn
        if self._tx_task is not None or conn.in_transaction:
            raise TransactionConflict("declare() while a transaction is open")
        try:
            objects = declared_objects([ddl])
        except ConfigError:
            # It may refer to live tables (an index on one): check it next to their definitions.
            live = [
                sql
                for name, sql in conn.execute("SELECT name, sql FROM sqlite_schema WHERE type = 'table'")
                if name in self._tracker.tables
            ]
            objects = declared_objects([ddl], existing=tuple(live))
        exists = {(typ, name.lower()) for typ, name in conn.execute("SELECT type, name FROM sqlite_schema")}
        if all((typ, name.lower()) in exists for typ, name, _, _ in objects):
            return
        self._schema_statement(conn.execute, ddl, ())

    # ---- durability ------------------------------------------------------------------------------

    async def flush(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - agreed API
        """Return when every write committed before this call is durable in storage.

        Returns at once if nothing is pending. On `TimeoutError` nothing is lost: the rows stay dirty and
        ship with a later delta. Raises `FencedError` if a newer writer took over.
        """
        if self._tx_task is not None and _current_task() is self._tx_task:
            raise TransactionConflict("flush() inside transaction() would wait for its own commit")
        await self._flusher.flush(timeout)

    def write_ticket(self) -> int:
        """A number such that every write committed before this call is in a capture numbered <= it
        (0 if nothing is pending). Pass it to `wait_durable`."""
        return self._flusher.write_ticket()

    async def wait_durable(self, ticket: int, *, hurry: bool = False) -> None:
        """Return when a capture numbered >= `ticket` is durable (at once for 0 or an old ticket).

        Unlike `flush()` this forces nothing unless `hurry`: the flush loop ships at its own interval,
        so many waiters cost no extra deltas. Raises `FencedError` / `StoreClosed` as `flush()` does.
        Safe to cancel: the rows stay dirty and ship anyway.
        """
        await self._flusher.wait_durable(ticket, hurry)

    def hurry_wait(self) -> float | None:
        """The rate-budget cost of hurrying a flush now: None if the backend has no rate budget (a local
        directory: a hurried flush costs only I/O), else seconds until a budget slot is free (0: at
        once). A bot confirming updates asks this before hurrying, so it never spends Telegram's budget
        faster than the budget's own pace (see bot/polling.py)."""
        return self._flusher.hurry_wait()

    async def snapshot(self, timeout: float | None = None) -> SnapshotReceipt:  # noqa: ASYNC109 - agreed API
        """Write a full snapshot of the current state now; durable (and in the manifest) when it returns."""
        if self._tx_task is not None and _current_task() is self._tx_task:
            raise TransactionConflict("snapshot() inside transaction() would wait for its own commit")
        return await self._flusher.snapshot(timeout)

    async def close(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - agreed API
        """Refuse new writes, ship what is dirty, stop, and release the writer lease. Idempotent.

        With a timeout, rows still un-flushed when it runs out are lost (logged) and TimeoutError is
        raised after the store has stopped.
        """
        if self._tx_task is not None and _current_task() is self._tx_task:
            raise TransactionConflict("close() inside transaction()")
        if self._close_task is None:
            self._close_task = asyncio.get_running_loop().create_task(self._close(timeout))
            await asyncio.shield(self._close_task)
        else:
            await asyncio.wait([self._close_task])

    async def _close(self, within: float | None) -> None:
        loop = asyncio.get_running_loop()
        deadline = None if within is None else loop.time() + within

        def remaining() -> float | None:
            return None if deadline is None else max(0.0, deadline - loop.time())

        while self._tx_task is not None:  # let open transactions commit: their writes were accepted
            await self._tx_idle.wait()
        if self._refusal is None:
            self._refuse(StoreClosed("the store is closed; writes are refused (reads still work)"))
        error: TimeoutError | None = None
        if self._abandoned:
            return  # a crash already happened: nothing to ship, and the lease is not ours to release
        fenced: FencedError | None = None
        if self._flusher.fenced is None:
            try:
                await self._flusher.flush(remaining())
            except TimeoutError as exc:
                error = exc
                log.error("tgsnap: closing with %d row(s) not durable: %s", self._pending_rows(), exc)
            except FencedError as exc:
                fenced = exc
        elif self._pending_rows():
            fenced = self._flusher.fenced  # accepted before the fence was found, never shipped
        await self._flusher.stop(remaining())
        if self._flusher.fenced is None:
            try:
                await self._replica.release()
            except (BackendError, FencedError) as exc:
                log.warning("tgsnap: could not release the writer lease (%s); it will expire", exc)
        log.info("tgsnap: store closed")
        if fenced is not None:
            # Returning normally would say the accepted writes are durable: a newer writer's claim means
            # the un-shipped ones never will be.
            log.error("tgsnap: closed fenced with %d row(s) not durable: %s", self._pending_rows(), fenced)
            raise copy_error(fenced)
        if error is not None:
            raise error

    async def abandon(self) -> None:
        """Stop as a crash would: no final flush, no lease release. For tests and emergency stops."""
        self._abandoned = True
        if self._refusal is None:
            self._refuse(StoreClosed("the store was abandoned; writes are refused"))
        await self._flusher.abandon()

    # ---- observation -----------------------------------------------------------------------------

    def stats(self, *, rows: bool = True) -> StoreStats:
        """What the store holds and how far durability is behind. `rows=False` leaves `rows` empty:
        counting is a scan of every table (milliseconds per million rows, on the event loop), too much
        for a once-a-second health check."""
        conn = self._conn
        flusher = self._flusher
        status = self._replica.status()
        now = time.time()
        flusher.maybe_dirty()  # notes the time of writes made without store.execute
        oldest = flusher.oldest_unflushed()
        counted = {
            name: conn.execute(f"SELECT count(*) FROM {quote(name)}").fetchone()[0] for name in self._tracker.tables
        } if rows else {}
        return StoreStats(
            rows=counted,
            dirty_rows=self._tracker.dirty_count(),
            in_flight_rows=flusher.in_flight_rows,
            last_flush_at=flusher.last_flush_at or status.last_durable_at or self._restored_at,
            lag=max(0.0, now - oldest) if oldest is not None else 0.0,
            bytes_shipped=status.bytes_shipped,
            deltas_since_snapshot=status.deltas_since_snapshot,
            snapshot_age=None if status.snapshot_at is None else max(0.0, now - status.snapshot_at),
            snapshot_size=status.snapshot_size,
            last_seq=status.last_seq,
            epoch=status.epoch,
            backend=status.backend,
            fenced=flusher.fenced is not None,
            closed=self._abandoned or (self._close_task is not None and self._close_task.done()),
            snapshot_in_progress=flusher.snapshot_in_progress,
            last_error=flusher.last_error,
        )

    @property
    def tables(self) -> list[str]:
        """Names of the tracked application tables."""
        return list(self._tracker.tables)

    @property
    def fenced(self) -> bool:
        return self._flusher.fenced is not None

    # ---- internals -------------------------------------------------------------------------------

    def _pending_rows(self) -> int:
        return self._tracker.dirty_count() + self._flusher.in_flight_rows

    def _check_writable(self) -> None:
        if self._refusal is not None:
            raise _fresh(self._refusal)

    def _refuse(self, why: Exception) -> None:
        self._refusal = why
        self._guard = True
        self._refresh_fast()
        self._conn.execute("PRAGMA query_only = ON")

    def _on_fence(self, exc: FencedError) -> None:
        self._refuse(
            FencedError(
                f"this store was fenced: a newer writer took over storage ({exc}); writes are refused. "
                f"Stop this process or reopen the store."
            )
        )


#: the first word of a statement that may change the schema (after whitespace and comments).
_SCHEMA_RE = re.compile(
    r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?(?:\*/|$))*(CREATE|ALTER|DROP|ANALYZE|REINDEX|VACUUM|ROLLBACK)\b",
    re.IGNORECASE | re.DOTALL,
).match
#: first characters that can begin such a statement (or whitespace / a comment before it): INSERT,
#: UPDATE, SELECT, WITH never pay for the regular expression.
_MAYBE_SCHEMA = frozenset("CcAaDdRrVv-/")
_SPACE = frozenset(" \t\r\n\f\v")


def _SCHEMA_WORD(sql: str) -> re.Match[str] | None:  # noqa: N802 - reads like the constant it was
    first = sql[:1]
    if first in _SPACE:
        first = sql.lstrip()[:1]
    return _SCHEMA_RE(sql) if first in _MAYBE_SCHEMA else None


def _fresh(exc: Exception) -> Exception:
    """A copy to raise (one object raised in many places would collect everyone's tracebacks)."""
    return copy_error(exc)
