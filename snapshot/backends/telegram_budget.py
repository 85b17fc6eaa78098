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

**Adaptive.** Telegram's limits are not a clean bucket: overruns are punished with escalating
`retry_after` (minutes after repeated ones), and a steady pattern near the limit draws them too. So every
flood answer also *slows the budget down* (the rate is multiplied by `flood_backoff`, never below
`min_factor` of the configured rate), and it recovers gradually: `recovery_step` of the configured rate
back per `recovery_s` without a flood (additive increase, multiplicative decrease, as TCP does).

**Edits of one message** have a bound of their own (`edits_per_minute`, `edit_burst`): editing the same
message ~15 times a minute without end is the pattern reported to draw long penalties, and the manifest is
one message edited over and over. Callers pass `edit_of=<message id>` for such edits.

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

    #: Telegram states ~20 messages a minute per channel (edits and pins included): 10 % below it.
    per_minute: float = 18.0
    burst: int = 3
    #: the longest a call waits for its slot (or a flood pause) before it fails as retryable, seconds.
    max_wait: float = 60.0
    #: after a 429 / FLOOD_WAIT the rate is multiplied by this ...
    flood_backoff: float = 0.5
    #: ... but never below this fraction of `per_minute`;
    min_factor: float = 0.25
    #: then it climbs back by `recovery_step` × `per_minute` for every `recovery_s` without a flood answer.
    recovery_s: float = 60.0
    recovery_step: float = 0.125
    #: edits of one message (the manifest): below the ~15 a minute reported to draw escalating penalties.
    #: None: 2/3 of `per_minute` (12 of the default 18) and `burst` - 1 (2), so a budget scaled up or down
    #: (tests at 30x, an "unlimited" one) scales its edit bound with it.
    edits_per_minute: float | None = None
    edit_burst: int | None = None

    def __post_init__(self) -> None:
        if not self.per_minute > 0:
            raise ConfigError(f"rate budget per_minute must be positive, got {self.per_minute}")
        if self.burst < 1:
            raise ConfigError(f"rate budget burst must be at least 1, got {self.burst}")
        if self.max_wait < 0:
            raise ConfigError(f"rate budget max_wait must not be negative, got {self.max_wait}")
        if not 0 < self.flood_backoff <= 1 or not 0 < self.min_factor <= 1:
            raise ConfigError("rate budget flood_backoff and min_factor must be in (0, 1]")
        if not self.recovery_s > 0 or not self.recovery_step > 0:
            raise ConfigError("rate budget recovery_s and recovery_step must be positive")
        if not self.edit_rate > 0 or self.edit_burst_size < 1:
            raise ConfigError("rate budget edits_per_minute must be positive and edit_burst at least 1")

    @property
    def interval(self) -> float:
        """Seconds between two slots at the sustained rate."""
        return 60.0 / self.per_minute

    @property
    def edit_rate(self) -> float:
        """Edits of one message per minute in force."""
        return self.edits_per_minute if self.edits_per_minute is not None else self.per_minute * 2 / 3

    @property
    def edit_burst_size(self) -> int:
        return self.edit_burst if self.edit_burst is not None else max(1, self.burst - 1)


@dataclass
class BudgetStats:
    granted: int = 0  # slots handed out
    refused: int = 0  # callers told to come back later (wait would exceed max_wait)
    flood_pauses: int = 0  # 429 / FLOOD_WAIT answers that paused the chat
    waited: float = 0.0  # total seconds callers slept for a slot
    slowest_factor: float = 1.0  # the lowest fraction of the configured rate the budget fell to


class ChatBudget:
    """A GCRA bucket: slot n may be used at `tat - tolerance` where tat advances by `interval` per slot."""

    def __init__(self, config: BudgetConfig | None = None, *, label: str = "chat",
                 clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        self.config = config or BudgetConfig()
        self.label = label
        self.stats = BudgetStats()
        self._clock = clock
        self._sleep = sleep
        self._factor = 1.0  # fraction of the configured rate in force (adaptive)
        self._factor_since = clock()  # when `_factor` was last set (recovery counts from there)
        self._edit_tat: dict[object, float] = {}
        # theoretical arrival time of the next slot; starting in the past grants a full burst at once.
        self._tat = clock() - self._tolerance
        self._paused_until = 0.0

    @property
    def factor(self) -> float:
        """The fraction of `per_minute` in force now: below 1 after flood answers, climbing back over time."""
        c = self.config
        steps = int(max(0.0, self._clock() - self._factor_since) // c.recovery_s)
        return min(1.0, self._factor + steps * c.recovery_step)

    @property
    def interval(self) -> float:
        """Seconds between two slots at the rate in force."""
        return self.config.interval / self.factor

    @property
    def _tolerance(self) -> float:
        return (self.config.burst - 1) * self.interval

    def next_slot_in(self) -> float:
        """Seconds until a call made now could go out (0 = at once)."""
        now = self._clock()
        return max(0.0, self._paused_until - now, max(self._tat, now) - self._tolerance - now)

    async def acquire(self, max_wait: float | None = None, *, edit_of: object | None = None) -> None:
        """Wait for a slot; BackendError(retryable, retry_after) if that would take more than `max_wait`.

        `edit_of` names the message an edit is for: it also takes a slot of that message's edit bound."""
        limit = self.config.max_wait if max_wait is None else max_wait
        start = self._clock()
        if edit_of is not None:
            await self._edit_slot(edit_of, limit)
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
            self._tat = tat + self.interval  # reserve our slot before sleeping: FIFO by arrival
            wait = tat - self._tolerance - now
            if wait > 0:
                await self._nap(wait)
                if self._clock() < self._paused_until:
                    continue  # paused while we slept: our slot is void, take a later one
            self.stats.granted += 1
            return

    async def _edit_slot(self, message: object, limit: float) -> None:
        c = self.config
        interval = 60.0 / c.edit_rate
        tolerance = (c.edit_burst_size - 1) * interval
        now = self._clock()
        tat = max(self._edit_tat.get(message, now - tolerance), now)
        wait = tat - tolerance - now
        if wait > limit + 1e-9:
            self.stats.refused += 1
            raise BackendError(
                f"edits of message {message} in {self.label} are spent: next edit in {wait:.1f}s "
                f"({c.edit_rate:g}/min per message); the rows stay dirty and go out in the next delta",
                retryable=True, retry_after=wait)
        self._edit_tat[message] = tat + interval
        if len(self._edit_tat) > 64:  # only the manifest is edited often; keep the map small
            for key in [k for k, v in self._edit_tat.items() if v < now][:32]:
                del self._edit_tat[key]
        if wait > 0:
            await self._nap(wait)

    def pause(self, seconds: float) -> None:
        """Telegram said 429/FLOOD_WAIT: nobody sends to this chat for `seconds`, then one at a time, and
        the rate in force drops (`flood_backoff`), to climb back only after `recovery_s` without floods."""
        now = self._clock()
        until = now + max(0.0, seconds)
        self.stats.flood_pauses += 1
        if until > self._paused_until:
            self._paused_until = until
        c = self.config
        self._factor = max(c.min_factor, self.factor * c.flood_backoff)
        self._factor_since = max(now, self._paused_until)  # recovery starts once the pause is over
        self.stats.slowest_factor = min(self.stats.slowest_factor, self._factor)
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
