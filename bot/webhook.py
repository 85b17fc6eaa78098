"""Webhook mode: Telegram POSTs each update; the HTTP answer is given only once its effect is durable.

Telegram forgets a webhook update when the bot answers it with 2xx (telegram-bot-api WebhookActor:
on_update_ok); anything else, or no answer within 60 s, and it sends the update again. So this server
(aiohttp, the server aiogram's own webhook helpers use) answers an update only after its handler has
finished (the reply is sent at once, as in polling) and every write the handler made is durable
(`Store.write_ticket` then `Store.wait_durable`). While answers wait, the flush loop is asked for a cut
early by the same rule as long polling (bot/polling.py `HurryRule`): on a backend without a rate budget
at once (a user's next update waits for this answer: Telegram sends one request per chat at a time;
requests that arrive while a delta is on its way share the next one); on Telegram only when half of
`max_connections` wait and the budget has a slot free at once, and whenever every connection waits
(Telegram sends nothing new until one is answered; the budget still paces that flush).

If durability takes longer than Telegram's 60 s (storage down, a long 429), Telegram gives up on that
request and sends the update again later; the bot handles it again and, as for a redelivered polled
update, applies it once (the clicker counts a message once: bot/users.py). Nothing is confirmed that is
not durable, so a kill -9 at any moment loses nothing.

Telegram sends at most `max_connections` requests at once and only one per chat at a time, so
throughput is at most about max_connections / (time to durability); see docs/bot.md for figures and
when long polling is the better choice.

The request is checked against `X-Telegram-Bot-Api-Secret-Token` (constant-time compare); a wrong or
missing token gets 401 and nothing is handled. `start()` calls setWebhook, `stop()` stops taking
requests (503: Telegram retries them), waits for running ones, calls deleteWebhook and closes the server.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from typing import Any
from urllib.parse import urlsplit

from aiogram import Bot, Dispatcher
from aiogram.exceptions import TelegramAPIError
from aiogram.types import Update
from aiohttp import web

from bot.polling import HurryRule
from core import Store

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
#: Telegram gives up on a webhook request after 60 s without an answer (telegram-bot-api WebhookActor:
#: its connections' idle timeout); answering 503 a little before lets it retry on its own schedule
#: instead of holding a dead connection.
ANSWER_WITHIN = 55.0


def derive_secret(token: str) -> str:
    """A stable secret token for setWebhook when none is configured: never the bot token itself, the same
    across restarts and processes of one bot (so an overlapping deploy's requests still verify)."""
    return hashlib.sha256(b"tgsnap webhook secret\0" + token.encode()).hexdigest()


class DurableWebhook:
    """`await start()` → serving on host:port and registered with Telegram; `await stop()`."""

    def __init__(self, dispatcher: Dispatcher, bot: Bot, store: Store, *, url: str, secret_token: str,
                 host: str = "0.0.0.0", port: int = 8080, max_connections: int = 40,  # noqa: S104 - a server
                 **workflow: Any):
        if not secret_token:
            raise ValueError("a webhook needs a secret token (derive_secret(bot_token) gives a stable one)")
        self.dispatcher = dispatcher
        self.bot = bot
        self.store = store
        self.url = url
        self.path = urlsplit(url).path or "/"
        self.secret_token = secret_token
        self.host = host
        self.port = port
        self.max_connections = max_connections
        self.workflow = workflow
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._stop_requested = asyncio.Event()
        #: deleteWebhook on stop (a successor sets its own after it took the storage over).
        self.delete_on_stop = True
        #: answer 503 when an update is not durable after this many seconds (see ANSWER_WITHIN).
        self.answer_within = ANSWER_WITHIN
        #: answered updates, refused requests; for tests and logs.
        self.answered = 0
        self.refused = 0
        # hurry_after=0: Telegram sends one request per chat at a time, so the wait for durability delays
        # that user's next update; without a rate budget cut at once (requests arriving meanwhile share
        # the next cut), on Telegram storage the budgeted rule applies as in polling
        self.hurry = HurryRule(store, limit=max_connections, hurry_after=0.0)

    @property
    def running_handlers(self) -> int:
        return len(self._tasks)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(self.path, self._handle)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            self.port = self._runner.addresses[0][1]
        await self.bot.set_webhook(url=self.url, secret_token=self.secret_token,
                                   max_connections=self.max_connections,
                                   allowed_updates=self.dispatcher.resolve_used_update_types())
        log.info("webhook set: Telegram posts updates to %s (serving on %s:%d)", self.url, self.host, self.port)

    async def run(self, *, drain: float = 20.0) -> None:
        """start(), serve until `stop()`, then finish: running requests get up to `drain` s (hurried)
        to become durable (one still waiting after that gets no 2xx: Telegram sends it again), then
        deleteWebhook and the server closes."""
        if self._runner is None:
            await self.start()
        try:
            await self._stop_requested.wait()
        finally:
            await self._finish(drain)

    def stop(self) -> None:
        """Ask `run()` to finish (safe from a signal handler; twice is harmless). Requests from now on get
        503, which Telegram retries."""
        self._stopping = True
        self._stop_requested.set()

    async def _finish(self, drain: float) -> None:
        self._stopping = True
        if self._tasks:
            log.info("waiting for %d webhook request(s)", len(self._tasks))
            self.hurry.check(forced=True)  # they wait for durability once done: not for the next tick
            _, pending = await asyncio.wait(set(self._tasks), timeout=drain)
            for task in pending:
                task.cancel()
        if self.delete_on_stop:
            try:
                await self.bot.delete_webhook()
            except TelegramAPIError as exc:
                log.warning("could not delete the webhook (%s); Telegram keeps posting to %s", exc, self.url)
        await self.close_server()
        self.hurry.close()

    async def close_server(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if not secrets.compare_digest(request.headers.get(SECRET_HEADER, ""), self.secret_token):
            self.refused += 1
            return web.Response(status=401, text="wrong secret token")
        if self._stopping:
            # Not ours to take any more: Telegram retries, and the successor (or this bot restarted) gets it.
            return web.Response(status=503, text="stopping")
        try:
            update = Update.model_validate(await request.json(), context={"bot": self.bot})
        except Exception:  # not an update: Telegram never sends that, and a 4xx makes nobody retry it
            log.warning("webhook: a request that is not an update was refused")
            return web.Response(status=400, text="not an update")
        # The handler runs in its own task: a dropped connection cancels this request, not the handler
        # (which would leave its reply half sent and its writes half made).
        task = asyncio.ensure_future(self._process(update))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            durable = await asyncio.wait_for(asyncio.shield(task), self.answer_within)
        except TimeoutError:
            # Still not durable: no 2xx, so Telegram sends the update again later. The handler's task goes
            # on; when the update comes back it is applied once (its effect may be in storage by then).
            log.warning("update %d not durable within %.0f s; Telegram will send it again",
                        update.update_id, self.answer_within)
            durable = False
        if not durable:
            return web.Response(status=503, text="not durable")
        self.answered += 1
        return web.json_response({})

    async def _process(self, update: Update) -> bool:
        try:
            await self.dispatcher.feed_update(self.bot, update, **self.workflow)
        except Exception:
            log.exception("update %d failed", update.update_id)  # confirmed once durable, as in polling
        ticket = self.store.write_ticket()
        if ticket:
            self.hurry.note(forced=self._stopping or len(self._tasks) >= self.max_connections)
        try:
            await self.store.wait_durable(ticket)
        except Exception as exc:
            log.warning("update %d not confirmed: its writes are not durable (%s)", update.update_id, exc)
            return False
        return True

