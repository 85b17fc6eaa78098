"""Applying change sets: idempotent, superset-safe, trigger-free, and tgsnap's own objects untouched."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapshot.apply import apply_changes
from snapshot.changes import ChangeSet, TableChanges
from snapshot.errors import RestoreError

DDL = "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT UNIQUE, clicks INTEGER NOT NULL)"


def users(upserts=(), deletes=()):
    return ChangeSet(0.0, {"users": TableChanges("users", DDL, ["id", "name", "clicks"], ["id"],
                                                 list(upserts), list(deletes))})


def rows(conn, table="users"):
    return sorted(conn.execute(f"SELECT * FROM {table}"))


def test_creates_the_table_and_applies():
    conn = sqlite3.connect(":memory:")
    apply_changes(conn, users([(1, "a", 5), (2, "b", 1)]))
    assert rows(conn) == [(1, "a", 5), (2, "b", 1)]
    apply_changes(conn, users([(2, "b", 2)], [(1,)]))
    assert rows(conn) == [(2, "b", 2)]


def test_twice_equals_once_and_superset_after_partial():
    once, twice, partial = (sqlite3.connect(":memory:") for _ in range(3))
    full = users([(1, "a", 3), (2, "b", 4), (3, "c", 5)], [(9,)])
    apply_changes(once, full)
    apply_changes(twice, full)
    apply_changes(twice, full)
    apply_changes(partial, users([(1, "a", 2)]))
    apply_changes(partial, full)
    assert rows(once) == rows(twice) == rows(partial)


def test_unique_swap_between_rows():
    conn = sqlite3.connect(":memory:")
    apply_changes(conn, users([(1, "x", 0), (2, "y", 0)]))
    apply_changes(conn, users([(1, "y", 1), (2, "x", 1)]))
    assert rows(conn) == [(1, "y", 1), (2, "x", 1)]


def test_application_triggers_do_not_fire_but_survive_and_tgsnap_triggers_stay():
    conn = sqlite3.connect(":memory:")
    conn.executescript(DDL + """;
        CREATE TABLE audit(what TEXT);
        CREATE TABLE _tgsnap_dirty(tbl TEXT, pk INTEGER);
        CREATE TRIGGER app_audit AFTER INSERT ON users BEGIN INSERT INTO audit VALUES ('app'); END;
        CREATE TRIGGER _tgsnap_track AFTER INSERT ON users
            BEGIN INSERT INTO _tgsnap_dirty VALUES ('users', NEW.id); END;
    """)
    apply_changes(conn, users([(1, "a", 1)]))
    assert rows(conn, "audit") == []
    assert rows(conn, "_tgsnap_dirty") == [("users", 1)]
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
    assert names == {"app_audit", "_tgsnap_track"}
    conn.execute("INSERT INTO users VALUES (2, 'b', 0)")
    assert rows(conn, "audit") == [("app",)]


def test_foreign_keys_do_not_block_replay_and_setting_is_restored():
    conn = sqlite3.connect(":memory:")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.executescript("CREATE TABLE parent(id INTEGER PRIMARY KEY);"
                       "CREATE TABLE child(id INTEGER PRIMARY KEY, p INTEGER REFERENCES parent(id) ON DELETE CASCADE);")
    cs = ChangeSet(0, {"child": TableChanges("child", "", ["id", "p"], ["id"], [(1, 10)]),
                       "parent": TableChanges("parent", "", ["id"], ["id"], [(10,)])})
    apply_changes(conn, cs)  # child before parent: fine with foreign keys off
    apply_changes(conn, ChangeSet(0, {"parent": TableChanges("parent", "", ["id"], ["id"], [(10,)])}))
    assert rows(conn, "child") == [(1, 10)]  # REPLACE of the parent did not cascade
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_composite_and_text_keys_and_without_rowid():
    conn = sqlite3.connect(":memory:")
    ddl = "CREATE TABLE kv(a TEXT, b INTEGER, v BLOB, PRIMARY KEY (a, b)) WITHOUT ROWID"
    cs = ChangeSet(0, {"kv": TableChanges("kv", ddl, ["a", "b", "v"], ["a", "b"],
                                          [("x", 1, b"\x00"), ("x", 2, None), ("y", 1, b"")])})
    apply_changes(conn, cs)
    apply_changes(conn, ChangeSet(0, {"kv": TableChanges("kv", ddl, ["a", "b", "v"], ["a", "b"], [], [("x", 1)])}))
    assert rows(conn, "kv") == [("x", 2, None), ("y", 1, b"")]


def test_schema_mismatch_is_named():
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT)")
    with pytest.raises(RestoreError, match="delta seq 4.*no column.*clicks"):
        apply_changes(conn, users([(1, "a", 1)]), what="delta seq 4")


def test_failure_rolls_back_everything():
    conn = sqlite3.connect(":memory:")
    apply_changes(conn, users([(1, "a", 1)]))
    with pytest.raises(RestoreError):
        apply_changes(conn, users([(2, "b", 2), (3, "c", None)]))  # NOT NULL fails on the second row
    assert rows(conn) == [(1, "a", 1)]
    assert not conn.in_transaction


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 20), st.one_of(st.none(), st.integers(0, 9))), max_size=10),
                min_size=1, max_size=6))
def test_replay_of_any_prefix_then_all_equals_the_model(batches):
    """Model: a dict pk -> value (None value = deleted). Each batch becomes one change set."""
    ddl = "CREATE TABLE t(k INTEGER PRIMARY KEY, v INTEGER)"
    model: dict[int, int] = {}
    sets = []
    for batch in batches:
        ups, dels = {}, set()
        for k, v in batch:
            if v is None:
                model.pop(k, None)
                ups.pop(k, None)
                dels.add(k)
            else:
                model[k] = v
                ups[k] = v
                dels.discard(k)
        sets.append(ChangeSet(0, {"t": TableChanges("t", ddl, ["k", "v"], ["k"], sorted(ups.items()),
                                                    [(k,) for k in sorted(dels)])}))
    conn = sqlite3.connect(":memory:")
    for cs in sets[: len(sets) // 2] + sets:  # a replayed prefix is harmless
        apply_changes(conn, cs)
    assert dict(conn.execute("SELECT k, v FROM t")) == model
