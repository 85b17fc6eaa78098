"""The per-chat rate budget: one schedule shared by every send, edit and pin a bot makes in one chat.

Telegram lets a bot post about 20 messages per minute into one channel, and edits and pins draw on the
same allowance; going over earns a 429 (`retry_after`) or FLOOD_WAIT. Rather than provoke those, every
budgeted call first takes a slot from a `ChatBudget`, a GCRA token bucket (the "virtual scheduling"
form: each call reserves the next free slot, so waiters are served in arrival order and nothing is
dropped). The default, 18 per minute with a burst of 3, stays under Telegram's limit with room for a
human posting into the same channel.

A 429 / FLOOD_WAIT from Telegram still pauses the whole chat (`pause`): every caller waits it out, not
just the one that was refused. A caller that would wait longer than its `max_wait` is not queued at all:
it gets a retryable `BackendError` with `retry_after`, so the replica can keep the rows dirty and fold
them into the next delta (backpressure, never loss).

Downloads, getFile and message look-ups do not draw on this budget; deletes do not either (Telegram does
not count them against the posting limit).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from snapshot.errors import BackendError, ConfigError

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class BudgetConfig:
    """How many sends + edits + pins one bot may make per minute in one chat."""

    per_minute: float = 18.0
    burst: int = 3
    #: the longest a call waits for its slot (or a flood pause) before it fails as retryable, seconds.
    max_wait: float = 60.0

    def __post_init__(self) -> None:
        if not self.per_minute > 0:
            raise ConfigError(f"rate budget per_minute must be positive, got {self.per_minute}")
        if self.burst < 1:
            raise ConfigError(f"rate budget burst must be at least 1, got {self.burst}")
        if self.max_wait < 0:
            raise ConfigError(f"rate budget max_wait must not be negative, got {self.max_wait}")

    @property
    def interval(self) -> float:
        """Seconds between two slots at the sustained rate."""
        return 60.0 / self.per_minute


@dataclass
class BudgetStats:
    granted: int = 0  # slots handed out
    refused: int = 0  # callers told to come back later (wait would exceed max_wait)
    flood_pauses: int = 0  # 429 / FLOOD_WAIT answers that paused the chat
    waited: float = 0.0  # total seconds callers slept for a slot


class ChatBudget:
    """A GCRA bucket: slot n may be used at `tat - tolerance` where tat advances by `interval` per slot."""

    def __init__(self, config: BudgetConfig | None = None, *, label: str = "chat",
                 clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        self.config = config or BudgetConfig()
        self.label = label
        self.stats = BudgetStats()
        self._clock = clock
        self._sleep = sleep
        # theoretical arrival time of the next slot; starting in the past grants a full burst at once.
        self._tat = clock() - self._tolerance
        self._paused_until = 0.0

    @property
    def _tolerance(self) -> float:
        return (self.config.burst - 1) * self.config.interval

    def next_slot_in(self) -> float:
        """Seconds until a call made now could go out (0 = at once)."""
        now = self._clock()
        return max(0.0, self._paused_until - now, max(self._tat, now) - self._tolerance - now)

    async def acquire(self, max_wait: float | None = None) -> None:
        """Wait for a slot; BackendError(retryable, retry_after) if that would take more than `max_wait`."""
        limit = self.config.max_wait if max_wait is None else max_wait
        start = self._clock()
        while True:
            now = self._clock()
            wait = self.next_slot_in()
            if wait > limit - (now - start) + 1e-9:
                self.stats.refused += 1
                raise BackendError(
                    f"rate budget for {self.label} is spent: next send in {wait:.1f}s "
                    f"({self.config.per_minute:g}/min, burst {self.config.burst}); the rows stay dirty and go out "
                    "in the next delta",
                    retryable=True, retry_after=wait)
            if now < self._paused_until:
                # a flood pause: wait it out, then compete for a slot again.
                await self._nap(self._paused_until - now)
                continue
            tat = max(self._tat, now)
            self._tat = tat + self.config.interval  # reserve our slot before sleeping: FIFO by arrival
            wait = tat - self._tolerance - now
            if wait > 0:
                await self._nap(wait)
                if self._clock() < self._paused_until:
                    continue  # paused while we slept: our slot is void, take a later one
            self.stats.granted += 1
            return

    def pause(self, seconds: float) -> None:
        """Telegram said 429/FLOOD_WAIT: nobody sends to this chat for `seconds`, then one at a time."""
        now = self._clock()
        until = now + max(0.0, seconds)
        self.stats.flood_pauses += 1
        if until > self._paused_until:
            self._paused_until = until
        # after the pause the bucket restarts empty: one call at the pause's end, then the sustained rate.
        self._tat = max(self._tat, self._paused_until + self._tolerance)

    async def _nap(self, seconds: float) -> None:
        self.stats.waited += seconds
        await self._sleep(seconds)


_SHARED: dict[tuple[object, ...], ChatBudget] = {}


def shared_budget(bot_id: int, chat: int | str, config: BudgetConfig | None = None) -> ChatBudget:
    """The one budget of (bot, chat) in this process, so two backends on one chat never double the rate.

    The first caller's config wins; a later caller asking for a different config gets the same bucket.
    """
    key = (bot_id, str(chat))
    budget = _SHARED.get(key)
    if budget is None:
        budget = _SHARED[key] = ChatBudget(config, label=f"chat {chat}")
    return budget
