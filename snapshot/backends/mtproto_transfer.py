"""Parallel MTProto file transfers: parts striped across several connections under one auth key.

Telethon moves a file one part at a time over its single connection, so a large snapshot part is bound
by round trips. Here, as in the well-known "FastTelethon" approach, a `SenderPool` opens a few more
`MTProtoSender`s on the client's own auth key and home DC (each with its own MTProto session, exactly as
Telethon's `_create_exported_sender` builds senders for other DCs, minus the auth export), and the parts
of one file are spread across them, several requests in flight per connection (`SenderPool`):

- upload: `upload.saveFilePart` (≤ 10 MB) or `upload.saveBigFilePart` (above) in 512 KiB parts, any order;
  the result is an `InputFile` / `InputFileBig` for messages.sendMedia or messages.editMessage;
- download: `upload.getFile` in 1 MiB pieces at 1 MiB-aligned offsets (so every request is 4 KiB aligned
  and never crosses a 1 MiB boundary), joined once at the end.

The pool's connections skip Telethon's attempt to gzip every request (`telethon_compat.new_sender`): the
parts are zstd-compressed or random, so zlib at level 9 spent ~29 ms per 512 KiB part only to throw the
result away. Telethon's own `upload_file` still pays that (it is the baseline the bench compares with).

A failed part (timeout, dropped connection, emulator restart) is retried on a fresh connection; parts are
idempotent, so a repeat is harmless. An expired file reference is refreshed once through a callback that
refetches the message.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeAlias

from telethon import TelegramClient, errors
from telethon.network import MTProtoSender
from telethon.tl import functions, types

from snapshot.backends import telethon_compat as compat
from snapshot.errors import BackendError

log = logging.getLogger(__name__)

UPLOAD_PART = 512 * 1024
DOWNLOAD_PIECE = 1024 * 1024
BIG_FILE = 10 * 1024 * 1024
MAX_FILE = 2000 * 1024 * 1024
MAX_PARTS = 4000
#: requests in flight over all of a pool's connections. MTProto lets a client send the next request before
#: the previous answer arrives, and Telegram answers pipelined requests as they finish. TDLib (Telegram's own
#: client library) keeps up to 16 MiB of upload.getFile in flight per DC (td/telegram/files/
#: FileDownloadManager: max_download_resource_limit_ = 1 << 21, x 8 for premium accounts) over 2 download
#: sessions (td/telegram/net/NetQueryDispatcher.cpp), i.e. 8 requests per connection: 16 over 6 connections
#: is at most 3 per connection.
IN_FLIGHT = 16
#: parts of one upload in flight at once: TDLib's upload budget, 4 MiB = 8 parts of 512 KiB
#: (td/telegram/files/FileUploadManager.cpp: MAX_UPLOAD_RESOURCE_LIMIT = 4 << 20), spread over up to 8
#: upload sessions (4 on DCs 2 and 4: NetQueryDispatcher.cpp, upload_session_count).
UPLOAD_IN_FLIGHT = 8
#: pieces of one download in flight at once (the pool's whole budget: TDLib's 16 MiB).
DOWNLOAD_IN_FLIGHT = IN_FLIGHT

Location: TypeAlias = types.InputDocumentFileLocation


class FileMigrated(BackendError):
    """The file lives on another DC (303 FILE_MIGRATE_X): the pool's connections to the home DC cannot read it."""

    def __init__(self, dc: int, what: str) -> None:
        super().__init__(f"{what} is kept on DC {dc} (FILE_MIGRATE_{dc})", retryable=False,
                         telegram_error=f"FILE_MIGRATE_{dc}", telegram_code=303)
        self.dc = dc
Refresh = Callable[[], Awaitable[Location]]


class Invoker(Protocol):
    """Where a transfer sends its requests: a `SenderPool`, or `Direct` on the client's own connection."""

    async def invoke(self, request: Any) -> Any: ...


class Direct:
    """The client's own connection, for a transfer of one request or so (no connection to open first)."""

    def __init__(self, client: TelegramClient) -> None:
        self.client = client

    async def invoke(self, request: Any) -> Any:
        return await compat.invoke(self.client, request)


class SenderPool:
    """`size` extra connections to the client's home DC, opened lazily and reopened when they die.

    Requests are pipelined: at most `in_flight` at once over all connections (several transfers at once,
    as a restore fetching all of a snapshot's parts, share that budget), each sent on the connection with
    the fewest in flight, so a connection carries about `in_flight / size` of them. What one transfer keeps
    in flight is bounded by its caller (`upload`: `UPLOAD_IN_FLIGHT` parts; `download`:
    `DOWNLOAD_IN_FLIGHT` pieces).
    """

    def __init__(self, client: TelegramClient, size: int, *, timeout: float = 60.0,
                 in_flight: int = IN_FLIGHT) -> None:
        if size < 1 or in_flight < 1:
            raise ValueError("a sender pool needs at least one connection and one request in flight")
        self.client = client
        self.size = size
        self.in_flight = in_flight
        self.timeout = timeout
        self._senders: list[MTProtoSender | None] = [None] * size
        self._locks = [asyncio.Lock() for _ in range(size)]
        self._busy = [0] * size  # requests in flight per connection
        self._capacity = asyncio.Semaphore(in_flight)
        self._warming: set[asyncio.Task[None]] = set()

    async def _sender(self, slot: int) -> MTProtoSender:
        if self._senders[slot] is None and not self._warming:
            self._warm(slot)
        async with self._locks[slot]:
            sender = self._senders[slot]
            if sender is None or not sender.is_connected():
                if sender is not None:
                    await _quiet_disconnect(sender)
                sender = self._senders[slot] = await self._open()
            return sender

    def warm(self) -> None:
        """Open every connection in the background (a no-op once they are open or opening)."""
        if not self._warming and any(s is None for s in self._senders):
            self._warm(-1)

    def _warm(self, opening: int) -> None:
        """The first transfer opens the pool: open the other connections at once, in the background, so
        that they are ready when the parts after the first need them (a restore reads the manifest, then
        all the snapshot's parts)."""
        for slot in range(self.size):
            if slot != opening and self._senders[slot] is None and not self._locks[slot].locked():
                task = asyncio.ensure_future(self._warm_one(slot))
                self._warming.add(task)
                task.add_done_callback(self._warming.discard)

    async def _warm_one(self, slot: int) -> None:
        try:
            await self._sender(slot)
        except Exception as exc:  # noqa: BLE001 - the next request on this slot opens it again and reports
            log.debug("opening transfer connection %d ahead of use failed: %s", slot, exc)

    async def _open(self) -> MTProtoSender:
        c = self.client
        dc_id, address, port = compat.session_dc(c)
        sender = compat.new_sender(c, c.session.auth_key, gzip=False)
        await sender.connect(compat.connection(c, address, port, dc_id, lean=True))
        try:
            await asyncio.wait_for(sender.send(compat.init_connection(c, functions.help.GetConfigRequest())),
                                   self.timeout)
        except BaseException:
            await _quiet_disconnect(sender)
            raise
        return sender

    async def invoke(self, request):
        """Send `request` on the least busy connection; a connection that fails is dropped and reopened."""
        async with self._capacity:
            slot = min(range(self.size), key=self._busy.__getitem__)
            self._busy[slot] += 1
            try:
                return await self._invoke_on(slot, request)
            finally:
                self._busy[slot] -= 1

    async def _invoke_on(self, slot: int, request):
        sender = await self._sender(slot)
        try:
            # straight to the sender: Telethon's retry loop would sleep on errors that `_striped` retries itself
            return await asyncio.wait_for(sender.send(functions.InvokeWithoutUpdatesRequest(request)), self.timeout)
        except errors.RPCError:
            raise
        except BaseException:
            # the connection may be wedged (no answer) or dead: start the next attempt on a fresh one.
            if self._senders[slot] is sender:
                self._senders[slot] = None
            await _quiet_disconnect(sender)
            raise

    async def close(self) -> None:
        for task in list(self._warming):
            task.cancel()
        await asyncio.gather(*self._warming, return_exceptions=True)
        senders, self._senders = self._senders, [None] * self.size
        for sender in senders:
            if sender is not None:
                await _quiet_disconnect(sender)


async def _quiet_disconnect(sender: MTProtoSender) -> None:
    try:
        await sender.disconnect()
    except Exception:  # noqa: BLE001 - a dying connection may fail to close; nothing to do about it
        log.debug("closing a transfer connection failed", exc_info=True)


def _transient(exc: BaseException) -> float | None:
    """Seconds to wait before retrying a part after `exc`, or None if retrying cannot help."""
    if isinstance(exc, errors.RPCError):
        name, code = compat.rpc_name(exc), compat.rpc_code(exc)
        if code == 420:
            return float(max(1, getattr(exc, "seconds", None) or 1))
        if code >= 500 or name in ("TIMEOUT", "RPC_CALL_FAIL"):
            return 0.5
        return None
    if isinstance(exc, OSError | ConnectionError | TimeoutError | asyncio.IncompleteReadError):
        return 0.5
    return None


async def _striped(count: int, job: Callable[[int], Awaitable[None]], *, workers: int, attempts: int,
                   what: str) -> None:
    """Run job(index) for index in range(count), `workers` at a time, retrying failed indexes."""
    pending = list(range(count - 1, -1, -1))  # popped from the end: lowest index first
    failures: dict[int, int] = {}

    async def worker() -> None:
        while pending:
            index = pending.pop()
            while True:
                try:
                    await job(index)
                    break
                except BackendError:
                    raise
                except Exception as exc:
                    delay = _transient(exc)
                    failures[index] = failures.get(index, 0) + 1
                    if delay is None and isinstance(exc, errors.RPCError):
                        raise  # Telegram's own refusal: the backend names it (and may log in again)
                    if delay is None or failures[index] >= attempts:
                        raise BackendError(f"{what}: part {index} failed: {exc}", retryable=True) from exc
                    log.info("%s: part %d failed (%s), retrying", what, index, exc)
                    await asyncio.sleep(delay)

    tasks = [asyncio.ensure_future(worker()) for _ in range(min(workers, count))]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def upload(pool: SenderPool, data: bytes, name: str, *, attempts: int = 5,
                 part_size: int = UPLOAD_PART) -> types.InputFile | types.InputFileBig:
    """Upload `data` in parallel parts; the returned handle is valid for one sendMedia/editMessage."""
    if not data:
        raise BackendError(f"{name}: Telegram does not store empty documents", retryable=False)
    if len(data) > MAX_FILE:
        raise BackendError(f"{name}: {len(data)} bytes is over Telegram's {MAX_FILE}-byte file limit",
                           retryable=False)
    if part_size % 1024 or UPLOAD_PART % part_size:
        raise ValueError(f"part size {part_size} must divide 512 KiB and be a multiple of 1 KiB")
    total = -(-len(data) // part_size)
    if total > MAX_PARTS:
        raise BackendError(f"{name}: {total} parts of {part_size} bytes is over Telegram's {MAX_PARTS}",
                           retryable=False)
    big = len(data) > BIG_FILE
    file_id = secrets.randbits(63)
    view = memoryview(data)

    async def send_part(index: int) -> None:
        # one copy per part, made only when the part is about to go out (Telethon serialises `bytes` only)
        chunk = bytes(view[index * part_size:(index + 1) * part_size])
        if big:
            request = functions.upload.SaveBigFilePartRequest(file_id, index, total, chunk)
        else:
            request = functions.upload.SaveFilePartRequest(file_id, index, chunk)
        if not await pool.invoke(request):
            raise OSError(f"Telegram did not accept part {index}")

    await _striped(total, send_part, workers=UPLOAD_IN_FLIGHT, attempts=attempts, what=f"uploading {name}")
    if big:
        return types.InputFileBig(id=file_id, parts=total, name=name)
    return types.InputFile(id=file_id, parts=total, name=name, md5_checksum=hashlib.md5(data).hexdigest())


async def download(pool: Invoker, location: Location, size: int, *, refresh: Refresh, what: str,
                   attempts: int = 5) -> bytes:
    """Download `size` bytes of a document in parallel 1 MiB pieces (through a pool, or `Direct`)."""
    if size == 0:
        return b""
    pieces = -(-size // DOWNLOAD_PIECE)
    got: list[bytes] = [b""] * pieces
    current = [location]
    lock = asyncio.Lock()

    async def fresh_location(stale: Location) -> None:
        async with lock:  # many pieces see the expiry at once; refetch the message only once
            if current[0] is stale:
                log.info("%s: file reference expired, refetching the message", what)
                current[0] = await refresh()

    async def get_piece(index: int) -> None:
        offset = index * DOWNLOAD_PIECE
        want = min(DOWNLOAD_PIECE, size - offset)
        for _ in range(3):
            loc = current[0]
            try:
                result = await pool.invoke(functions.upload.GetFileRequest(
                    location=loc, offset=offset, limit=DOWNLOAD_PIECE, precise=False, cdn_supported=False))
            except (errors.FileReferenceExpiredError, errors.FileReferenceInvalidError):
                await fresh_location(loc)
                continue
            except errors.FileMigrateError as e:
                raise FileMigrated(e.new_dc, what) from None
            if not isinstance(result, types.upload.File):
                raise BackendError(f"{what}: Telegram redirected the download to a CDN, which tgsnap does not "
                                   "support", retryable=False)
            if len(result.bytes) != want:
                raise OSError(f"piece at {offset} came back with {len(result.bytes)} of {want} bytes")
            got[index] = result.bytes
            return
        raise BackendError(f"{what}: the file reference kept expiring", retryable=True)

    await _striped(pieces, get_piece, workers=DOWNLOAD_IN_FLIGHT, attempts=attempts, what=f"downloading {what}")
    # the pieces as Telethon handed them over: one copy to join them, none for a one-piece document
    return got[0] if pieces == 1 else b"".join(got)
