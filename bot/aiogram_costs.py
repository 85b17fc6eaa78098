"""Three costs aiogram 3.31 puts on any bot's event loop, and how the clicker avoids them.

Found by profiling the clicker under load (py-spy, `python -m tools.bench --only e2e`); both apply to
any aiogram bot alike, so the bench's PostgreSQL bot (tools/bench/pgbot.py) uses this module too.

1. **A thread hop per filter.** `CallableObject.call` (aiogram/dispatcher/event/handler.py) runs every
   callable that is not a coroutine function through `asyncio.to_thread`, and a magic filter (`F.text
   == ...`) is registered as its plain `resolve` method: each filter of each router an update passes is
   a round trip through the default thread pool (and the GIL). `inline(F...)` wraps a magic filter in
   an aiogram `Filter`, which aiogram awaits on the loop: the same result, no thread.
2. **A pydantic model class rebuilt per answer.** `BaseSession.check_response` parametrizes
   `Response[method.__returning__]` on every call; pydantic 2 caches parametrized generics only weakly
   (`_GENERIC_TYPES_CACHE`), so once the garbage collector has taken the class (young, in a cycle: it
   goes soon) the next call builds it and its schema again, about 12 ms of CPU measured here, on the
   event loop. `keep_response_types(...)` holds the classes a bot uses per update, so the cache hits.
3. **A quarter-second pause per full garbage collection.** Importing aiogram leaves about 200 000
   objects the collector tracks (its pydantic models, their validators and schemas); a full (oldest
   generation) collection walks them all, about 240 ms measured here, on the event loop, every few
   seconds under load: the clicker's reply p99 at 300 msg/s was that pause. None of them is ever
   garbage. `freeze_startup_objects()`, once the bot is up, moves everything alive into the
   collector's permanent generation (`gc.freeze`, CPython's documented way to do this), so later
   collections walk only what the bot allocated since; the frozen objects are still freed by reference
   counting.
"""

from __future__ import annotations

import gc
from typing import Any

from aiogram.filters import Filter
from aiogram.methods import TelegramMethod
from aiogram.methods.base import Response
from aiogram.types import TelegramObject
from magic_filter import MagicFilter

#: strong references: pydantic's generic cache keeps a parametrized class only while someone does.
_KEPT: dict[Any, Any] = {}


class _Inline(Filter):
    def __init__(self, magic: MagicFilter):
        self.magic = magic

    async def __call__(self, event: TelegramObject) -> Any:
        # what aiogram's FilterObject does with a magic filter (`magic.resolve(event)`), on the loop
        return self.magic.resolve(event)

    def __str__(self) -> str:
        return f"inline({self.magic!r})"


def inline(magic: MagicFilter) -> Filter:
    """A magic filter aiogram evaluates on the event loop instead of in a worker thread."""
    return _Inline(magic)


def keep_response_types(*methods: type[TelegramMethod[Any]]) -> None:
    """Keep `Response[m.__returning__]` alive for each method class, so aiogram's per-answer lookup hits
    pydantic's cache instead of rebuilding the class."""
    for method in methods:
        returning = method.__returning__
        if returning not in _KEPT:
            _KEPT[returning] = Response[returning]  # type: ignore[valid-type]


def freeze_startup_objects() -> int:
    """Collect once, then keep every object alive now out of all later collections (`gc.freeze`); how
    many objects that is."""
    gc.collect()  # what start-up left as garbage goes now, so only live objects are frozen
    gc.freeze()
    return gc.get_freeze_count()
