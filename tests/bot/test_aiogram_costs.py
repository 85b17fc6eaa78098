"""bot/aiogram_costs.py: filters resolved on the loop, answer models kept, start-up objects frozen (three costs
of aiogram)."""

from __future__ import annotations

import asyncio
import datetime
import gc
import subprocess
import sys
from pathlib import Path

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


_FREEZE_PROBE = """
import gc, sys, time
import bot.app  # everything `python -m bot` imports before it serves
from bot.aiogram_costs import freeze_startup_objects

def full_collection():
    start = time.process_time()
    gc.collect()
    return time.process_time() - start, len(gc.get_objects())

before_s, before_n = full_collection()
frozen = freeze_startup_objects()
garbage = [[] for _ in range(1000)]
for g in garbage:
    g.append(g)  # cycles made after the freeze are still collected
del garbage, g
after_s, after_n = full_collection()
print(before_n, frozen, after_n, gc.collect())
"""


def test_freezing_keeps_start_up_objects_out_of_every_later_collection():
    # in a child: gc.freeze() is for a whole process, and the test process must keep collecting its own
    out = subprocess.run([sys.executable, "-c", _FREEZE_PROBE], cwd=Path(__file__).resolve().parents[2],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    before, frozen, after, left = (int(x) for x in out.stdout.split())
    assert before > 50_000  # aiogram's models: what each full collection walked
    assert frozen >= before - 1_000
    assert after < 1_000  # what a full collection walks now (CPython's own; no timing asserted)
    assert left == 0  # the cycles made after the freeze were collected by the second collection
