"""Telegram-like flood control shared by both fronts (token buckets, kept in memory).

Budgets per bot: each channel/group ~20 messages+edits per minute with a small burst, each private
chat ~1 per second with a burst, and ~30 per second across all chats.
"""

from __future__ import annotations

import time
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
        self._buckets: dict[tuple[int, int | None], _Bucket] = {}

    def check(self, chat_id: int, bot_id: int, cost: int = 1) -> float | None:
        """None: allowed and consumed. A float: refused, retry after that many seconds (nothing consumed)."""
        k = self.knobs
        if not k.rate_limits:
            return None
        now = self._clock()
        if chat_id < 0:
            chat_rate, chat_burst = k.channel_per_minute / 60.0, k.channel_burst
        else:
            chat_rate, chat_burst = k.private_per_second, k.private_burst
        plans = [((bot_id, chat_id), chat_rate, chat_burst), ((bot_id, None), k.global_per_second, k.global_burst)]
        wait = 0.0
        buckets = []
        for key, rate, burst in plans:
            bucket = self._refill(key, rate, burst, now)
            buckets.append(bucket)
            if bucket.tokens < cost:
                wait = max(wait, (cost - bucket.tokens) / rate if rate > 0 else 3600.0)
        if wait > 0:
            return wait
        for bucket in buckets:
            bucket.tokens -= cost
        return None

    def reset(self) -> None:
        self._buckets.clear()

    def _refill(self, key: tuple[int, int | None], rate: float, burst: int, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(tokens=float(burst), stamp=now)
        else:
            bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.stamp) * rate)
            bucket.stamp = now
        return bucket
