"""Bounded concurrency for transfers: many documents in flight, never more than a limit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def gather_limited(thunks: list[Callable[[], Awaitable]], limit: int) -> list:
    """Run `thunks` with at most `limit` in flight; results in order; the first error cancels the rest."""
    sem = asyncio.Semaphore(max(1, limit))

    async def one(t):
        async with sem:
            return await t()

    tasks = [asyncio.ensure_future(one(t)) for t in thunks]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
