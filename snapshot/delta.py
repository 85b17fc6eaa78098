"""The delta body: a ChangeSet as bytes, and back, exactly (see docs/formats.md, "Delta body").

Little-endian, length-prefixed, one tag byte per value, so every SQLite value survives bit for bit:
NULL, 64-bit integers, floats (including -0.0, infinities and NaN payloads), text of any Unicode
(NUL included) and blobs.

Three grammars; the body version is the envelope version of the document carrying it. Version 1 has
rows only. Version 2 adds, before the tables, `PRAGMA user_version` and the schema statements run since
the previous cut, and a value tag for TEXT whose bytes are not valid UTF-8 (`RawText`). Version 3 holds
the same content column by column (snapshot/columns.py), about half the compressed size of version 2 on
a clicker's flush. Writers write version 3; all three are read.
"""

from __future__ import annotations

import struct
from typing import Any

from snapshot import columns, envelope
from snapshot.changes import ChangeSet, RawText, TableChanges, Value
from snapshot.envelope import GENESIS, Kind, encode
from snapshot.errors import CorruptDocument

TAG_NULL = 0
TAG_INT = 1
TAG_FLOAT = 2
TAG_TEXT = 3
TAG_BLOB = 4
#: body version 2: TEXT whose bytes are not valid UTF-8, stored as those bytes.
TAG_RAW_TEXT = 5

#: body grammars this code reads; it writes the newest.
BODY_VERSIONS = (1, 2, 3)
#: what writers write.
BODY_VERSION = 3

_U32 = struct.Struct("<I")
_F64 = struct.Struct("<d")
_HEAD = struct.Struct("<dI")  # version 1: captured_at, table count
_HEAD2 = struct.Struct("<diI")  # captured_at, user_version, schema statement count
_COUNTS = struct.Struct("<II")
_INT = struct.Struct("<Bq")
_FLOAT = struct.Struct("<Bd")
_LEN = struct.Struct("<BI")
_NULL = bytes([TAG_NULL])

_pack_int = _INT.pack
_pack_float = _FLOAT.pack
_pack_len = _LEN.pack


def _str(s: str, out: list) -> None:
    b = s.encode("utf-8")
    out.append(_U32.pack(len(b)))
    out.append(b)


def _values(rows: list[tuple[Value, ...]], width: int, table: str, what: str, out: list, version: int) -> None:
    append = out.append
    v: Any  # dispatched on type(v) below, exactly (bool, RawText): mypy cannot narrow through `t is int`
    for row in rows:
        if len(row) != width:
            raise ValueError(f"table {table!r}: a {what} row has {len(row)} values, expected {width}")
        for v in row:
            t = type(v)
            if v is None:
                append(_NULL)
            elif t is int or t is bool:
                try:
                    append(_pack_int(TAG_INT, v))
                except struct.error:
                    raise ValueError(f"table {table!r}: integer {v} does not fit SQLite's 64 bits") from None
            elif t is str:
                try:
                    b = v.encode("utf-8")
                except UnicodeEncodeError:
                    raise ValueError(f"table {table!r}: text with a lone surrogate cannot be stored") from None
                append(_pack_len(TAG_TEXT, len(b)))
                append(b)
            elif t is float:
                append(_pack_float(TAG_FLOAT, v))
            elif t is bytes or t is bytearray or t is memoryview:
                b = bytes(v)
                append(_pack_len(TAG_BLOB, len(b)))
                append(b)
            elif t is RawText:
                if version < 2:
                    raise ValueError(f"table {table!r}: TEXT that is not valid UTF-8 needs delta body version 2")
                append(_pack_len(TAG_RAW_TEXT, len(v)))
                append(bytes(v))
            else:
                raise ValueError(f"table {table!r}: {t.__name__} is not a SQLite value")


def _head_v2(changes: ChangeSet) -> bytes:
    uv = changes.user_version or 0
    if not -(2**31) <= uv < 2**31:
        raise ValueError(f"user_version {uv} does not fit SQLite's 32 bits")
    return _HEAD2.pack(float(changes.captured_at), uv, len(changes.schema))


def _vstr(s: str, out: list) -> None:
    b = s.encode("utf-8")
    out.append(columns.uvarint(len(b)))
    out.append(b)


def _columns_of(rows: list[tuple[Value, ...]], width: int, table: str, what: str, out: list) -> None:
    if not rows:
        return
    if not width:
        raise ValueError(f"table {table!r}: {what} rows need at least one column")
    if set(map(len, rows)) != {width}:
        bad = next(r for r in rows if len(r) != width)
        raise ValueError(f"table {table!r}: a {what} row has {len(bad)} values, expected {width}")
    for col in zip(*rows, strict=True):
        try:
            columns.encode_column(list(col), out)
        except ValueError as e:
            raise ValueError(f"table {table!r}: {e}") from None


def _encode_v3(changes: ChangeSet) -> bytes:
    out: list = [_head_v2(changes)]
    for stmt in changes.schema:
        _vstr(stmt, out)
    out.append(columns.uvarint(len(changes.tables)))
    for name, t in changes.tables.items():
        if name != t.name:
            raise ValueError(f"change set key {name!r} differs from its table name {t.name!r}")
        _vstr(t.name, out)
        _vstr(t.ddl, out)
        for names in (t.columns, t.pk):
            out.append(columns.uvarint(len(names)))
            for c in names:
                _vstr(c, out)
        out.append(columns.uvarint(len(t.upserts)))
        out.append(columns.uvarint(len(t.deletes)))
        _columns_of(t.upserts, len(t.columns), t.name, "upsert", out)
        _columns_of(t.deletes, len(t.pk), t.name, "delete", out)
    return b"".join(out)


def encode_body(changes: ChangeSet, version: int = BODY_VERSION) -> bytes:
    """The uncompressed delta body in grammar `version` (1 cannot carry schema changes or RawText)."""
    if version == 3:
        return _encode_v3(changes)
    if version == 1:
        if changes.schema:
            raise ValueError("schema statements need delta body version 2")
        out: list = [_HEAD.pack(float(changes.captured_at), len(changes.tables))]
    elif version == 2:
        out = [_head_v2(changes)]
        for stmt in changes.schema:
            _str(stmt, out)
        out.append(_U32.pack(len(changes.tables)))
    else:
        raise ValueError(f"delta body version {version} cannot be written (known: {BODY_VERSIONS})")
    for name, t in changes.tables.items():
        if name != t.name:
            raise ValueError(f"change set key {name!r} differs from its table name {t.name!r}")
        _str(t.name, out)
        _str(t.ddl, out)
        out.append(_U32.pack(len(t.columns)))
        for c in t.columns:
            _str(c, out)
        out.append(_U32.pack(len(t.pk)))
        for c in t.pk:
            _str(c, out)
        out.append(_COUNTS.pack(len(t.upserts), len(t.deletes)))
        _values(t.upserts, len(t.columns), t.name, "upsert", out, version)
        _values(t.deletes, len(t.pk), t.name, "delete", out, version)
    return b"".join(out)


class _Reader:
    __slots__ = ("buf", "pos", "ref", "version")

    def __init__(self, buf: bytes, ref: str | None, version: int):
        self.buf = buf
        self.pos = 0
        self.ref = ref
        self.version = version

    def fail(self, why: str) -> CorruptDocument:
        return CorruptDocument(self.ref, f"delta body is malformed at byte {self.pos}: {why}")

    def need(self, n: int) -> None:
        if self.pos + n > len(self.buf):
            raise self.fail(f"needs {n} more bytes, {len(self.buf) - self.pos} left")

    def u32(self) -> int:
        self.need(4)
        (v,) = _U32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return v

    def text(self) -> str:
        n = self.u32()
        self.need(n)
        try:
            s = self.buf[self.pos:self.pos + n].decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("text is not valid UTF-8") from None
        self.pos += n
        return s

    def rows(self, count: int, width: int) -> list[tuple[Value, ...]]:
        buf, pos, end = self.buf, self.pos, len(self.buf)
        unpack_q = struct.Struct("<q").unpack_from
        unpack_d = _F64.unpack_from
        unpack_n = _U32.unpack_from
        raw_ok = self.version >= 2
        rows: list[tuple[Value, ...]] = []
        try:
            for _ in range(count):
                row: list[Value] = []
                for _ in range(width):
                    tag = buf[pos]
                    pos += 1
                    if tag == TAG_INT:
                        row.append(unpack_q(buf, pos)[0])
                        pos += 8
                    elif tag == TAG_TEXT:
                        (n,) = unpack_n(buf, pos)
                        pos += 4
                        if pos + n > end:
                            raise IndexError
                        row.append(buf[pos:pos + n].decode("utf-8"))
                        pos += n
                    elif tag == TAG_NULL:
                        row.append(None)
                    elif tag == TAG_FLOAT:
                        row.append(unpack_d(buf, pos)[0])
                        pos += 8
                    elif tag == TAG_BLOB:
                        (n,) = unpack_n(buf, pos)
                        pos += 4
                        if pos + n > end:
                            raise IndexError
                        row.append(buf[pos:pos + n])
                        pos += n
                    elif tag == TAG_RAW_TEXT and raw_ok:
                        (n,) = unpack_n(buf, pos)
                        pos += 4
                        if pos + n > end:
                            raise IndexError
                        raw = buf[pos:pos + n]
                        try:
                            raw.decode("utf-8")
                        except UnicodeDecodeError:
                            row.append(RawText(raw))
                        else:  # a writer never uses this tag for valid UTF-8: one value, one spelling
                            self.pos = pos - 5
                            raise self.fail("a non-UTF-8 text value holds valid UTF-8") from None
                        pos += n
                    else:
                        self.pos = pos - 1
                        raise self.fail(f"unknown value tag {tag}")
                rows.append(tuple(row))
        except (IndexError, struct.error):
            self.pos = pos
            raise self.fail("a value runs past the end of the body") from None
        except UnicodeDecodeError:
            self.pos = pos
            raise self.fail("text is not valid UTF-8") from None
        self.pos = pos
        return rows


def _decode_v3(body: bytes, ref: str | None) -> ChangeSet:
    pos = 0

    def fail(why: str) -> CorruptDocument:
        return CorruptDocument(ref, f"delta body is malformed at byte {pos}: {why}")

    def uv() -> int:
        nonlocal pos
        n, pos = columns.read_uvarint(body, pos)
        return n

    def text() -> str:
        nonlocal pos
        n = uv()
        if pos + n > len(body):
            raise columns.Malformed(f"needs {n} more bytes, {len(body) - pos} left")
        try:
            s = body[pos:pos + n].decode("utf-8")
        except UnicodeDecodeError:
            raise columns.Malformed("text is not valid UTF-8") from None
        pos += n
        return s

    def rows(count: int, width: int) -> list[tuple[Value, ...]]:
        nonlocal pos
        if not count:
            return []
        if not width:
            raise columns.Malformed("rows of no columns")
        cols = []
        for _ in range(width):
            col, pos = columns.decode_column(body, pos, count)
            cols.append(col)
        return list(zip(*cols, strict=True))

    if len(body) < _HEAD2.size:
        raise fail(f"needs {_HEAD2.size} bytes, {len(body)} left")
    captured_at, user_version, nschema = _HEAD2.unpack_from(body, 0)
    pos = _HEAD2.size
    cs = ChangeSet(captured_at=captured_at, user_version=user_version)
    try:
        cs.schema = [text() for _ in range(nschema)]
        for _ in range(uv()):
            name, ddl = text(), text()
            cols = [text() for _ in range(uv())]
            pk = [text() for _ in range(uv())]
            nup, ndel = uv(), uv()
            if nup > len(body) or ndel > len(body):
                raise columns.Malformed("more rows than the body has bytes")
            upserts = rows(nup, len(cols))
            deletes = rows(ndel, len(pk))
            if name in cs.tables:
                raise columns.Malformed(f"table {name!r} appears twice")
            cs.tables[name] = TableChanges(name, ddl, cols, pk, upserts, deletes)
    except columns.Malformed as e:
        raise fail(str(e)) from None
    if pos != len(body):
        raise fail(f"{len(body) - pos} unexpected bytes after the last table")
    return cs


def decode_body(body: bytes, ref: str | None = None, *, version: int = BODY_VERSION) -> ChangeSet:
    """Parse a body of grammar `version` (the envelope version of its document)."""
    if version not in BODY_VERSIONS:
        raise CorruptDocument(ref, f"delta body version {version} is newer than this tgsnap knows "
                                   f"({max(BODY_VERSIONS)}); upgrade tgsnap")
    if version == 3:
        return _decode_v3(bytes(body), ref)
    r = _Reader(body, ref, version)
    if version == 1:
        r.need(_HEAD.size)
        captured_at, ntables = _HEAD.unpack_from(body, 0)
        r.pos = _HEAD.size
        cs = ChangeSet(captured_at=captured_at)
    else:
        r.need(_HEAD2.size)
        captured_at, user_version, nschema = _HEAD2.unpack_from(body, 0)
        r.pos = _HEAD2.size
        cs = ChangeSet(captured_at=captured_at, user_version=user_version)
        cs.schema = [r.text() for _ in range(nschema)]
        ntables = r.u32()
    for _ in range(ntables):
        name = r.text()
        ddl = r.text()
        columns = [r.text() for _ in range(r.u32())]
        pk = [r.text() for _ in range(r.u32())]
        r.need(_COUNTS.size)
        nup, ndel = _COUNTS.unpack_from(body, r.pos)
        r.pos += _COUNTS.size
        upserts = r.rows(nup, len(columns))
        deletes = r.rows(ndel, len(pk))
        if name in cs.tables:
            raise r.fail(f"table {name!r} appears twice")
        cs.tables[name] = TableChanges(name, ddl, columns, pk, upserts, deletes)
    if r.pos != len(body):
        raise r.fail(f"{len(body) - r.pos} unexpected bytes after the last table")
    return cs


def encode_delta(changes: ChangeSet, *, epoch: int, seq: int, prev: bytes = GENESIS, cipher=None,
                 level: int = 3, **envelope_fields) -> bytes:
    """A complete delta document (envelope + compressed body); the body grammar is the envelope's version."""
    version = envelope_fields.get("version", envelope.FORMAT_VERSION)
    body = encode_body(changes, version=version)
    return encode(Kind.DELTA, body, epoch=epoch, seq=seq, prev=prev, cipher=cipher, level=level, **envelope_fields)
