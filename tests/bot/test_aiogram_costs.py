"""bot/aiogram_costs.py: filters resolved on the loop, answer models kept (two per-update costs of aiogram)."""

from __future__ import annotations

import asyncio
import datetime
import gc

from aiogram import F
from aiogram.dispatcher.event.handler import FilterObject
from aiogram.enums import ChatType
from aiogram.methods import SendMessage
from aiogram.methods.base import Response
from aiogram.types import Chat, Message, User

from bot.aiogram_costs import inline, keep_response_types


def _message(text: str, chat_type: str = "private", user_id: int = 7) -> Message:
    return Message(message_id=1, date=datetime.datetime.now(datetime.UTC), text=text,
                   chat=Chat(id=user_id, type=chat_type), from_user=User(id=user_id, is_bot=False, first_name="A"))


async def test_an_inline_filter_is_awaited_on_the_loop_and_answers_as_the_magic_one(monkeypatch):
    def no_thread(*_a, **_k):
        raise AssertionError("a filter went through asyncio.to_thread")

    private, click = F.chat.type == ChatType.PRIVATE, F.text == "Клик"
    admins = F.from_user.id.in_({7})
    cases = [_message("Клик"), _message("Рейтинг"), _message("Клик", "group"), _message("Клик", user_id=8)]
    # What aiogram's own FilterObject decides for the bare magic filter (through its thread) ...
    expected = [[bool(await FilterObject(callback=m).call(msg)) for m in (private, click, admins)] for msg in cases]
    monkeypatch.setattr(asyncio, "to_thread", no_thread)
    wrapped = [FilterObject(callback=inline(m)) for m in (private, click, admins)]
    assert all(f.awaitable for f in wrapped)
    # ... is what the inline one decides, with no thread
    assert [[bool(await f.call(msg)) for f in wrapped] for msg in cases] == expected
    assert expected == [[True, True, True], [True, False, True], [False, True, True], [True, True, False]]


def test_a_kept_response_type_survives_the_garbage_collector():
    import weakref

    from aiogram.methods import GetChatMember

    # Not kept: after a collection the class is gone, and aiogram's next answer would build it again.
    loose = weakref.ref(Response[GetChatMember.__returning__])
    gc.collect()
    assert loose() is None
    keep_response_types(SendMessage)
    kept = weakref.ref(Response[SendMessage.__returning__])
    gc.collect()
    assert kept() is not None and Response[SendMessage.__returning__] is kept()  # a cache hit, not rebuilt
