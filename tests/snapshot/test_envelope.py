"""The envelope: what goes in comes out, and every kind of damage is caught and named."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapshot.cipher import Cipher
from snapshot.envelope import (
    FORMAT_VERSION,
    GENESIS,
    HEADER_SIZE,
    HEADER_SIZE_V1,
    NO_ID,
    Kind,
    decode,
    document_hash,
    encode,
    overhead,
    read_header,
)
from snapshot.errors import CorruptDocument, EncryptionError

KEY = bytes(range(32))
PREV = bytes(range(100, 132))


def _doc(body=b"hello tgsnap " * 20, **kw):
    kw = {"epoch": 3, "seq": 42, "prev": PREV, **kw}
    return encode(Kind.DELTA, body, **kw)


@pytest.mark.parametrize("cipher", [None, Cipher(KEY)])
@pytest.mark.parametrize("compress", [True, False])
def test_round_trip(cipher, compress):
    body = b"\x00body\xff" * 1000
    data = _doc(body, cipher=cipher, compress=compress)
    doc = decode(data, ref="r1", cipher=cipher, expect=Kind.DELTA)
    assert doc.body == body
    assert (doc.header.kind, doc.header.epoch, doc.header.seq, doc.header.prev_hash) == (Kind.DELTA, 3, 42, PREV)
    assert doc.header.compressed is compress and doc.header.encrypted is (cipher is not None)
    assert doc.hash == document_hash(data) and doc.size == len(data)
    assert data[:4] == b"TGSN" and len(data) == doc.header.size


SID = bytes(range(16))
CID = bytes(range(16, 32))


def test_header_layout_is_as_documented():
    data = encode(Kind.SNAPSHOT_PART, b"payload", epoch=7, seq=9, prev=PREV, compress=False,
                  storage_id=SID, claim_id=CID)
    magic, version, kind, flags, epoch, seq, plen = struct.unpack_from("<4sHBBQQQ", data, 0)
    assert (magic, version, kind, flags, epoch, seq, plen) == (b"TGSN", 3, 2, 0, 7, 9, 7)
    assert FORMAT_VERSION == 3 and HEADER_SIZE == 144
    assert data[64:96] == PREV and data[96:104] == bytes(8)
    assert data[104:120] == SID and data[120:136] == CID and data[136:140] == bytes(4)
    assert struct.unpack_from("<I", data, 140)[0] == zlib.crc32(data[:140])
    assert data[HEADER_SIZE:] == b"payload"
    assert overhead(False) == 144 and overhead(True) == 144 + 28
    h = decode(data).header
    assert (h.version, h.storage_id, h.claim_id, h.header_size, h.continued) == (3, SID, CID, 144, False)


def test_version_2_layout_is_the_version_3_header():
    """Version 3 changed the delta body grammar only: a version 2 header is still read, byte for byte
    the same layout, and version 2 can still be written (fixtures of old storage)."""
    v2 = encode(Kind.DELTA, b"rows", epoch=7, seq=9, prev=PREV, storage_id=SID, claim_id=CID, version=2,
                continued=True)
    v3 = encode(Kind.DELTA, b"rows", epoch=7, seq=9, prev=PREV, storage_id=SID, claim_id=CID, continued=True)
    assert struct.unpack_from("<H", v2, 4)[0] == 2 and struct.unpack_from("<H", v3, 4)[0] == 3
    assert v2[6:140] == v3[6:140]
    for data, version in ((v2, 2), (v3, 3)):
        h = decode(data).header
        assert (h.version, h.storage_id, h.claim_id, h.continued, h.header_size) == (version, SID, CID, True, 144)


def test_version_1_layout_is_still_read():
    """The old 112-byte header (what tgsnap wrote before storage ids): readers accept it unchanged."""
    data = encode(Kind.SNAPSHOT_PART, b"payload", epoch=7, seq=9, prev=PREV, compress=False, version=1)
    magic, version, kind, flags, epoch, seq, plen = struct.unpack_from("<4sHBBQQQ", data, 0)
    assert (magic, version, kind, flags, epoch, seq, plen) == (b"TGSN", 1, 2, 0, 7, 9, 7)
    assert data[64:96] == PREV and data[96:104] == bytes(8) and data[104:108] == bytes(4)
    assert struct.unpack_from("<I", data, 108)[0] == zlib.crc32(data[:108])
    assert data[HEADER_SIZE_V1:] == b"payload"
    doc = decode(data)
    assert doc.body == b"payload" and doc.header.version == 1 and doc.header.size == len(data)
    assert doc.header.storage_id == NO_ID and doc.header.claim_id == NO_ID


@pytest.mark.parametrize("version", [1, 2, 3])
def test_encrypted_round_trip_per_version(version):
    c = Cipher(KEY)
    ids = {"storage_id": SID, "claim_id": CID} if version >= 2 else {}
    data = encode(Kind.DELTA, b"rows" * 50, epoch=1, seq=2, cipher=c, version=version, **ids)
    assert decode(data, cipher=c).body == b"rows" * 50


def test_ids_are_bound_to_the_ciphertext():
    """Re-labelling an encrypted v2 document as another claim (CRC fixed) fails authentication."""
    c = Cipher(KEY)
    data = encode(Kind.DELTA, b"rows", epoch=1, seq=2, cipher=c, storage_id=SID, claim_id=CID)
    forged = _rewrite_header(data, 120, "16s", bytes(16))
    with pytest.raises(EncryptionError, match="authentication failed"):
        decode(forged, cipher=c)


def test_continued_flag():
    data = _doc(continued=True)
    assert decode(data).header.continued
    with pytest.raises(ValueError):
        encode(Kind.SNAPSHOT_PART, b"x", epoch=1, seq=1, continued=True)
    with pytest.raises(ValueError):
        encode(Kind.DELTA, b"x", epoch=1, seq=1, continued=True, version=1)
    with pytest.raises(CorruptDocument, match="cannot carry the continued flag"):
        decode(_rewrite_header(encode(Kind.MANIFEST, b"{}", epoch=1, seq=1), 7, "<B", 0x05))
    v1 = encode(Kind.DELTA, b"x", epoch=1, seq=1, version=1)
    head = bytearray(v1[:104])
    head[7] |= 0x04
    bad = bytes(head) + v1[104:108] + struct.pack("<I", zlib.crc32(bytes(head) + v1[104:108])) + v1[112:]
    with pytest.raises(CorruptDocument, match="unknown flags"):
        decode(bad)


def test_reserved_word_must_be_zero():
    with pytest.raises(CorruptDocument, match="reserved header word"):
        decode(_rewrite_header(_doc(), 136, "<I", 1))


def test_bad_ids_are_refused_when_writing():
    with pytest.raises(ValueError, match="16 bytes"):
        encode(Kind.DELTA, b"x", epoch=1, seq=1, storage_id=b"short")
    with pytest.raises(ValueError, match="no storage id"):
        encode(Kind.DELTA, b"x", epoch=1, seq=1, storage_id=SID, version=1)


def test_empty_body_and_genesis_default():
    doc = decode(encode(Kind.MANIFEST, b"", epoch=0, seq=0))
    assert doc.body == b"" and doc.header.prev_hash == GENESIS


def test_foreign_bytes_are_named():
    for junk in (b"", b"PK\x03\x04 a zip file", b'{"json": true}' * 20):
        with pytest.raises(CorruptDocument, match="not a tgsnap document") as e:
            decode(junk, ref="msg-17")
        assert e.value.ref == "msg-17" and "msg-17" in str(e.value)


def _rewrite_header(data: bytes, offset: int, fmt: str, value) -> bytes:
    head = bytearray(data[:140])
    struct.pack_into(fmt, head, offset, value)
    return bytes(head) + struct.pack("<I", zlib.crc32(bytes(head))) + data[144:]


def test_newer_version_says_so():
    data = _rewrite_header(_doc(), 4, "<H", FORMAT_VERSION + 1)
    with pytest.raises(CorruptDocument, match="newer tgsnap"):
        decode(data, ref="r")
    # checked before the size: a short document of an unknown version still says "newer", not "truncated"
    with pytest.raises(CorruptDocument, match="newer tgsnap"):
        decode(data[:20], ref="r")
    with pytest.raises(CorruptDocument, match="version 0 does not exist"):
        decode(_rewrite_header(_doc(), 4, "<H", 0), ref="r")


def test_version_1_header_size_is_enough_for_version_1_only():
    v1 = encode(Kind.DELTA, b"", epoch=1, seq=1, compress=False, version=1)
    assert len(v1) == 112 and decode(v1).body == b""
    v2 = _doc()
    with pytest.raises(CorruptDocument, match="truncated: 112 bytes, the version 3 header alone needs 144"):
        decode(v2[:112])


def test_unknown_kind_and_flags():
    with pytest.raises(CorruptDocument, match="unknown document kind 9"):
        decode(_rewrite_header(_doc(), 6, "<B", 9))
    with pytest.raises(CorruptDocument, match="unknown flags"):
        decode(_rewrite_header(_doc(), 7, "<B", 0x81))


def test_wrong_kind_is_named():
    with pytest.raises(CorruptDocument, match="expected a snapshot part document, found a delta"):
        decode(_doc(), ref="x", expect=Kind.SNAPSHOT_PART)


def test_truncation_and_trailing_bytes():
    data = _doc()
    with pytest.raises(CorruptDocument, match="truncated"):
        decode(data[:50])
    with pytest.raises(CorruptDocument, match="truncated"):
        decode(data[:-1])
    with pytest.raises(CorruptDocument, match="unexpected bytes after the payload"):
        decode(data + b"\x00")


def test_header_and_payload_damage_are_told_apart():
    data = _doc()
    flipped_header = data[:20] + bytes([data[20] ^ 1]) + data[21:]
    with pytest.raises(CorruptDocument, match="header checksum"):
        decode(flipped_header)
    flipped_payload = data[:-3] + bytes([data[-3] ^ 1]) + data[-2:]
    with pytest.raises(CorruptDocument, match="payload checksum"):
        decode(flipped_payload)


def test_read_header_does_not_touch_the_payload():
    data = _doc()
    h = read_header(data[:HEADER_SIZE] + b"garbage that fails the payload checksum")
    assert h.seq == 42 and h.payload_len == len(data) - HEADER_SIZE


@settings(max_examples=300, deadline=None)
@given(data=st.data(), encrypted=st.booleans())
def test_any_single_byte_damage_is_detected(data, encrypted):
    cipher = Cipher(KEY) if encrypted else None
    doc = _doc(b"some body bytes" * 5, cipher=cipher)
    i = data.draw(st.integers(0, len(doc) - 1), label="offset")
    x = data.draw(st.integers(1, 255), label="xor")
    bad = doc[:i] + bytes([doc[i] ^ x]) + doc[i + 1:]
    with pytest.raises((CorruptDocument, EncryptionError)):
        decode(bad, ref="r", cipher=cipher)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_truncation_or_extension_is_detected(data):
    doc = _doc(b"x" * 300)
    n = data.draw(st.integers(0, len(doc) - 1))
    with pytest.raises(CorruptDocument):
        decode(doc[:n])
    extra = data.draw(st.binary(min_size=1, max_size=20))
    with pytest.raises(CorruptDocument):
        decode(doc + extra)


@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=3000), epoch=st.integers(0, 2**64 - 1), seq=st.integers(0, 2**64 - 1),
       prev=st.binary(min_size=32, max_size=32), kind=st.sampled_from(list(Kind)))
def test_round_trip_property(body, epoch, seq, prev, kind):
    doc = decode(encode(kind, body, epoch=epoch, seq=seq, prev=prev), expect=kind)
    assert (doc.body, doc.header.epoch, doc.header.seq, doc.header.prev_hash) == (body, epoch, seq, prev)
