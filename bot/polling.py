"""Long polling that confirms an update to Telegram only once its effect is durable.

Telegram confirms an update when getUpdates is called with an offset above its id; aiogram's
`start_polling` does that with its very next call, long before the click the handler wrote is in
storage, so a kill -9 loses every click of the last flush window. This poller (public aiogram API
only: `bot.get_updates`, `dispatcher.feed_update`) keeps two numbers instead of one:

- the *frontier*: updates below it were handed to a handler (at once: replies are not delayed);
- the *offset* sent to Telegram: updates below it are confirmed, and an update is confirmed only when
  its handler has finished and every write it made is durable (`Store.write_ticket` taken after the
  handler, `Store.wait_durable`), and every earlier update is confirmed too (update-id order).

Between the two, Telegram keeps returning the handed-over but unconfirmed updates with every poll (the
Bot API has no way to ask for newer updates without confirming older ones); they are recognised by id
and skipped. So while any are outstanding every poll costs Telegram and the bot the whole window again,
and the poller spaces its polls by the window's size: `repoll` (0.2 ms) per outstanding update, at most
`repoll_max` (20 ms, a full window's); after polls that brought nothing new the wait doubles up to
`repoll_max`, and a confirmation that moves the offset (which shrinks what the next poll carries) ends
any wait. A new update waits at most `repoll_max` to be seen: on a local directory, where the window is
a few updates deep, about a millisecond; on Telegram storage, where it is tens deep until the budget's
next delta, 10–20 ms, one poll per few updates. With nothing outstanding it long-polls as usual.

The window of outstanding updates is kept small by `HurryRule`, because every poll while any are
outstanding carries them again (the emulator or Telegram serializes them, the bot reads them, only to
skip them), and a poll returns at most 100 updates: with 100 outstanding no new one can be seen at all.
On a backend without a rate budget (a local directory) the flush is hurried once the oldest update
waiting for durability has waited `hurry_after` (10 ms) or `hurry_count` (24) wait: a group commit,
and handlers finishing while a cut is on its way share the next one too. On a rate-budgeted backend (Telegram) the flush
loop's own interval is what the budget was planned for, so the poller hurries only when half a poll's
worth is waiting *and* the budget has a slot free at once (`Store.hurry_wait`), and unconditionally only
when the window is full (the budget still paces that flush: it waits for its slot).

After a crash Telegram delivers again everything not confirmed, which includes everything not durable;
handlers must apply a redelivered update once (the clicker's do: see bot/users.py).

On `stop()`: stop asking for new updates, let every running handler finish, hurry the flush, confirm
exactly the updates whose effect is durable. Updates never fetched, or fetched by a poll cancelled before
it returned, or not durable by then, stay with Telegram for the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.exceptions import TelegramAPIError, TelegramNetworkError, TelegramRetryAfter, TelegramUnauthorizedError
from aiogram.methods import GetUpdates
from aiogram.types import Update

from bot.aiogram_costs import keep_response_types
from core import Store

log = logging.getLogger(__name__)


class _RawGetUpdates(GetUpdates):
    """getUpdates answering plain dicts: the poller parses only the updates it has not handed over yet
    (Telegram returns every outstanding one with every poll, and aiogram would parse them all again)."""

    __returning__ = list[dict[str, Any]]  # type: ignore[assignment]

keep_response_types(_RawGetUpdates)  # one per poll: not rebuilt after each GC (bot/aiogram_costs.py)

#: getUpdates returns at most this many updates (Bot API: "Values between 1-100 are accepted").
POLL_LIMIT = 100
#: on a backend without a rate budget: hurry once the oldest update waiting for durability has waited
#: this long (seconds), or once this many wait. A cut on a local directory costs a fraction of a
#: millisecond of the loop, and handlers finishing while one is on its way share the next (a group
#: commit), so 10 ms keeps the window of outstanding updates a few deep and the poller back to long
#: polling (a new update seen the moment it arrives) within milliseconds. Measured at 1 M users through
#: the emulator: reply p50 5 ms at 50 msg/s (the previous 200 ms / 24: 11 ms), a delta per update at
#: low rates and 50-70 a second under load (a snapshot every ~20 s while busy). Hurrying at once instead
#: made a delta per cut's round trip (~150 a second at 400 msg/s) and so a snapshot every few seconds
#: (the snapshot-every-1000-deltas rule; at 1 M users ~0.3 s of CPU and 22 MB each): 0.87 against 0.72
#: CPU-seconds per second of the bot at 400 msg/s, for no lower latency.
HURRY_AFTER = 0.01
HURRY_COUNT = 24
#: while updates are outstanding, the wait between polls: this many seconds per outstanding update (a
#: poll carries them all again), at most REPOLL_MAX (a full window of 100: 20 ms, as long as a new update
#: can wait to be seen).
REPOLL = 0.0002
REPOLL_MAX = 0.02


class HurryRule:
    """When to ask the flush loop for a cut early, for updates handled but not yet durable.

    `note()` after each handler (its writes are then in the store); `check(forced=True)` when nothing
    new can arrive until some become durable (the poll window or the webhook's connections are full,
    or the bot is stopping). The rule never confirms anything itself: confirmation still waits for
    `wait_durable`, so whatever it decides, no update is confirmed before its writes are durable.
    """

    def __init__(self, store: Store, *, limit: int, hurry_after: float = HURRY_AFTER,
                 hurry_count: int = HURRY_COUNT):
        self.store = store
        #: the most updates that can wait at once (a poll's 100, the webhook's max_connections).
        self.limit = limit
        self.hurry_after = hurry_after
        self.hurry_count = hurry_count
        #: handled since the last hurry (and not known to be durable), and since when.
        self._waiting = 0
        self._since: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        #: hurries asked for: by a threshold, and because the window was full (for tests and logs).
        self.hurried = 0
        self.forced = 0

    def note(self, *, forced: bool = False) -> None:
        """A handler finished: its update waits for its writes to become durable."""
        if self._since is None:
            self._since = asyncio.get_running_loop().time()
        self._waiting += 1
        self.check(forced=forced)

    def check(self, *, forced: bool = False) -> None:
        if self._waiting == 0:
            return
        if self.store.write_ticket() == 0:  # the flush loop's own tick made them durable meanwhile
            self._reset()
            return
        if forced:
            self.forced += 1
            self._hurry()
            return
        wait = self.store.hurry_wait()
        if wait is None:  # no rate budget: a cut costs only I/O
            due = 0.0 if self._waiting >= self.hurry_count else self._age_due(self.hurry_after)
        elif self._waiting >= self.limit // 2:
            due = wait  # budgeted: only a slot free now, never one borrowed from the flush loop's pace
            if due > 0:
                return  # the interval's flush comes anyway; a full window forces one
        else:
            return
        if due <= 0:
            self.hurried += 1
            self._hurry()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(due, self._timed)

    def _age_due(self, after: float) -> float:
        assert self._since is not None
        return self._since + after - asyncio.get_running_loop().time()

    def _timed(self) -> None:
        self._timer = None
        self.check()

    def _reset(self) -> None:
        self._waiting = 0
        self._since = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _hurry(self) -> None:
        self._reset()
        # One waiter with hurry=True wakes the flush loop; if a delta is on its way, the next ships as
        # soon as it lands (the writes of every handler finished by now are in that cut).
        with contextlib.suppress(Exception):
            hurry = asyncio.ensure_future(self.store.wait_durable(self.store.write_ticket(), hurry=True))
            hurry.add_done_callback(lambda f: f.cancelled() or f.exception())

    def close(self) -> None:
        self._reset()


class Poller:
    """Durable long polling over `store`; `run()` until `stop()`."""

    def __init__(self, dispatcher: Dispatcher, bot: Bot, store: Store, *, timeout: int = 10,
                 repoll: float = REPOLL, repoll_max: float = REPOLL_MAX, drain: float = 20.0,
                 hurry_after: float = HURRY_AFTER,
                 hurry_count: int = HURRY_COUNT, **workflow: Any):
        self.dispatcher = dispatcher
        self.bot = bot
        self.store = store
        self.timeout = timeout
        #: while updates are outstanding: seconds between two polls per outstanding update, and the
        #: longest wait (after polls that brought nothing new the wait doubles up to it).
        self.repoll = repoll
        self.repoll_max = max(repoll, repoll_max)
        #: on stop, how long running handlers get to finish and become durable.
        self.drain = drain
        self.workflow = workflow
        #: the offset sent to Telegram: every update below it is handled and durable (None: none yet).
        self.offset: int | None = None
        #: update id -> True once handled and durable; in update-id order; all are >= offset.
        self._outstanding: dict[int, bool] = {}
        #: one above the last update handed to a handler.
        self._frontier: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._progress = asyncio.Event()
        self._poll: asyncio.Task[list[dict[str, Any]]] | None = None
        self.hurry = HurryRule(store, limit=POLL_LIMIT, hurry_after=hurry_after, hurry_count=hurry_count)
        #: updates handed to handlers / confirmed, for tests and /status.
        self.handled = 0
        self.confirmed = 0

    @property
    def running_handlers(self) -> int:
        return len(self._tasks)

    @property
    def outstanding(self) -> int:
        """Updates handed to a handler and not yet confirmed to Telegram."""
        return len(self._outstanding)

    async def run(self) -> None:
        """Poll and dispatch until `stop()`; then drain handlers and confirm what is durable.

        Network trouble, server errors and conflicts are retried with backoff; a refused token ends it.
        """
        try:
            await self._poll_until_stopped()
        finally:
            try:
                await self._finish()
            finally:
                self.hurry.close()

    async def _poll_until_stopped(self) -> None:
        allowed = self.dispatcher.resolve_used_update_types()
        delay = 0.5
        brought_new = True
        loop = asyncio.get_running_loop()
        idle = 0  # polls in a row that brought nothing new while updates were outstanding
        last_poll = -1e9
        while not self._stopping.is_set():
            if not self._outstanding:
                idle = 0
            elif not brought_new:
                # Telegram would answer at once with the outstanding updates: wait for news first.
                full = len(self._outstanding) >= POLL_LIMIT
                idle += 1
                await self._wait_progress(None if full else min(self._gap() * 2 ** min(idle, 16), self.repoll_max))
            else:
                idle = 0
                gap = self._gap() - (loop.time() - last_poll)
                if gap > 0:
                    await self._wait_progress(gap)
            if self._stopping.is_set():
                break
            self._progress.clear()
            last_poll = loop.time()
            asked = self.offset
            self._poll = asyncio.ensure_future(self.bot(_RawGetUpdates(
                offset=self.offset, limit=POLL_LIMIT, timeout=0 if self._outstanding else self.timeout,
                allowed_updates=allowed), request_timeout=self.timeout + 30))
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
            brought_new = False
            for raw in updates:
                update_id = int(raw["update_id"])
                if asked is not None and self._frontier is not None and asked <= update_id < self._frontier:
                    # Handed over already: outstanding, or confirmed while this poll was on its way. (Ids
                    # restart at random only after a week without updates, when this range is empty.)
                    continue
                brought_new = True
                update = Update.model_validate(raw, context={"bot": self.bot})
                self._frontier = update.update_id + 1
                if not self._outstanding:
                    # The only outstanding update: the offset moves to it (ids restart after a week
                    # without updates, so a lower id with nothing outstanding is new, not old).
                    self.offset = update.update_id
                self._outstanding[update.update_id] = False
                self._dispatch(update)

    def _gap(self) -> float:
        """The least time between polls while updates are outstanding: each poll carries all of them again,
        so the wait grows with how many (`repoll` per update, `repoll_max` for a full window)."""
        return min(self.repoll * len(self._outstanding), self.repoll_max)

    def stop(self) -> None:
        """Ask `run()` to stop taking updates (safe to call from a signal handler, twice is harmless)."""
        self._stopping.set()

    def _dispatch(self, update: Update) -> None:
        task = asyncio.create_task(self._handle(update))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, update: Update) -> None:
        self.handled += 1
        try:
            await self.dispatcher.feed_update(self.bot, update, **self.workflow)
        except Exception:
            # Confirmed once durable all the same, as aiogram does: a handler that always fails must not
            # come back forever. What it wrote before failing is made durable first.
            log.exception("update %d failed", update.update_id)
        ticket = self.store.write_ticket()
        if ticket:
            self.hurry.note(forced=self._window_full())
        try:
            await self.store.wait_durable(ticket)
        except Exception as exc:  # fenced or closed: never confirmed, Telegram sends it again
            log.warning("update %d not confirmed: its writes are not durable (%s)", update.update_id, exc)
            return
        self._durable(update.update_id)

    def _window_full(self) -> bool:
        return self._stopping.is_set() or len(self._outstanding) >= POLL_LIMIT

    def _durable(self, update_id: int) -> None:
        if update_id not in self._outstanding:
            return
        self._outstanding[update_id] = True
        moved = False
        while self._outstanding:
            first = next(iter(self._outstanding))
            if not self._outstanding[first]:
                self.offset = first
                break
            del self._outstanding[first]
            self.offset = first + 1
            self.confirmed += 1
            moved = True
        if moved:
            self._progress.set()

    async def _wait_progress(self, seconds: float | None) -> None:
        if seconds is None:
            # Nothing new can be seen before a confirmation: make it come sooner.
            self.hurry.check(forced=True)
        waits = {asyncio.ensure_future(self._progress.wait()), asyncio.ensure_future(self._stopping.wait())}
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _finish(self) -> None:
        if self._tasks:
            log.info("waiting for %d running handler(s)", len(self._tasks))
            # They wait for durability once done: do not make them wait for the next tick.
            with contextlib.suppress(Exception):
                hurry = asyncio.ensure_future(self.store.wait_durable(self.store.write_ticket(), hurry=True))
                hurry.add_done_callback(lambda f: f.cancelled() or f.exception())
            _, late = await asyncio.wait(set(self._tasks), timeout=self.drain)
            if late:
                log.warning("%d handler(s) still running after %.0f s; their updates stay unconfirmed",
                            len(late), self.drain)
        await self.confirm()

    async def confirm(self) -> None:
        """Tell Telegram about every update confirmed so far, without taking a new one."""
        if self.offset is None:
            return
        if self._outstanding:
            log.warning("%d update(s) not durable at stop; Telegram will send them again", len(self._outstanding))
        # An update is confirmed by a later getUpdates whose offset is above it; the one update this call
        # may return stays unconfirmed.
        try:
            await self.bot.get_updates(offset=self.offset, limit=1, timeout=0)
        except Exception as exc:
            log.warning("could not confirm handled updates (%s); Telegram will send them again, and "
                        "clicks already counted will not count twice", exc)
