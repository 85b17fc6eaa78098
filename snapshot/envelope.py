"""The document envelope every stored document wears: delta, snapshot part and manifest alike.

A fixed little-endian header (see docs/formats.md, "Envelope") followed by the payload. The payload is
the body, zstd-compressed when the `compressed` flag is set, then AES-256-GCM-encrypted when the
`encrypted` flag is set. The header says what the document is, where it sits in the chain, which
storage and which claim (writer incarnation) wrote it, and how to check it; it carries its own CRC so a
damaged header is told apart from a damaged payload.

Three versions exist. Version 1 (112-byte header) has no storage or claim identity; it is still read so
storage written by older tgsnap restores. Version 2 (144-byte header) adds the storage id and claim id,
which let a reader refuse documents of a fork, of a foreign storage, or of a fenced writer whose late
upload landed after its successor's claim (docs/formats.md, "Claim protocol"). Version 3 is what
writers write: the header of version 2, unchanged; the version says that a delta's body is of grammar
3 (column by column, snapshot/delta.py), since the body grammar is tied to the envelope version.
"""

from __future__ import annotations

import enum
import hashlib
import struct
import threading
import zlib
from dataclasses import dataclass

import zstandard

from snapshot.cipher import KEY_ID_SIZE, OVERHEAD, Cipher
from snapshot.errors import CorruptDocument, EncryptionError

MAGIC = b"TGSN"
#: the version writers write; readers accept 1 ..= FORMAT_VERSION.
FORMAT_VERSION = 3
#: hash standing in for "no predecessor" (the first delta ever links to it).
GENESIS = bytes(32)
#: the storage / claim id of documents that have none (version 1 documents).
NO_ID = bytes(16)
ID_SIZE = 16

# v1: magic, version, kind, flags, epoch, seq, payload length, payload sha256, predecessor, key id, reserved
_HEAD_V1 = struct.Struct("<4sHBBQQQ32s32s8sI")
# v2: ... key id, storage id, claim id, reserved
_HEAD_V2 = struct.Struct("<4sHBBQQQ32s32s8s16s16sI")
_CRC = struct.Struct("<I")
HEADER_SIZE_V1 = _HEAD_V1.size + _CRC.size  # 112
HEADER_SIZE_V2 = _HEAD_V2.size + _CRC.size  # 144
#: the header size of what writers write (version FORMAT_VERSION).
HEADER_SIZE = HEADER_SIZE_V2
assert HEADER_SIZE_V1 == 112 and HEADER_SIZE_V2 == 144
_HEADS = {1: _HEAD_V1, 2: _HEAD_V2, 3: _HEAD_V2}  # 3: the v2 header, delta body v3


def header_size(version: int) -> int:
    """Header bytes (CRC included) of a document of envelope `version`."""
    return _HEADS[version].size + _CRC.size


class Kind(enum.IntEnum):
    DELTA = 1
    SNAPSHOT_PART = 2
    MANIFEST = 3

    @property
    def label(self) -> str:
        return {1: "delta", 2: "snapshot part", 3: "manifest"}[int(self)]


FLAG_COMPRESSED = 0x01
FLAG_ENCRYPTED = 0x02
#: a delta that is not the last document of its cut (an oversize change set split over several
#: documents); version 2 only, deltas only.
FLAG_CONTINUED = 0x04
_KNOWN_FLAGS = {1: FLAG_COMPRESSED | FLAG_ENCRYPTED, 2: FLAG_COMPRESSED | FLAG_ENCRYPTED | FLAG_CONTINUED}
_KNOWN_FLAGS[3] = _KNOWN_FLAGS[2]


def overhead(encrypted: bool) -> int:
    """Bytes a document adds around its (compressed) body, as writers write it."""
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
    #: random id of the storage (fixed at its first claim); NO_ID in version 1 documents.
    storage_id: bytes = NO_ID
    #: random id of the claim (writer incarnation) that wrote the document; NO_ID in version 1.
    claim_id: bytes = NO_ID

    @property
    def compressed(self) -> bool:
        return bool(self.flags & FLAG_COMPRESSED)

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & FLAG_ENCRYPTED)

    @property
    def continued(self) -> bool:
        return bool(self.flags & FLAG_CONTINUED)

    @property
    def header_size(self) -> int:
        return header_size(self.version)

    @property
    def size(self) -> int:
        return self.header_size + self.payload_len


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


def _aad(head: bytes, version: int) -> bytes:
    # Everything in the header known before encryption: all but the payload checksum (and the CRC).
    if version == 1:
        return head[0:32] + head[64:108]
    return head[0:32] + head[64:140]


def _check_id(name: str, value: bytes) -> bytes:
    value = bytes(value)
    if len(value) != ID_SIZE:
        raise ValueError(f"{name} must be {ID_SIZE} bytes, got {len(value)}")
    return value


# A zstd context costs more to set up than a small delta costs to compress (14 µs against 2 µs measured
# here), and a writer encodes a delta per cut, up to hundreds a second: one context per level and thread
# (contexts are not thread-safe; documents are encoded on the loop and in worker threads).
_contexts = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    made = _contexts.__dict__.setdefault("compressors", {})
    if level not in made:
        made[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return made[level]


def _decompressor() -> zstandard.ZstdDecompressor:
    if not hasattr(_contexts, "decompressor"):
        _contexts.decompressor = zstandard.ZstdDecompressor()
    return _contexts.decompressor


def encode(kind: Kind, body: bytes | memoryview, *, epoch: int, seq: int, prev: bytes = GENESIS,
           cipher: Cipher | None = None, compress: bool = True, level: int = 3,
           storage_id: bytes = NO_ID, claim_id: bytes = NO_ID, continued: bool = False,
           version: int = FORMAT_VERSION) -> bytes:
    """Wrap `body` into a stored document.

    `storage_id` and `claim_id` (16 bytes each) say which storage and which claim wrote it; writers
    always pass both. `continued` marks a delta that is not the last of its cut. `version=1` writes the
    old 112-byte header (no ids, no continued flag): only for tests and fixtures of old storage.
    """
    if len(prev) != 32:
        raise ValueError("predecessor hash must be 32 bytes")
    storage_id, claim_id = _check_id("storage_id", storage_id), _check_id("claim_id", claim_id)
    if version not in _HEADS:
        raise ValueError(f"envelope version {version} cannot be written (known: {sorted(_HEADS)})")
    flags = 0
    if continued:
        if version < 2 or kind != Kind.DELTA:
            raise ValueError("only a delta of version 2 or later can be marked continued")
        flags |= FLAG_CONTINUED
    if version == 1 and (storage_id != NO_ID or claim_id != NO_ID):
        raise ValueError("a version 1 envelope has no storage id or claim id")
    payload: bytes | memoryview = body
    if compress:
        payload = _compressor(level).compress(body)
        flags |= FLAG_COMPRESSED
    kid = bytes(KEY_ID_SIZE)

    def pack(length: int, sha: bytes) -> bytes:
        if version == 1:
            return _HEAD_V1.pack(MAGIC, 1, int(kind), flags, epoch, seq, length, sha, prev, kid, 0)
        return _HEAD_V2.pack(MAGIC, version, int(kind), flags, epoch, seq, length, sha, prev, kid,
                             storage_id, claim_id, 0)

    if cipher is not None:
        flags |= FLAG_ENCRYPTED
        kid = cipher.key_id
        pre = pack(len(payload) + OVERHEAD, bytes(32))
        payload = cipher.encrypt(bytes(payload), _aad(pre, version))
    head = pack(len(payload), hashlib.sha256(payload).digest())
    return b"".join((head, _CRC.pack(zlib.crc32(head)), payload))


def read_header(data: bytes | memoryview, ref: str | None = None) -> Header:
    """Parse and check the header alone; the payload is not touched.

    Order (docs/formats.md): size and magic, version, size for that version's header, CRC, kind and
    flags (and, in version 2, the reserved word).
    """
    n = len(data)
    if n < len(MAGIC) or bytes(data[:4]) != MAGIC:
        raise CorruptDocument(ref, "not a tgsnap document (bad magic; expected b'TGSN' at offset 0)")
    if n < 6:
        raise CorruptDocument(ref, f"truncated: {n} bytes, the header alone needs at least {HEADER_SIZE_V1}")
    (version,) = struct.unpack_from("<H", data, 4)
    if version == 0:
        raise CorruptDocument(ref, "format version 0 does not exist: the header is corrupt")
    if version > FORMAT_VERSION:
        raise CorruptDocument(ref, f"format version {version} is newer than this reader supports "
                                   f"({FORMAT_VERSION}): written by a newer tgsnap (upgrade tgsnap to read it), "
                                   "or the header is corrupt")
    st = _HEADS[version]
    hsize = st.size + _CRC.size
    if n < hsize:
        raise CorruptDocument(ref, f"truncated: {n} bytes, the version {version} header alone needs {hsize}")
    head = bytes(data[:st.size])
    (crc,) = _CRC.unpack_from(data, st.size)
    if zlib.crc32(head) != crc:
        raise CorruptDocument(ref, "header checksum mismatch: the header is corrupt")
    if version == 1:
        _magic, _v, kind, flags, epoch, seq, plen, psha, prev, kid, _reserved = st.unpack(head)
        sid = cid = NO_ID
    else:
        _magic, _v, kind, flags, epoch, seq, plen, psha, prev, kid, sid, cid, reserved = st.unpack(head)
        if reserved:
            raise CorruptDocument(ref, f"reserved header word is 0x{reserved:08x}, must be zero: "
                                       "the header is corrupt")
    try:
        kind = Kind(kind)
    except ValueError:
        raise CorruptDocument(ref, f"unknown document kind {kind}") from None
    if flags & ~_KNOWN_FLAGS[version]:
        raise CorruptDocument(ref, f"unknown flags 0x{flags:02x}: written by a newer tgsnap?")
    if flags & FLAG_CONTINUED and kind != Kind.DELTA:
        raise CorruptDocument(ref, f"a {kind.label} cannot carry the continued flag: the header is corrupt")
    return Header(version, kind, flags, epoch, seq, plen, psha, prev, kid, sid, cid)


def decode(data: bytes | memoryview, *, ref: str | None = None, cipher: Cipher | None = None,
           expect: Kind | None = None, allow_plaintext: bool = False) -> Document:
    """Verify and open a stored document.

    Raises CorruptDocument (foreign bytes, newer version, truncation, checksum, wrong kind, bad zstd) or
    EncryptionError (encrypted and no key, another key, tampering, plaintext where a key is configured
    unless `allow_plaintext`). Both name `ref`.
    """
    h, body = _open(data, ref, cipher, expect, allow_plaintext, recorded=False)
    return Document(h, bytes(body), document_hash(data), len(data))


def decode_recorded(data: bytes | memoryview, *, ref: str | None = None, cipher: Cipher | None = None,
                    expect: Kind | None = None, allow_plaintext: bool = False) -> tuple[Header, bytes | memoryview]:
    """Open a document whose whole-document SHA-256 the caller has already checked against an
    authoritative record (a manifest's part entry): every check of `decode` but the payload checksum
    (docs/formats.md §1 step 8), which that hash covers, since the header holding the checksum is part of
    the hashed bytes; and an uncompressed, unencrypted body is a view into `data`, not a copy. Snapshot
    parts are read this way: each byte is hashed once instead of three times."""
    return _open(data, ref, cipher, expect, allow_plaintext, recorded=True)


def _open(data: bytes | memoryview, ref: str | None, cipher: Cipher | None, expect: Kind | None,
          allow_plaintext: bool, *, recorded: bool) -> tuple[Header, bytes | memoryview]:
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
    payload = mv[h.header_size:]
    if not recorded and hashlib.sha256(payload).digest() != h.payload_sha256:
        raise CorruptDocument(ref, "payload checksum mismatch: the payload is corrupt")
    body: bytes | memoryview
    if h.encrypted:
        if cipher is None:
            raise EncryptionError(f"{what} is encrypted (key id {h.key_id.hex()}) but no encryption key is "
                                  "configured: set TGSNAP_ENCRYPTION_KEY")
        if cipher.key_id != h.key_id:
            raise EncryptionError(f"{what} was encrypted with a different key (key id {h.key_id.hex()}; the "
                                  f"configured key has id {cipher.key_id.hex()}): wrong TGSNAP_ENCRYPTION_KEY")
        body = cipher.decrypt(payload, _aad(bytes(mv[:h.header_size - _CRC.size]), h.version), what=what)
    else:
        if cipher is not None and not allow_plaintext:
            raise EncryptionError(f"{what} is not encrypted but an encryption key is configured: refusing "
                                  "unauthenticated data (to migrate plaintext storage, restore without the "
                                  "key or allow plaintext)")
        body = payload
    if h.compressed:
        try:
            body = _decompressor().decompress(body)
        except zstandard.ZstdError as e:
            raise CorruptDocument(ref, f"payload does not decompress ({e})") from None
    return h, body
