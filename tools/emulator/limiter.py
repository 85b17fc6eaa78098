"""Telegram-like flood control shared by both fronts (token buckets, kept in memory).

Budgets per bot: each channel/group ~20 messages+edits per minute with a small burst, each private
chat ~1 per second with a burst, ~30 per second across all chats, and edits of one message a bucket of
their own (`message_edits_per_minute`).

Penalties escalate, as Telegram's do: a refusal opens a penalty for its chat that refuses everything
until it ends (tokens or not), and each new penalty within `flood_memory_s` of earlier ones is
`flood_escalation` times longer (up to `flood_max_wait_s`): a client that comes back at the limit after
every penalty is told to wait seconds, then minutes. A client that honours `retry_after` and then slows
down sees one short wait (the tokens refill during the penalty).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .knobs import Knobs


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    def __init__(self, knobs: Knobs, clock: Callable[[], float] = time.monotonic) -> None:
        self.knobs = knobs
        self._clock = clock
        self._buckets: dict[tuple[object, ...], _Bucket] = {}
        self._penalty_until: dict[tuple[int, int], float] = {}
        self._strikes: dict[tuple[int, int], deque[float]] = {}
        self.held = 0  # Bot API requests answered late instead of refused (botapi_flood_hold_s)

    def check(self, chat_id: int, bot_id: int, cost: int = 1, *, message_id: int | None = None) -> float | None:
        """None: allowed and consumed. A float: refused, retry after that many seconds (nothing consumed).

        `message_id` marks an edit of that message: it also spends that message's edit bucket."""
        k = self.knobs
        if not k.rate_limits:
            return None
        now = self._clock()
        chat_key = (bot_id, chat_id)
        until = self._penalty_until.get(chat_key, 0.0)
        if now < until:
            return until - now  # inside a penalty: refused whatever the tokens say
        if chat_id < 0:
            chat_rate, chat_burst = k.channel_per_minute / 60.0, k.channel_burst
        else:
            chat_rate, chat_burst = k.private_per_second, k.private_burst
        plans: list[tuple[tuple[object, ...], float, int]] = [
            ((bot_id, chat_id), chat_rate, chat_burst), ((bot_id, None), k.global_per_second, k.global_burst)]
        if message_id is not None:
            plans.append(((bot_id, chat_id, message_id), k.message_edits_per_minute / 60.0, k.message_edit_burst))
        wait = 0.0
        buckets = []
        for key, rate, burst in plans:
            bucket = self._refill(key, rate, burst, now)
            buckets.append(bucket)
            if bucket.tokens < cost:
                wait = max(wait, (cost - bucket.tokens) / rate if rate > 0 else 3600.0)
        if wait > 0:
            return self._strike(chat_key, now, wait)
        for bucket in buckets:
            bucket.tokens -= cost
        return None

    def check_read(self, bot_id: int, kind: str) -> float | None:
        """Reads have limits too (Telegram: FLOOD_WAIT may answer any method): `kind` "lookup" (getChat,
        channels.getFullChannel, channels.getMessages) or "part" (upload.getFile, save*FilePart, getFile)."""
        k = self.knobs
        if not k.rate_limits:
            return None
        rate, burst = ((k.lookups_per_second, k.lookup_burst) if kind == "lookup"
                       else (k.file_parts_per_second, k.file_part_burst))
        bucket = self._refill(("read", bot_id, kind), rate, burst, self._clock())
        if bucket.tokens < 1:
            return (1 - bucket.tokens) / rate if rate > 0 else 3600.0
        bucket.tokens -= 1
        return None

    def _strike(self, key: tuple[int, int], now: float, wait: float) -> float:
        k = self.knobs
        strikes = self._strikes.setdefault(key, deque())
        while strikes and now - strikes[0] >= k.flood_memory_s:
            strikes.popleft()
        strikes.append(now)
        penalty = min(k.flood_max_wait_s, max(wait, wait * k.flood_escalation ** (len(strikes) - 1)))
        self._penalty_until[key] = max(self._penalty_until.get(key, 0.0), now + penalty)
        return self._penalty_until[key] - now

    def reset(self) -> None:
        self._buckets.clear()
        self._penalty_until.clear()
        self._strikes.clear()

    def _refill(self, key: tuple[object, ...], rate: float, burst: int, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(tokens=float(burst), stamp=now)
        else:
            bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.stamp) * rate)
            bucket.stamp = now
        return bucket
