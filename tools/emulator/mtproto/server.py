"""The MTProto front: a TCP server on which each connection speaks MTProto 2.0 to real Telethon."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from . import handlers  # noqa: F401  (registers the RPC handlers)
from .connection import Connection
from .filerefs import FileReferences
from .keys import KeyRing
from .random_ids import RandomIds
from .session import SessionTable
from .uploads import UploadStore

log = logging.getLogger("tools.emulator.mtproto")


class LoginFloods:
    """auth.importBotAuthorization per bot: past `login_flood_logins` in `login_flood_window_s`, FLOOD_WAIT of
    `login_flood_wait_s`; a login tried during the wait is refused and lengthens it by as much again (issue
    threads of bot projects: restart loops turn a 1000 s wait into hours)."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._times: dict[int, deque[float]] = {}
        self._until: dict[int, float] = {}
        self.attempts: dict[int, int] = {}

    def attempt(self, bot_id: int, knobs: Any) -> float | None:
        now = self._clock()
        self.attempts[bot_id] = self.attempts.get(bot_id, 0) + 1
        until = self._until.get(bot_id, 0.0)
        if now < until:
            self._until[bot_id] = until + knobs.login_flood_wait_s
            return self._until[bot_id] - now
        times = self._times.setdefault(bot_id, deque())
        while times and now - times[0] >= knobs.login_flood_window_s:
            times.popleft()
        if knobs.login_flood_logins > 0 and len(times) >= knobs.login_flood_logins:
            self._until[bot_id] = now + knobs.login_flood_wait_s
            times.clear()
            return knobs.login_flood_wait_s
        times.append(now)
        return None


class KeyPlaces:
    """Which client addresses use each auth key right now: a key live at two addresses at once is dead."""

    def __init__(self) -> None:
        self._by_key: dict[int, dict[Any, str]] = {}

    def use(self, key_id: int, connection: Any, host: str) -> bool:
        """Note `connection` (from `host`) using the key; False if another address holds it at the same time."""
        places = self._by_key.setdefault(key_id, {})
        places[connection] = host
        return all(h == host for h in places.values())

    def gone(self, connection: Any) -> None:
        for places in self._by_key.values():
            places.pop(connection, None)


class MTProtoFront:
    def __init__(self, world: Any) -> None:
        self.world = world
        self.keys = KeyRing(world)
        self.sessions = SessionTable()
        self.uploads = UploadStore(world)
        self.file_refs = FileReferences(world)
        self.random_ids = RandomIds()
        self.exported_authorizations: dict[int, tuple[bytes, int, int]] = {}
        self.logins = LoginFloods()
        self.key_places = KeyPlaces()
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
