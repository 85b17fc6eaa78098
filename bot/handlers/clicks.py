"""«Клик» counts one click; «Рейтинг» shows the total and the top 15."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.enums import ChatType
from aiogram.types import Message

from bot import texts
from bot.aiogram_costs import inline
from bot.users import Users


def router() -> Router:
    router = Router(name="clicks")
    router.message.filter(inline(F.chat.type == ChatType.PRIVATE))

    @router.message(inline(F.text == texts.CLICK_BUTTON))
    async def click(message: Message, users: Users) -> None:
        count = users.click(message.chat.id, message.message_id)
        await message.answer(texts.NOT_REGISTERED if count is None else texts.clicks(count))

    @router.message(inline(F.text == texts.RATING_BUTTON))
    async def rating(message: Message, users: Users) -> None:
        if users.name(message.chat.id) is None:
            await message.answer(texts.NOT_REGISTERED)
            return
        board = users.rating(texts.RATING_SIZE)
        for part in texts.split_message(texts.rating(board.total, board.top)):
            await message.answer(part)

    return router
