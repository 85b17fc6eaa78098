"""A local directory as storage: crash-safe, discoverable, the reference backend for tests and tools.

Layout under the root:
    docs/000000000042-delta-000000000007   one file per document; the 12-digit counter is storage order
    MANIFEST.000000000003                  manifest slots, one per writer claim; the highest is newest
    MANIFEST                               legacy single manifest (older tgsnap), read as slot 0

A document is written to a temporary file, fsynced, then hard-linked under its final name (which fails
instead of overwriting, so two processes never share a ref), and the directory is fsynced. A slot is
created the same way: `link()` to `MANIFEST.{n+1}` where n is the slot the claimer read, which fails if
any other writer created it first; that exclusive create is the whole arbitration between claimers (no
lock files, no clocks). A writer replaces only its own slot, by renaming a fsynced temporary over it,
and checks "is mine still newest" with one stat of `MANIFEST.{mine+1}`: slots are only ever created at
highest + 1, so a newer slot exists iff that name does. A crash leaves either the old or the new file,
never a torn one; stray `.tmp-*` files are ignored.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import uuid
from pathlib import Path

from snapshot.backend import Backend, BackendInfo, Slot, SlotRace
from snapshot.errors import BackendError, DocumentNotFound

_REF = re.compile(r"^(\d{12})-([A-Za-z0-9._-]{1,100})$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
#: the legacy single manifest of older tgsnap: slot 0.
MANIFEST_FILE = "MANIFEST"
_SLOT = re.compile(r"^MANIFEST\.(\d{12})$")


def slot_file(n: int) -> str:
    """The file name of slot `n` (0 is the legacy `MANIFEST`)."""
    return MANIFEST_FILE if n == 0 else f"{MANIFEST_FILE}.{n:012d}"


def slot_number(ref: str) -> int:
    """Slot number of a slot ref (a file name in the root); DocumentNotFound for anything else."""
    if ref == MANIFEST_FILE:
        return 0
    m = _SLOT.match(ref) if isinstance(ref, str) else None
    if not m or int(m.group(1)) == 0:
        raise DocumentNotFound(ref)
    return int(m.group(1))


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
    """`create=False` opens existing storage without creating anything (read-only tools write nothing)."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True, create: bool = True):
        self.root = Path(path)
        self.docs = self.root / "docs"
        self._fsync = fsync
        self._lock = threading.Lock()
        self._next: int | None = None
        try:
            if create:
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
        try:
            names = os.listdir(self.docs)
        except FileNotFoundError:
            return []  # opened with create=False over a directory that holds no documents yet
        for name in names:
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

    # -- manifest slots --------------------------------------------------------------------------------

    def _slots(self) -> list[int]:
        out = []
        for name in os.listdir(self.root):
            m = _SLOT.match(name)
            if m and int(m.group(1)) > 0:
                out.append(int(m.group(1)))
            elif name == MANIFEST_FILE:
                out.append(0)
        return sorted(out)

    def _create_slot(self, data: bytes, after: str | None) -> str:
        n = (slot_number(after) if after is not None else -1) + 1
        if n == 0:
            if (self.root / MANIFEST_FILE).exists():
                raise SlotRace(f"{self.root} holds a manifest (legacy {MANIFEST_FILE}) the caller did not see",
                               newer=MANIFEST_FILE)
            n = 1  # a new claim never writes the legacy MANIFEST
        ref = slot_file(n)
        tmp = _write_tmp(self.root, data, self._fsync)
        try:
            os.link(tmp, self.root / ref)  # exclusive: fails if any other writer made slot n first
        except FileExistsError:
            raise SlotRace(f"manifest slot {ref} already exists in {self.root}: another writer claimed "
                           "first", newer=ref) from None
        finally:
            tmp.unlink(missing_ok=True)
        if self._fsync:
            _fsync_dir(self.root)
        return ref

    async def create_slot(self, data: bytes, *, after: str | None) -> str:
        try:
            return await asyncio.to_thread(self._create_slot, bytes(data), after)
        except OSError as e:
            raise BackendError(f"local manifest slot creation failed: {e}") from None

    def _replace_slot(self, ref: str, data: bytes) -> None:
        slot_number(ref)
        target = self.root / ref
        if not target.exists():
            raise DocumentNotFound(ref)
        tmp = _write_tmp(self.root, data, self._fsync)
        try:
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if self._fsync:
            _fsync_dir(self.root)

    async def replace_slot(self, ref: str, data: bytes) -> None:
        try:
            await asyncio.to_thread(self._replace_slot, ref, bytes(data))
        except OSError as e:
            raise BackendError(f"local manifest publish failed: {e}") from None

    def _newer_slot(self, ref: str) -> str | None:
        n = slot_number(ref)
        if not (self.root / ref).exists():
            raise DocumentNotFound(ref)
        nxt = slot_file(n + 1)
        if not (self.root / nxt).exists():  # slots are created only at highest + 1: one stat suffices
            return None
        slots = self._slots()
        return slot_file(slots[-1])

    async def newer_slot(self, ref: str, *, stored: str | None = None) -> str | None:
        try:
            return await asyncio.to_thread(self._newer_slot, ref)
        except OSError as e:
            raise BackendError(f"local manifest slot check failed: {e}") from None

    def _newest(self) -> Slot | None:
        for n in reversed(self._slots()):
            try:
                return Slot(slot_file(n), (self.root / slot_file(n)).read_bytes())
            except FileNotFoundError:
                continue  # deleted by hand between listing and reading: the next older one
        return None

    async def newest_slot(self) -> Slot | None:
        try:
            return await asyncio.to_thread(self._newest)
        except OSError as e:
            raise BackendError(f"local manifest read failed: {e}") from None

    async def read_slot(self, ref: str) -> bytes:
        slot_number(ref)
        try:
            return await asyncio.to_thread((self.root / ref).read_bytes)
        except FileNotFoundError:
            raise DocumentNotFound(ref) from None
        except OSError as e:
            raise BackendError(f"local manifest read of {ref} failed: {e}") from None
