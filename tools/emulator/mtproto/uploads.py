"""Files being uploaded with upload.saveFilePart / upload.saveBigFilePart.

Parts land straight in a world `UploadWriter` at `part * part_size` as soon as the part size is
known: any part with a higher-numbered part beside it (or, for a big file, below the announced
total) is not the last one, so its size is the part size. Until then at most one part waits in
memory, whatever order parallel senders deliver them in. Telegram's rules are enforced at each part and
again when the file is used (messages.sendMedia / editMessage):

- a part is 1..512 KiB; every part but the last has the same size, divisible by 1 KiB, and
  524288 is divisible by it (FILE_PART_EMPTY, FILE_PART_TOO_BIG, FILE_PART_SIZE_INVALID,
  FILE_PART_SIZE_CHANGED);
- part numbers are 0..3999 (FILE_PART_INVALID); a big file always announces the same
  file_total_parts (FILE_PARTS_INVALID); every part up to the total is present
  (FILE_PART_<n>_MISSING);
- files over 10 MiB must be uploaded as big files, and no file may exceed
  `knobs.mtproto_file_limit` (FILE_PARTS_INVALID).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from telethon.tl import types

from ..records import FileRecord
from .rpc import RpcError

MAX_PART = 512 * 1024
MAX_PARTS = 4000
BIG_FILE_THRESHOLD = 10 * 1024 * 1024
PENDING_TTL_S = 3600.0


def regular_part_size(size: int) -> bool:
    return 0 < size <= MAX_PART and size % 1024 == 0 and MAX_PART % size == 0


@dataclass(eq=False)
class PendingUpload:
    writer: Any  # world.UploadWriter
    big: bool
    total_parts: int | None = None
    part_size: int | None = None
    sizes: dict[int, int] = field(default_factory=dict)
    highest: int = -1  # the highest part number seen so far
    stash: dict[int, bytes] = field(default_factory=dict)
    touched: float = field(default_factory=time.monotonic)

    def discard(self) -> None:
        self.writer.abort()
        self.stash.clear()


class UploadStore:
    def __init__(self, world: Any) -> None:
        self._world = world
        self._pending: dict[tuple[int, int], PendingUpload] = {}
        # Finished uploads stay usable for an hour, so a request re-sent after a lost answer
        # (Telethon re-sends pending requests when it reconnects) still finds its file.
        self._done: dict[tuple[int, int], tuple[float, FileRecord]] = {}

    # --- parts -----------------------------------------------------------------------------------

    def save_part(self, user_id: int, file_id: int, part: int, data: bytes, *, total_parts: int | None) -> None:
        big = total_parts is not None
        if not data:
            raise RpcError(400, "FILE_PART_EMPTY")
        if len(data) > MAX_PART:
            raise RpcError(400, "FILE_PART_TOO_BIG")
        if not 0 <= part < MAX_PARTS:
            raise RpcError(400, "FILE_PART_INVALID")
        if big and not 0 < total_parts <= MAX_PARTS:
            raise RpcError(400, "FILE_PARTS_INVALID")
        if big and part >= total_parts:
            raise RpcError(400, "FILE_PART_INVALID")
        self._expire()
        ident = (user_id, file_id)
        up = self._pending.get(ident)
        if up is None:
            up = self._pending[ident] = PendingUpload(self._world.open_upload(), big, total_parts)
        elif up.big != big or up.total_parts != total_parts:
            raise RpcError(400, "FILE_PARTS_INVALID")
        up.touched = time.monotonic()

        last = big and part == total_parts - 1
        if up.part_size is not None:
            self._check_size(up, part, len(data), last=last)
        up.sizes[part] = len(data)
        up.highest = max(up.highest, part)
        if part == 0:
            up.writer.write_at(0, data)
        elif up.part_size is not None:
            up.writer.write_at(part * up.part_size, data)
        else:
            up.stash[part] = bytes(data)
        if up.part_size is None:
            self._learn_part_size(up)

    def _check_size(self, up: PendingUpload, part: int, size: int, *, last: bool) -> None:
        assert up.part_size is not None
        if last or (up.total_parts is None and part >= up.highest):
            if size > up.part_size:
                raise RpcError(400, "FILE_PART_SIZE_CHANGED")
        elif size != up.part_size:
            raise RpcError(400, "FILE_PART_SIZE_CHANGED" if regular_part_size(size) else "FILE_PART_SIZE_INVALID")

    def _learn_part_size(self, up: PendingUpload) -> None:
        """A part is known not to be the last when a later part exists (or the total says so)."""
        candidates = [p for p in up.sizes if p < up.highest or (up.total_parts and p < up.total_parts - 1)]
        if not candidates:
            return
        size = up.sizes[min(candidates)]
        if not regular_part_size(size):
            raise RpcError(400, "FILE_PART_SIZE_INVALID")
        up.part_size = size
        for part, data in sorted(up.stash.items()):
            up.writer.write_at(part * size, data)
        up.stash.clear()

    # --- using an uploaded file ------------------------------------------------------------------

    def finish(self, user_id: int, input_file: Any, *, name: str, mime_type: str, file_limit: int) -> FileRecord:
        """Turn an InputFile / InputFileBig into a stored file, checking every rule above."""
        ident = (user_id, input_file.id)
        done = self._done.get(ident)
        if done is not None:
            return done[1]
        big = isinstance(input_file, types.InputFileBig)
        up = self._pending.get(ident)
        parts = input_file.parts
        if up is None:
            raise RpcError(400, "FILE_PART_0_MISSING" if parts > 0 else "FILE_PARTS_INVALID")
        if up.big != big or parts <= 0 or parts > MAX_PARTS or (big and parts != up.total_parts):
            raise RpcError(400, "FILE_PARTS_INVALID")
        for part in range(parts):
            if part not in up.sizes:
                raise RpcError(400, f"FILE_PART_{part}_MISSING")
        if any(p >= parts for p in up.sizes):
            raise RpcError(400, "FILE_PARTS_INVALID")
        part_size = up.part_size if up.part_size is not None else up.sizes[0]
        if parts > 1 and up.part_size is None:
            self._learn_part_size(up)
            part_size = up.part_size or part_size
        for part in range(parts - 1):
            if up.sizes[part] != part_size or not regular_part_size(part_size):
                raise RpcError(400, "FILE_PART_SIZE_INVALID")
        if up.sizes[parts - 1] > part_size:
            raise RpcError(400, "FILE_PART_SIZE_INVALID")
        size = part_size * (parts - 1) + up.sizes[parts - 1]
        if size > file_limit or (not big and size > BIG_FILE_THRESHOLD):
            raise RpcError(400, "FILE_PARTS_INVALID")
        if up.writer.size != size:
            raise RpcError(400, "FILE_PARTS_INVALID")
        del self._pending[ident]
        rec: FileRecord = up.writer.finish(name, mime_type)
        md5 = getattr(input_file, "md5_checksum", "")
        # Checked on the stored file: the writer exposes no flush, so its temp file may lag behind.
        # A mismatch leaves an unreferenced file record behind, which nothing ever shows.
        if md5 and md5.lower() != _md5_of(self._world.file_path(rec.id), size):
            raise RpcError(400, "MD5_CHECKSUM_INVALID")
        self._done[ident] = (time.monotonic(), rec)
        return rec

    def _expire(self) -> None:
        now = time.monotonic()
        for ident, up in list(self._pending.items()):
            if now - up.touched > PENDING_TTL_S:
                up.discard()
                del self._pending[ident]
        for ident, (at, _rec) in list(self._done.items()):
            if now - at > PENDING_TTL_S:
                del self._done[ident]

    def close(self) -> None:
        for up in self._pending.values():
            up.discard()
        self._pending.clear()

    def __len__(self) -> int:
        return len(self._pending)


def _md5_of(path: Path, size: int) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        remaining = size
        while remaining > 0:
            chunk = fh.read(min(1 << 20, remaining))
            if not chunk:
                break
            digest.update(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()
