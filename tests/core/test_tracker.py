"""Every way SQL can change a row is captured: replaying the captured change sets onto a mirror that
started equal (with snapshot's own `apply_changes`) must reproduce the source exactly."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core.schema import application_tables, read_table
from core.tracker import Tracker
from snapshot.apply import apply_changes


def pair(*ddl: str) -> tuple[sqlite3.Connection, Tracker, sqlite3.Connection]:
    source = sqlite3.connect(":memory:", isolation_level=None)
    mirror = sqlite3.connect(":memory:", isolation_level=None)
    for statement in ddl:
        source.execute(statement)
        mirror.execute(statement)
    tracker = Tracker(source)
    for name in application_tables(source):
        tracker.install(read_table(source, name))
    return source, tracker, mirror


def dump(conn: sqlite3.Connection) -> dict[str, list[tuple]]:
    return {
        name: sorted(conn.execute(f'SELECT * FROM "{name}"').fetchall(), key=repr) for name in application_tables(conn)
    }


def sync(source, tracker, mirror):
    changes = tracker.capture()
    apply_changes(mirror, changes)
    assert dump(mirror) == dump(source)
    return changes


USERS = "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT UNIQUE, n INTEGER DEFAULT 0)"


@pytest.mark.parametrize(
    "statements",
    [
        ["INSERT INTO users (id, name) VALUES (3, 'c'), (4, 'd')"],
        ["INSERT OR REPLACE INTO users VALUES (1, 'a2', 5)"],
        ["REPLACE INTO users VALUES (1, 'a3', 6)"],
        ["INSERT INTO users VALUES (1, 'x', 0) ON CONFLICT (id) DO UPDATE SET n = n + 10"],
        ["INSERT INTO users VALUES (3, 'c', 0) ON CONFLICT (id) DO NOTHING"],
        ["UPDATE users SET id = 10 WHERE id = 1"],  # key change: old key deleted, new key upserted
        ["UPDATE users SET id = id + 100"],  # every key changes
        ["DELETE FROM users WHERE id = 2"],
        ["DELETE FROM users"],  # no WHERE: SQLite's truncate shortcut must not bypass tracking
        ["INSERT OR REPLACE INTO users VALUES (7, 'b', 0)"],  # UNIQUE conflict deletes row 2
        # ... and once row 7 moves on, replaying its image no longer re-creates that conflict: the
        # delete of row 2 must have been captured on its own
        ["INSERT OR REPLACE INTO users VALUES (7, 'b', 0)", "UPDATE users SET name = 'q' WHERE id = 7"],
        ["UPDATE OR REPLACE users SET name = 'b' WHERE id = 1"],  # same, through UPDATE
        ["UPDATE OR FAIL users SET n = 1 WHERE id = 1", "UPDATE OR FAIL users SET n = 2 WHERE id = 1"],
        ["INSERT OR ROLLBACK INTO users VALUES (9, 'z', 0)", "UPDATE OR ABORT users SET n = 3 WHERE id = 9"],
        ["INSERT OR IGNORE INTO users VALUES (1, 'dup', 0)"],  # ignored: nothing changes
        ["UPDATE users SET n = n WHERE id = 1"],  # a no-op update still ships the (same) image
    ],
)
def test_statement_kinds_are_captured(statements):
    source, tracker, mirror = pair(USERS)
    source.execute("INSERT INTO users (id, name) VALUES (1, 'a'), (2, 'b')")
    sync(source, tracker, mirror)
    for sql in statements:
        source.execute(sql)
    sync(source, tracker, mirror)


def test_key_change_ships_a_delete_of_the_old_key_and_an_upsert_of_the_new():
    source, tracker, mirror = pair(USERS)
    source.execute("INSERT INTO users (id, name) VALUES (1, 'a')")
    sync(source, tracker, mirror)
    source.execute("UPDATE users SET id = 2 WHERE id = 1")
    changes = sync(source, tracker, mirror)
    assert changes.tables["users"].upserts == [(2, "a", 0)]
    assert changes.tables["users"].deletes == [(1,)]


def test_cascades_and_application_triggers_are_captured():
    source, tracker, mirror = pair(
        "CREATE TABLE parent (id INTEGER PRIMARY KEY)",
        "CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER REFERENCES parent (id)"
        " ON DELETE CASCADE ON UPDATE CASCADE)",
        "CREATE TABLE audit (seq INTEGER PRIMARY KEY, what TEXT NOT NULL)",
        "CREATE TRIGGER log_parent AFTER DELETE ON parent BEGIN INSERT INTO audit (what) VALUES (OLD.id); END",
    )
    source.execute("PRAGMA foreign_keys = ON")
    source.execute("INSERT INTO parent VALUES (1), (2)")
    source.execute("INSERT INTO child VALUES (10, 1), (11, 1), (12, 2)")
    sync(source, tracker, mirror)
    source.execute("DELETE FROM parent WHERE id = 1")  # cascades to 10 and 11, and writes audit
    source.execute("UPDATE parent SET id = 3 WHERE id = 2")  # cascades into child 12
    changes = sync(source, tracker, mirror)
    assert sorted(changes.tables["child"].deletes) == [(10,), (11,)]
    assert changes.tables["audit"].upserts == [(1, "1")]


def test_collated_composite_keys():
    source, tracker, mirror = pair(
        "CREATE TABLE t (a TEXT NOT NULL COLLATE NOCASE, b BLOB NOT NULL, v, PRIMARY KEY (a, b))"
    )
    source.execute("INSERT INTO t VALUES ('x', x'00', 1), ('Y', x'', 2)")
    sync(source, tracker, mirror)
    source.execute("UPDATE t SET a = 'X' WHERE a = 'x'")  # same key under NOCASE, new spelling
    source.execute("DELETE FROM t WHERE a = 'y'")
    sync(source, tracker, mirror)


def test_capture_refuses_to_cut_inside_a_transaction():
    source, tracker, _ = pair(USERS)
    source.execute("BEGIN")
    with pytest.raises(RuntimeError, match="consistent cut"):
        tracker.capture()
    source.execute("ROLLBACK")


def test_capture_of_nothing_is_empty_and_touches_nothing():
    source, tracker, _ = pair(USERS)
    before = source.total_changes
    assert tracker.capture().is_empty()
    assert source.total_changes == before


def test_rollback_drops_only_the_transactions_marks():
    source, tracker, mirror = pair(USERS)
    source.execute("INSERT INTO users (id, name) VALUES (1, 'a')")
    source.execute("BEGIN")
    tracker.begin()
    source.execute("INSERT INTO users (id, name) VALUES (2, 'b')")
    source.execute("UPDATE users SET n = 5 WHERE id = 1")  # already marked before BEGIN
    source.execute("ROLLBACK")
    tracker.end(committed=False)
    assert tracker.dirty_count() == 1
    sync(source, tracker, mirror)


def test_tracking_survives_in_temp_only():
    source, tracker, _ = pair(USERS)
    main_objects = source.execute("SELECT type, name FROM main.sqlite_schema").fetchall()
    assert all(not name.startswith("_tgsnap_") for _, name in main_objects)
    image_conn = sqlite3.connect(":memory:")
    image_conn.deserialize(source.serialize())
    image_conn.execute("INSERT INTO users (id, name) VALUES (5, 'e')")  # no tgsnap function needed


# ---- property: any sequence of statements, captured at random moments, replays exactly ----------------

TABLES = (
    "CREATE TABLE a (id INTEGER PRIMARY KEY, u INTEGER UNIQUE, v)",
    "CREATE TABLE b (k1 TEXT NOT NULL, k2 INTEGER NOT NULL, v, PRIMARY KEY (k1, k2))",
    "CREATE TABLE c (k BLOB PRIMARY KEY, v) WITHOUT ROWID",
)
small = st.integers(0, 4)
unique = st.integers(0, 2)  # few values, so REPLACE conflicts on the UNIQUE column are common
text = st.sampled_from(["", "x", "X", "é", "\x00", "𝄞"])
value = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False), text, st.binary(max_size=3))

statement = st.one_of(
    st.tuples(st.just("INSERT OR REPLACE INTO a VALUES (?, ?, ?)"), st.tuples(small, unique, value)),
    st.tuples(
        st.just("INSERT INTO a VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET v = excluded.v"),
        st.tuples(small, st.integers(5, 6), value),
    ),
    st.tuples(st.just("UPDATE OR REPLACE a SET id = ? WHERE id = ?"), st.tuples(small, small)),
    st.tuples(st.just("UPDATE OR IGNORE a SET u = ? WHERE id = ?"), st.tuples(st.integers(0, 5), small)),
    st.tuples(st.just("DELETE FROM a WHERE id = ?"), st.tuples(small)),
    st.tuples(st.just("INSERT OR REPLACE INTO b VALUES (?, ?, ?)"), st.tuples(text, small, value)),
    st.tuples(st.just("UPDATE OR REPLACE b SET k1 = ?, k2 = ? WHERE k2 = ?"), st.tuples(text, small, small)),
    st.tuples(st.just("DELETE FROM b WHERE k1 = ?"), st.tuples(text)),
    st.tuples(st.just("INSERT OR REPLACE INTO c VALUES (?, ?)"), st.tuples(st.binary(max_size=2), value)),
    st.tuples(st.just("DELETE FROM c"), st.just(())),
    st.just("capture"),
    st.just("begin"),
    st.just("commit"),
    st.just("rollback"),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(statement, max_size=40))
# a REPLACE that deletes a conflicting row, then moves on (needs recursive_triggers)
@example(
    [
        ("INSERT OR REPLACE INTO a VALUES (?, ?, ?)", (1, 1, None)),
        "capture",
        ("INSERT OR REPLACE INTO a VALUES (?, ?, ?)", (2, 1, None)),
        ("UPDATE OR IGNORE a SET u = ? WHERE id = ?", (3, 2)),
    ]
)
# a composite key that changes (needs the old key)
@example(
    [
        ("INSERT OR REPLACE INTO b VALUES (?, ?, ?)", ("x", 1, 0)),
        "capture",
        ("UPDATE OR REPLACE b SET k1 = ?, k2 = ? WHERE k2 = ?", ("y", 2, 1)),
    ]
)
def test_any_statement_sequence_replays_exactly(steps):
    source, tracker, mirror = pair(*TABLES)
    for step in steps:
        if step == "capture":
            if not source.in_transaction:
                sync(source, tracker, mirror)
        elif step == "begin":
            if not source.in_transaction:
                source.execute("BEGIN")
                tracker.begin()
        elif step in ("commit", "rollback"):
            if source.in_transaction:
                source.execute(step.upper())
                tracker.end(committed=step == "commit")
        else:
            sql, params = step
            try:
                source.execute(sql, params)
            except sqlite3.IntegrityError:
                pass  # a failed statement changes nothing (and may leave harmless extra marks)
    if source.in_transaction:
        source.execute("COMMIT")
        tracker.end(committed=True)
    sync(source, tracker, mirror)
