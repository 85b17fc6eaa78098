"""Encryption at rest: the right key opens, every wrong situation is refused with a clear message."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest

from snapshot.cipher import Cipher, generate_key, key_id, parse_key
from snapshot.envelope import HEADER_SIZE, Kind, decode, encode
from snapshot.errors import ConfigError, EncryptionError

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))


def _enc(body=b"secret rows " * 10, key=KEY):
    return encode(Kind.DELTA, body, epoch=1, seq=1, cipher=Cipher(key))


def test_right_key_opens_and_plaintext_is_not_visible():
    body = b"secret rows " * 10
    data = _enc(body)
    assert b"secret" not in data
    assert decode(data, cipher=Cipher(KEY)).body == body


def test_missing_key():
    with pytest.raises(EncryptionError, match="encrypted .* no encryption key is configured") as e:
        decode(_enc(), ref="doc-5")
    assert "doc-5" in str(e.value)


def test_wrong_key_is_told_apart_from_corruption():
    with pytest.raises(EncryptionError, match="different key"):
        decode(_enc(), ref="doc-5", cipher=Cipher(OTHER))


def test_key_given_but_data_plain():
    plain = encode(Kind.DELTA, b"rows", epoch=1, seq=1)
    with pytest.raises(EncryptionError, match="not encrypted but an encryption key is configured"):
        decode(plain, cipher=Cipher(KEY))
    assert decode(plain, cipher=Cipher(KEY), allow_plaintext=True).body == b"rows"


def test_tampering_with_a_recomputed_checksum_fails_authentication():
    data = bytearray(_enc())
    data[-5] ^= 1  # change ciphertext, then fix the payload checksum as an attacker would
    struct.pack_into("32s", data, 32, hashlib.sha256(bytes(data[HEADER_SIZE:])).digest())
    import zlib
    struct.pack_into("<I", data, HEADER_SIZE - 4, zlib.crc32(bytes(data[:HEADER_SIZE - 4])))
    with pytest.raises(EncryptionError, match="authentication failed"):
        decode(bytes(data), cipher=Cipher(KEY))


def test_header_is_bound_to_the_ciphertext():
    # Re-label an encrypted delta as seq 2 with a valid CRC: the AAD no longer matches.
    data = bytearray(_enc())
    struct.pack_into("<Q", data, 16, 2)
    import zlib
    struct.pack_into("<I", data, HEADER_SIZE - 4, zlib.crc32(bytes(data[:HEADER_SIZE - 4])))
    with pytest.raises(EncryptionError, match="authentication failed"):
        decode(bytes(data), cipher=Cipher(KEY))


def test_key_never_shows():
    c = Cipher(KEY)
    assert KEY.hex() not in repr(c) and "key_id" in repr(c)
    with pytest.raises(ConfigError) as e:
        Cipher(KEY[:31])
    assert KEY[:31].hex() not in str(e.value)


def test_parse_key_accepts_hex_and_base64_and_explains_errors():
    assert parse_key(KEY.hex()) == KEY
    assert parse_key(base64.b64encode(KEY).decode()) == KEY
    assert parse_key("  " + KEY.hex().upper() + "\n") == KEY
    with pytest.raises(ConfigError, match="32 bytes"):
        parse_key(base64.b64encode(b"short").decode())
    bad = "zz" * 32
    with pytest.raises(ConfigError) as e:
        parse_key(bad)
    assert bad not in str(e.value)


def test_key_ids_are_stable_and_distinct():
    assert key_id(KEY) == key_id(KEY) and key_id(KEY) != key_id(OTHER) and len(key_id(KEY)) == 8
    assert len(generate_key()) == 32 and generate_key() != generate_key()
