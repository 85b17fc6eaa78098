"""The running emulator: one world, the Bot API front and the control API on one HTTP port, the MTProto
front on a TCP port. Used in-process by tests (`async with Emulator(dir) as emu`) and by `__main__`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from .botapi.front import BotApiFront
from .control import PREFIX, ControlApi
from .knobs import Knobs
from .world import World

log = logging.getLogger("tools.emulator")

_TOKEN_IN_PATH = re.compile(r"^(/file)?/bot[^/]+")


def redact(path: str) -> str:
    """Hide bot tokens in a request path (`/bot<token>/…` → `/bot<redacted>/…`)."""
    return _TOKEN_IN_PATH.sub(lambda m: (m.group(1) or "") + "/bot<redacted>", path)


class RedactingAccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info('%s "%s %s" %s %.3fs', request.remote, request.method, redact(request.path),
                         response.status, time)


def check_loopback(host: str) -> None:
    """Refuse anything but a loopback address: the emulator has no auth and hands out tokens."""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ValueError(f"refusing to serve on {host!r}: the emulator listens on loopback only (e.g. 127.0.0.1)")


@dataclass(frozen=True)
class Demo:
    """The ready-made world: a bot that is admin of a storage channel, and a user."""

    bot_id: int
    bot_username: str
    bot_token: str
    storage_chat_id: int
    storage_channel_id: int
    user_id: int
    session_string: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Emulator:
    """`async with Emulator(data_dir) as emu:` → `emu.bot_api_url`, `emu.control_url`, `emu.world`,
    `emu.mtproto_host`/`emu.mtproto_port` (None without the MTProto front), `emu.demo()`."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        mtproto_port: int = 0,
        knobs: Knobs | dict[str, Any] | None = None,
        mtproto: bool = True,
    ) -> None:
        check_loopback(host)
        self.data_dir = Path(data_dir)
        self.host = host
        self._port = port
        self._mtproto_port_wanted = mtproto_port
        self._want_mtproto = mtproto
        self.knobs = knobs if isinstance(knobs, Knobs) else Knobs.from_dict(knobs or {})
        self.world: World = None  # type: ignore[assignment]  # set by start()
        self.port: int | None = None
        self.mtproto_port: int | None = None
        self.mtproto_error: str | None = None
        self._runner: web.AppRunner | None = None
        self._botapi: BotApiFront | None = None
        self._mtproto: Any = None
        self._session_string: Any = None

    @property
    def mtproto_host(self) -> str:
        return self.host

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def bot_api_url(self) -> str:
        """What to give `TelegramAPIServer.from_base(...)`."""
        return self.base_url

    @property
    def control_url(self) -> str:
        return self.base_url + PREFIX

    async def start(self) -> Emulator:
        self.world = World.open(self.data_dir, self.knobs)
        try:
            await self._start_servers()
        except BaseException:
            await self.close()
            raise
        return self

    async def _start_servers(self) -> None:
        self._botapi = BotApiFront(self.world)
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.add_routes(self._botapi.routes())
        app.add_routes(ControlApi(self).routes())
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0,
                                     access_log_class=RedactingAccessLogger,
                                     access_log=logging.getLogger("tools.emulator.access"))
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._botapi.start_webhooks()
        if self._want_mtproto:
            await self._start_mtproto()

    async def _start_mtproto(self) -> None:
        try:
            from .mtproto import serve_mtproto, session_string
        except ImportError as exc:
            self.mtproto_error = f"MTProto front unavailable: {exc}"
            log.warning("%s", self.mtproto_error)
            return
        self._mtproto = await serve_mtproto(self.world, self.host, self._mtproto_port_wanted)
        self.mtproto_port = self._mtproto.port
        self._session_string = session_string

    async def close(self) -> None:
        if self._botapi is not None:
            self._botapi.close()
            await self._botapi.close_webhooks()
        if self._mtproto is not None:
            await self._mtproto.close()
            self._mtproto = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.world is not None:
            self.world.close()

    async def __aenter__(self) -> Emulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def session_string(self, bot_id: int) -> str | None:
        """A Telethon StringSession logged in as `bot_id`, or None without the MTProto front."""
        if self._session_string is None or self.mtproto_port is None:
            return None
        return str(self._session_string(self.world, bot_id, self.mtproto_host, self.mtproto_port))

    def demo(self) -> Demo:
        """Create (once; it persists) the demo world and return its ids, token and session string."""
        ids = self.world.ensure_demo()
        bot = self.world.user(ids["bot_id"])
        assert bot is not None and bot.token is not None
        return Demo(
            bot_id=bot.user_id,
            bot_username=str(bot.username),
            bot_token=bot.token,
            storage_chat_id=ids["storage_chat_id"],
            storage_channel_id=ids["storage_channel_id"],
            user_id=ids["user_id"],
            session_string=self.session_string(bot.user_id),
        )

    def info(self, *, demo: bool = False) -> dict[str, Any]:
        """The start-up JSON line: URLs and ports, plus the demo world's ids when `demo`."""
        out: dict[str, Any] = {
            "bot_api_url": self.bot_api_url,
            "control_url": self.control_url,
            "mtproto_host": self.mtproto_host if self.mtproto_port is not None else None,
            "mtproto_port": self.mtproto_port,
            "data_dir": str(self.data_dir),
        }
        if self.mtproto_error:
            out["mtproto_error"] = self.mtproto_error
        if demo:
            out.update(self.demo().to_dict())
        return out
