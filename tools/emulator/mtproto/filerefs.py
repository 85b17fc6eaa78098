"""File references: the short-lived tokens a client must present to download a document.

A reference = the file's stored reference + (epoch, issue time). Bumping the epoch
(`expire_all`) or setting a TTL makes earlier references stale, so `upload.getFile` answers
FILE_REFERENCE_EXPIRED and the client must refetch the message — Telethon does that on its own.
Settings persist in `world.extra["mtproto:file_refs"]`.
"""

from __future__ import annotations

import struct
import time
from typing import Any

from ..records import FileRecord
from .rpc import RpcError

EXTRA_KEY = "mtproto:file_refs"
#: references expire by default (core.telegram.org/api/file_reference: they "expire after some time"; no
#: lifetime is stated, clients report hours), so a client that never refetches is caught within a long run.
DEFAULT_TTL_S = 3600
_TAIL = struct.Struct("<IQ")


class FileReferences:
    def __init__(self, world: Any) -> None:
        self._world = world

    def _settings(self) -> dict[str, int]:
        return dict(self._world.extra.get(EXTRA_KEY) or {"epoch": 0, "ttl_s": DEFAULT_TTL_S})

    @property
    def ttl_s(self) -> int:
        return int(self._settings()["ttl_s"])

    def set_ttl(self, seconds: int) -> None:
        """References older than `seconds` expire (0 = never)."""
        self._world.extra[EXTRA_KEY] = dict(self._settings(), ttl_s=max(0, int(seconds)))

    def expire_all(self) -> None:
        """Every reference issued so far becomes FILE_REFERENCE_EXPIRED."""
        settings = self._settings()
        self._world.extra[EXTRA_KEY] = dict(settings, epoch=settings["epoch"] + 1)

    def issue(self, rec: FileRecord) -> bytes:
        return rec.file_reference + _TAIL.pack(self._settings()["epoch"], int(time.time()))

    def check(self, rec: FileRecord, reference: bytes) -> None:
        base = rec.file_reference
        if not reference:
            raise RpcError(400, "FILE_REFERENCE_EMPTY")
        if len(reference) != len(base) + _TAIL.size or reference[: len(base)] != base:
            raise RpcError(400, "FILE_REFERENCE_INVALID")
        epoch, issued = _TAIL.unpack(reference[len(base) :])
        settings = self._settings()
        if epoch != settings["epoch"] or (settings["ttl_s"] and time.time() - issued > settings["ttl_s"]):
            raise RpcError(400, "FILE_REFERENCE_EXPIRED")
