"""Parallel transfers over extra MTProto senders sharing one auth key (the "FastTelethon" approach).

Telethon moves one part at a time over its single connection. Here `connections` extra
`MTProtoSender`s, each a TCP connection with its own session id on the client's auth key, move
parts concurrently. Used by the emulator's tests and benchmarks; it relies on Telethon internals
(`client._connection`, `client._log`, `MTProtoSender`) that are stable across 1.x.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import struct
from collections.abc import Sequence
from typing import Any

from telethon.network import MTProtoSender
from telethon.tl import functions, types
from telethon.tl.alltlobjects import LAYER

PART_SIZE = 512 * 1024
BIG_FILE = 10 * 1024 * 1024
ONE_MIB = 1024 * 1024


class SenderPool:
    """`size` connected senders on the client's DC and auth key; use as `async with`."""

    def __init__(self, client: Any, size: int) -> None:
        self._client = client
        self._size = size
        self.senders: list[MTProtoSender] = []

    async def __aenter__(self) -> SenderPool:
        session = self._client.session
        for _ in range(self._size):
            sender = MTProtoSender(session.auth_key, loggers=self._client._log)
            await sender.connect(
                self._client._connection(
                    session.server_address,
                    session.port,
                    session.dc_id,
                    loggers=self._client._log,
                    proxy=self._client._proxy,
                )
            )
            init = self._client._init_request
            init.query = functions.help.GetConfigRequest()
            await sender.send(functions.InvokeWithLayerRequest(LAYER, init))
            self.senders.append(sender)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(s.disconnect() for s in self.senders), return_exceptions=True)


async def upload(
    client: Any, data: bytes, name: str, *, connections: int = 4, part_size: int = PART_SIZE
) -> types.InputFile | types.InputFileBig:
    """Upload `data` with `connections` parallel senders; returns the InputFile to send or edit with."""
    file_id = struct.unpack("<q", os.urandom(8))[0]
    total = max(1, -(-len(data) // part_size))
    big = len(data) > BIG_FILE
    queue: asyncio.Queue[int] = asyncio.Queue()
    for part in range(total):
        queue.put_nowait(part)

    async def worker(sender: MTProtoSender) -> None:
        while not queue.empty():
            part = queue.get_nowait()
            chunk = data[part * part_size : (part + 1) * part_size]
            if big:
                req: Any = functions.upload.SaveBigFilePartRequest(file_id, part, total, chunk)
            else:
                req = functions.upload.SaveFilePartRequest(file_id, part, chunk)
            if not await sender.send(req):
                raise RuntimeError(f"part {part} was refused")

    async with SenderPool(client, connections) as pool:
        await asyncio.gather(*(worker(s) for s in pool.senders))
    if big:
        return types.InputFileBig(file_id, total, name)
    return types.InputFile(file_id, total, name, hashlib.md5(data).hexdigest())


async def download(client: Any, document: types.Document, *, connections: int = 4, chunk: int = ONE_MIB) -> bytes:
    """Download a document with `connections` parallel senders, `chunk` bytes per upload.getFile."""
    location = types.InputDocumentFileLocation(
        id=document.id, access_hash=document.access_hash, file_reference=document.file_reference, thumb_size=""
    )
    offsets: Sequence[int] = range(0, document.size, chunk)
    out = bytearray(document.size)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for offset in offsets:
        queue.put_nowait(offset)

    async def worker(sender: MTProtoSender) -> None:
        while not queue.empty():
            offset = queue.get_nowait()
            result = await sender.send(functions.upload.GetFileRequest(location, offset, chunk))
            out[offset : offset + len(result.bytes)] = result.bytes

    async with SenderPool(client, connections) as pool:
        await asyncio.gather(*(worker(s) for s in pool.senders))
    return bytes(out)
