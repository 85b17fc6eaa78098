"""Long polling that stops cleanly: every update taken is handled to the end and then confirmed.

aiogram's `start_polling` runs each update as a task and confirms updates to Telegram only with its
next getUpdates call; on SIGTERM it cancels the poll but neither waits for running handlers nor confirms
the last batch. For a bot whose state must not lose or double a click that is not good enough, so this
loop (public aiogram API only: `bot.get_updates`, `dispatcher.feed_update`) does three things on `stop()`:
stop asking for updates, wait for every running handler, then confirm exactly the updates it handled.
Updates never fetched, or fetched by a poll cancelled before it returned, stay with Telegram for the
next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.exceptions import TelegramAPIError, TelegramNetworkError, TelegramRetryAfter, TelegramUnauthorizedError
from aiogram.types import Update

log = logging.getLogger(__name__)


class Poller:
    def __init__(self, dispatcher: Dispatcher, bot: Bot, *, timeout: int = 10, **workflow: Any):
        self.dispatcher = dispatcher
        self.bot = bot
        self.timeout = timeout
        self.workflow = workflow
        #: the next update id to ask for; everything below it has been handed to a handler.
        self.offset: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._poll: asyncio.Task[list[Update]] | None = None

    @property
    def running_handlers(self) -> int:
        return len(self._tasks)

    async def run(self) -> None:
        """Poll and dispatch until `stop()`; then drain handlers and confirm what was handled.

        Network trouble, server errors and conflicts are retried with backoff; a refused token ends it.
        """
        try:
            await self._poll_until_stopped()
        finally:
            await self._finish()

    async def _poll_until_stopped(self) -> None:
        allowed = self.dispatcher.resolve_used_update_types()
        delay = 0.5
        while not self._stopping.is_set():
            self._poll = asyncio.ensure_future(self.bot.get_updates(
                offset=self.offset, timeout=self.timeout, allowed_updates=allowed,
                request_timeout=self.timeout + 30))
            stop = asyncio.ensure_future(self._stopping.wait())
            try:
                await asyncio.wait({self._poll, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
            if not self._poll.done():
                # Stopping: the updates this poll would return stay unconfirmed, so Telegram keeps them.
                self._poll.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._poll
                break
            try:
                updates = self._poll.result()
            except TelegramRetryAfter as exc:
                await self._sleep(exc.retry_after)
                continue
            except TelegramUnauthorizedError:
                raise
            except (TelegramAPIError, TelegramNetworkError, OSError) as exc:
                log.warning("getUpdates failed (%s: %s); retrying in %.1f s", type(exc).__name__, exc, delay)
                await self._sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            delay = 0.5
            for update in updates:
                self._dispatch(update)
                self.offset = update.update_id + 1

    def stop(self) -> None:
        """Ask `run()` to stop taking updates (safe to call from a signal handler, twice is harmless)."""
        self._stopping.set()

    def _dispatch(self, update: Update) -> None:
        task = asyncio.create_task(self._handle(update))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, update: Update) -> None:
        try:
            await self.dispatcher.feed_update(self.bot, update, **self.workflow)
        except Exception:
            log.exception("update %d failed", update.update_id)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _finish(self) -> None:
        if self._tasks:
            log.info("waiting for %d running handler(s)", len(self._tasks))
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.offset is not None:
            # Confirm the handled updates without taking a new one: an update is confirmed by a later
            # getUpdates whose offset is above it; the one update this call may return stays unconfirmed.
            try:
                await self.bot.get_updates(offset=self.offset, limit=1, timeout=0)
            except Exception as exc:
                log.warning("could not confirm handled updates (%s); Telegram will send them again, and "
                            "clicks already counted will not count twice", exc)
