"""Bounded concurrency for transfers: many documents in flight, never more than a limit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


async def gather_limited(thunks: Sequence[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    """Run `thunks` with at most `limit` in flight; results in order; the first error cancels the rest."""
    sem = asyncio.Semaphore(max(1, limit))

    async def one(t: Callable[[], Awaitable[T]]) -> T:
        async with sem:
            return await t()

    tasks = [asyncio.ensure_future(one(t)) for t in thunks]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
