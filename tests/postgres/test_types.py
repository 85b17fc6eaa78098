"""Every SQLite storage class and edge value through the PostgreSQL load, read back from the server."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import struct
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snapshot import postgres as pgm
from tests.postgres.conftest import query

I64 = (-(2**63), 2**63 - 1)


def load(url: str, conn: sqlite3.Connection, schema: str, **kw) -> pgm.LoadReport:
    async def go():
        pg = await pgm.connect(url)
        try:
            return await pgm.load_state(pg, conn, schema, replace=kw.pop("replace", False), position=None,
                                        url=url, **kw)
        finally:
            await pg.close()

    return asyncio.run(go())


def types_of(url: str, schema: str, table: str) -> dict[str, str]:
    return dict(query(url, "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s "
                           "AND table_name = %s", (schema, table)))


def bits(f: float) -> bytes:
    return struct.pack(">d", f)


def test_every_storage_class_and_edge_value_round_trips(pg_url, schema):
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE edge (k INTEGER PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB, "
                 "s STRING, it INTEGER, untyped)")
    rows = [
        (1, None, None, None, None, None, None, None),
        (2, I64[0], -0.0, "", b"", 1, "not a number", 1),
        (3, I64[1], math.inf, "\x00nul\x00inside", bytes(range(256)), 2**62, "12abc", 2.5),
        (4, 0, -math.inf, "𝄞 astral 😀 Ярослав", b"\x00", -7, "", "text"),
        (5, -1, math.nan, "5", b"\xff\xfe", 3, "x", b"\x01\x02"),
        (6, 42, 1e-310, "tab\tnew\nline\\back", b"\\x00", 0, "0x10", None),
    ]
    conn.executemany("INSERT INTO edge VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    # what SQLite actually stores (NaN becomes NULL; STRING has NUMERIC affinity, so its values are integers)
    stored = conn.execute("SELECT * FROM edge ORDER BY k").fetchall()
    assert stored[4][2] is None and conn.execute("SELECT typeof(s) FROM edge WHERE k = 3").fetchone() == ("integer",)

    report = load(pg_url, conn, schema)
    assert [t.rows for t in report.tables] == [6]
    assert types_of(pg_url, schema, "edge") == {
        "k": "bigint", "i": "bigint", "r": "double precision",
        "t": "bytea",  # a text value holds NUL: PostgreSQL's text cannot, so the column is bytea (UTF-8)
        "b": "bytea", "s": "bigint",  # TEXT-ish declared type holding integers loads as integers
        "it": "text",  # INTEGER-declared column holding text
        "untyped": "bytea",  # integer, real, text and blob together: the widest
    }
    got = query(pg_url, f'SELECT * FROM "{schema}".edge ORDER BY k')
    assert [r[1] for r in got] == [None, I64[0], I64[1], 0, -1, 42]
    # (a REAL column stores -0.0 as the integer 0, so SQLite itself hands back +0.0 there)
    assert [bits(r[2]) if r[2] is not None else None for r in got] == [
        None, bits(0.0), bits(math.inf), bits(-math.inf), None, bits(1e-310)]
    assert [None if r[3] is None else bytes(r[3]).decode() for r in got] == [None] + [s[3] for s in stored[1:]]
    assert [None if r[4] is None else bytes(r[4]) for r in got] == [s[4] for s in stored]
    assert [r[5] for r in got] == [None, 1, 2**62, -7, 3, 0]
    assert [r[6] for r in got] == [None, "not a number", "12abc", "", "x", "0x10"]
    assert [None if r[7] is None else bytes(r[7]) for r in got] == [None, b"1", b"2.5", b"text", b"\x01\x02", None]


def test_negative_zero_keeps_its_sign_where_sqlite_keeps_it(pg_url, schema):
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE z (k INTEGER PRIMARY KEY, f)")  # no affinity: the 8-byte real is kept
    conn.executemany("INSERT INTO z VALUES (?, ?)", [(1, -0.0), (2, 1.5), (3, -math.inf)])
    load(pg_url, conn, schema)
    assert types_of(pg_url, schema, "z") == {"k": "bigint", "f": "double precision"}
    assert [bits(r[0]) for r in query(pg_url, f'SELECT f FROM "{schema}".z ORDER BY k')] == [
        bits(-0.0), bits(1.5), bits(-math.inf)]


def test_single_class_columns_keep_their_natural_types(pg_url, schema):
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY NOT NULL, n NUMERIC, mixed NUMERIC, txt TEXT, v VARCHAR(5))")
    conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", [
        ("a", 1, 1, "x", "long value beyond 5"), ("b", 2, 0.5, "𝄞", "v"), ("", 3, 2**63 - 1, "", None)])
    load(pg_url, conn, schema)
    assert types_of(pg_url, schema, "t") == {"k": "text", "n": "bigint", "mixed": "numeric", "txt": "text",
                                             "v": "text"}
    got = query(pg_url, f'SELECT k, n, mixed, txt, v FROM "{schema}".t ORDER BY n')
    assert got == [("a", 1, Decimal(1), "x", "long value beyond 5"), ("b", 2, Decimal("0.5"), "𝄞", "v"),
                   ("", 3, Decimal(2**63 - 1), "", None)]


def test_numbers_in_a_text_column_read_as_sqlite_renders_them(pg_url, schema):
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(1, 1e20), (2, 0.1), (3, -5), (4, "word"), (5, 1.0)])
    load(pg_url, conn, schema)
    want = [r[0] for r in conn.execute("SELECT CAST(v AS TEXT) FROM t ORDER BY k")]
    assert [r[0] for r in query(pg_url, f'SELECT v FROM "{schema}".t ORDER BY k')] == want


values = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False),
                   st.text(max_size=20), st.binary(max_size=20))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cols=st.lists(st.lists(values, min_size=1, max_size=6), min_size=1, max_size=3))
def test_any_values_load_and_single_class_columns_are_exact(pg_url, cols):
    """Whatever SQLite holds loads (never a failure), the checksum matches, and a column whose values share
    one storage class reads back exactly."""
    import uuid

    schema = "h_" + uuid.uuid4().hex[:10]
    n = max(len(c) for c in cols)
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, " + ", ".join(f"c{j}" for j in range(len(cols))) + ")")
    for i in range(n):
        conn.execute(f"INSERT INTO t VALUES (?{', ?' * len(cols)})", (i, *[c[i] if i < len(c) else None for c in cols]))
    load(pg_url, conn, schema)
    got = query(pg_url, f'SELECT * FROM "{schema}".t ORDER BY k')
    stored = conn.execute("SELECT * FROM t ORDER BY k").fetchall()
    assert len(got) == len(stored)
    for j in range(len(cols)):
        classes = {type(r[j + 1]) for r in stored if r[j + 1] is not None}
        if len(classes) == 1 and not (str in classes and any("\x00" in r[j + 1] for r in stored if r[j + 1])):
            for g, s in zip(got, stored, strict=True):
                a, b = g[j + 1], s[j + 1]
                if isinstance(b, float):
                    assert bits(a) == bits(b)
                else:
                    assert (bytes(a) if isinstance(a, memoryview) else a) == b
    query(pg_url, f'DROP SCHEMA "{schema}" CASCADE')


def test_text_that_is_not_utf8_loads_as_its_bytes(pg_url, schema):
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    # SQLite stores whatever bytes it is given as TEXT; Python's sqlite3 cannot even read them back as str
    conn.execute("INSERT INTO t VALUES (1, CAST(x'ff41c3' AS TEXT)), (2, 'ok'), (3, CAST(x'' AS TEXT))")
    assert conn.execute("SELECT typeof(v) FROM t WHERE k = 1").fetchone() == ("text",)
    load(pg_url, conn, schema)
    assert types_of(pg_url, schema, "t")["v"] == "bytea"
    got = [bytes(r[0]) for r in query(pg_url, f'SELECT v FROM "{schema}".t ORDER BY k')]
    assert got == [b"\xffA\xc3", b"ok", b""]
    with pytest.raises(sqlite3.OperationalError):  # the connection's own text_factory is left as it was
        conn.execute("SELECT v FROM t").fetchall()
