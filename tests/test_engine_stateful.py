"""The engine's proof: random writes, flushes under every injected fault, snapshots, compactions, crashes
and restores — and after every restore the database equals the model at the last capture that reached
storage, never older than the last acknowledged flush.

The model is a plain dict per table, {primary key: other values}. Each model change also bumps a version
stored in the database itself (table `meta`, written in the same synchronous step, so every consistent
cut carries the version of exactly the model state it captured). A thin wrapper around the replica's
`write_delta` notes, per upload, that version and whether a delta document reached storage (ack or not:
"stored but reported failed" counts). So the test knows exactly which state a restore must produce:

    restored version == the newest version whose delta reached storage      (restore equals state)
    restored version >= the version of the last acknowledged flush()        (nothing acknowledged lost)
    restored tables  == model history[restored version]

Profiles: the fast one runs by default (CI); the long one is
    TGSNAP_HYPOTHESIS_PROFILE=long .venv/bin/pytest tests/test_engine_stateful.py
"""

from __future__ import annotations

import asyncio
import copy
import math
import os
import sqlite3
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from core import Store, StoreConfig
from snapshot.backends.memory import Faults, MemoryBackend, MemoryStorage
from snapshot.errors import BackendError, FencedError, StorageBusy, TgsnapError
from snapshot.replica import Replica, ReplicaConfig
from tools.compact import compact

PROFILES = {
    "ci": settings(max_examples=60, stateful_step_count=40, deadline=None),
    "long": settings(max_examples=2000, stateful_step_count=80, deadline=None),
}
PROFILE = os.environ.get("TGSNAP_HYPOTHESIS_PROFILE", "ci")
WRITER = "engine-property"  # one writer id: a restart after a crash takes over its own lease at once


@dataclass(frozen=True)
class Table:
    name: str
    ddl: str
    keys: tuple[str, ...]
    values: tuple[str, ...]
    key: st.SearchStrategy

    @property
    def columns(self) -> tuple[str, ...]:
        return self.keys + self.values

    def __repr__(self) -> str:  # shown in falsifying examples
        return self.name


def _tuples(*parts: st.SearchStrategy) -> st.SearchStrategy:
    return st.tuples(*parts)


INTS = st.sampled_from([-(2**63), -1, 0, 1, 2, 2**63 - 1])
TEXTS = st.sampled_from(["", "a", "A", "\x00", "a\x00b", "😀", "ё"])
BLOBS = st.sampled_from([b"", b"\x00", b"\xff\x00", b"a"])
TABLES = [
    Table("t_int", "CREATE TABLE t_int (id INTEGER PRIMARY KEY, a, b)", ("id",), ("a", "b"), _tuples(INTS)),
    Table(
        "t_comp",
        "CREATE TABLE t_comp (k1 TEXT NOT NULL, k2 BLOB NOT NULL, a, PRIMARY KEY (k1, k2))",
        ("k1", "k2"),
        ("a",),
        _tuples(TEXTS, BLOBS),
    ),
    Table(
        "t_wr",
        "CREATE TABLE t_wr (k INTEGER NOT NULL, s TEXT NOT NULL, a, b, PRIMARY KEY (k, s)) WITHOUT ROWID",
        ("k", "s"),
        ("a", "b"),
        _tuples(st.sampled_from([-1, 0, 2**63 - 1]), st.sampled_from(["", "x", "\U0001f600"])),
    ),
]
BY_NAME = {t.name: t for t in TABLES}
META = "CREATE TABLE meta (id INTEGER PRIMARY KEY, version INTEGER NOT NULL)"
SCHEMA = [t.ddl for t in TABLES] + [META]

EDGE_VALUES = [0, -1, 2**63 - 1, -(2**63), -0.0, 0.0, math.inf, -math.inf, math.nan, 1.5]
EDGE_VALUES += ["", "\x00", "😀", b"", b"\x00"]
VALUE = st.one_of(
    st.none(),
    st.sampled_from(EDGE_VALUES),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),
    st.text(max_size=4),
    st.binary(max_size=4),
)

#: faults on delta uploads; each fires `n` times (the counter), then uploads succeed again.
DELTA_FAULTS = {
    "put fails": "put_fail",
    "put times out": "put_timeout",
    "put stored but reported failed": "put_lost_ack",
}
#: faults on manifest publication (snapshot switch, lease release).
MANIFEST_FAULTS = {
    "none": None,
    "manifest publish fails": "publish_fail",
    "manifest published but reported failed": "publish_lost_ack",
}


def stored(value):
    """What SQLite keeps for a value bound into an untyped column: NaN becomes NULL."""
    return None if isinstance(value, float) and math.isnan(value) else value


def canon(value):
    # Strict equality: 0 vs 0.0 vs -0.0 vs b"" vs "" all differ.
    if isinstance(value, float):
        return ("real", value, math.copysign(1.0, value))
    return (type(value).__name__, value)


def canon_table(rows: dict) -> set:
    return {(tuple(map(canon, k)), tuple(map(canon, v))) for k, v in rows.items()}


def clear(faults: Faults) -> None:
    faults.clear()
    faults.put_match = None
    faults.timeout_delay = 0.0


class Engine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.storage = MemoryStorage()
        self.faults = Faults()
        self.rconfig = ReplicaConfig(
            part_size=2048,  # several parts per snapshot, so a partial multi-part upload is possible
            shard_size=4096,
            snapshot_every_deltas=10,  # a snapshot image comes from the live database and would mask a
            # tracking bug until the next restore from deltas: not too often
            lease_seconds=30.0,
            parallelism=2,
        )
        self.model: dict[str, dict[tuple, tuple]] = {t.name: {} for t in TABLES}
        self.version = 0
        self.counter = 0  # versions ever issued (monotonic across crashes)
        self.history: dict[int, dict[str, dict[tuple, tuple]]] = {0: copy.deepcopy(self.model)}
        self.max_stored = 0  # newest version whose delta document reached storage
        self.acked = 0  # version of the last acknowledged flush()
        self.captured = 0  # version of the last capture of the current store
        self.store: Store | None = None
        self.run(self._open_and_check())

    # ---- plumbing -------------------------------------------------------------------------------------

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    async def _settle(self) -> None:
        """Let a background snapshot finish, so what storage holds does not depend on timing."""
        while self.store.stats().snapshot_in_progress:  # noqa: ASYNC110 - stats() is all a user has
            await asyncio.sleep(0.001)

    def teardown(self) -> None:
        # Cleanup only: a check here would raise a second, different error after a failing step, which
        # hypothesis reads as a flaky test. Crashes and restores are rules of their own.
        try:
            if self.store is not None:
                self.run(self.store.abandon())
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def _delta_docs(self) -> int:
        return sum(1 for name, _ in self.storage.docs.values() if name.startswith("delta-"))

    def _replica(self) -> Replica:
        # A little latency, so "acknowledged before stored" cannot pass by luck of scheduling.
        replica = Replica(MemoryBackend(self.storage, self.faults, latency=0.001), self.rconfig, writer_id=WRITER)
        write_delta = replica.write_delta
        machine = self

        async def recording(changes):
            meta = changes.tables.get("meta")
            if meta is not None:
                machine.captured = meta.upserts[0][1]
            version = machine.captured
            counter_before = machine.storage.counter
            try:
                receipt = await write_delta(changes)
            finally:
                new = [
                    name
                    for ref, (name, _) in machine.storage.docs.items()
                    if int(ref[1:]) > counter_before and name.startswith("delta-")
                ]
                if new:
                    machine.max_stored = max(machine.max_stored, version)
            machine.acked = max(machine.acked, version)
            return receipt

        replica.write_delta = recording  # type: ignore[method-assign]
        return replica

    async def _open(self) -> Store:
        # Captures happen when the test awaits flush/snapshot/close (and on retries), not on a timer:
        # that keeps examples reproducible, so hypothesis can shrink a failure. The timer is unit-tested.
        config = StoreConfig(flush_interval=3600.0, retry_min=0.01, retry_max=0.02, writer_id=WRITER)
        return await Store.open_replica(self._replica(), schema=SCHEMA, config=config)

    async def _open_and_check(self) -> None:
        self.store = await self._open()
        row = self.store.execute("SELECT version FROM meta WHERE id = 1").fetchone()
        version = row[0] if row else 0
        assert version == self.max_stored, f"restored version {version}, but version {self.max_stored} reached storage"
        assert version >= self.acked, f"acknowledged version {self.acked} lost (restored {version})"
        self.version = self.captured = version
        self.acked = version
        self.model = copy.deepcopy(self.history[version])
        self._check_live()

    def _check_live(self) -> None:
        for t in TABLES:
            live = {
                row[: len(t.keys)]: row[len(t.keys) :]
                for row in self.store.execute(f"SELECT {', '.join(t.columns)} FROM {t.name}")
            }
            assert canon_table(live) == canon_table(self.model[t.name]), f"table {t.name} differs from the model"

    def _bump(self, execute) -> None:
        """Record a model change: new version, in the database (same synchronous step) and the history."""
        self.counter += 1
        self.version = self.counter
        execute("INSERT OR REPLACE INTO meta VALUES (1, ?)", (self.version,))
        self.history[self.version] = copy.deepcopy(self.model)

    # ---- writes -----------------------------------------------------------------------------------------

    def _key(self, table: Table, data) -> tuple:
        """A key, most often one that exists, so updates, deletes and key changes hit rows."""
        existing = list(self.model[table.name])
        if existing:
            return data.draw(st.one_of(st.sampled_from(existing), table.key))
        return data.draw(table.key)

    @rule(
        table=st.sampled_from(TABLES),
        data=st.data(),
        mode=st.sampled_from(["insert", "replace", "upsert"]),
    )
    def insert(self, table: Table, data, mode: str) -> None:
        key = self._key(table, data)
        values = tuple(data.draw(VALUE) for _ in table.values)
        cols = ", ".join(table.columns)
        marks = ", ".join("?" * len(table.columns))
        rows = self.model[table.name]
        kept = tuple(map(stored, values))
        if mode == "insert":
            try:
                self.store.execute(f"INSERT INTO {table.name} ({cols}) VALUES ({marks})", key + values)
            except sqlite3.IntegrityError:
                assert key in rows
                return
            assert key not in rows
            rows[key] = kept
        elif mode == "replace":
            self.store.execute(f"INSERT OR REPLACE INTO {table.name} ({cols}) VALUES ({marks})", key + values)
            rows[key] = kept
        else:
            first = table.values[0]
            self.store.execute(
                f"INSERT INTO {table.name} ({cols}) VALUES ({marks}) "
                f"ON CONFLICT ({', '.join(table.keys)}) DO UPDATE SET {first} = excluded.{first}",
                key + values,
            )
            rows[key] = (kept[0],) + rows[key][1:] if key in rows else kept
        self._bump(self.store.execute)

    @rule(table=st.sampled_from(TABLES), data=st.data())
    def update(self, table: Table, data) -> None:
        key = self._key(table, data)
        values = tuple(data.draw(VALUE) for _ in table.values)
        sets = ", ".join(f"{c} = ?" for c in table.values)
        where = " AND ".join(f"{c} = ?" for c in table.keys)
        self.store.execute(f"UPDATE {table.name} SET {sets} WHERE {where}", values + key)
        if key in self.model[table.name]:
            self.model[table.name][key] = tuple(map(stored, values))
            self._bump(self.store.execute)

    @rule(table=st.sampled_from(TABLES), data=st.data(), replace=st.booleans())
    def change_key(self, table: Table, data, replace: bool) -> None:
        old, new = self._key(table, data), data.draw(table.key)  # usually moves a row to a free key
        rows = self.model[table.name]
        sets = ", ".join(f"{c} = ?" for c in table.keys)
        where = " AND ".join(f"{c} = ?" for c in table.keys)
        verb = "UPDATE OR REPLACE" if replace else "UPDATE"
        try:
            self.store.execute(f"{verb} {table.name} SET {sets} WHERE {where}", new + old)
        except sqlite3.IntegrityError:
            assert not replace and old in rows and new in rows and new != old
            return
        if old in rows and new != old:
            rows[new] = rows.pop(old)
            self._bump(self.store.execute)

    @rule(table=st.sampled_from(TABLES), data=st.data())
    def delete(self, table: Table, data) -> None:
        key = self._key(table, data)
        where = " AND ".join(f"{c} = ?" for c in table.keys)
        self.store.execute(f"DELETE FROM {table.name} WHERE {where}", key)
        if self.model[table.name].pop(key, None) is not None:
            self._bump(self.store.execute)

    @precondition(lambda self: any(self.model.values()))
    @rule(table=st.sampled_from(TABLES))
    def delete_all(self, table: Table) -> None:
        self.store.execute(f"DELETE FROM {table.name}")
        if self.model[table.name]:
            self.model[table.name].clear()
            self._bump(self.store.execute)

    @rule(
        table=st.sampled_from(TABLES),
        data=st.data(),
        count=st.integers(1, 4),
        commit=st.booleans(),
    )
    def transaction(self, table: Table, data, count: int, commit: bool) -> None:
        """Several statements across awaits (the flush loop runs meanwhile), committed or rolled back."""
        steps = [
            (
                data.draw(st.sampled_from(["replace", "delete"])),
                self._key(table, data),
                tuple(data.draw(VALUE) for _ in table.values),
            )
            for _ in range(count)
        ]
        cols = ", ".join(table.columns)
        marks = ", ".join("?" * len(table.columns))
        where = " AND ".join(f"{c} = ?" for c in table.keys)
        after = copy.deepcopy(self.model)

        async def body():
            async with self.store.transaction() as tx:
                for kind, key, values in steps:
                    if kind == "replace":
                        tx.execute(f"INSERT OR REPLACE INTO {table.name} ({cols}) VALUES ({marks})", key + values)
                        after[table.name][key] = tuple(map(stored, values))
                    else:
                        tx.execute(f"DELETE FROM {table.name} WHERE {where}", key)
                        after[table.name].pop(key, None)
                    await asyncio.sleep(0.005)
                if not commit:
                    raise _Rollback
                self.model, previous = after, self.model
                try:
                    self._bump(tx.execute)
                except BaseException:
                    self.model = previous
                    raise

        try:
            self.run(body())
        except _Rollback:
            pass

    # ---- durability -------------------------------------------------------------------------------------

    @rule()
    def flush(self) -> None:
        version = self.version
        self.run(self.store.flush(timeout=30))
        assert self.acked >= version and self.max_stored >= version
        self.run(self._settle())

    @rule(fault=st.sampled_from(sorted(DELTA_FAULTS)), n=st.integers(1, 3), crash=st.booleans())
    def flush_under_fault(self, fault: str, n: int, crash: bool) -> None:
        """Delta uploads fail in one way: either n times, then the retries go through (backpressure), or
        until the process crashes after at least n failed attempts."""
        self.faults.put_match = "delta-"
        self.faults.timeout_delay = 0.002
        # When crashing, the fault stays on: how many retries fit before the crash depends on timing, but
        # then every one of them fails the same way, so what storage holds does not.
        setattr(self.faults, DELTA_FAULTS[fault], 10**6 if crash else n)
        logged = len(self.faults.log)
        version = self.version
        flushing = self.loop.create_task(self.store.flush(timeout=30))

        async def failures_seen() -> None:
            while len(self.faults.log) - logged < n and not flushing.done():  # noqa: ASYNC110
                await asyncio.sleep(0.001)

        if crash:
            self.run(failures_seen())
            self.run(self.store.abandon())
            self.run(asyncio.gather(flushing, return_exceptions=True))
            clear(self.faults)
            self.run(self._open_and_check())
        else:
            self.run(flushing)
            clear(self.faults)
            assert self.acked >= version
            self.run(self._settle())

    @rule(partial=st.booleans(), manifest=st.sampled_from(sorted(MANIFEST_FAULTS)))
    def snapshot(self, partial: bool, manifest: str) -> None:
        """An on-demand snapshot; maybe its second part fails to upload, maybe the manifest switch fails
        (or takes effect but reports failure). Either way the state in storage must not change."""
        if partial:
            self.faults.put_match = "snapshot-"
            self.faults.put_fail_at = {self.faults.puts_seen + 2}
        if MANIFEST_FAULTS[manifest] is not None:
            setattr(self.faults, MANIFEST_FAULTS[manifest], 1)
        try:
            self.run(self.store.snapshot(timeout=30))
        except BackendError:
            assert partial or MANIFEST_FAULTS[manifest] is not None
        finally:
            clear(self.faults)
        self.run(self._settle())

    @rule()
    def crash_during_snapshot(self) -> None:
        """A crash while snapshot parts are uploading: the previous snapshot and its deltas stay usable."""
        self.faults.put_match = "snapshot-"
        self.faults.put_timeout, self.faults.timeout_delay = 1, 60.0  # the first part hangs
        seen = self.faults.puts_seen
        task = self.loop.create_task(self.store.snapshot(timeout=30))

        async def uploading() -> None:
            while self.faults.puts_seen == seen and not task.done():  # noqa: ASYNC110
                await asyncio.sleep(0.001)

        self.run(uploading())
        self.run(self.store.abandon())
        self.run(asyncio.gather(task, return_exceptions=True))
        clear(self.faults)
        self.run(self._open_and_check())

    # tools.compact cannot serialize a restored database with no pages (storage holding no data yet)
    @precondition(lambda self: self.max_stored > 0)
    @rule()
    def compaction(self) -> None:
        """Stop the writer cleanly, fold the chain with tools.compact, start again."""
        self.run(self.store.close())
        self.run(compact(MemoryBackend(self.storage, self.faults), config=self.rconfig))
        self.run(self._open_and_check())

    @rule()
    def crash(self) -> None:
        """All process state dropped: no final flush, no lease release; a new process restores."""
        self.run(self.store.abandon())
        self.run(self._open_and_check())

    @rule(manifest=st.sampled_from(sorted(MANIFEST_FAULTS)))
    def restart(self, manifest: str) -> None:
        """A clean stop (maybe the lease release fails to publish) and a start."""
        if MANIFEST_FAULTS[manifest] is not None:
            setattr(self.faults, MANIFEST_FAULTS[manifest], 1)
        self.run(self.store.close())
        clear(self.faults)
        assert self.max_stored == self.version  # close() flushed everything
        self.run(self._open_and_check())

    @precondition(lambda self: len(self.storage.docs) > 0)
    @rule(which=st.sampled_from(["newest delta", "oldest delta", "first snapshot part", "last snapshot part"]))
    def corrupt_read(self, which: str) -> None:
        """Storage returns a flipped byte for one document: restore names it, or never needed it."""
        self.run(self.store.abandon())
        kind = "delta-" if "delta" in which else "snapshot-"
        refs = [ref for ref, (name, _) in self.storage.docs.items() if name.startswith(kind)]
        if not refs:
            refs = list(self.storage.docs)
        ref = refs[-1] if which.startswith(("newest", "last")) else refs[0]
        self.faults.corrupt_refs = {ref}
        try:
            self.run(self._open_and_check())
        except TgsnapError as exc:
            assert ref in str(exc), f"restore failed without naming the corrupt document {ref}: {exc}"
        else:
            self.run(self.store.abandon())  # the document was not needed; restore was exact anyway
        clear(self.faults)
        self.run(self._open_and_check())

    @invariant()
    def live_database_equals_the_model(self) -> None:
        self._check_live()


class _Rollback(Exception):
    pass


Engine.TestCase.settings = settings(
    PROFILES[PROFILE],
    report_multiple_bugs=False,  # shrink the first failure quickly; the rest usually follow from it
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestEngine = Engine.TestCase
# the long profile runs for tens of minutes: lift pytest-timeout's default for it
TestEngine.pytestmark = [pytest.mark.timeout(0 if PROFILE == "long" else 300)]


async def test_corrupt_retry_of_a_lost_ack_delta_is_named_not_skipped():
    """Seq 2 is stored twice: an attempt whose acknowledgement was lost, then the acknowledged retry with
    newer rows. If the retry rots at rest, restore must fail naming it, not quietly apply the first."""
    storage, faults = MemoryStorage(), Faults()
    config = StoreConfig(flush_interval=3600.0, retry_min=0.01, writer_id=WRITER)
    store = await Store.open(
        MemoryBackend(storage, faults), schema=["CREATE TABLE t (id INTEGER PRIMARY KEY, v)"], config=config
    )
    store.execute("INSERT INTO t VALUES (1, 'first')")
    await store.flush()
    store.execute("UPDATE t SET v = 'attempt' WHERE id = 1")
    faults.put_match, faults.put_lost_ack = "delta-", 1
    flushing = asyncio.create_task(store.flush())
    while not faults.log:  # noqa: ASYNC110
        await asyncio.sleep(0.001)
    store.execute("UPDATE t SET v = 'acknowledged' WHERE id = 1")
    await flushing
    await store.abandon()
    retry = [ref for ref, (name, _) in storage.docs.items() if name == "delta-000000000002"][-1]
    name, data = storage.docs[retry]
    storage.docs[retry] = (name, data[:-3] + bytes([data[-3] ^ 0xFF]) + data[-2:])  # rot in the payload
    with pytest.raises(TgsnapError, match=retry):
        again = await Store.open(MemoryBackend(storage, faults), schema=[], config=config)
        await again.abandon()


# ---- schema changes between writes, crashes and snapshots --------------------------------------------
#
# A subclass, so the base machine stays as it is: its rules run here too, interleaved with DDL on tables
# of its own (`x1`..`x3`, so the base model's tables keep their columns), indexes and views on any table,
# triggers, `PRAGMA user_version`, and TEXT that is not valid UTF-8. Every successful change bumps the
# version in the same synchronous step, and the version's whole schema and the x tables' contents (as
# hex and typeof, so non-UTF-8 text compares byte for byte) are recorded; after every restore the
# database must equal that record: `sqlite_schema`, `PRAGMA user_version` and rows.

X_NAMES = ["x1", "x2", "x3"]
X_VALUES = st.one_of(
    st.sampled_from(["NULL", "0", "-1", "1.5", "'a'", "'ё'", "X'00ff'", "CAST(X'C3' AS TEXT)",
                     "printf('%.3s', 'Аня')", "CAST(X'E282' AS TEXT)"]),
    st.integers(-(2**63), 2**63 - 1).map(str),
)


class EngineWithSchema(Engine):
    def __init__(self) -> None:
        self.schema_history: dict[int, tuple] = {}
        super().__init__()
        self.schema_history[0] = self._schema_state()

    def _schema_state(self) -> tuple:
        ex = self.store.execute
        objects = sorted(ex("SELECT type, name, tbl_name, sql FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'"))
        rows = {}
        for (name,) in ex("SELECT name FROM sqlite_schema WHERE type = 'table' AND name LIKE 'x%'").fetchall():
            cols = [c for (c,) in ex(f"SELECT name FROM pragma_table_info('{name}')")]
            exprs = ", ".join(f'hex("{c}"), typeof("{c}")' for c in cols)
            rows[name] = sorted(ex(f'SELECT {exprs} FROM "{name}"').fetchall())
        return objects, rows, ex("PRAGMA user_version").fetchone()[0]

    def _bump(self, execute) -> None:
        super()._bump(execute)
        if self.store is not None:
            self.schema_history[self.version] = self._schema_state()

    async def _open_and_check(self) -> None:
        await super()._open_and_check()
        if self.schema_history:  # (not yet during __init__)
            assert self._schema_state() == self.schema_history[self.version], "schema/x rows differ after restore"

    def _tables(self, prefix: str = "x") -> list[str]:
        return [n for (n,) in self.store.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name LIKE ? ORDER BY name", (prefix + "%",))]

    def _columns(self, table: str) -> list[str]:
        return [c for (c, pk) in self.store.execute(f"SELECT name, pk FROM pragma_table_info('{table}')") if not pk]

    def _key_column(self, table: str) -> str:
        return self.store.execute(f"SELECT name FROM pragma_table_info('{table}') WHERE pk = 1").fetchone()[0]

    def _ddl(self, sql: str) -> bool:
        """Run one schema statement; a refused or failing one must leave the schema as it was."""
        before = self._schema_state()
        try:
            self.store.execute(sql)
        except (sqlite3.Error, TgsnapError):
            assert self._schema_state() == before, f"a failed {sql!r} changed the schema"
            return False
        self._bump(self.store.execute)
        return True

    @rule(name=st.sampled_from(X_NAMES), rowid=st.booleans())
    def create_table(self, name: str, rowid: bool) -> None:
        tail = "" if rowid else " WITHOUT ROWID"
        key = "id INTEGER PRIMARY KEY" if rowid else "id INTEGER NOT NULL PRIMARY KEY"
        self._ddl(f"CREATE TABLE IF NOT EXISTS {name} ({key}, c0 DEFAULT 'd', c1){tail}")

    @precondition(lambda self: self._tables())
    @rule(data=st.data(), rowid=st.integers(0, 5), n=st.integers(1, 3))
    def x_write(self, data, rowid: int, n: int) -> None:
        table = data.draw(st.sampled_from(self._tables()))
        cols = [self._key_column(table), *self._columns(table)]
        values = ", ".join([str(rowid)] + [data.draw(X_VALUES) for _ in cols[1:]])
        self.store.execute(f'INSERT OR REPLACE INTO "{table}" ({", ".join(cols)}) VALUES ({values})')
        self._bump(self.store.execute)

    @precondition(lambda self: self._tables())
    @rule(data=st.data(), default=st.sampled_from(["", " DEFAULT 7", " DEFAULT 'z'", " NOT NULL DEFAULT 0",
                                                   " GENERATED ALWAYS AS (id * 2) VIRTUAL"]))
    def add_column(self, data, default: str) -> None:
        table = data.draw(st.sampled_from(self._tables()))
        self._ddl(f'ALTER TABLE "{table}" ADD COLUMN c{data.draw(st.integers(2, 6))}{default}')

    @precondition(lambda self: self._tables())
    @rule(data=st.data())
    def drop_column(self, data) -> None:
        table = data.draw(st.sampled_from(self._tables()))
        cols = self._columns(table)
        if cols:
            self._ddl(f'ALTER TABLE "{table}" DROP COLUMN "{data.draw(st.sampled_from(cols))}"')

    @precondition(lambda self: self._tables())
    @rule(data=st.data())
    def rename_column(self, data) -> None:
        table = data.draw(st.sampled_from(self._tables()))
        old = data.draw(st.sampled_from(self._columns(table) + [self._key_column(table)]))
        self._ddl(f'ALTER TABLE "{table}" RENAME COLUMN "{old}" TO "r{data.draw(st.integers(0, 3))}"')

    @precondition(lambda self: self._tables())
    @rule(data=st.data(), new=st.sampled_from(X_NAMES))
    def rename_table(self, data, new: str) -> None:
        self._ddl(f'ALTER TABLE "{data.draw(st.sampled_from(self._tables()))}" RENAME TO "{new}"')

    @precondition(lambda self: self._tables())
    @rule(data=st.data())
    def drop_table(self, data) -> None:
        self._ddl(f'DROP TABLE "{data.draw(st.sampled_from(self._tables()))}"')

    @rule(data=st.data(), kind=st.sampled_from(["index", "view", "trigger"]), drop=st.booleans())
    def schema_object(self, data, kind: str, drop: bool) -> None:
        tables = self._tables() + [t.name for t in TABLES]
        table = data.draw(st.sampled_from(tables))
        name = f"{kind[0]}_{table}"
        if drop:
            self._ddl(f'DROP {kind.upper()} IF EXISTS "{name}"')
        elif kind == "index":
            column = data.draw(st.sampled_from(self._columns(table) + [self._key_column(table)]))
            self._ddl(f'CREATE INDEX IF NOT EXISTS "{name}" ON "{table}" ("{column}")')
        elif kind == "view":
            self._ddl(f'CREATE VIEW IF NOT EXISTS "{name}" AS SELECT count(*) AS n FROM "{table}"')
        elif table.startswith("x"):
            # a trigger that writes: replay must not run it (apply drops and recreates application triggers)
            self._ddl(f'CREATE TRIGGER IF NOT EXISTS "{name}" AFTER INSERT ON "{table}" '
                      f'BEGIN UPDATE "{table}" SET rowid = rowid WHERE 0; END')

    @rule(value=st.integers(-3, 3))
    def user_version(self, value: int) -> None:
        self.store.execute(f"PRAGMA user_version = {value}")
        self._bump(self.store.execute)

    @rule(name=st.sampled_from(X_NAMES), commit=st.booleans())
    def schema_transaction(self, name: str, commit: bool) -> None:
        """DDL and writes in one transaction across awaits; a rollback takes the DDL with it."""

        async def body():
            async with self.store.transaction() as tx:
                tx.execute(f'CREATE TABLE IF NOT EXISTS "{name}" (id INTEGER PRIMARY KEY, c0, c1)')
                tx.execute(f'INSERT OR REPLACE INTO "{name}" (id, c0) VALUES (9, CAST(X\'C3\' AS TEXT))')
                await asyncio.sleep(0.005)
                tx.execute(f'ALTER TABLE "{name}" ADD COLUMN t{self.counter}')
                if not commit:
                    raise _Rollback
                self._bump(tx.execute)

        before = self._schema_state()
        try:
            self.run(body())
        except _Rollback:
            assert self._schema_state() == before
        except sqlite3.Error:
            assert self._schema_state() == before


EngineWithSchema.TestCase.settings = settings(
    PROFILES[PROFILE], report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestEngineWithSchema = EngineWithSchema.TestCase
TestEngineWithSchema.pytestmark = [pytest.mark.timeout(0 if PROFILE == "long" else 300)]


# ==== Several writers on one storage (issue 8's proof) ================================================
#
# A second machine, kept apart from the one above: writer incarnations claim one MemoryStorage in turn
# while earlier ones still run. A newcomer claims under the same writer id (as a restarted bot does
# after a crash), so it never waits for a lease: the old incarnation may be live, frozen inside an
# upload (a MemoryBackend gate), or resumed after the claim. Answers get lost after the storage acted,
# a copy of the storage is continued elsewhere and its deltas are copied back.
#
# Every database state has a version (table meta, written in the same synchronous step as the change)
# and a parent (the state it was made from: the previous version in that database, or the version it
# restored). Invariants, checked at every claim and by a fresh restore of the storage:
#
#     restored tables == history[restored version]                              (restore equals a state)
#     every version ever acknowledged (flush returned) is an ancestor-or-self of the restored one
#                                                                   (every acknowledged write survives)
#     the restored version belongs to the newest successful claim, or is the one it restored
#                                         (a cut of the winning claim's chain, never a fenced writer's)
# and at each acknowledgement: a flush whose delta was stored (or held before storing) while a later
# claim was made never returns; it raises FencedError.        (no acknowledgement after another's claim)

KV = "CREATE TABLE kv (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)"
MULTI_SCHEMA = [KV, META]
KEYS = st.integers(0, 5)
WHO = st.integers(0, 2)  # which of the (up to three) incarnations a rule acts on


def pick(items: list, who: int):
    return items[who % len(items)]


@dataclass
class Incarnation:
    name: str
    claim_no: int  # order of successful claims on the main storage (0: a fork's)
    store: Store
    faults: Faults
    base: int  # the version it restored
    last: int  # the version its database is at
    model: dict
    fenced: bool = False
    pending: tuple | None = None  # (flush task, gate, version at call, claims made before the freeze)

    def __repr__(self) -> str:  # shown in falsifying examples
        return self.name


class Writers(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.storage = MemoryStorage()
        self.rconfig = ReplicaConfig(part_size=2048, shard_size=4096, snapshot_every_deltas=6,
                                     lease_seconds=600.0, parallelism=2)
        self.counter = 0
        self.history: dict[int, dict] = {0: {}}
        self.parent: dict[int, int | None] = {0: None}
        self.owner: dict[int, str | None] = {0: None}
        self.acked: set[int] = set()
        self.claims = 0
        self.live: list[Incarnation] = []
        self.winner: Incarnation | None = None
        self.names = 0
        self.forks = 0
        self.discover = True

    @initialize(discover=st.booleans())
    def first_claim(self, discover: bool) -> None:
        """Storage that can list documents (directory, MTProto) or cannot (Bot API: deltas ride inside
        the manifest slot, so the slot update's check is what acknowledges them)."""
        self.discover = discover
        self.run(self._claim())

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            for inc in self.live:
                inc.faults.clear()
                self.run(inc.store.abandon())
                if inc.pending:
                    self.run(asyncio.gather(inc.pending[0], return_exceptions=True))
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    # ---- plumbing ---------------------------------------------------------------------------------

    def _ancestors(self, v: int) -> set[int]:
        out = set()
        while v is not None:
            out.add(v)
            v = self.parent[v]
        return out

    def _state(self, conn) -> tuple[int, dict]:
        if conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'meta'").fetchone()[0] == 0:
            return 0, {}  # nothing reached storage yet: not even the schema
        row = conn.execute("SELECT version FROM meta WHERE id = 1").fetchone()
        has_kv = conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'kv'").fetchone()[0]
        return (row[0] if row else 0), dict(conn.execute("SELECT k, v FROM kv")) if has_kv else {}

    def _check_restored(self, version: int, rows: dict, winner: Incarnation | None, what: str) -> None:
        assert version in self.history, f"{what}: restored version {version} was never a state"
        assert rows == self.history[version], f"{what}: restored tables differ from state {version}"
        lost = self.acked - self._ancestors(version)
        assert not lost, f"{what}: acknowledged versions {sorted(lost)} lost (restored {version})"
        if winner is not None:
            assert self.owner[version] == winner.name or version == winner.base, (
                f"{what}: restored version {version} of {self.owner[version]}, not of the winning claim "
                f"{winner.name} (base {winner.base})")

    async def _open(self, storage: MemoryStorage, faults: Faults) -> Store:
        config = StoreConfig(flush_interval=3600.0, retry_min=0.01, retry_max=0.02, writer_id=WRITER)
        replica = Replica(MemoryBackend(storage, faults, latency=0.001, can_discover=self.discover), self.rconfig,
                          writer_id=WRITER)
        return await Store.open_replica(replica, schema=MULTI_SCHEMA, config=config)

    async def _claim(self, faults: Faults | None = None) -> Incarnation | None:
        faults = faults or Faults()
        try:
            store = await self._open(self.storage, faults)
        except BackendError:
            return None  # the claim's answer was lost: it may or may not be in storage; nobody serves on it
        return self._opened(store, faults)

    def _opened(self, store: Store, faults: Faults) -> Incarnation:
        faults.clear()
        version, rows = self._state(store._conn)
        self.claims += 1
        self.names += 1
        inc = Incarnation(f"w{self.names}", self.claims, store, Faults(), version, version, rows)
        inc.faults = faults
        self._check_restored(version, rows, None, f"claim {inc.name}")
        self.live.append(inc)
        self.winner = inc
        return inc

    def _superseded(self, inc: Incarnation, since: int | None = None) -> bool:
        """A later successful claim exists (made after `since` claims, if given)."""
        return self.claims > (inc.claim_no if since is None else max(since, inc.claim_no))

    def _flushed(self, inc: Incarnation, version: int, outcome, claims_before: int) -> None:
        if isinstance(outcome, FencedError):
            assert self._superseded(inc), f"{inc.name} fenced without a later claim: {outcome}"
            inc.fenced = True
            return
        if isinstance(outcome, BaseException):
            raise outcome
        assert not self._superseded(inc, claims_before), (
            f"{inc.name} acknowledged version {version} after a later claim")
        self.acked.add(version)

    def _drop(self, inc: Incarnation) -> None:
        inc.faults.clear()
        self.run(inc.store.abandon())
        if inc.pending:
            self.run(asyncio.gather(inc.pending[0], return_exceptions=True))
            inc.pending = None
        self.live.remove(inc)

    # ---- rules ------------------------------------------------------------------------------------

    @precondition(lambda self: self.live)
    @rule(who=WHO, k=KEYS, delete=st.booleans())
    def write(self, who: int, k: int, delete: bool) -> None:
        inc = pick(self.live, who)
        self.counter += 1
        v = self.counter
        try:
            if delete:
                inc.store.execute("DELETE FROM kv WHERE k = ?", (k,))
            else:
                inc.store.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (k, v))
            inc.store.execute("INSERT OR REPLACE INTO meta VALUES (1, ?)", (v,))
        except TgsnapError:
            assert inc.fenced or inc.store.fenced
            inc.fenced = True
            return
        if delete:
            inc.model.pop(k, None)
        else:
            inc.model[k] = v
        self.history[v], self.parent[v], self.owner[v] = dict(inc.model), inc.last, inc.name
        inc.last = v

    @precondition(lambda self: any(not i.pending for i in self.live))
    @rule(who=WHO, lose=st.sampled_from([None, "put", "replace_slot"]))
    def flush(self, who: int, lose: str | None) -> None:
        """A flush; maybe the storage acts on the delta (or a manifest update) but its answer is lost."""
        inc = pick([i for i in self.live if not i.pending], who)
        if lose:
            inc.faults.lose[lose] = 1
        version, claims = inc.last, self.claims
        try:
            self.run(inc.store.flush(timeout=30))
            outcome = None
        except TgsnapError as exc:
            outcome = exc
        inc.faults.lose = {}
        self._flushed(inc, version, outcome, claims)

    @precondition(lambda self: any(not i.pending and not i.fenced for i in self.live))
    @rule(who=WHO, when=st.sampled_from(["before", "after"]))
    def freeze_in_upload(self, who: int, when: str) -> None:
        """A flush frozen inside its delta upload, before or after the storage acted on it."""
        inc = pick([i for i in self.live if not i.pending and not i.fenced], who)
        # where the delta leaves: its own document, or (storage that cannot list) the slot update carrying it
        gate = inc.faults.gate("put", when, match="delta-") if self.discover else inc.faults.gate("replace_slot", when)
        task = self.loop.create_task(inc.store.flush(timeout=60))

        async def frozen() -> None:
            while not gate.reached.is_set() and not task.done():  # noqa: ASYNC110
                await asyncio.sleep(0.001)

        self.run(frozen())
        if task.done():  # nothing was dirty: no upload to freeze
            inc.faults.gates.clear()
            self._flushed(inc, inc.last, task.exception(), self.claims)
            return
        inc.pending = (task, gate, inc.last, self.claims)

    @precondition(lambda self: any(i.pending for i in self.live))
    @rule(who=WHO)
    def resume(self, who: int) -> None:
        inc = pick([i for i in self.live if i.pending], who)
        task, gate, version, claims = inc.pending
        inc.pending = None
        gate.open()
        outcome = self.run(asyncio.gather(task, return_exceptions=True))[0]
        self._flushed(inc, version, outcome if isinstance(outcome, BaseException) else None, claims)

    @precondition(lambda self: len(self.live) < 3)
    @rule(lose=st.booleans())
    def claim(self, lose: bool) -> None:
        """A newcomer claims the storage while the others run (or are frozen); maybe the answer to its
        claim slot's creation is lost after the storage acted."""
        faults = Faults()
        if lose:
            faults.lose["create_slot"] = 1
        self.run(self._claim(faults))

    @precondition(lambda self: len(self.live) < 2)
    @rule()
    def simultaneous_claims(self) -> None:
        """Two newcomers claim at the same moment: exactly one serves, the other is refused."""
        async def both():
            return await asyncio.gather(self._open(self.storage, Faults()), self._open(self.storage, Faults()),
                                        return_exceptions=True)

        results = self.run(both())
        won = [r for r in results if isinstance(r, Store)]
        lost = [r for r in results if not isinstance(r, Store)]
        assert all(isinstance(e, StorageBusy) for e in lost), lost
        assert len(won) == 1, f"{len(won)} of two simultaneous claims serve"
        self._opened(won[0], Faults())

    @precondition(lambda self: any(not i.pending for i in self.live))
    @rule(who=WHO)
    def snapshot(self, who: int) -> None:
        inc = pick([i for i in self.live if not i.pending], who)
        try:
            self.run(inc.store.snapshot(timeout=30))
        except FencedError:
            assert self._superseded(inc)
            inc.fenced = True

    @precondition(lambda self: self.live)
    @rule(who=WHO, clean=st.booleans())
    def stop(self, who: int, clean: bool) -> None:
        """A clean close (final flush, release) or a crash."""
        inc = pick(self.live, who)
        if clean and not inc.pending:
            version, claims = inc.last, self.claims
            try:
                self.run(inc.store.close(timeout=30))
                # close() raises the FencedError of its final flush; a store fenced earlier with nothing
                # left to ship closes normally, and its `fenced` says no acknowledgement came of this stop
                outcome = FencedError("final flush fenced") if inc.store.fenced else None
            except TgsnapError as exc:
                outcome = exc
            self._flushed(inc, version, outcome, claims)
            self.live.remove(inc)
        else:
            self._drop(inc)

    @precondition(lambda self: self.forks < 2)
    @rule(k=KEYS)
    def fork(self, k: int) -> None:
        """A copy of the storage continued elsewhere; its delta documents copied back into the storage."""
        self.forks += 1
        other = copy.deepcopy(self.storage)
        store = self.run(self._open(other, Faults()))
        version, rows = self._state(store._conn)
        name = f"fork{self.forks}"
        last = version
        for _ in range(3):
            self.counter += 1
            v = self.counter
            store.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (k, v))
            store.execute("INSERT OR REPLACE INTO meta VALUES (1, ?)", (v,))
            rows[k] = v
            self.history[v], self.parent[v], self.owner[v] = dict(rows), last, name
            last = v
            self.run(store.flush(timeout=30))
        self.run(store.abandon())
        for ref, (doc, data) in other.docs.items():
            if doc.startswith("delta-") and self.storage.docs.get(ref) != (doc, data):
                self.storage.counter += 1
                self.storage.docs[f"m{self.storage.counter:012d}"] = (doc, data)

    @rule()
    def fresh_restore(self) -> None:
        from snapshot.restore import restore

        got = self.run(restore(MemoryBackend(self.storage, can_discover=self.discover)))
        try:
            version, rows = self._state(got.conn)
        finally:
            got.conn.close()
        self._check_restored(version, rows, self.winner, "fresh restore")


Writers.TestCase.settings = settings(
    PROFILES[PROFILE],
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestWriters = Writers.TestCase
TestWriters.pytestmark = [pytest.mark.timeout(0 if PROFILE == "long" else 300)]
