"""The Bot API over HTTP: `/bot<token>/<method>` and `/file/bot<token>/<file_path>`, as aiogram's
`TelegramAPIServer.from_base(url)` addresses them. Latency, bandwidth, size limits and faults come from
`world.knobs`; flood control from `world.limiter`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

from aiohttp import web

from ..knobs import Fault
from ..world import World
from .errors import ENTITY_TOO_LARGE, NOT_FOUND, UNAUTHORIZED, BotApiError
from .methods import BotApiMethods
from .request import CHUNK, UploadDropped, read_params

log = logging.getLogger("tools.emulator.botapi")

_FILE_PATH = re.compile(r"documents/file_(\d+)(\.[A-Za-z0-9.]*)?")
_SERVER_ERROR_TEXT = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
                      504: "Gateway Timeout"}


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(payload, ensure_ascii=False),
                        content_type="application/json")


def _error(exc: BotApiError) -> web.Response:
    return _json(exc.payload(), status=exc.code)


def _drop(request: web.Request) -> web.Response:
    """Close the connection without an answer (the client sees a disconnect)."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=499)


async def _drain(request: web.Request) -> None:
    while await request.content.read(CHUNK):
        pass


class BotApiFront:
    def __init__(self, world: World) -> None:
        self.world = world
        self.methods = BotApiMethods(world)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.route("*", "/bot{token}/{method}", self.handle_method),
            web.get("/file/bot{token}/{path:.+}", self.handle_file),
        ]

    def close(self) -> None:
        self.methods.stop_polls()

    def start_webhooks(self) -> None:
        self.methods.webhooks.start()

    async def close_webhooks(self) -> None:
        await self.methods.webhooks.close()

    async def handle_method(self, request: web.Request) -> web.StreamResponse:
        knobs = self.world.knobs
        await knobs.apply_latency()
        method = request.match_info["method"]
        bot = self.world.bot_by_token(request.match_info["token"])
        if bot is None:
            await _drain(request)
            return _error(UNAUTHORIZED)
        fault = knobs.take_fault("botapi", method)
        if fault is not None:
            early = await self._early_fault(request, fault)
            if early is not None:
                return early
        drop_after = None
        if fault is not None and fault.kind == "drop_upload":
            drop_after = max(1, (request.content_length or 2) // 2)
        try:
            params = await read_params(request, self.world, drop_after=drop_after, throttle=knobs.throttle)
        except UploadDropped:
            log.info("fault: dropped %s mid-upload", method)
            return _drop(request)
        except BotApiError as exc:
            return _error(exc)
        try:
            result = await self.methods.call(bot, method, params)
            response = _json({"ok": True, "result": result})
        except BotApiError as exc:
            response = _error(exc)
        finally:
            params.discard_unused()
        if fault is not None and fault.kind == "answer_lost":
            log.info("fault: applied %s, answer lost", method)
            return _drop(request)
        return response

    async def _early_fault(self, request: web.Request, fault: Fault) -> web.StreamResponse | None:
        if fault.kind == "timeout":
            await asyncio.sleep(fault.hang_s)
            return _drop(request)
        if fault.kind == "server_error":
            await _drain(request)
            text = _SERVER_ERROR_TEXT.get(fault.status, "Internal Server Error")
            return _json({"ok": False, "error_code": fault.status, "description": text}, status=fault.status)
        return None

    async def handle_file(self, request: web.Request) -> web.StreamResponse:
        knobs = self.world.knobs
        await knobs.apply_latency()
        bot = self.world.bot_by_token(request.match_info["token"])
        if bot is None:
            return _error(UNAUTHORIZED)
        fault = knobs.take_fault("botapi", "file")
        if fault is not None:
            early = await self._early_fault(request, fault)
            if early is not None:
                return early
        match = _FILE_PATH.fullmatch(request.match_info["path"])
        rec = self.world.file(int(match.group(1))) if match else None
        if rec is None:
            return _error(NOT_FOUND)
        if rec.size > knobs.botapi_download_limit:
            return _error(ENTITY_TOO_LARGE)
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = rec.size
        await response.prepare(request)
        cut_at = rec.size // 2 if fault is not None else None
        sent = 0
        with open(self.world.file_path(rec.id), "rb") as fh:  # noqa: ASYNC230 - local disk, 64 KiB reads
            while chunk := fh.read(CHUNK):
                if cut_at is not None and sent + len(chunk) > cut_at:
                    await response.write(chunk[: cut_at - sent])
                    log.info("fault: dropped a download mid-transfer")
                    if request.transport is not None:
                        request.transport.abort()
                    return response
                await knobs.throttle(len(chunk))
                await response.write(chunk)
                sent += len(chunk)
        await response.write_eof()
        return response
