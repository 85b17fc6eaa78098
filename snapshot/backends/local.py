"""A local directory as storage: crash-safe, discoverable, the reference backend for tests and tools.

Layout under the root:
    docs/000000000042-delta-000000000007   one file per document; the 12-digit counter is storage order
    MANIFEST                               the current manifest, replaced atomically

A document is written to a temporary file, fsynced, then hard-linked under its final name (which fails
instead of overwriting, so two processes never share a ref), and the directory is fsynced. The manifest
is written the same way and renamed over MANIFEST. A crash leaves either the old or the new file, never
a torn one; stray `.tmp-*` files are ignored.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import uuid
from pathlib import Path

from snapshot.backend import Backend, BackendInfo
from snapshot.errors import BackendError, DocumentNotFound

_REF = re.compile(r"^(\d{12})-([A-Za-z0-9._-]{1,100})$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
MANIFEST_FILE = "MANIFEST"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_tmp(dirpath: Path, data: bytes, fsync: bool) -> Path:
    tmp = dirpath / f".tmp-{uuid.uuid4().hex}"
    with open(tmp, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    return tmp


class LocalDirBackend(Backend):
    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True):
        self.root = Path(path)
        self.docs = self.root / "docs"
        self._fsync = fsync
        self._lock = threading.Lock()
        self._next: int | None = None
        try:
            self.docs.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BackendError(f"cannot create storage directory {self.root}: {e}", retryable=False) from None

    def __repr__(self) -> str:
        return f"LocalDirBackend({str(self.root)!r})"

    @property
    def info(self) -> BackendInfo:
        return BackendInfo(name=f"local:{self.root}", can_discover=True, max_document_size=2**31 - 1)

    # -- documents -------------------------------------------------------------------------------------

    def _scan(self) -> list[tuple[int, str]]:
        out = []
        for name in os.listdir(self.docs):
            m = _REF.match(name)
            if m:
                out.append((int(m.group(1)), name))
        out.sort()
        return out

    def _put(self, name: str, data: bytes) -> str:
        safe = _UNSAFE.sub("_", name)[:100] or "doc"
        tmp = _write_tmp(self.docs, data, self._fsync)
        try:
            with self._lock:
                while True:
                    if self._next is None:
                        found = self._scan()
                        self._next = found[-1][0] + 1 if found else 1
                    ref = f"{self._next:012d}-{safe}"
                    self._next += 1
                    try:
                        os.link(tmp, self.docs / ref)  # never overwrites: another process may share the dir
                        break
                    except FileExistsError:
                        self._next = None
        finally:
            os.unlink(tmp)
        if self._fsync:
            _fsync_dir(self.docs)
        return ref

    async def put(self, name: str, data: bytes) -> str:
        try:
            return await asyncio.to_thread(self._put, name, bytes(data))
        except OSError as e:
            raise BackendError(f"local put of {name!r} failed: {e}") from None

    def _path(self, ref: str) -> Path:
        if not isinstance(ref, str) or not _REF.match(ref):
            raise DocumentNotFound(ref)
        return self.docs / ref

    async def get(self, ref: str) -> bytes:
        path = self._path(ref)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise DocumentNotFound(ref) from None
        except OSError as e:
            raise BackendError(f"local get of {ref!r} failed: {e}") from None

    def _delete(self, refs: list[str]) -> None:
        for ref in refs:
            try:
                os.unlink(self._path(ref))
            except (FileNotFoundError, DocumentNotFound):
                pass
        if self._fsync:
            _fsync_dir(self.docs)

    async def delete(self, refs: list[str]) -> None:
        try:
            await asyncio.to_thread(self._delete, list(refs))
        except OSError as e:
            raise BackendError(f"local delete failed: {e}") from None

    async def discover(self, after: str | None) -> list[str]:
        return [ref for ref, _name in await self.discover_named(after)]

    async def discover_named(self, after: str | None) -> list[tuple[str, str | None]]:
        floor = self.order_key(after)[0] if after is not None else 0
        try:
            found = await asyncio.to_thread(self._scan)
        except OSError as e:
            raise BackendError(f"local listing failed: {e}") from None
        return [(ref, ref[13:]) for n, ref in found if n > floor]

    def order_key(self, ref: str) -> tuple:
        m = _REF.match(ref)
        if not m:
            raise ValueError(f"{ref!r} is not a local-directory ref")
        return (int(m.group(1)), ref)

    # -- manifest --------------------------------------------------------------------------------------

    def _publish(self, data: bytes) -> None:
        tmp = _write_tmp(self.root, data, self._fsync)
        try:
            os.replace(tmp, self.root / MANIFEST_FILE)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if self._fsync:
            _fsync_dir(self.root)

    async def publish_manifest(self, data: bytes) -> None:
        try:
            await asyncio.to_thread(self._publish, bytes(data))
        except OSError as e:
            raise BackendError(f"local manifest publish failed: {e}") from None

    async def read_manifest(self) -> bytes | None:
        path = self.root / MANIFEST_FILE
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise BackendError(f"local manifest read failed: {e}") from None
