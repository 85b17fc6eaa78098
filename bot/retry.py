"""Wait out Telegram's flood control instead of dropping a reply.

aiogram raises `TelegramRetryAfter` on a 429 and does not retry. A click is counted before its reply is
sent, so a reply lost to flood control would leave the user without an answer for a click that counted;
this request middleware sleeps the `retry_after` Telegram asks for and sends again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods import GetUpdates, TelegramMethod
from aiogram.methods.base import Response, TelegramType

if TYPE_CHECKING:
    from aiogram import Bot

log = logging.getLogger(__name__)


class RetryAfter(BaseRequestMiddleware):
    def __init__(self, max_wait: float = 120.0):
        #: give up (re-raise) once this many seconds were spent waiting on one request.
        self.max_wait = max_wait

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        waited = 0.0
        while True:
            try:
                return await make_request(bot, method)
            except TelegramRetryAfter as exc:
                # The poller has its own pacing for getUpdates and must stay cancellable at once.
                if isinstance(method, GetUpdates) or waited + exc.retry_after > self.max_wait:
                    raise
                log.debug("flood control on %s: waiting %d s", type(method).__name__, exc.retry_after)
                await asyncio.sleep(exc.retry_after)
                waited += exc.retry_after
