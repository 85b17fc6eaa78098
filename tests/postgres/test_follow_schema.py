"""follow replays schema changes: every kind of DDL a live Store records, followed beside the writer into a
real PostgreSQL; views, triggers and what PostgreSQL cannot hold reported (log, notes, --check); a snapshot
switch carrying a schema change; a follower killed between two statements of one delta; the clicker's own
migration 1 from the previous release's storage."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.users import MIGRATIONS, PREVIOUS_SCHEMA, SCHEMA, Users
from core import Store, StoreConfig
from snapshot import postgres as pgm
from snapshot import postgres_ddl
from snapshot.backends.local import LocalDirBackend
from snapshot.changes import ChangeSet, TableChanges
from snapshot.postgres_follow import Follower, FollowError
from snapshot.replica import Replica, ReplicaConfig
from snapshot.restore import restore
from tests.postgres.conftest import query
from tools import follow as follow_cli


def follower(path, url, schema) -> Follower:
    async def open_backend():
        return LocalDirBackend(path, fsync=False)

    return Follower(open_backend, None, url, schema=schema, location=f"local:{path}")


async def open_store(path, schema=(), migrations=None) -> Store:
    return await Store.open(LocalDirBackend(path, fsync=False), schema=schema, migrations=migrations,
                            config=StoreConfig(flush_interval=3600.0, writer_id="bot"))


def pg_columns(url: str, schema: str, table: str) -> list[tuple]:
    """(name, type, nullable, default) of a replica table, in column order."""
    return query(url, "SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns "
                      "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position", (schema, table))


def pg_tables(url: str, schema: str) -> set[str]:
    return {r[0] for r in query(url, "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                                (schema,))} - pgm.OWN_TABLES


def pg_indexes(url: str, schema: str) -> dict[str, str]:
    return dict(query(url, "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s", (schema,)))


def qi(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def assert_replica_equals_storage(f: Follower, path, url: str, schema: str) -> None:
    """Same tables, same columns in the same order, same rows (PostgreSQL's values as SQLite's), and
    follow's own --check (row counts and checksums over type-converted values) clean."""
    r = await restore(LocalDirBackend(path, fsync=False))
    try:
        tables = pgm.user_tables(r.conn)
        assert pg_tables(url, schema) == set(tables)
        for t in tables:
            cols = [c[1] for c in r.conn.execute(f"PRAGMA table_xinfo({qi(t)})")]
            assert [c[0] for c in pg_columns(url, schema, t)] == cols, t
            types = [c[1] for c in pg_columns(url, schema, t)]
            order = ", ".join(qi(c) for c in cols)
            # SQLite's values as the replica's column types hold them (a mixed column is text or bytea there)
            # (numerics compared by value: 1.274058660032341E+16 is 12740586600323410)
            want = [tuple(pgm._norm(pgm.convert(v, ty)) for v, ty in zip(row, types, strict=True))
                    for row in r.conn.execute(f"SELECT {order} FROM {qi(t)}")]
            got = [tuple(pgm._norm(v) for v in row) for row in query(url, f"SELECT {order} FROM {qi(schema)}.{qi(t)}")]
            assert sorted(map(repr, got)) == sorted(map(repr, want)), t
    finally:
        r.conn.close()
    res = await f.check()
    assert res.ok, res.problems


async def test_every_kind_of_schema_change_is_replayed_beside_the_writer(tmp_path, pg_url):
    schema = 'Odd "Schema" ' + str(time.time_ns())[-6:]  # --schema with characters that need quoting
    store = await open_store(tmp_path, ["CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)"])
    store.execute("INSERT INTO users VALUES (1, 'Анна'), (2, 'Bob')")
    await store.flush()
    f = follower(tmp_path, pg_url, schema)

    async def follow(expect_applied: int = 1) -> None:
        await store.flush()
        s = await f.step()
        assert (s.applied, s.reseeded, s.lag) == (expect_applied, None, 0), s
        await assert_replica_equals_storage(f, tmp_path, pg_url, schema)

    try:
        assert (await f.step()).reseeded  # the seed
        # CREATE TABLE: declared types, NOT NULL, DEFAULT, a UNIQUE constraint; an untyped column typed by the
        # values the delta brings (integers and text: text), as export types it
        store.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, title TEXT NOT NULL, price REAL DEFAULT 1.5, "
                      "tag, sku TEXT UNIQUE)")
        store.execute("INSERT INTO items (id, title, tag, sku) VALUES (1, 'a', 7, 's1'), (2, 'b', 'x', 's2')")
        store.execute("UPDATE users SET name = 'Анна К.' WHERE id = 1")
        await follow()
        assert pg_columns(pg_url, schema, "items") == [
            ("id", "bigint", "NO", None), ("title", "text", "NO", None), ("price", "double precision", "YES", "1.5"),
            ("tag", "text", "YES", None), ("sku", "text", "YES", None)]
        # ADD COLUMN with NOT NULL and a DEFAULT the existing rows take; a DEFAULT SQLite keeps as text in an
        # INTEGER column makes the column text (values mapped by their storage class, as SQLite reads them)
        store.execute("ALTER TABLE items ADD COLUMN qty INTEGER NOT NULL DEFAULT 3")
        store.execute("ALTER TABLE items ADD COLUMN code INTEGER DEFAULT 'none'")
        store.execute("ALTER TABLE items ADD COLUMN weight DEFAULT -1.5e3")
        store.execute("INSERT INTO items (id, title, sku) VALUES (3, 'c', 's3')")
        await follow()
        cols = {c[0]: c[1:] for c in pg_columns(pg_url, schema, "items")}
        assert cols["qty"][:2] == ("bigint", "NO") and cols["qty"][2].startswith("3")
        assert cols["code"][0] == "text" and "none" in cols["code"][2]
        assert query(pg_url, f"SELECT qty, code FROM {qi(schema)}.items WHERE id = 1") == [(3, "none")]
        # RENAME COLUMN: the next upserts name the new column
        store.execute("ALTER TABLE items RENAME COLUMN title TO name")
        store.execute("UPDATE items SET name = 'A' WHERE id = 1")
        await follow()
        # RENAME TO, with rows written under the new name in the same delta
        store.execute("ALTER TABLE items RENAME TO goods")
        store.execute("DELETE FROM goods WHERE id = 2")
        await follow()
        assert "items" not in pg_tables(pg_url, schema)
        # DROP COLUMN
        store.execute("ALTER TABLE goods DROP COLUMN price")
        store.execute("INSERT INTO goods (id, name, sku) VALUES (4, 'd', 's4')")
        await follow()
        # CREATE [UNIQUE] INDEX, then DROP INDEX
        store.execute("CREATE INDEX goods_by_name ON goods (name DESC, id)")
        store.execute("CREATE UNIQUE INDEX goods_qty_id ON goods (qty, id)")
        await follow()
        idx = pg_indexes(pg_url, schema)
        assert "goods_by_name" in idx and "name DESC" in idx["goods_by_name"] and "goods_qty_id" in idx
        store.execute("DROP INDEX goods_by_name")
        store.execute("DROP INDEX goods_qty_id")
        await follow()
        assert not {"goods_by_name", "goods_qty_id"} & set(pg_indexes(pg_url, schema))
        # a primary key changed the only way SQLite can: the table rebuilt (create, copy, drop, rename), one delta
        async with store.transaction() as tx:
            tx.execute("CREATE TABLE users_new (id INTEGER NOT NULL, name TEXT NOT NULL, PRIMARY KEY (name, id))")
            tx.execute("INSERT INTO users_new SELECT id, name FROM users")
            tx.execute("DROP TABLE users")
            tx.execute("ALTER TABLE users_new RENAME TO users")
        await follow()
        pk = query(pg_url, "SELECT kcu.column_name FROM information_schema.table_constraints tc JOIN "
                           "information_schema.key_column_usage kcu USING (constraint_schema, constraint_name) "
                           "WHERE tc.table_schema = %s AND tc.table_name = 'users' AND tc.constraint_type = "
                           "'PRIMARY KEY' ORDER BY kcu.ordinal_position", (schema,))
        assert pk == [("name",), ("id",)]
        # DROP TABLE
        store.execute("DROP TABLE goods")
        await follow()
        assert pg_tables(pg_url, schema) == {"users"}
        # the cursor records the schema it stands at: a new follower process continues in place
        await f.close()
        f = follower(tmp_path, pg_url, schema)
        store.execute("CREATE TABLE later (k TEXT NOT NULL PRIMARY KEY, v BLOB)")
        store.execute("INSERT INTO later VALUES ('k', x'00ff')")
        await follow()
    finally:
        await f.close()
        await store.close()


async def test_views_triggers_and_untranslatable_indexes_are_reported_and_rows_keep_flowing(tmp_path, pg_url,
                                                                                              schema, capsys):
    store = await open_store(tmp_path, ["CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
                                        "CREATE TABLE counts (k TEXT NOT NULL PRIMARY KEY, n INTEGER NOT NULL)"])
    await store.flush()
    f = follower(tmp_path, pg_url, schema)
    try:
        await f.step()
        store.execute("CREATE VIEW named AS SELECT name FROM users")
        store.execute("CREATE TRIGGER count_users AFTER INSERT ON users BEGIN "
                      "INSERT INTO counts VALUES ('users', 1) ON CONFLICT (k) DO UPDATE SET n = n + 1; END")
        store.execute("CREATE INDEX users_lower ON users (lower(name))")
        store.execute("INSERT INTO users VALUES (1, 'A'), (2, 'B')")
        await store.flush()
        s = await f.step()
        assert s.applied == 1 and len(s.notes) == 3
        assert any("view 'named' is not carried" in n and "schema statement 1" in n for n in s.notes)
        assert any("trigger 'count_users'" in n and "schema statement 2" in n for n in s.notes)
        assert any("index users_lower: expression index not recreated" in n for n in s.notes)
        assert all(f"seq {s.seq}" in n for n in s.notes)
        # the trigger's effect arrived as rows; no view, trigger or index of it in PostgreSQL
        assert query(pg_url, f'SELECT k, n FROM "{schema}".counts') == [("users", 2)]
        assert query(pg_url, "SELECT count(*) FROM information_schema.views WHERE table_schema = %s",
                     (schema,)) == [(0,)]
        await assert_replica_equals_storage(f, tmp_path, pg_url, schema)
        store.execute("DROP VIEW named")
        store.execute("INSERT INTO users VALUES (3, 'C')")
        await store.flush()
        s = await f.step()
        assert [n for n in s.notes if "'named' was dropped in storage" in n]
        await store.close()
        # --check names each of them with seq and statement, and still passes: the rows are equal
        args = ["--storage-dir", str(tmp_path), "--to", pg_url, "--schema", schema, "--check"]
        assert await asyncio.to_thread(follow_cli.main, args) == 0  # the CLI runs its own event loop
        err = capsys.readouterr().err
        assert f"note: not in PostgreSQL: seq {s.seq - 1}, schema statement 1: view 'named'" in err
        assert "[CREATE VIEW named AS SELECT name FROM users]" in err
        assert "check: the replica equals the stored state" in err and "4 schema note(s)" in err
    finally:
        await f.close()
        await store.close()


async def test_a_name_postgresql_cannot_hold_stops_the_follower_with_nothing_half_applied(tmp_path, pg_url, schema):
    store = await open_store(tmp_path, ["CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)"])
    store.execute("INSERT INTO users VALUES (1, 'a')")
    await store.flush()
    f = follower(tmp_path, pg_url, schema)
    try:
        at = (await f.step()).seq
        long = "c" * 70
        store.execute("CREATE TABLE other (id INTEGER PRIMARY KEY)")
        store.execute(f"ALTER TABLE users ADD COLUMN {long} TEXT")
        store.execute("INSERT INTO users (id, name) VALUES (2, 'b')")
        await store.flush()
        with pytest.raises(FollowError, match=r"schema statement 2 .*70 bytes; PostgreSQL identifiers are at most 63"):
            await f.run(once=True)
        # the delta's transaction rolled back whole: no table of statement 1, no row, the cursor where it was
        assert pg_tables(pg_url, schema) == {"users"}
        assert query(pg_url, f'SELECT seq FROM "{schema}"._tgsnap_follow') == [(at,)]
        assert query(pg_url, f'SELECT id FROM "{schema}".users') == [(1,)]
        # the documented way out: rename it, compact; the follower re-seeds past the delta it could not hold
        store.execute(f"ALTER TABLE users RENAME COLUMN {long} TO short")
        await store.snapshot()
        s = await f.step()
        assert s.reseeded and "compacted" in s.reseeded
        await assert_replica_equals_storage(f, tmp_path, pg_url, schema)
    finally:
        await f.close()
        await store.close()


async def test_a_change_follow_cannot_replay_in_place_reseeds_exactly(tmp_path, pg_url, schema):
    """A column's declared type changed in place (writable_schema: no ALTER does it) is no add, drop or rename:
    not guessed at; the replica re-seeds from the restored state, which replays the very same statements."""
    w = Replica(LocalDirBackend(tmp_path, fsync=False), ReplicaConfig(lease_seconds=30), writer_id="bot")
    await w.acquire()
    ddl = "CREATE TABLE t (id INTEGER PRIMARY KEY, b TEXT)"
    await w.write_delta(ChangeSet(time.time(), {"t": TableChanges("t", ddl, ["id", "b"], ["id"], [(1, "x")], [])},
                                  schema=[ddl]))
    f = follower(tmp_path, pg_url, schema)
    try:
        await f.step()
        new = "CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)"
        await w.write_delta(ChangeSet(time.time(), {"t": TableChanges("t", new, ["id", "b"], ["id"], [(2, b"\x00")],
                                                                      [])},
                                      schema=["PRAGMA writable_schema = ON",
                                              f"UPDATE sqlite_schema SET sql = '{new}' WHERE name = 't'",
                                              "PRAGMA writable_schema = RESET"]))
        s = await f.step()
        assert s.reseeded and "schema statement 3" in s.reseeded and "does not replay in place" in s.reseeded
        assert query(pg_url, f'SELECT id, b FROM "{schema}".t ORDER BY id') == [(1, b"x"), (2, b"\x00")]
        await assert_replica_equals_storage(f, tmp_path, pg_url, schema)
    finally:
        await f.close()
        await w.release()


async def test_a_snapshot_switch_carrying_a_schema_change_is_reconciled(tmp_path, pg_url, schema):
    store = await open_store(tmp_path, ["CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
                                        "CREATE TABLE gone (id INTEGER PRIMARY KEY)"])
    store.execute("INSERT INTO users VALUES (1, 'a')")
    store.execute("INSERT INTO gone VALUES (1)")
    await store.flush()
    f = follower(tmp_path, pg_url, schema)
    try:
        await f.step()
        # while the follower is away: a dropped table, a renamed column, a new one; then a compaction folds the
        # deltas that carried the statements into a snapshot, so all the follower sees is a different schema
        store.execute("DROP TABLE gone")
        store.execute("ALTER TABLE users RENAME COLUMN name TO title")
        store.execute("ALTER TABLE users ADD COLUMN score REAL")
        store.execute("INSERT INTO users VALUES (2, 'b', 2.5)")
        await store.flush()
        await store.snapshot()
        store.execute("INSERT INTO users VALUES (3, 'c', NULL)")
        await store.flush()
        s = await f.step()
        assert s.reseeded and "compacted" in s.reseeded
        assert any("'gone' is no longer in storage" in n for n in s.notes)
        assert any("columns ['id', 'name'] are now ['id', 'title', 'score']" in n for n in s.notes)
        assert pg_tables(pg_url, schema) == {"users"}  # the dropped table left PostgreSQL too
        await assert_replica_equals_storage(f, tmp_path, pg_url, schema)
        # and in place again after it, from the schema the re-seed recorded
        store.execute("ALTER TABLE users DROP COLUMN score")
        await store.flush()
        s = await f.step()
        assert (s.applied, s.reseeded) == (1, None)
        await assert_replica_equals_storage(f, tmp_path, pg_url, schema)
    finally:
        await f.close()
        await store.close()


async def test_a_follower_killed_between_two_statements_resumes_exactly(tmp_path, pg_url, schema, monkeypatch):
    store = await open_store(tmp_path, ["CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)"])
    store.execute("INSERT INTO users VALUES (1, 'a')")
    await store.flush()
    f = follower(tmp_path, pg_url, schema)
    try:
        at = (await f.step()).seq
        store.execute("ALTER TABLE users ADD COLUMN a INTEGER NOT NULL DEFAULT 1")
        store.execute("ALTER TABLE users RENAME COLUMN a TO b")
        store.execute("CREATE TABLE more (id INTEGER PRIMARY KEY)")
        store.execute("INSERT INTO users VALUES (2, 'b', 5)")
        await store.flush()
        run = postgres_ddl.Replay.run
        killed = []

        async def dies_after_the_first(self, cur, i, stmt):
            await run(self, cur, i, stmt)
            if i == 2 and not killed:  # the server side of the follower's connection dies mid-delta
                killed.append(1)
                pid = f.pg.info.backend_pid
                query(pg_url, "SELECT pg_terminate_backend(%s)", (pid,))
                await cur.execute("SELECT 1")

        monkeypatch.setattr(postgres_ddl.Replay, "run", dies_after_the_first)
        with pytest.raises(pgm.PostgresUnreachable):
            await f.step()
        assert killed and query(pg_url, f'SELECT seq FROM "{schema}"._tgsnap_follow') == [(at,)]
        assert [c[0] for c in pg_columns(pg_url, schema, "users")] == ["id", "name"]  # statements 1-2 undone
        await f.close()
        f = follower(tmp_path, pg_url, schema)  # a restarted follower
        s = await f.step()
        assert (s.applied, s.reseeded) == (1, None)
        await assert_replica_equals_storage(f, tmp_path, pg_url, schema)
    finally:
        await f.close()
        await store.close()


async def test_the_clickers_migration_1_followed_from_the_previous_releases_storage(tmp_path, pg_url, schema):
    old = await open_store(tmp_path, PREVIOUS_SCHEMA)
    for i in range(1, 6):
        old.execute("INSERT INTO users (chat_id, name, clicks, last_message_id) VALUES (?, ?, ?, ?)",
                    (100 + i, f"Пользователь {i}", i, i))
    await old.snapshot()
    await old.close()
    f = follower(tmp_path, pg_url, schema)
    try:
        await f.step()
        assert [c[0] for c in pg_columns(pg_url, schema, "users")] == ["chat_id", "name", "clicks", "last_message_id"]
        store = await open_store(tmp_path, SCHEMA, MIGRATIONS)  # this release: migration 1 runs, one delta
        try:
            s = await f.step()
            assert (s.applied, s.reseeded) == (1, None)
            assert pg_columns(pg_url, schema, "users")[4:] == [("username", "text", "YES", None),
                                                               ("registered_at", "double precision", "YES", None)]
            users = Users(store)
            users.register(101, "Пользователь 1", "nick1")
            users.register(200, "Новый", "new")
            users.click(200, 5)
            await store.flush()
            s = await f.step()
            assert s.reseeded is None
            assert query(pg_url, f'SELECT chat_id, username FROM "{schema}".users WHERE username IS NOT NULL '
                                 "ORDER BY 1") == [(101, "nick1"), (200, "new")]
            res = await f.check()
            assert res.ok and res.user_version == 1, res
            await assert_replica_equals_storage(f, tmp_path, pg_url, schema)
        finally:
            await store.close()
    finally:
        await f.close()


async def test_a_replica_seeded_before_schema_replay_reseeds_on_its_first_schema_statement(tmp_path, pg_url,
                                                                                            schema):
    store = await open_store(tmp_path, ["CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)"])
    store.execute("INSERT INTO users VALUES (1, 'a')")
    await store.flush()
    f = follower(tmp_path, pg_url, schema)
    try:
        await f.step()
        # the cursor table as the previous release wrote it: no recorded schema
        query(pg_url, f'ALTER TABLE "{schema}"._tgsnap_follow DROP COLUMN sqlite_schema, DROP COLUMN user_version')
        store.execute("INSERT INTO users VALUES (2, 'b')")
        await store.flush()
        assert (await f.step()).applied == 1  # rows alone still apply in place
        store.execute("ALTER TABLE users ADD COLUMN x TEXT")
        await store.flush()
        s = await f.step()
        assert s.reseeded and "no record of its SQLite schema" in s.reseeded
        await assert_replica_equals_storage(f, tmp_path, pg_url, schema)
    finally:
        await f.close()
        await store.close()


async def test_the_shape_diff_refuses_what_it_cannot_name():
    """Unit: the per-statement comparison maps one add, drop or rename, and nothing else."""
    r = postgres_ddl.Replay.__new__(postgres_ddl.Replay)
    r.tables = {"t": postgres_ddl.PgTable({"a": "bigint", "b": "text"}, ["a"])}
    r.what, r._stmt = "delta seq 9", (1, "X")
    a, b = ("a", "INTEGER", 0, None, 1, 0), ("b", "TEXT", 0, None, 0, 0)
    for before, after in [((a, b), (a, ("b", "BLOB", 0, None, 0, 0))),  # a type changed
                          ((a, b), (a, ("c", "BLOB", 0, None, 0, 0))),  # renamed and retyped
                          ((a, b), (b, a)),  # reordered
                          ((a,), (a, b, ("c", "", 0, None, 0, 0)))]:  # two at once
        with pytest.raises(postgres_ddl.NeedsReseed, match="does not replay in place"):
            await r._alter(None, "t", before, after)


def test_shadow_rebuilds_views_that_depend_on_later_objects():
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE a (id INTEGER PRIMARY KEY)")
    conn.execute("CREATE VIEW v2 AS SELECT id FROM a")
    conn.execute("CREATE VIEW v1 AS SELECT id FROM v2")
    conn.execute("DROP VIEW v2")
    conn.execute("CREATE VIEW v2 AS SELECT id FROM a")  # v1 (older rowid) now depends on a newer object
    text = pgm.schema_of(conn)
    sh = postgres_ddl.shadow(text)
    assert pgm.schema_of(sh) != "" and {k[1] for k in postgres_ddl.shape(sh).others} == {"v1", "v2"}


def test_probe_reads_defaults_as_sqlite_does():
    assert postgres_ddl._existing_value("INTEGER", "'5'") == 5
    assert postgres_ddl._existing_value("INTEGER", "'x'") == "x"
    assert postgres_ddl._existing_value("TEXT", "5") == "5"
    assert postgres_ddl._existing_value("", "x'00ff'") == b"\x00\xff"
    with pytest.raises(sqlite3.Error):
        postgres_ddl._existing_value("", "CURRENT_TIMESTAMP")


# ---------------------------------------------------------------------------------------------- property

_NAMES = ["a", "b", "c", "d", "e", "f"]
_DECLS = ["INTEGER", "TEXT", "REAL", "", "NUMERIC", "BLOB"]
_DEFAULTS = [None, "0", "'x'", "-1.5", "x'00'"]
_values = st.one_of(st.none(), st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=False), st.text(max_size=4),
                    st.binary(max_size=3))
_ops = st.lists(st.one_of(
    st.tuples(st.just("add"), st.sampled_from(_NAMES), st.sampled_from(_DECLS), st.sampled_from(_DEFAULTS),
              st.booleans()),
    st.tuples(st.just("rename"), st.integers(0, 5), st.sampled_from(_NAMES)),
    st.tuples(st.just("drop"), st.integers(0, 5)),
    st.tuples(st.just("rename_table")),
    st.tuples(st.just("index"), st.integers(0, 5), st.booleans()),
    st.tuples(st.just("unindex")),
    st.tuples(st.just("insert"), st.integers(1, 6), st.lists(_values, min_size=6, max_size=6)),
    st.tuples(st.just("update"), st.integers(1, 6), st.integers(0, 5), _values),
    st.tuples(st.just("delete"), st.integers(1, 6)),
    st.tuples(st.just("follow")),
    st.tuples(st.just("snapshot")),
), max_size=14)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_ops)
def test_any_sequence_of_column_changes_and_writes_followed_equals_sqlite(pg_url, ops):
    """Random add / rename / drop column, table renames and row writes through a live Store, the follower
    stepping at random points: afterwards PostgreSQL's tables, columns (in order) and rows are SQLite's."""
    schema = "h_" + uuid.uuid4().hex[:10]

    async def go(path) -> None:
        store = await open_store(path, ["CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)"])
        table, cols, indexes = "t", ["name"], []
        f = follower(path, pg_url, schema)
        try:
            store.execute("INSERT INTO t VALUES (1, 'a'), (2, NULL), (3, 'c')")  # rows an added column must fill
            await store.flush()
            await f.step()
            for op in ops:
                kind = op[0]
                if kind == "add" and op[1] not in cols:
                    _k, name, decl, dflt, notnull = op
                    spec = f"{qi(name)} {decl}" + (f" DEFAULT {dflt}" if dflt else "")
                    spec += " NOT NULL" if notnull and dflt else ""
                    store.execute(f"ALTER TABLE {table} ADD COLUMN {spec}")
                    cols.append(name)
                elif kind == "rename" and cols and op[2] not in cols:
                    old = cols[op[1] % len(cols)]
                    store.execute(f"ALTER TABLE {table} RENAME COLUMN {qi(old)} TO {qi(op[2])}")
                    cols[cols.index(old)] = op[2]
                elif kind == "drop" and cols:
                    c = cols[op[1] % len(cols)]
                    try:
                        store.execute(f"ALTER TABLE {table} DROP COLUMN {qi(c)}")
                        cols.remove(c)
                    except sqlite3.OperationalError:
                        pass  # an indexed column: SQLite refuses (and the store records nothing)
                elif kind == "index" and cols:
                    name = f"ix{len(indexes)}"
                    try:
                        store.execute(f"CREATE {'UNIQUE ' if op[2] else ''}INDEX {name} ON {table} "
                                      f"({qi(cols[op[1] % len(cols)])} DESC, id)" if not op[2] else
                                      f"CREATE UNIQUE INDEX {name} ON {table} ({qi(cols[op[1] % len(cols)])})")
                        indexes.append(name)
                    except sqlite3.IntegrityError:
                        pass  # duplicates: no unique index
                elif kind == "unindex" and indexes:
                    store.execute(f"DROP INDEX {indexes.pop(0)}")
                elif kind == "rename_table":
                    new = "t2" if table == "t" else "t"
                    store.execute(f"ALTER TABLE {table} RENAME TO {new}")
                    table = new
                elif kind == "insert":
                    vals = op[2][:len(cols)]
                    try:
                        store.execute(f"INSERT OR REPLACE INTO {table} (id{''.join(', ' + qi(c) for c in cols)}) "
                                      f"VALUES (?{', ?' * len(cols)})", (op[1], *vals))
                    except sqlite3.IntegrityError:
                        pass  # a NULL into a NOT NULL column, a duplicate: SQLite refused it, nothing to follow
                elif kind == "update" and cols:
                    try:
                        store.execute(f"UPDATE {table} SET {qi(cols[op[2] % len(cols)])} = ? WHERE id = ?",
                                      (op[3], op[1]))
                    except sqlite3.IntegrityError:
                        pass
                elif kind == "delete":
                    store.execute(f"DELETE FROM {table} WHERE id = ?", (op[1],))
                elif kind == "follow":
                    await store.flush()
                    await f.step()
                elif kind == "snapshot":
                    await store.snapshot()
            await store.flush()
            s = await f.step()
            assert s.lag == 0
            await assert_replica_equals_storage(f, path, pg_url, schema)
        finally:
            await f.close()
            await store.close()

    with tempfile.TemporaryDirectory() as d:
        asyncio.run(go(Path(d)))


async def test_a_running_follower_keeps_up_with_ddl_rows_and_compactions(tmp_path, pg_url, schema):
    """The follower's own loop beside the writer: schema statements, rows and a compaction interleave with
    its passes (a snapshot deletes deltas it may be reading); it never stops, and ends equal to storage."""
    store = await open_store(tmp_path, ["CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)"])
    await store.flush()
    f = follower(tmp_path, pg_url, schema)
    stop = asyncio.Event()
    seen: list = []
    task = asyncio.create_task(f.run(interval=0.01, stop=stop, report=seen.append))
    steps = ["ALTER TABLE users ADD COLUMN clicks INTEGER NOT NULL DEFAULT 0",
             "CREATE INDEX users_by_clicks ON users (clicks DESC, id)",
             "CREATE TABLE log (n INTEGER PRIMARY KEY, what TEXT)",
             "ALTER TABLE users RENAME COLUMN name TO first_name",
             "snapshot",
             "ALTER TABLE log RENAME TO events",
             "DROP INDEX users_by_clicks",
             "ALTER TABLE users DROP COLUMN clicks",
             "DROP TABLE events"]
    try:
        for i, stmt in enumerate(steps):
            if stmt == "snapshot":
                await store.snapshot()
            else:
                store.execute(stmt)
            name = "first_name" if i >= 3 else "name"
            store.execute(f"INSERT OR REPLACE INTO users (id, {name}) VALUES (?, ?)", (i % 4, f"user {i}"))
            await store.flush()
            await asyncio.sleep(0.02)
        tip = await restore(LocalDirBackend(tmp_path, fsync=False))
        want = tip.seq
        tip.conn.close()
        for _ in range(500):
            if (seen and seen[-1].seq == want) or task.done():
                break
            await asyncio.sleep(0.02)
        if task.done():
            task.result()  # the follower must not have stopped: show why it did
        assert seen[-1].seq == want and len({r.seq for r in seen}) >= 3
        await assert_replica_equals_storage(f, tmp_path, pg_url, schema)
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        await f.close()
        await store.close()


async def test_generated_columns_hold_the_values_sqlite_computes(tmp_path, pg_url, schema):
    """Deltas leave generated columns out (SQLite computes them); the replica's plain columns get the values
    SQLite computes for each upserted row, and adding one (existing rows' values only SQLite has) re-seeds."""
    store = await open_store(tmp_path, ["CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)"])
    await store.flush()
    f = follower(tmp_path, pg_url, schema)
    try:
        await f.step()
        store.execute("CREATE TABLE g (id INTEGER PRIMARY KEY, a INTEGER NOT NULL, "
                      "twice INTEGER GENERATED ALWAYS AS (a * 2) VIRTUAL, label TEXT AS ('#' || a) STORED)")
        store.execute("CREATE TRIGGER no_side_effects AFTER INSERT ON g BEGIN "
                      "INSERT INTO users VALUES (NEW.id + 1000, 'from the trigger'); END")
        store.execute("INSERT INTO g (id, a) VALUES (1, 10), (2, 20)")
        await store.flush()
        s = await f.step()
        assert (s.applied, s.reseeded) == (1, None)
        assert query(pg_url, f'SELECT id, a, twice, label FROM "{schema}".g ORDER BY id') == [
            (1, 10, 20, "#10"), (2, 20, 40, "#20")]
        await assert_replica_equals_storage(f, tmp_path, pg_url, schema)
        store.execute("UPDATE g SET a = 7 WHERE id = 2")
        await store.flush()
        assert (await f.step()).applied == 1
        assert query(pg_url, f'SELECT twice, label FROM "{schema}".g WHERE id = 2') == [(14, "#7")]
        await assert_replica_equals_storage(f, tmp_path, pg_url, schema)
        store.execute("ALTER TABLE g ADD COLUMN plus INTEGER AS (a + 1)")
        await store.flush()
        s = await f.step()
        assert s.reseeded and "generated column g.plus" in s.reseeded
        await assert_replica_equals_storage(f, tmp_path, pg_url, schema)
        store.execute("INSERT INTO g (id, a) VALUES (3, 1)")
        await store.flush()
        assert (await f.step()).reseeded is None
        await assert_replica_equals_storage(f, tmp_path, pg_url, schema)
    finally:
        await f.close()
        await store.close()


async def test_a_follower_seeded_on_empty_storage_gets_the_clickers_table_and_index_from_the_first_delta(
        tmp_path, pg_url, schema):
    empty = await open_store(tmp_path)  # storage exists, no table yet
    await empty.close()
    f = follower(tmp_path, pg_url, schema)
    try:
        assert (await f.step()).reseeded and pg_tables(pg_url, schema) == set()
        store = await open_store(tmp_path, SCHEMA, MIGRATIONS)  # declares users and users_by_clicks
        try:
            Users(store).register(1, "Анна", "anna")
            await store.flush()
            s = await f.step()
            assert (s.applied, s.reseeded) == (1, None)
            idx = pg_indexes(pg_url, schema)
            assert "users_by_clicks" in idx and "clicks DESC" in idx["users_by_clicks"]
            await assert_replica_equals_storage(f, tmp_path, pg_url, schema)
        finally:
            await store.close()
    finally:
        await f.close()


async def test_a_view_of_the_operators_on_a_replica_table_stops_a_replayed_drop_with_postgresqls_reason(
        tmp_path, pg_url, schema):
    store = await open_store(tmp_path, ["CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, x TEXT)"])
    store.execute("INSERT INTO users VALUES (1, 'a', 'x')")
    await store.flush()
    f = follower(tmp_path, pg_url, schema)
    try:
        at = (await f.step()).seq
        query(pg_url, f'CREATE VIEW "{schema}".mine AS SELECT id, x FROM "{schema}".users')
        store.execute("ALTER TABLE users DROP COLUMN x")
        await store.flush()
        with pytest.raises(pgm.PostgresError, match=r"view \S*mine depends on column x"):
            await f.run(once=True)  # never CASCADE: the operator's view is not dropped behind their back
        assert query(pg_url, f'SELECT seq FROM "{schema}"._tgsnap_follow') == [(at,)]
        query(pg_url, f'DROP VIEW "{schema}".mine')
        assert (await f.step()).applied == 1
        await assert_replica_equals_storage(f, tmp_path, pg_url, schema)
    finally:
        await f.close()
        await store.close()
