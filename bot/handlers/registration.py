"""/start: register the user under their first name and show the keyboard."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.enums import ChatType
from aiogram.filters import CommandStart
from aiogram.types import Message

from bot import texts
from bot.aiogram_costs import inline
from bot.keyboards import main_keyboard
from bot.users import Users


def router() -> Router:
    router = Router(name="registration")
    router.message.filter(inline(F.chat.type == ChatType.PRIVATE))

    @router.message(CommandStart())
    async def start(message: Message, users: Users) -> None:
        # Registering twice changes nothing: the name on record is kept and greeted.
        name = users.register(message.chat.id, message.from_user.first_name, message.from_user.username)
        await message.answer(texts.greeting(name), reply_markup=main_keyboard())

    return router
