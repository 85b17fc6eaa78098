"""Webhook delivery, as telegram-bot-api does it (telegram-bot-api/WebhookActor.cpp and Client.cpp).

`setWebhook` stores the URL, `secret_token` and `max_connections` (kept in the world, so they outlive an
emulator restart as Telegram's do); from then on getUpdates answers 409 ("Conflict: can't use getUpdates
method while webhook is active; use deleteWebhook to delete the webhook first") and a delivery task per
bot POSTs each update as JSON to the URL:

- at most `max_connections` requests in flight (Client.cpp: 1..100, default 40; the emulator is a
  `--local` server, so plain http on any port of 127.0.0.1 is allowed, as in local mode);
- updates of one chat one at a time, in order (WebhookActor keeps one queue per webhook_queue_id, the
  chat for message updates, and sends a queue's next update only after the previous one was answered);
- header `X-Telegram-Bot-Api-Secret-Token` when a secret token was set (1-256 characters of A-Z a-z 0-9
  _ -: "Bad Request: secret token contains unallowed characters" / "... is too long");
- an update is forgotten only on an HTTP 2xx answer; anything else (another status, a refused or dropped
  connection, no answer within 60 s: HttpOutboundConnection's idle timeout in WebhookActor) is an error
  recorded for getWebhookInfo (`last_error_date`, `last_error_message` "Wrong response from the webhook:
  502 Bad Gateway") and the update is sent again: at once after the first failure, then after 2, 4, 8 ...
  seconds up to a random 60-120 s (on_update_error), or after the answer's Retry-After;
- a method in the answer's body is not executed by the emulator (Telegram would run it); bots here send
  their replies with their own requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ..world import World

log = logging.getLogger("tools.emulator.webhook")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
DEFAULT_MAX_CONNECTIONS = 40
MAX_CONNECTIONS = 100
#: WebhookActor: HttpOutboundConnection(..., idle timeout 60)
REQUEST_TIMEOUT = 60.0
#: WebhookActor::WEBHOOK_MAX_RESEND_TIMEOUT
MAX_RESEND = 60
_SECRET = re.compile(r"[A-Za-z0-9_-]*")

_TABLE = """CREATE TABLE IF NOT EXISTS webhooks(
    bot_id INTEGER PRIMARY KEY,
    url TEXT NOT NULL,
    secret_token TEXT NOT NULL,
    max_connections INTEGER NOT NULL,
    last_error_date INTEGER,
    last_error_message TEXT
)"""


class WebhookError(ValueError):
    """A setWebhook parameter Telegram refuses; the text is Telegram's description."""


@dataclass
class _Pending:
    delay: int = 1
    fails: int = 0
    wakeup_at: float = 0.0


@dataclass
class _Actor:
    bot_id: int
    url: str
    secret_token: str
    max_connections: int
    task: asyncio.Task[None] | None = None
    in_flight: dict[int, int] = field(default_factory=dict)  # update id -> queue (chat) key
    pending: dict[int, _Pending] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: requests answered 2xx, and errors, for tests and getWebhookInfo.
    delivered: int = 0
    max_seen_in_flight: int = 0


def queue_key(payload: dict[str, Any]) -> str:
    """Which updates are delivered one at a time: those of one chat (callback queries: of one user)."""
    if payload.get("kind") == "callback_query":
        return f"user:{payload.get('from_id')}"
    message = payload.get("message") or {}
    return f"chat:{message.get('chat_key')}"


class Webhooks:
    """Every bot's webhook: settings in the world's database, one delivery task per active webhook."""

    def __init__(self, world: World, render: Any) -> None:
        self.world = world
        self._render = render  # bot_id -> callable(update) -> Bot API JSON
        world.db.execute(_TABLE)
        self._actors: dict[int, _Actor] = {}
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    # ---- methods -------------------------------------------------------------------------------

    def active(self, bot_id: int) -> bool:
        return self.world.db.execute("SELECT 1 FROM webhooks WHERE bot_id = ?", (bot_id,)).fetchone() is not None

    def set(self, bot_id: int, url: str, secret_token: str, max_connections: int | None) -> None:
        if not re.match(r"^https?://[^/\s]+", url):
            raise WebhookError("Bad Request: invalid webhook URL specified")
        if len(secret_token) > 256:
            raise WebhookError("Bad Request: secret token is too long")
        if not _SECRET.fullmatch(secret_token):
            raise WebhookError("Bad Request: secret token contains unallowed characters")
        connections = DEFAULT_MAX_CONNECTIONS if max_connections is None else max_connections
        if not 1 <= connections <= MAX_CONNECTIONS:
            raise WebhookError("Bad Request: max_connections must be between 1 and 100")
        with self.world._tx() as db:
            db.execute("INSERT INTO webhooks VALUES(?, ?, ?, ?, NULL, NULL) ON CONFLICT(bot_id) DO UPDATE SET "
                       "url = excluded.url, secret_token = excluded.secret_token, "
                       "max_connections = excluded.max_connections", (bot_id, url, secret_token, connections))
        self._stop_actor(bot_id)
        self._start_actor(bot_id)

    def delete(self, bot_id: int) -> bool:
        """Remove the webhook; True if there was one."""
        with self.world._tx() as db:
            had = db.execute("DELETE FROM webhooks WHERE bot_id = ?", (bot_id,)).rowcount > 0
        self._stop_actor(bot_id)
        return had

    def info(self, bot_id: int) -> dict[str, Any]:
        row = self.world.db.execute(
            "SELECT url, max_connections, last_error_date, last_error_message FROM webhooks WHERE bot_id = ?",
            (bot_id,)).fetchone()
        out: dict[str, Any] = {"url": row[0] if row else "", "has_custom_certificate": False,
                               "pending_update_count": self.world.pending_update_count(bot_id)}
        if row is not None:
            if row[2] is not None:
                out["last_error_date"] = row[2]
                out["last_error_message"] = row[3]
            out["max_connections"] = row[1]
            out["ip_address"] = "127.0.0.1"
        return out

    def stats(self, bot_id: int) -> dict[str, int]:
        actor = self._actors.get(bot_id)
        if actor is None:
            return {"delivered": 0, "in_flight": 0, "max_in_flight": 0}
        return {"delivered": actor.delivered, "in_flight": len(actor.in_flight),
                "max_in_flight": actor.max_seen_in_flight}

    # ---- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Resume delivery for every webhook stored (an emulator restart keeps webhooks, as Telegram)."""
        for (bot_id,) in self.world.db.execute("SELECT bot_id FROM webhooks").fetchall():
            self._start_actor(bot_id)

    async def close(self) -> None:
        self._closed = True
        tasks = [a.task for a in self._actors.values() if a.task is not None]
        for bot_id in list(self._actors):
            self._stop_actor(bot_id)
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def _start_actor(self, bot_id: int) -> None:
        if self._closed:
            return
        row = self.world.db.execute("SELECT url, secret_token, max_connections FROM webhooks WHERE bot_id = ?",
                                    (bot_id,)).fetchone()
        if row is None:
            return
        actor = _Actor(bot_id, row[0], row[1], row[2])
        actor.task = asyncio.get_running_loop().create_task(self._deliver(actor), name=f"webhook-{bot_id}")
        self._actors[bot_id] = actor

    def _stop_actor(self, bot_id: int) -> None:
        actor = self._actors.pop(bot_id, None)
        if actor is not None and actor.task is not None:
            actor.task.cancel()

    # ---- delivery ------------------------------------------------------------------------------

    async def _deliver(self, actor: _Actor) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))
        requests: set[asyncio.Task[None]] = set()
        try:
            while True:
                signal = self.world.updates_signal(actor.bot_id)
                actor.wake.clear()
                next_wakeup = self._send_ready(actor, requests)
                waits = {asyncio.ensure_future(signal.wait()), asyncio.ensure_future(actor.wake.wait())}
                timeout = None if next_wakeup is None else max(0.0, next_wakeup - time.monotonic())
                try:
                    await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits:
                        w.cancel()
        finally:
            for task in requests:
                task.cancel()
            await asyncio.gather(*requests, return_exceptions=True)

    def _send_ready(self, actor: _Actor, requests: set[asyncio.Task[None]]) -> float | None:
        """Start requests for ready updates; the monotonic time a delayed one becomes ready (or None)."""
        now = time.monotonic()
        busy = set(actor.in_flight.values())
        next_wakeup: float | None = None
        # Telegram loads at most 2 x max_connections updates at a time (WebhookActor::max_loaded_updates_).
        loaded = self.world.get_updates(actor.bot_id, 0, min(100, 2 * actor.max_connections))
        for update in loaded:
            if len(actor.in_flight) >= actor.max_connections:
                break
            key = queue_key(update.payload)
            if update.update_id in actor.in_flight or key in busy:
                busy.add(key)
                continue
            busy.add(key)  # later updates of this chat wait for this one, delayed or not
            state = actor.pending.setdefault(update.update_id, _Pending())
            if state.wakeup_at > now:
                next_wakeup = state.wakeup_at if next_wakeup is None else min(next_wakeup, state.wakeup_at)
                continue
            actor.in_flight[update.update_id] = key
            actor.max_seen_in_flight = max(actor.max_seen_in_flight, len(actor.in_flight))
            body = self._render(actor.bot_id, update)
            task = asyncio.ensure_future(self._post(actor, update.update_id, body))
            requests.add(task)
            task.add_done_callback(requests.discard)
        return next_wakeup

    async def _post(self, actor: _Actor, update_id: int, body: dict[str, Any]) -> None:
        assert self._session is not None
        headers = {"Content-Type": "application/json"}
        if actor.secret_token:
            headers[SECRET_HEADER] = actor.secret_token
        error: str | None = None
        retry_after = 0
        try:
            async with self._session.post(actor.url, data=json.dumps(body, ensure_ascii=False).encode(),
                                          headers=headers) as response:
                await response.read()
                if not 200 <= response.status <= 299:
                    error = f"Wrong response from the webhook: {response.status} {response.reason}"
                    with_retry = response.headers.get("Retry-After", "0")
                    retry_after = int(with_retry) if with_retry.isdigit() else 0
        except TimeoutError:
            error = "Read timeout expired"
        except aiohttp.ClientConnectorError:
            error = "Connection refused"
        except aiohttp.ClientError as exc:
            error = f"Webhook connection closed ({type(exc).__name__})"
        finally:
            actor.in_flight.pop(update_id, None)
        if actor is not self._actors.get(actor.bot_id):
            return  # the webhook was changed or deleted meanwhile
        if error is None:
            actor.pending.pop(update_id, None)
            actor.delivered += 1
            self.world.forget_update(actor.bot_id, update_id)
        else:
            self._failed(actor, update_id, error, retry_after)
        actor.wake.set()

    def _failed(self, actor: _Actor, update_id: int, error: str, retry_after: int) -> None:
        # WebhookActor::on_update_error: the first failure retries after retry_after (0: at once), later
        # ones double the delay from 1 s up to a random 60-120 s.
        state = actor.pending.setdefault(update_id, _Pending())
        retry_after = max(0, min(retry_after, 3600))
        effective = retry_after
        if retry_after == 0 and state.fails > 0:
            state.delay = min(random.randint(MAX_RESEND, 2 * MAX_RESEND), state.delay * 2)
            effective = state.delay
        state.wakeup_at = time.monotonic() + effective
        state.fails += 1
        with self.world._tx() as db:
            db.execute("UPDATE webhooks SET last_error_date = ?, last_error_message = ? WHERE bot_id = ?",
                       (self.world.now(), error, actor.bot_id))
        log.info("webhook for bot %d: update %d failed (%s); again in %d s", actor.bot_id, update_id, error,
                 effective)
