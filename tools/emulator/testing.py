"""Helpers for tests that need a Telegram: run the emulator in-process and point real clients at it.

    from tools.emulator.testing import running_emulator, aiogram_bot

    async def test_something(tmp_path):
        async with running_emulator(tmp_path / "tg", rate_limits=False) as emu:
            demo = emu.demo()
            async with aiogram_bot(emu, demo.bot_token) as bot:
                await bot.send_message(demo.storage_chat_id, "hi")
            assert emu.world.history(demo.storage_chat_id)[0].text == "hi"

A pytest fixture in your own conftest.py:

    @pytest.fixture
    async def emulator(tmp_path):
        async with running_emulator(tmp_path / "tg") as emu:
            yield emu
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from .app import Demo, Emulator
from .control import message_json
from .knobs import FaultRule, Knobs
from .world import World

if TYPE_CHECKING:
    from aiogram import Bot

__all__ = ["Demo", "Emulator", "aiogram_bot", "running_emulator", "say", "wait_for_messages"]


@asynccontextmanager
async def running_emulator(
    data_dir: str | os.PathLike[str], *, mtproto: bool = False, faults: list[FaultRule] | None = None,
    **knobs: Any,
) -> AsyncIterator[Emulator]:
    """Start an emulator on free loopback ports for the duration of the block.

    `knobs` are `Knobs` field names (e.g. `rate_limits=False`, `botapi_upload_limit=1024`). MTProto is off
    by default here (pass `mtproto=True`; `emu.mtproto_port` stays None if that front is unavailable).
    """
    k = Knobs.from_dict(knobs)
    for rule in faults or []:
        k.add_fault(rule)
    emu = Emulator(data_dir, knobs=k, mtproto=mtproto)
    await emu.start()
    try:
        yield emu
    finally:
        await emu.close()


@asynccontextmanager
async def aiogram_bot(emu: Emulator | str, token: str, **bot_kwargs: Any) -> AsyncIterator[Bot]:
    """A real aiogram `Bot` talking to the emulator (closed on exit)."""
    from aiogram import Bot
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer

    url = emu if isinstance(emu, str) else emu.bot_api_url
    bot = Bot(token, session=AiohttpSession(api=TelegramAPIServer.from_base(url)), **bot_kwargs)
    try:
        yield bot
    finally:
        await bot.session.close()


async def wait_for_messages(world: World, chat_id: int, *, sender_id: int, after_id: int = 0, count: int = 1,
                            actor_id: int | None = None, wait_s: float = 5.0) -> list[dict[str, Any]]:
    """Wait until `sender_id` has at least `count` messages with id > `after_id` in the chat; return them
    (control-API JSON shape). Returns what is there when `wait_s` runs out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        found = [m for m in world.history(chat_id, actor_id=actor_id, min_id=after_id, newest_first=False)
                 if m.sender_id == sender_id]
        remaining = deadline - loop.time()
        if len(found) >= count or remaining <= 0:
            return [message_json(m) for m in found]
        await world.wait_change(remaining)


async def say(emu: Emulator, user_id: int, bot: int | str, text: str | None = None, *, button: str | None = None,
              wait_s: float = 5.0, expect: int | None = None, expect_edits: int = 0,
              settle_s: float = 0.0) -> dict[str, Any]:
    """POST /control/say over HTTP (exactly what the CLI does): returns {"sent", "replies", "edits", ...}."""
    import aiohttp

    body: dict[str, Any] = {"user_id": user_id, "bot": bot, "wait": wait_s, "expect_edits": expect_edits,
                            "settle": settle_s}
    if text is not None:
        body["text"] = text
    if button is not None:
        body["button"] = button
    if expect is not None:
        body["expect"] = expect
    async with aiohttp.ClientSession() as http, http.post(emu.control_url + "/say", json=body) as resp:
        answer = await resp.json()
        if resp.status != 200:
            raise AssertionError(f"control /say failed: {resp.status} {answer}")
        return dict(answer)
