"""Anything no other router took: strangers are told to register, users get the buttons back.

This is also the answer to an admin command from someone who is not an admin.
"""

from __future__ import annotations

from aiogram import F, Router
from aiogram.enums import ChatType
from aiogram.types import Message

from bot import texts
from bot.aiogram_costs import inline
from bot.keyboards import main_keyboard
from bot.users import Users


def router() -> Router:
    router = Router(name="fallback")
    router.message.filter(inline(F.chat.type == ChatType.PRIVATE))

    @router.message()
    async def anything_else(message: Message, users: Users) -> None:
        if users.name(message.chat.id) is None:
            await message.answer(texts.NOT_REGISTERED)
        else:
            await message.answer(texts.USE_BUTTONS, reply_markup=main_keyboard())

    return router
