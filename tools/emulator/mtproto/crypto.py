"""MTProto 2.0 message encryption, seen from the server's side.

The client encrypts with x = 0 and the server with x = 8
(https://core.telegram.org/mtproto/description#defining-aes-key-and-initialization-vector).
AES-256-IGE comes from Telethon, which uses cryptg when it is installed.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import sha1, sha256

from telethon.crypto import AES

AUTH_KEY_SIZE = 256


class CryptoError(Exception):
    """An incoming packet that does not decrypt to a valid message under its key."""


@dataclass(frozen=True, slots=True)
class AuthKey:
    """A 2048-bit MTProto authorization key and the identifiers derived from it."""

    key: bytes

    def __post_init__(self) -> None:
        if len(self.key) != AUTH_KEY_SIZE:
            raise ValueError("an auth key is 256 bytes")

    def __repr__(self) -> str:  # the key itself must never reach a log line
        return f"AuthKey(id={self.key_id:#018x})"

    @property
    def key_id(self) -> int:
        """Lower 64 bits of SHA1(key), unsigned, as Telethon computes it."""
        return struct.unpack("<Q", sha1(self.key).digest()[12:20])[0]

    @property
    def aux_hash(self) -> int:
        return struct.unpack("<Q", sha1(self.key).digest()[:8])[0]


@dataclass(frozen=True, slots=True)
class PlainMessage:
    """The decrypted envelope of one client packet."""

    salt: int
    session_id: int
    msg_id: int
    seq_no: int
    body: bytes


def _aes_key_iv(auth_key: bytes, msg_key: bytes, x: int) -> tuple[bytes, bytes]:
    sha256a = sha256(msg_key + auth_key[x : x + 36]).digest()
    sha256b = sha256(auth_key[x + 40 : x + 76] + msg_key).digest()
    aes_key = sha256a[:8] + sha256b[8:24] + sha256a[24:32]
    aes_iv = sha256b[:8] + sha256a[8:24] + sha256b[24:32]
    return aes_key, aes_iv


def peek_key_id(packet: bytes) -> int:
    """auth_key_id of a transport packet; 0 means an unencrypted (handshake) message."""
    if len(packet) < 8:
        raise CryptoError("packet shorter than an auth_key_id")
    return struct.unpack("<Q", packet[:8])[0]


def decrypt_client_message(key: AuthKey, packet: bytes) -> PlainMessage:
    """Decrypt and authenticate a client→server packet (x = 0)."""
    if len(packet) < 24 + 32 or (len(packet) - 24) % 16:
        raise CryptoError("encrypted packet has an impossible length")
    msg_key = packet[8:24]
    aes_key, aes_iv = _aes_key_iv(key.key, msg_key, 0)
    plain = AES.decrypt_ige(packet[24:], aes_key, aes_iv)
    check = sha256(key.key[88 : 88 + 32])
    check.update(plain)  # hashed in place: a 512 KiB part is not copied to prepend 32 bytes
    if check.digest()[8:24] != msg_key:
        raise CryptoError("msg_key does not match the decrypted payload")
    salt, session_id, msg_id, seq_no, length = struct.unpack("<qqqii", plain[:32])
    padding = len(plain) - 32 - length
    # MTProto 2.0: 12..1024 bytes of padding; a length outside this means tampering
    if length < 0 or length % 4 or not 12 <= padding <= 1024:
        raise CryptoError("message length does not fit its padding")
    return PlainMessage(salt, session_id, msg_id, seq_no, plain[32 : 32 + length])


def encrypt_server_message(key: AuthKey, salt: int, session_id: int, msg_id: int, seq_no: int, body: bytes) -> bytes:
    """Encrypt one server→client message (x = 8), ready for the transport."""
    head, cipher = encrypt_server_chunks(key, salt, session_id, msg_id, seq_no, (body,))
    return head + cipher


def encrypt_server_chunks(
    key: AuthKey, salt: int, session_id: int, msg_id: int, seq_no: int, body: Sequence[bytes]
) -> tuple[bytes, bytes]:
    """`encrypt_server_message` of the concatenated `body` chunks, as (auth_key_id + msg_key, ciphertext).

    The chunks are joined once, with the header and padding, into the one buffer AES-IGE needs; the SHA-256
    of msg_key reads that buffer in place, and the ciphertext is handed back apart from its 24-byte
    prefix so that a 1 MiB answer is not copied again to prepend it."""
    length = sum(map(len, body))
    head = struct.pack("<qqqii", salt, session_id, msg_id, seq_no, length)
    padding = os.urandom(-(32 + length + 12) % 16 + 12)
    plain = b"".join((head, *body, padding))
    digest = sha256(key.key[96 : 96 + 32])
    digest.update(plain)
    msg_key = digest.digest()[8:24]
    aes_key, aes_iv = _aes_key_iv(key.key, msg_key, 8)
    return struct.pack("<Q", key.key_id) + msg_key, AES.encrypt_ige(plain, aes_key, aes_iv)
