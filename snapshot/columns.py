"""The column codec of delta body version 3 (docs/formats.md, "Delta body", version 3).

A table's rows travel column by column: all values of one column together, so zstd sees like next to
like (keys next to keys, names next to names) instead of a tag, a key, a name, a counter, a tag, ...
Integers are stored as byte planes (all lowest bytes, then all second bytes, ...; the planes above the
widest value are left out), optionally as differences from the previous value (captured keys come in
key order, so their differences are small) and zigzag-folded when negative. Text columns that repeat
(first names) are stored as a dictionary of distinct values plus an index column. A column whose values
are not all of one storage class (SQLite columns are dynamically typed) carries one tag byte per value
and one sub-column per storage class present.

Every step is a C-level bulk operation (struct over whole columns, extended slices, `map` with
`operator` functions, one UTF-8 encode per column): no Python loop per value on the common paths, so
the encoder stays cheap on the flusher's thread and the decoder fast on a restore replaying a chain.
"""

from __future__ import annotations

import operator
import struct
from collections import Counter
from itertools import accumulate, compress, repeat
from typing import Any

from snapshot.changes import RawText, Value

# Column kinds (the first byte of a column). 0-5 are uniform columns and equal the value tags of
# bodies 1-2, so a mixed column's tags name the same kinds.
NULL, INT, FLOAT, TEXT, BLOB, RAW_TEXT, TEXT_DICT, MIXED = range(8)
_UNIFORM = (NULL, INT, FLOAT, TEXT, BLOB, RAW_TEXT)

#: the integer header byte: low 4 bits the plane count (0..8), these two flags above them.
DELTA = 0x80
ZIGZAG = 0x40
_WIDTH = 0x0F

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

_KIND_OF_TYPE: dict[type, int] = {type(None): NULL, int: INT, bool: INT, float: FLOAT, str: TEXT, bytes: BLOB,
                                  bytearray: BLOB, memoryview: BLOB, RawText: RAW_TEXT}


class Malformed(Exception):
    """The column bytes do not decode (the caller names the document and position)."""


# -- variable-length unsigned integers (LEB128), for counts and lengths in the structure ----------

def uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if pos >= len(buf):
            raise Malformed("a length runs past the end of the body")
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, pos
        shift += 7
        if shift > 63:
            raise Malformed("a length is longer than 9 bytes")


# -- integers -----------------------------------------------------------------------------------

def _bits(values: list[int]) -> int:
    return sum(map(int.bit_length, values))


def _zigzag(values: list[int]) -> list[int]:
    return list(map(operator.xor, map(operator.lshift, values, repeat(1)), map(operator.rshift, values, repeat(63))))


def _unzigzag(values: list[int]) -> list[int]:
    return list(map(operator.xor, map(operator.rshift, values, repeat(1)),
                    map(operator.neg, map(operator.and_, values, repeat(1)))))


def encode_ints(values: list[int], out: list[bytes], *, allow_delta: bool = True) -> None:
    """`values` (each within int64; the caller checked) as a header byte and byte planes."""
    n = len(values)
    if not n:
        out.append(b"\x00")
        return
    flags = 0
    if allow_delta and n > 1:
        diffs = [values[0], *map(operator.sub, values[1:], values[:-1])]
        # Differences pay when they are much narrower than the values (ascending keys); never when
        # one overflows int64 (the zigzag fold needs it inside).
        if _bits(diffs) * 4 < _bits(values) * 3 and min(diffs) >= _INT64_MIN and max(diffs) <= _INT64_MAX:
            values, flags = diffs, DELTA
    if min(values) < 0:
        values, flags = _zigzag(values), flags | ZIGZAG
    width = (max(values).bit_length() + 7) // 8
    out.append(bytes([flags | width]))
    if width:
        packed = struct.pack(f"<{n}Q", *values)
        out.extend(packed[i::8] for i in range(width))


def decode_ints(buf: bytes, pos: int, n: int) -> tuple[list[int], int]:
    if pos >= len(buf):
        raise Malformed("an integer column runs past the end of the body")
    head = buf[pos]
    pos += 1
    width = head & _WIDTH
    if head & ~(DELTA | ZIGZAG | _WIDTH) or width > 8:
        raise Malformed(f"unknown integer column header 0x{head:02x}")
    if not n:
        if head:
            raise Malformed("an empty integer column has a non-zero header")
        return [], pos
    end = pos + width * n
    if end > len(buf):
        raise Malformed("an integer column runs past the end of the body")
    if width == 0:
        values = [0] * n
    else:
        whole = bytearray(8 * n)
        for i in range(width):
            whole[i::8] = buf[pos + i * n:pos + (i + 1) * n]
        values = list(struct.unpack(f"<{n}Q", whole))
    if head & ZIGZAG:
        values = _unzigzag(values)
    elif values and max(values) > _INT64_MAX:
        raise Malformed("an integer without the zigzag flag is over 2**63 - 1")
    if head & DELTA:
        values = list(accumulate(values))
        if min(values) < _INT64_MIN or max(values) > _INT64_MAX:
            raise Malformed("integer differences add up to a value outside 64 bits")
    return values, end


# -- columns ------------------------------------------------------------------------------------

def _lengths_and_blob(parts: list[bytes], out: list[bytes]) -> None:
    encode_ints(list(map(len, parts)), out, allow_delta=False)
    out.append(b"".join(parts))


def _encode_texts(col: list[str], out: list[bytes]) -> None:
    # Lengths in code points and one UTF-8 encode of the whole column: the reader decodes once and
    # slices, so there is no per-value decode call on either side.
    try:
        blob = "".join(col).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text with a lone surrogate cannot be stored") from None
    encode_ints(list(map(len, col)), out, allow_delta=False)
    out.append(uvarint(len(blob)))
    out.append(blob)


def _encode_uniform(kind: int, col: list[Any], out: list[bytes], has_bool: bool = True) -> None:
    n = len(col)
    if kind == INT:
        if min(col) < _INT64_MIN or max(col) > _INT64_MAX:
            bad = next(v for v in col if not _INT64_MIN <= v <= _INT64_MAX)
            raise ValueError(f"integer {bad} does not fit SQLite's 64 bits")
        encode_ints(list(map(int, col)) if has_bool else col, out)
    elif kind == FLOAT:
        packed = struct.pack(f"<{n}d", *col)
        out.extend(packed[i::8] for i in range(8))
    elif kind == TEXT:
        _encode_texts(col, out)
    elif kind in (BLOB, RAW_TEXT):
        _lengths_and_blob([v if type(v) is bytes else bytes(v) for v in col], out)
    # NULL: nothing but the kind


def encode_column(col: list[Value], out: list[bytes]) -> None:
    """One column of len(col) ≥ 1 values: its kind byte, then its data."""
    kinds = set(map(type, col))
    try:
        tags = {_KIND_OF_TYPE[t] for t in kinds}
    except KeyError:
        bad = next(t for t in kinds if t not in _KIND_OF_TYPE)
        raise ValueError(f"{bad.__name__} is not a SQLite value") from None
    if len(tags) == 1:
        kind = tags.pop()
        if kind == TEXT:
            distinct = Counter(col)
            if len(distinct) * 2 <= len(col):
                # Repeating text (first names, states, languages): each distinct value once, most
                # frequent first so the index planes are small numbers, then one index per row.
                order = [v for v, _ in distinct.most_common()]
                index = {v: i for i, v in enumerate(order)}
                out.append(bytes([TEXT_DICT]))
                out.append(uvarint(len(order)))
                _encode_texts(order, out)  # type: ignore[arg-type]
                encode_ints(list(map(index.__getitem__, col)), out, allow_delta=False)
                return
        out.append(bytes([kind]))
        _encode_uniform(kind, col, out, bool in kinds)
        return
    tag_of = _KIND_OF_TYPE.__getitem__
    stream = bytes(map(tag_of, map(type, col)))
    out.append(bytes([MIXED]))
    out.append(stream)
    for kind in sorted(tags):
        _encode_uniform(kind, list(compress(col, map(operator.eq, stream, repeat(kind)))), out)


def _decode_texts(buf: bytes, pos: int, n: int) -> tuple[list[str], int]:
    lengths, pos = decode_ints(buf, pos, n)
    size, pos = read_uvarint(buf, pos)
    end = pos + size
    if end > len(buf):
        raise Malformed("a text column runs past the end of the body")
    try:
        text = buf[pos:end].decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("text is not valid UTF-8") from None
    if sum(lengths) != len(text):
        raise Malformed("text lengths do not add up to the column's text")
    offsets = [0, *accumulate(lengths)]
    return list(map(text.__getitem__, map(slice, offsets, offsets[1:]))), end


def _decode_blobs(buf: bytes, pos: int, n: int) -> tuple[list[bytes], int]:
    lengths, pos = decode_ints(buf, pos, n)
    offsets = list(accumulate(lengths, initial=pos))
    end = offsets[-1]
    if end > len(buf):
        raise Malformed("a blob column runs past the end of the body")
    return list(map(buf.__getitem__, map(slice, offsets, offsets[1:]))), end


def _decode_uniform(kind: int, buf: bytes, pos: int, n: int) -> tuple[list[Any], int]:
    if kind == NULL:
        return [None] * n, pos
    if kind == INT:
        return decode_ints(buf, pos, n)
    if kind == FLOAT:
        end = pos + 8 * n
        if end > len(buf):
            raise Malformed("a float column runs past the end of the body")
        whole = bytearray(8 * n)
        for i in range(8):
            whole[i::8] = buf[pos + i * n:pos + (i + 1) * n]
        return list(struct.unpack(f"<{n}d", whole)), end
    if kind == TEXT:
        return _decode_texts(buf, pos, n)
    blobs, pos = _decode_blobs(buf, pos, n)
    if kind == BLOB:
        return blobs, pos
    raws = []
    for b in blobs:
        try:
            b.decode("utf-8")
        except UnicodeDecodeError:
            raws.append(RawText(b))
        else:  # a writer never uses this kind for valid UTF-8: one value, one spelling
            raise Malformed("a non-UTF-8 text value holds valid UTF-8")
    return raws, pos


def decode_column(buf: bytes, pos: int, n: int) -> tuple[list[Any], int]:
    """The n values of the column at `pos`, and the position after it."""
    if pos >= len(buf):
        raise Malformed("a column runs past the end of the body")
    kind = buf[pos]
    pos += 1
    if kind in _UNIFORM:
        return _decode_uniform(kind, buf, pos, n)
    if kind == TEXT_DICT:
        d, pos = read_uvarint(buf, pos)
        if d > n:
            raise Malformed("a text dictionary is larger than its column")
        words, pos = _decode_texts(buf, pos, d)
        index, pos = decode_ints(buf, pos, n)
        if n and max(index) >= d:
            raise Malformed("a text index points past its dictionary")
        return list(map(words.__getitem__, index)), pos
    if kind == MIXED:
        end = pos + n
        if end > len(buf):
            raise Malformed("a column's tags run past the end of the body")
        stream = buf[pos:end]
        pos = end
        present = set(stream)
        if not present <= set(_UNIFORM):
            raise Malformed(f"unknown value tag {max(present - set(_UNIFORM))}")
        if len(present) < 2:
            raise Malformed("a mixed column holds one storage class")
        parts: dict[int, Any] = {}
        for k in sorted(present):
            vals, pos = _decode_uniform(k, buf, pos, stream.count(k))
            parts[k] = iter(vals)
        return [next(parts[t]) for t in stream], pos
    raise Malformed(f"unknown column kind {kind}")
