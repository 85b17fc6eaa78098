"""A real aiogram Dispatcher polls the emulator; a user talks to it through the control API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from aiogram import Bot, Dispatcher, F, Router
from aiogram.exceptions import TelegramConflictError
from aiogram.filters import CommandStart
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    Message,
    ReplyKeyboardMarkup,
)

from tools.emulator.testing import say, wait_for_messages

KEYBOARD = ReplyKeyboardMarkup(keyboard=[[KeyboardButton(text="Клик"), KeyboardButton(text="Рейтинг")]],
                               resize_keyboard=True)


def clicker() -> Router:
    router = Router()
    clicks: dict[int, int] = {}

    @router.message(CommandStart())
    async def start(message: Message) -> None:
        clicks.setdefault(message.from_user.id, 0)
        await message.answer("Вы зарегистрированы", reply_markup=KEYBOARD)

    @router.message(F.text == "Клик")
    async def click(message: Message) -> None:
        if message.from_user.id not in clicks:
            await message.answer("Вы не зарегистрированы")
            return
        clicks[message.from_user.id] += 1
        await message.answer(f"Кликов: {clicks[message.from_user.id]}")

    @router.message(F.text == "menu")
    async def menu(message: Message) -> None:
        markup = InlineKeyboardMarkup(inline_keyboard=[[InlineKeyboardButton(text="Ещё", callback_data="more")]])
        await message.answer("Меню", reply_markup=markup)

    @router.callback_query(F.data == "more")
    async def more(query: CallbackQuery) -> None:
        await query.answer("ok")
        await query.message.edit_text("Меню (открыто)")

    return router


@asynccontextmanager
async def polling(bot: Bot) -> AsyncIterator[Dispatcher]:
    dp = Dispatcher()
    dp.include_router(clicker())
    task = asyncio.create_task(dp.start_polling(bot, handle_signals=False, close_bot_session=False,
                                                polling_timeout=1))
    try:
        yield dp
    finally:
        await dp.stop_polling()
        await task


async def test_start_click_and_rating_through_the_control_api(emu, bot, demo):
    async with polling(bot):
        unregistered = await say(emu, demo.user_id, demo.bot_username, "Клик")
        assert [m["text"] for m in unregistered["replies"]] == ["Вы не зарегистрированы"]

        answer = await say(emu, demo.user_id, demo.bot_username, "/start")
        assert answer["sent"]["text"] == "/start"
        (reply,) = answer["replies"]
        assert reply["text"] == "Вы зарегистрированы"
        assert [b["text"] for b in reply["reply_markup"]["keyboard"][0]] == ["Клик", "Рейтинг"]

        for n in (1, 2):
            pressed = await say(emu, demo.user_id, demo.bot_id, button="Клик")
            assert [m["text"] for m in pressed["replies"]] == [f"Кликов: {n}"]

    # The whole dialogue is in the user<->bot chat, readable through the control API.
    async with aiohttp.ClientSession() as http:
        url = f"{emu.control_url}/chats/{demo.user_id}/messages?bot={demo.bot_id}"
        async with http.get(url) as resp:
            listing = await resp.json()
    texts = [m["text"] for m in listing["messages"]]
    assert texts[-4:] == ["Клик", "Кликов: 1", "Клик", "Кликов: 2"]
    # Everything was confirmed by the poller's offsets.
    assert emu.world.get_updates(demo.bot_id) == []


async def test_inline_button_sends_a_callback_query(emu, bot, demo):
    async with polling(bot):
        menu = await say(emu, demo.user_id, demo.bot_id, "menu")
        (shown,) = menu["replies"]
        assert shown["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "more"
        pressed = await say(emu, demo.user_id, demo.bot_id, button="Ещё", expect_edits=1)
    assert pressed["callback_answer"]["text"] == "ok"
    assert [m["text"] for m in pressed["edits"]] == ["Меню (открыто)"]


async def test_pressing_a_button_the_bot_never_showed_is_refused(emu, demo):
    emu.world.user_says(demo.user_id, demo.bot_id, "hi")
    async with aiohttp.ClientSession() as http:
        resp = await http.post(emu.control_url + "/say",
                               json={"user_id": demo.user_id, "bot": demo.bot_id, "button": "Клик"})
        assert resp.status == 400
        assert "no button" in (await resp.json())["error"]


async def test_long_poll_wakes_up_on_a_new_update(emu, bot, demo):
    loop = asyncio.get_running_loop()
    started = loop.time()
    poll = asyncio.create_task(bot.get_updates(timeout=10))
    await asyncio.sleep(0.2)
    emu.world.user_says(demo.user_id, demo.bot_id, "wake up")
    updates = await poll
    assert [u.message.text for u in updates] == ["wake up"]
    assert updates[0].message.chat.id == demo.user_id and updates[0].message.from_user.id == demo.user_id
    assert loop.time() - started < 5
    # Not confirmed yet: returned again; confirmed by offset: gone.
    assert len(await bot.get_updates()) == 1
    assert await bot.get_updates(offset=updates[0].update_id + 1) == []


async def test_a_second_poller_terminates_the_first(emu, bot, demo):
    first = asyncio.create_task(bot.get_updates(timeout=10))
    await asyncio.sleep(0.2)
    assert await bot.get_updates(timeout=0) == []
    try:
        await first
        raise AssertionError("the first long poll should have been terminated")
    except TelegramConflictError as exc:
        assert "terminated by other getUpdates request" in str(exc)


async def test_bot_replies_are_readable_with_wait_for_messages(emu, bot, demo):
    emu.world.user_says(demo.user_id, demo.bot_id, "ping")
    asyncio.get_running_loop().call_later(0.1, lambda: asyncio.ensure_future(bot.send_message(demo.user_id, "pong")))
    got = await wait_for_messages(emu.world, demo.user_id, sender_id=demo.bot_id, actor_id=demo.bot_id)
    assert [m["text"] for m in got] == ["pong"]
