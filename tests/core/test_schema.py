"""Which tables the store accepts, and what it says about the ones it refuses."""

from __future__ import annotations

import sqlite3

import pytest

from core import ConfigError, Store
from core.schema import declared_objects, read_table


@pytest.mark.parametrize(
    ("ddl", "message"),
    [
        ("CREATE TABLE log (at REAL, line TEXT)", "table 'log' has no explicit PRIMARY KEY"),
        ("CREATE TABLE pairs (a TEXT, b BLOB, PRIMARY KEY (a, b))", r"table 'pairs'.*'a', 'b'.*must be NOT NULL"),
        ("CREATE TABLE tags (name TEXT PRIMARY KEY)", r"table 'tags'.*'name'.*NOT NULL"),
        ("CREATE TABLE neg (id INTEGER PRIMARY KEY DESC)", r"table 'neg'.*'id'.*NOT NULL"),  # not a rowid alias
        ("CREATE TABLE _tgsnap_x (id INTEGER PRIMARY KEY)", "reserved for tgsnap"),
        ("CREATE VIRTUAL TABLE docs USING fts5(body)", "virtual tables are not supported"),
        ("CREATE TABLE broken (", "schema statement failed"),
        ("SELECT 1", "creates nothing"),
    ],
)
def test_refused_tables_are_named(ddl, message):
    with pytest.raises(ConfigError, match=message):
        declared_objects([ddl])


@pytest.mark.parametrize(
    "ddl",
    [
        "CREATE TABLE a (id INTEGER PRIMARY KEY, v)",
        "CREATE TABLE b (k TEXT NOT NULL PRIMARY KEY, v)",
        "CREATE TABLE c (x INTEGER NOT NULL, y TEXT NOT NULL, v, PRIMARY KEY (y, x))",
        "CREATE TABLE d (k TEXT PRIMARY KEY, v) WITHOUT ROWID",  # WITHOUT ROWID keys are NOT NULL anyway
        "CREATE TABLE e (id INTEGER PRIMARY KEY AUTOINCREMENT, v)",
    ],
)
def test_accepted_tables(ddl):
    assert [obj[:2] for obj in declared_objects([ddl])] == [("table", ddl.split()[2])]


def test_schema_facts_follow_key_order_collation_and_skip_generated_columns():
    conn = sqlite3.connect(":memory:")
    conn.execute(
        "CREATE TABLE t (v INT, x INTEGER NOT NULL, y TEXT NOT NULL COLLATE NOCASE,"
        " g GENERATED ALWAYS AS (v * 2), PRIMARY KEY (y, x))"
    )
    schema = read_table(conn, "t")
    assert schema.columns == ("v", "x", "y")
    assert schema.pk == ("y", "x")
    assert schema.pk_collations == ("NOCASE", "BINARY")
    assert schema.pk_positions == (2, 1)
    assert not schema.without_rowid


def test_indexes_and_views_may_follow_their_tables():
    objects = declared_objects(
        [
            "CREATE TABLE users (chat_id INTEGER PRIMARY KEY, clicks INTEGER)",
            "CREATE INDEX users_clicks ON users (clicks)",
            "CREATE VIEW top AS SELECT * FROM users ORDER BY clicks DESC LIMIT 15",
        ]
    )
    assert [obj[:2] for obj in objects] == [("table", "users"), ("index", "users_clicks"), ("view", "top")]


async def test_bad_schema_fails_before_the_lease_is_taken(replica):
    with pytest.raises(ConfigError, match="'log'"):
        await Store.open_replica(replica, schema=["CREATE TABLE log (line TEXT)"])
    assert not replica.acquired


async def test_keyless_table_already_in_storage_is_refused_and_the_lease_released(replica):
    original = replica.acquire

    async def acquire_with_legacy_table(progress=None):
        restored = await original(progress)
        restored.conn.execute("CREATE TABLE legacy (line TEXT)")
        return restored

    replica.acquire = acquire_with_legacy_table
    with pytest.raises(ConfigError, match="'legacy' has no explicit PRIMARY KEY"):
        await Store.open_replica(replica, schema=[])
    assert replica.released


async def test_declared_tables_are_created_once_and_stored_ones_kept(open_store):
    store = await open_store(
        schema=[
            "CREATE TABLE users (chat_id INTEGER PRIMARY KEY, name TEXT)",
            "CREATE INDEX users_name ON users (name)",
        ]
    )
    assert store.tables == ["users"]
    assert store.execute("SELECT name FROM sqlite_schema ORDER BY name").fetchall() == [("users",), ("users_name",)]
    with pytest.raises(ConfigError, match="'notes'"):
        store.declare("CREATE TABLE notes (body TEXT)")
