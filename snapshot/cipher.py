"""Encryption at rest: AES-256-GCM over a document's compressed payload.

The key never leaves this object's memory: it is not in `repr`, not in errors, not in logs. Documents
carry a *key id* (8 bytes derived from the key with a domain-separated hash) so a reader can tell
"encrypted with another key" apart from "corrupt" without learning anything useful about the key.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from snapshot.errors import ConfigError, EncryptionError
from snapshot.settings import parse_key

__all__ = ["KEY_SIZE", "NONCE_SIZE", "TAG_SIZE", "OVERHEAD", "Cipher", "key_id", "parse_key", "generate_key"]

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
#: bytes an encrypted payload grows by: the nonce in front, the GCM tag at the end.
OVERHEAD = NONCE_SIZE + TAG_SIZE
KEY_ID_SIZE = 8
_KEY_ID_LABEL = b"tgsnap key id v1\x00"


def key_id(key: bytes) -> bytes:
    """8 bytes naming a key: SHA-256("tgsnap key id v1\\0" || key)[:8]."""
    return hashlib.sha256(_KEY_ID_LABEL + bytes(key)).digest()[:KEY_ID_SIZE]


def generate_key() -> bytes:
    """A fresh random 32-byte key (print it as hex for TGSNAP_ENCRYPTION_KEY)."""
    return os.urandom(KEY_SIZE)


class Cipher:
    """AES-256-GCM with a random 96-bit nonce per document; the envelope header is associated data."""

    __slots__ = ("_aead", "key_id")

    def __init__(self, key: bytes):
        if not isinstance(key, bytes | bytearray | memoryview):
            raise ConfigError("encryption key must be bytes (use snapshot.cipher.parse_key for hex/base64 text)")
        if len(key) != KEY_SIZE:
            raise ConfigError(f"encryption key must be {KEY_SIZE} bytes, got {len(key)}")
        self._aead = AESGCM(bytes(key))
        self.key_id = key_id(bytes(key))

    def __repr__(self) -> str:
        return f"Cipher(aes-256-gcm, key_id={self.key_id.hex()})"

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def decrypt(self, data: bytes | memoryview, aad: bytes, *, what: str = "document") -> bytes:
        if len(data) < OVERHEAD:
            raise EncryptionError(f"{what}: encrypted payload is too short ({len(data)} bytes) to hold a nonce "
                                  "and tag")
        nonce = bytes(data[:NONCE_SIZE])
        try:
            return self._aead.decrypt(nonce, bytes(data[NONCE_SIZE:]), aad)
        except InvalidTag:
            raise EncryptionError(f"{what}: authentication failed although the key id matches: the document "
                                  "was tampered with (its checksum was recomputed) or is corrupt") from None


def as_cipher(key: bytes | Cipher | None) -> Cipher | None:
    """Accept a raw key, a ready Cipher or None."""
    if key is None or isinstance(key, Cipher):
        return key
    return Cipher(key)
