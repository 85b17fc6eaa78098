"""The reply keyboard from the article: «Клик» above «Рейтинг»."""

from __future__ import annotations

from aiogram.types import KeyboardButton, ReplyKeyboardMarkup

from bot import texts


def main_keyboard() -> ReplyKeyboardMarkup:
    return ReplyKeyboardMarkup(
        keyboard=[[KeyboardButton(text=texts.CLICK_BUTTON)], [KeyboardButton(text=texts.RATING_BUTTON)]],
        resize_keyboard=True,
    )
