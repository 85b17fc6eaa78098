"""/status, /flush and /snapshot, for configured admins only.

The router's filter lets only admin ids in, so for anyone else these commands fall through to the
fallback router and get exactly the answer any unknown text gets: nothing reveals they exist.
Answers quote the command (`message.reply`), so a script can tell which /flush a reply confirms.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from aiogram import F, Router
from aiogram.enums import ChatType
from aiogram.filters import Command
from aiogram.types import Message

from bot import texts
from bot.aiogram_costs import inline
from core import Store

log = logging.getLogger(__name__)

#: /flush gives up waiting after this long (storage may be rate-limited or down); the data stays dirty.
FLUSH_TIMEOUT = 60.0


def router(admin_ids: Iterable[int]) -> Router:
    admins = frozenset(admin_ids)
    router = Router(name="admin")
    router.message.filter(inline(F.chat.type == ChatType.PRIVATE), inline(F.from_user.id.in_(admins)))

    @router.message(Command("status"))
    async def status(message: Message, store: Store, storage_description: str) -> None:
        await message.reply(texts.status(store.stats(), storage_description, time.time()))

    @router.message(Command("flush"))
    async def flush(message: Message, store: Store) -> None:
        try:
            await store.flush(timeout=FLUSH_TIMEOUT)
        except Exception as exc:  # the admin asked; tell them why instead of failing silently
            log.warning("/flush failed: %s", exc)
            await message.reply(texts.failed("/flush", exc))
            return
        await message.reply(texts.FLUSH_DONE)

    @router.message(Command("snapshot"))
    async def snapshot(message: Message, store: Store) -> None:
        try:
            await store.snapshot()
        except Exception as exc:
            log.warning("/snapshot failed: %s", exc)
            await message.reply(texts.failed("/snapshot", exc))
            return
        stats = store.stats()
        await message.reply(f"{texts.SNAPSHOT_DONE}: {texts.size(stats.snapshot_size or 0)}")

    return router
