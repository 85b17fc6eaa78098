"""The Bot API front (HTTP), as aiogram 3.31 speaks it."""

from .front import BotApiFront

__all__ = ["BotApiFront"]
