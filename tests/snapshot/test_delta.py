"""The delta codec: every SQLite value round-trips bit for bit; malformed bodies are named."""

from __future__ import annotations

import math
import sqlite3
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapshot import columns
from snapshot.changes import ChangeSet, RawText, TableChanges
from snapshot.delta import decode_body, encode_body, encode_delta
from snapshot.envelope import Kind, decode
from snapshot.errors import CorruptDocument

INT64 = st.integers(-(2**63), 2**63 - 1)
TEXT = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40)
VALUES_V1 = st.one_of(st.none(), INT64, st.floats(allow_nan=True, allow_infinity=True), TEXT,
                      st.binary(max_size=40))


def _invalid_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


#: TEXT whose bytes are not valid UTF-8 (body version 2 only).
RAW_TEXT = st.binary(min_size=1, max_size=20).filter(_invalid_utf8).map(RawText)
VALUES = st.one_of(VALUES_V1, RAW_TEXT)
NAMES = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=12)


def _same(a, b) -> bool:
    """Equality that also tells -0.0 from 0.0, compares NaN bit patterns, and tells RawText from bytes."""
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if type(a) is bool:  # not a SQLite value: stored as the integer it is (test_bool_is_stored_as_integer)
        a = int(a)
    return type(a) is type(b) and a == b


def _rows_same(x, y) -> bool:
    return len(x) == len(y) and all(len(r) == len(s) and all(map(_same, r, s)) for r, s in zip(x, y, strict=True))


@st.composite
def tables(draw, values=VALUES):
    VALUES = values  # noqa: N806 - the strategy of this body version
    name = draw(NAMES)
    ncols = draw(st.integers(1, 5))
    columns = draw(st.lists(NAMES, min_size=ncols, max_size=ncols, unique=True))
    npk = draw(st.integers(1, ncols))
    pk = columns[:npk]
    upserts = draw(st.lists(st.tuples(*[VALUES] * ncols), max_size=8))
    deletes = draw(st.lists(st.tuples(*[VALUES] * npk), max_size=4))
    ddl = draw(st.text(max_size=60, alphabet=st.characters(blacklist_categories=["Cs"])))
    return TableChanges(name, ddl, columns, pk, upserts, deletes)


@st.composite
def change_sets(draw, version=2):
    ts = draw(st.lists(tables(VALUES if version >= 2 else VALUES_V1), max_size=4, unique_by=lambda t: t.name))
    at = draw(st.floats(allow_nan=False, allow_infinity=False))
    cs = ChangeSet(captured_at=at, tables={t.name: t for t in ts})
    if version >= 2:
        cs.schema = draw(st.lists(TEXT, max_size=3))
        cs.user_version = draw(st.integers(-(2**31), 2**31 - 1))
    return cs


def _assert_equal(a: ChangeSet, b: ChangeSet):
    assert _same(a.captured_at, b.captured_at)
    assert a.schema == b.schema
    assert (a.user_version or 0) == (b.user_version or 0)
    assert list(a.tables) == list(b.tables)
    for name, t in a.tables.items():
        u = b.tables[name]
        assert (t.name, t.ddl, t.columns, t.pk) == (u.name, u.ddl, u.columns, u.pk)
        assert _rows_same(t.upserts, u.upserts) and _rows_same(t.deletes, u.deletes)


@settings(max_examples=300, deadline=None)
@given(cs=change_sets())
def test_round_trip_property(cs):
    _assert_equal(cs, decode_body(encode_body(cs)))


@settings(max_examples=150, deadline=None)
@given(cs=change_sets())
def test_version_2_bodies_still_round_trip(cs):
    _assert_equal(cs, decode_body(encode_body(cs, version=2), version=2))


FLOATS = st.floats(allow_nan=True, allow_infinity=True)
#: one strategy per way a version 3 column can be stored: every storage class alone (each a uniform
#: column kind), repeating text (the dictionary), ascending and wide integers (differences, zigzag, all
#: plane widths), long values, and anything at all (a mixed column).
COLUMN_STYLES = {
    "null": st.just(None),
    "int": INT64,
    "small int": st.integers(0, 300),
    "int of any width": st.integers(0, 63).flatmap(lambda b: st.integers(-(2**b), 2**b - 1)),
    "bool": st.booleans(),
    "float": FLOATS,
    "text": TEXT,
    "blob": st.binary(max_size=40),
    "raw text": RAW_TEXT,
    # long values, built from a short seed (drawing 70 000 random bytes makes hypothesis slow)
    "long": st.one_of(st.text(min_size=1, max_size=4, alphabet="ab\u044f\U0001f389\x00").map(lambda s: s * 1500),
                      st.binary(min_size=1, max_size=8).map(lambda b: b * 9000)),
    "any": VALUES,
}


@st.composite
def v3_columns(draw, n: int) -> list:
    style = draw(st.sampled_from(sorted(COLUMN_STYLES)))
    if style == "int" and draw(st.booleans()):  # ascending keys, as a capture delivers them
        start = draw(st.integers(-(2**63), 2**63 - 1))
        steps = draw(st.lists(st.integers(0, 2**40), min_size=n, max_size=n))
        vals = [start + sum(steps[:i + 1]) for i in range(n)]
        return [max(-(2**63), min(2**63 - 1, v)) for v in vals]
    values = COLUMN_STYLES[style]
    if style in ("text", "any") and draw(st.booleans()):  # repeats: few distinct values
        pool = draw(st.lists(values, min_size=1, max_size=3))
        return [draw(st.sampled_from(pool)) for _ in range(n)]
    return [draw(values) for _ in range(n)]


@st.composite
def v3_tables(draw):
    name = draw(NAMES)
    ncols = draw(st.integers(1, 5))
    cols = draw(st.lists(NAMES, min_size=ncols, max_size=ncols, unique=True))
    npk = draw(st.integers(1, ncols))
    nup, ndel = draw(st.integers(0, 30)), draw(st.integers(0, 10))
    upserts = list(zip(*[draw(v3_columns(nup)) for _ in range(ncols)], strict=True)) if nup else []
    deletes = list(zip(*[draw(v3_columns(ndel)) for _ in range(npk)], strict=True)) if ndel else []
    return TableChanges(name, draw(TEXT), cols, cols[:npk], upserts, deletes)


@settings(max_examples=400, deadline=None)
@given(ts=st.lists(v3_tables(), max_size=3, unique_by=lambda t: t.name), schema=st.lists(TEXT, max_size=3),
       uv=st.integers(-(2**31), 2**31 - 1), at=st.floats(allow_nan=False, allow_infinity=False))
def test_version_3_round_trips_every_column_kind(ts, schema, uv, at):
    cs = ChangeSet(at, {t.name: t for t in ts}, schema=schema, user_version=uv)
    body = encode_body(cs, version=3)
    _assert_equal(cs, decode_body(body, version=3))
    doc = decode(encode_delta(cs, epoch=1, seq=1), expect=Kind.DELTA)
    assert doc.header.version == 3
    _assert_equal(cs, decode_body(doc.body, version=doc.header.version))


@settings(max_examples=200, deadline=None)
@given(ts=st.lists(v3_tables(), min_size=1, max_size=2, unique_by=lambda t: t.name), data=st.data())
def test_version_3_truncated_or_extended_bodies_are_named(ts, data):
    body = encode_body(ChangeSet(0, {t.name: t for t in ts}), version=3)
    n = data.draw(st.integers(0, len(body) - 1))
    with pytest.raises(CorruptDocument, match="delta body is malformed"):
        decode_body(body[:n], ref="d-1", version=3)
    with pytest.raises(CorruptDocument, match="delta body is malformed"):
        decode_body(body + data.draw(st.binary(min_size=1, max_size=3)), version=3)


@settings(max_examples=300, deadline=None)
@given(ts=st.lists(v3_tables(), min_size=1, max_size=2, unique_by=lambda t: t.name), data=st.data())
def test_version_3_damaged_bodies_fail_by_name_or_decode_to_sqlite_values(ts, data):
    """A flipped byte (the envelope's checksum catches it first; this is the body's own defence): the
    decoder names the body malformed, or yields values that are still SQLite values of the right shape,
    never a Python exception of its own."""
    body = bytearray(encode_body(ChangeSet(0, {t.name: t for t in ts}), version=3))
    i = data.draw(st.integers(0, len(body) - 1))
    body[i] ^= data.draw(st.integers(1, 255))
    try:
        cs = decode_body(bytes(body), version=3)
    except CorruptDocument as e:
        assert "delta body is malformed" in str(e)
        return
    for t in cs.tables.values():
        for row in t.upserts:
            assert len(row) == len(t.columns)
        for row in t.deletes:
            assert len(row) == len(t.pk)
        for v in (v for rows in (t.upserts, t.deletes) for row in rows for v in row):
            assert v is None or type(v) in (int, float, str, bytes, RawText)
            assert type(v) is not int or -(2**63) <= v < 2**63


def test_version_3_stores_like_next_to_like():
    """What makes version 3 small, checked on its bytes: a uniform int column with ascending keys is
    stored as differences in a few planes; repeating text as a dictionary; a constant column in no planes."""
    rows = [(10_000_000_000 + 1000 * i, ["Аня", "Bob"][i % 2], 0) for i in range(200)]
    cs = ChangeSet(0, {"t": TableChanges("t", "", ["k", "n", "z"], ["k"], rows)})
    body = encode_body(cs, version=3)
    key_col = body.index(bytes([columns.INT, columns.DELTA | 5]))  # the first value needs 5 bytes
    assert body[key_col + 2 + 5 * 200] == columns.TEXT_DICT
    assert body.endswith(bytes([columns.INT, 0]))  # all zeros: no planes at all
    assert len(body) < 200 * 5 + 200 + 60
    assert decode_body(body, version=3).tables["t"].upserts == rows


@settings(max_examples=100, deadline=None)
@given(cs=change_sets(version=1))
def test_version_1_bodies_still_round_trip(cs):
    _assert_equal(cs, decode_body(encode_body(cs, version=1), version=1))


def test_version_1_cannot_carry_what_only_version_2_can():
    raw = ChangeSet(0, {"t": TableChanges("t", "", ["a"], ["a"], [(RawText(b"\xc3"),)])})
    with pytest.raises(ValueError, match="version 2"):
        encode_body(raw, version=1)
    with pytest.raises(ValueError, match="version 2"):
        encode_body(ChangeSet(0, schema=["CREATE TABLE x(a INTEGER PRIMARY KEY)"]), version=1)
    # ...and a version 1 reader does not know tag 5
    body = bytearray(encode_body(raw, version=2))
    with pytest.raises(CorruptDocument, match="unknown value tag 5"):
        decode_body(bytes(body[:8]) + bytes(body[16:]), version=1)


def test_newer_body_version_is_refused_by_name():
    with pytest.raises(CorruptDocument, match="newer than this tgsnap knows"):
        decode_body(b"", version=4)


@pytest.mark.parametrize("version", [2, 3])
def test_raw_text_tag_never_holds_valid_utf8(version):
    cs = ChangeSet(0, {"t": TableChanges("t", "", ["a"], ["a"], [(RawText(b"\xc3"),)])})
    body = bytearray(encode_body(cs, version=version))
    body[-1] = ord("A")
    with pytest.raises(CorruptDocument, match="holds valid UTF-8"):
        decode_body(bytes(body), version=version)


@pytest.mark.parametrize("version", [2, 3])
def test_edge_values_exactly(version):
    nan_payload = struct.unpack("<d", struct.pack("<Q", 0x7FF8_0000_DEAD_BEEF))[0]
    row = (None, 0, -1, 2**63 - 1, -(2**63), 0.0, -0.0, math.inf, -math.inf, nan_payload, 5e-324,
           "", "nul\x00inside", "Привет, мир", "𝄞 astral 🎉", "\uffff", b"", b"\x00\xff" * 3)
    cols = [f"c{i}" for i in range(len(row))]
    cs = ChangeSet(1.5, {"t": TableChanges("t", "CREATE TABLE t(...)", cols, ["c1"], [row], [(7,), (None,)])})
    back = decode_body(encode_body(cs, version=version), version=version)
    assert _rows_same(back.tables["t"].upserts, [row])
    assert _rows_same(back.tables["t"].deletes, [(7,), (None,)])


@pytest.mark.parametrize("version", [2, 3])
def test_bool_is_stored_as_integer(version):
    cs = ChangeSet(0, {"t": TableChanges("t", "", ["a", "b"], ["a"], [(True, False), (2, True)])})
    back = decode_body(encode_body(cs, version=version), version=version).tables["t"].upserts
    assert back == [(1, 0), (2, 1)] and all(type(v) is int for r in back for v in r)


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("value, why", [(2**63, "64 bits"), (-(2**63) - 1, "64 bits"),
                                        ("bad \ud800 surrogate", "surrogate"), (object(), "not a SQLite value")])
@pytest.mark.parametrize("neighbour", [None, 1, "x"])  # alone, in a uniform column, in a mixed one
def test_unstorable_values_are_refused(value, why, version, neighbour):
    cs = ChangeSet(0, {"t": TableChanges("t", "", ["a"], ["a"], [(neighbour,), (value,)])})
    with pytest.raises(ValueError, match=why):
        encode_body(cs, version=version)


@pytest.mark.parametrize("version", [2, 3])
def test_row_width_must_match_columns(version):
    cs = ChangeSet(0, {"t": TableChanges("t", "", ["a", "b"], ["a"], [(1, 2), (1,)])})
    with pytest.raises(ValueError, match="expected 2"):
        encode_body(cs, version=version)


def test_full_document_round_trip():
    cs = ChangeSet(3.0, {"users": TableChanges("users", "CREATE TABLE users(id INTEGER PRIMARY KEY, n TEXT)",
                                               ["id", "n"], ["id"], [(1, "a"), (2, "b")], [(3,)])})
    doc = decode(encode_delta(cs, epoch=2, seq=9), expect=Kind.DELTA)
    assert doc.header.seq == 9 and doc.header.epoch == 2
    _assert_equal(cs, decode_body(doc.body, version=doc.header.version))


@settings(max_examples=200, deadline=None)
@given(cs=change_sets(), data=st.data())
def test_truncated_bodies_are_named_never_misread(cs, data):
    body = encode_body(cs)
    n = data.draw(st.integers(0, max(0, len(body) - 1)))
    with pytest.raises(CorruptDocument, match="delta body is malformed") as e:
        decode_body(body[:n], ref="d-1")
    assert e.value.ref == "d-1"


def test_unknown_tag_is_named():
    cs = ChangeSet(0, {"t": TableChanges("t", "", ["a"], ["a"], [(None,)])})
    body = bytearray(encode_body(cs, version=2))
    body[-1] = 9  # the NULL tag of the only value
    with pytest.raises(CorruptDocument, match="unknown value tag 9"):
        decode_body(bytes(body), version=2)
    body = bytearray(encode_body(cs, version=3))
    body[-1] = 9  # the kind of the only column (NULL)
    with pytest.raises(CorruptDocument, match="unknown column kind 9"):
        decode_body(bytes(body), version=3)
    mixed = ChangeSet(0, {"t": TableChanges("t", "", ["a"], ["a"], [(None,), (0,)])})
    body = bytearray(encode_body(mixed, version=3))
    assert body[-4:] == bytes([columns.MIXED, columns.NULL, columns.INT, 0])  # kind, tags, int header
    body[-3] = 9
    with pytest.raises(CorruptDocument, match="unknown value tag 9"):
        decode_body(bytes(body), version=3)


def _sqlite_dump(conn) -> list:
    return sorted(conn.execute("SELECT typeof(k), hex(k), typeof(a), hex(a), typeof(b), hex(b) FROM t"))


#: values SQLite keeps as given in an untyped column (NaN it would turn into NULL, so none here).
STORABLE = st.one_of(st.none(), INT64, st.floats(allow_nan=False), TEXT, st.binary(max_size=20), RAW_TEXT)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), nrows=st.integers(1, 25), ndel=st.integers(0, 5))
def test_the_documented_reader_applies_version_3_like_tgsnap(data, nrows, ndel):
    """docs/formats.md §2.1 is the format: its reader, run on random version-3 bodies (every column kind,
    mixed columns, dictionaries, differences, zigzag), leaves the same SQLite rows as tgsnap's own decoder
    and apply, storage class and bytes of every value included."""
    from snapshot.apply import apply_changes
    from tests.snapshot.test_formats_doc import _reader

    keys = data.draw(st.lists(st.one_of(INT64, TEXT, st.binary(max_size=8)), min_size=nrows + ndel,
                              max_size=nrows + ndel, unique_by=lambda v: (type(v), v)))
    if data.draw(st.booleans()):
        keys = sorted(keys, key=lambda v: (str(type(v)), v))  # runs of ascending integers: differences
    kinds = st.sampled_from(["any", "int", "text", "dict", "null", "float"])
    styles = data.draw(st.lists(kinds, min_size=2, max_size=2))
    strategy = {"any": STORABLE, "int": INT64, "text": TEXT, "null": st.none(), "float": st.floats(allow_nan=False),
                "dict": st.sampled_from(["Аня", "Bob", "x\x00y"])}
    cols = [[data.draw(strategy[s]) for _ in range(nrows)] for s in styles]
    ddl = "CREATE TABLE t (k PRIMARY KEY, a, b)"
    upserts = list(zip(keys[:nrows], *cols, strict=True))
    deletes = [(k,) for k in keys[nrows:]]
    base = [(k, 0, 0) for k in keys[nrows:]]
    cs = ChangeSet(1.0, {"t": TableChanges("t", ddl, ["k", "a", "b"], ["k"], upserts, deletes)}, user_version=3)
    body = encode_body(cs, version=3)
    ours, theirs = sqlite3.connect(":memory:"), sqlite3.connect(":memory:")
    for conn in (ours, theirs):  # the rows the deletions remove
        conn.execute(ddl)
        conn.executemany("INSERT INTO t VALUES (?, ?, ?)", base)
        conn.commit()
    apply_changes(ours, decode_body(body, version=3))
    _reader()["apply_delta"](theirs, body, 3)
    assert _sqlite_dump(ours) == _sqlite_dump(theirs)
    assert len(_sqlite_dump(ours)) == nrows
    assert ours.execute("PRAGMA user_version").fetchone() == theirs.execute("PRAGMA user_version").fetchone() == (3,)
