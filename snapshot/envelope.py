"""The document envelope every stored document wears: delta, snapshot part and manifest alike.

A fixed 112-byte little-endian header (see docs/formats.md, "Envelope") followed by the payload. The
payload is the body, zstd-compressed when the `compressed` flag is set, then AES-256-GCM-encrypted when
the `encrypted` flag is set. The header says what the document is, where it sits in the chain and how to
check it, and carries its own CRC so a damaged header is told apart from a damaged payload.
"""

from __future__ import annotations

import enum
import hashlib
import struct
import zlib
from dataclasses import dataclass

import zstandard

from snapshot.cipher import KEY_ID_SIZE, OVERHEAD, Cipher
from snapshot.errors import CorruptDocument, EncryptionError

MAGIC = b"TGSN"
FORMAT_VERSION = 1
#: hash standing in for "no predecessor" (the first delta ever links to it).
GENESIS = bytes(32)

# magic, version, kind, flags, epoch, seq, payload length, payload sha256, predecessor, key id, reserved
_HEAD = struct.Struct("<4sHBBQQQ32s32s8sI")
_CRC = struct.Struct("<I")
HEADER_SIZE = _HEAD.size + _CRC.size  # 112
assert HEADER_SIZE == 112


class Kind(enum.IntEnum):
    DELTA = 1
    SNAPSHOT_PART = 2
    MANIFEST = 3

    @property
    def label(self) -> str:
        return {1: "delta", 2: "snapshot part", 3: "manifest"}[int(self)]


FLAG_COMPRESSED = 0x01
FLAG_ENCRYPTED = 0x02
_KNOWN_FLAGS = FLAG_COMPRESSED | FLAG_ENCRYPTED


def overhead(encrypted: bool) -> int:
    """Bytes a document adds around its (compressed) body."""
    return HEADER_SIZE + (OVERHEAD if encrypted else 0)


@dataclass(frozen=True)
class Header:
    version: int
    kind: Kind
    flags: int
    epoch: int
    seq: int
    payload_len: int
    payload_sha256: bytes
    prev_hash: bytes
    key_id: bytes

    @property
    def compressed(self) -> bool:
        return bool(self.flags & FLAG_COMPRESSED)

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & FLAG_ENCRYPTED)

    @property
    def size(self) -> int:
        return HEADER_SIZE + self.payload_len


@dataclass(frozen=True)
class Document:
    header: Header
    #: the body: decrypted and decompressed.
    body: bytes
    #: SHA-256 of the whole stored document: what the next link in a chain points at.
    hash: bytes
    #: bytes as stored.
    size: int


def document_hash(data: bytes | memoryview) -> bytes:
    return hashlib.sha256(data).digest()


def _aad(head: bytes) -> bytes:
    # Everything in the header known before encryption: all but the payload checksum (and the CRC).
    return head[0:32] + head[64:108]


def encode(kind: Kind, body: bytes | memoryview, *, epoch: int, seq: int, prev: bytes = GENESIS,
           cipher: Cipher | None = None, compress: bool = True, level: int = 3) -> bytes:
    """Wrap `body` into a stored document."""
    if len(prev) != 32:
        raise ValueError("predecessor hash must be 32 bytes")
    flags = 0
    payload: bytes | memoryview = body
    if compress:
        payload = zstandard.ZstdCompressor(level=level, write_content_size=True).compress(body)
        flags |= FLAG_COMPRESSED
    kid = bytes(KEY_ID_SIZE)
    if cipher is not None:
        flags |= FLAG_ENCRYPTED
        kid = cipher.key_id
        length = len(payload) + OVERHEAD
        pre = _HEAD.pack(MAGIC, FORMAT_VERSION, int(kind), flags, epoch, seq, length, bytes(32), prev, kid, 0)
        payload = cipher.encrypt(bytes(payload), _aad(pre))
    head = _HEAD.pack(MAGIC, FORMAT_VERSION, int(kind), flags, epoch, seq, len(payload),
                      hashlib.sha256(payload).digest(), prev, kid, 0)
    return b"".join((head, _CRC.pack(zlib.crc32(head)), payload))


def read_header(data: bytes | memoryview, ref: str | None = None) -> Header:
    """Parse and check the header alone (magic, version, size, CRC); the payload is not touched."""
    n = len(data)
    if n < len(MAGIC) or bytes(data[:4]) != MAGIC:
        raise CorruptDocument(ref, "not a tgsnap document (bad magic; expected b'TGSN' at offset 0)")
    if n < 6:
        raise CorruptDocument(ref, f"truncated: {n} bytes, the header alone needs {HEADER_SIZE}")
    (version,) = struct.unpack_from("<H", data, 4)
    if version > FORMAT_VERSION:
        raise CorruptDocument(ref, f"format version {version} is newer than this reader supports "
                                   f"({FORMAT_VERSION}): written by a newer tgsnap (upgrade tgsnap to read it), "
                                   "or the header is corrupt")
    if n < HEADER_SIZE:
        raise CorruptDocument(ref, f"truncated: {n} bytes, the header alone needs {HEADER_SIZE}")
    head = bytes(data[:_HEAD.size])
    (crc,) = _CRC.unpack_from(data, _HEAD.size)
    if zlib.crc32(head) != crc:
        raise CorruptDocument(ref, "header checksum mismatch: the header is corrupt")
    _magic, version, kind, flags, epoch, seq, plen, psha, prev, kid, _reserved = _HEAD.unpack(head)
    if version == 0:
        raise CorruptDocument(ref, "format version 0 does not exist: the header is corrupt")
    try:
        kind = Kind(kind)
    except ValueError:
        raise CorruptDocument(ref, f"unknown document kind {kind}") from None
    if flags & ~_KNOWN_FLAGS:
        raise CorruptDocument(ref, f"unknown flags 0x{flags:02x}: written by a newer tgsnap?")
    return Header(version, kind, flags, epoch, seq, plen, psha, prev, kid)


def decode(data: bytes | memoryview, *, ref: str | None = None, cipher: Cipher | None = None,
           expect: Kind | None = None, allow_plaintext: bool = False) -> Document:
    """Verify and open a stored document.

    Raises CorruptDocument (foreign bytes, newer version, truncation, checksum, wrong kind, bad zstd) or
    EncryptionError (encrypted and no key, another key, tampering, plaintext where a key is configured
    unless `allow_plaintext`). Both name `ref`.
    """
    h = read_header(data, ref)
    what = f"document {ref!r}" if ref is not None else "document"
    if expect is not None and h.kind != expect:
        raise CorruptDocument(ref, f"expected a {expect.label} document, found a {h.kind.label}")
    n = len(data)
    if n < h.size:
        raise CorruptDocument(ref, f"truncated: {n} bytes stored, the header says {h.size}")
    if n > h.size:
        raise CorruptDocument(ref, f"{n - h.size} unexpected bytes after the payload ({n} stored, "
                                   f"the header says {h.size})")
    mv = memoryview(data)
    payload = mv[HEADER_SIZE:]
    if hashlib.sha256(payload).digest() != h.payload_sha256:
        raise CorruptDocument(ref, "payload checksum mismatch: the payload is corrupt")
    if h.encrypted:
        if cipher is None:
            raise EncryptionError(f"{what} is encrypted (key id {h.key_id.hex()}) but no encryption key is "
                                  "configured: set TGSNAP_ENCRYPTION_KEY")
        if cipher.key_id != h.key_id:
            raise EncryptionError(f"{what} was encrypted with a different key (key id {h.key_id.hex()}; the "
                                  f"configured key has id {cipher.key_id.hex()}): wrong TGSNAP_ENCRYPTION_KEY")
        body = cipher.decrypt(payload, _aad(bytes(mv[:_HEAD.size])), what=what)
    else:
        if cipher is not None and not allow_plaintext:
            raise EncryptionError(f"{what} is not encrypted but an encryption key is configured: refusing "
                                  "unauthenticated data (to migrate plaintext storage, restore without the "
                                  "key or allow plaintext)")
        body = payload
    if h.compressed:
        try:
            body = zstandard.ZstdDecompressor().decompress(body)
        except zstandard.ZstdError as e:
            raise CorruptDocument(ref, f"payload does not decompress ({e})") from None
    else:
        body = bytes(body)
    return Document(h, body, document_hash(mv), n)
