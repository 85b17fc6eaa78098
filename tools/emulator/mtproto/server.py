"""The MTProto front: a TCP server on which each connection speaks MTProto 2.0 to real Telethon."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from . import handlers  # noqa: F401  (registers the RPC handlers)
from .connection import Connection
from .filerefs import FileReferences
from .keys import KeyRing
from .random_ids import RandomIds
from .session import SessionTable
from .uploads import UploadStore

log = logging.getLogger("tools.emulator.mtproto")


class MTProtoFront:
    def __init__(self, world: Any) -> None:
        self.world = world
        self.keys = KeyRing(world)
        self.sessions = SessionTable()
        self.uploads = UploadStore(world)
        self.file_refs = FileReferences(world)
        self.random_ids = RandomIds()
        self.exported_authorizations: dict[int, tuple[bytes, int]] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.host = ""
        self.port = 0

    @property
    def knobs(self) -> Any:
        return self.world.knobs

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._accept, host, port)
        sock = self._server.sockets[0].getsockname()
        self.host, self.port = sock[0], sock[1]
        log.info("mtproto: listening on %s:%d", self.host, self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await Connection(self, reader, writer).serve()
        finally:
            self._connections.discard(task)

    async def on_plain_packet(self, connection: Connection, packet: bytes) -> None:
        """Unencrypted messages are the auth-key exchange (see handshake.py)."""
        from .handshake import handle_plain_packet

        await handle_plain_packet(self, connection, packet)

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        self.uploads.close()
