"""Server message identifiers.

msg_id ≈ unixtime * 2^32; the client rejects server ids that are even, repeated, more than 300 s old or
more than 30 s in the future. Answers to client requests are ≡ 1 (mod 4), other server messages
≡ 3 (mod 4), and ids issued by one session increase strictly.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class MsgIdClock:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._last = 0

    def next(self, *, response: bool) -> int:
        now = self._clock()
        candidate = (int(now) << 32) | (int((now % 1) * 2**32) & ~3 & 0xFFFFFFFF)
        candidate = max(candidate, self._last + 1)
        residue = 1 if response else 3
        candidate += (residue - candidate) % 4
        self._last = candidate
        return candidate


def msg_id_time(msg_id: int) -> float:
    """Unix time encoded in a message id."""
    return msg_id / 2**32
