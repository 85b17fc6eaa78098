"""The clicker's dialogue, end to end: real aiogram polling the emulator's Bot API, users acting through
the emulator's control API, state in a real Store (local-directory backend)."""

from __future__ import annotations

import asyncio

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import Message

from bot import texts
from tests.bot.test_users import HOSTILE


async def test_start_registers_greets_and_shows_the_keyboard(world):
    alice = await world.user("Алиса")
    said = await world.say(alice, "/start")
    assert said.replies == ["Приветствую Алиса"]
    greeting = (await world.control.bot_messages(alice, world.demo.bot_username))[-1]
    assert greeting["reply_markup"]["keyboard"] == [[{"text": "Клик"}], [{"text": "Рейтинг"}]]
    assert greeting["reply_markup"].get("resize_keyboard") is True


async def test_second_start_changes_nothing(world):
    bob = await world.user("Bob")
    await world.reply(bob, "/start")
    assert await world.reply(bob, "Клик") == "Кликов: 1"
    assert await world.reply(bob, "/start") == "Приветствую Bob"
    assert await world.reply(bob, "Клик") == "Кликов: 2"
    assert (await world.reply(bob, "Рейтинг")).startswith("Всего: 1\n")


async def test_clicks_count_up_per_user(world):
    a, b = await world.user("A"), await world.user("B")
    for u in (a, b):
        await world.reply(u, "/start")
    assert [await world.reply(a, "Клик") for _ in range(3)] == ["Кликов: 1", "Кликов: 2", "Кликов: 3"]
    assert await world.reply(b, "Клик") == "Кликов: 1"


async def test_rating_shows_total_and_top_15_with_ties_in_registration_id_order(world):
    ids = []
    for i in range(17):
        uid = await world.user(f"user{i}")
        ids.append(uid)
        await world.reply(uid, "/start")
    # user0 clicks 3 times, users 1..16 once each except user5 (twice); one tie block of fifteen
    plan = {0: 3, 5: 2, **{i: 1 for i in range(1, 17) if i != 5}}
    for i, n in plan.items():
        for _ in range(n):
            await world.reply(ids[i], "Клик")
    rating = await world.reply(ids[0], "Рейтинг")
    lines = rating.split("\n")
    assert lines[0] == "Всего: 17"
    assert len(lines) == 1 + 15
    assert lines[1] == "1: user0 - 3"
    assert lines[2] == "2: user5 - 2"
    ones = sorted((uid, i) for i, uid in enumerate(ids) if plan[i] == 1)
    assert lines[3:] == [f"{place}: user{i} - 1" for place, (_uid, i) in enumerate(ones[:13], start=3)]


async def test_a_stranger_is_told_to_register_whatever_they_send(world):
    stranger = await world.user("Stranger")
    for text in ("Клик", "Рейтинг", "hello", "/status", "/flush"):
        assert await world.reply(stranger, text) == "Вы не зарегистрированы"
    await world.reply(stranger, "/start")
    assert await world.reply(stranger, "Клик") == "Кликов: 1"


async def test_hostile_names_are_stored_and_shown_exactly(world):
    uids = []
    for name in HOSTILE:
        uid = await world.user(name)
        uids.append(uid)
        assert await world.reply(uid, "/start") == f"Приветствую {name}"
        assert await world.reply(uid, "Клик") == "Кликов: 1"
    rating = await world.reply(uids[0], "Рейтинг")
    assert rating.startswith(f"Всего: {len(HOSTILE)}\n")
    for name in HOSTILE:
        assert f": {name} - 1" in rating
    # Plain text: no entities were parsed out of "<b>x</b>", and the users table is intact.
    last = (await world.control.bot_messages(uids[0], world.demo.bot_username))[-1]
    assert "<b>x</b>" in last["text"]
    assert world.clicker.store.execute("SELECT count(*) FROM users").fetchone()[0] == len(HOSTILE)


async def test_a_rating_longer_than_one_message_arrives_whole(world):
    long_name = "Ж" * 300  # the emulator, unlike Telegram, allows long first names
    uids = []
    for i in range(15):
        uid = await world.user(f"{long_name}{i}")
        uids.append(uid)
        await world.reply(uid, "/start")
    said = await world.say(uids[0], "Рейтинг", expect=2)
    assert len(said.replies) == 2
    assert all(len(r) <= 4096 for r in said.replies)
    assert "\n".join(said.replies) == texts.rating(15, [(f"{long_name}{i}", 0) for i in
                                                        sorted(range(15), key=lambda i: uids[i])])


async def test_admin_commands_answer_admins_only(world):
    admin = world.admin_id
    user = await world.user("Mallory")
    await world.reply(user, "/start")
    await world.reply(user, "Клик")
    unknown = await world.reply(user, "/whatever")
    assert unknown == texts.USE_BUTTONS
    for command in ("/status", "/flush", "/snapshot"):
        assert await world.reply(user, command) == unknown

    status = await world.say(admin, "/status")
    assert status.reply_to == [status.sent_id]  # admin answers quote the command
    text = status.replies[0]
    for needle in ("Хранилище: local: directory", "Эпоха писателя: 1", "Строк:", "users 1",
                   "Несохранённых строк:", "Последнее сохранение:", "Снимок:", "Дельт после снимка:"):
        assert needle in text, needle
    assert await world.reply(admin, "/flush") == texts.FLUSH_DONE
    assert world.clicker.store.stats().dirty_rows == 0
    snap = await world.reply(admin, "/snapshot")
    assert snap.startswith(texts.SNAPSHOT_DONE)
    assert world.clicker.store.stats().snapshot_size


async def test_graceful_stop_loses_nothing(world):
    uid = await world.user("Carol")
    await world.reply(uid, "/start")
    for _ in range(5):
        await world.reply(uid, "Клик")
    # stop() must not depend on the flush loop having run: make its interval an hour, and the poller's
    # hurried cut (10 ms by default, bot/polling.py) an hour away too.
    await world.stop()
    await world.start(flush_interval=3600)
    world.clicker.poller.hurry.hurry_after = 3600.0
    await world.reply(uid, "Клик")
    assert world.clicker.store.stats().dirty_rows > 0
    await world.stop()
    await world.start()
    assert await world.reply(uid, "Клик") == "Кликов: 7"


class Form(StatesGroup):
    nickname = State()


def nickname_router() -> Router:
    """A tiny FSM dialogue riding on the clicker's dispatcher, whose storage is the store."""
    router = Router(name="nickname")

    @router.message(Command("nick"))
    async def ask(message: Message, state: FSMContext) -> None:
        await state.set_state(Form.nickname)
        await state.update_data(asked_in=message.message_id)
        await message.answer("Как вас называть?")

    @router.message(Form.nickname, F.text)
    async def remember(message: Message, state: FSMContext) -> None:
        data = await state.update_data(nickname=message.text)
        await state.set_state(None)
        await message.answer(f"Запомнил: {data['nickname']}")

    return router


async def test_fsm_state_lives_in_the_store_across_a_restart(world):
    await world.stop()
    await world.start(extra_routers=[nickname_router()])
    uid = await world.user("Dave")
    assert await world.reply(uid, "/nick") == "Как вас называть?"
    await world.stop()  # the conversation is half-way: its state must survive
    await world.start(extra_routers=[nickname_router()])
    rows = world.clicker.store.execute("SELECT state, data FROM aiogram_fsm WHERE user_id = ?", (uid,)).fetchall()
    assert rows and rows[0][0] == "Form:nickname"
    assert await world.reply(uid, "<i>Дэйв</i> 🙂") == "Запомнил: <i>Дэйв</i> 🙂"


async def test_many_users_at_once_each_get_their_own_count(world):
    uids = [await world.user(f"p{i}") for i in range(8)]
    await asyncio.gather(*(world.reply(u, "/start") for u in uids))

    async def clicks(uid: int, n: int) -> list[str]:
        return [await world.reply(uid, "Клик") for _ in range(n)]

    results = await asyncio.gather(*(clicks(u, 4) for u in uids))
    assert all(r == [f"Кликов: {k}" for k in range(1, 5)] for r in results)


async def test_local_console_says_typed_lines_and_prints_the_answers(world):
    import io
    import os

    from bot.local import LocalWorld, console

    uid = await world.user("Eve")
    read_fd, write_fd = os.pipe()
    os.write(write_fd, "/start\nКлик\n\nРейтинг\n".encode())
    os.close(write_fd)  # then end of input: the console returns
    out = io.StringIO()
    local = LocalWorld(control_url=world.emu.control_url, bot_api_url=world.emu.bot_api_url,
                       bot_username=world.demo.bot_username, user_id=uid, user_name="Eve",
                       storage=world.clicker.storage)
    with os.fdopen(read_fd, "r") as stream:
        await asyncio.wait_for(console(local, stream=stream, out=out), 30)
    assert out.getvalue().split("\n") == ["  Приветствую Eve", "  [Клик] [Рейтинг]", "  Кликов: 1", "  Всего: 1",
                                          "  1: Eve - 1", ""]


async def test_local_console_prompts_and_ends_cleanly_at_end_of_input(world):
    import io
    import os

    from bot.local import LocalWorld, console

    uid = await world.user("Eve")
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"/start\n")
    os.close(write_fd)  # Ctrl+D after one line
    out = io.StringIO()
    local = LocalWorld(control_url=world.emu.control_url, bot_api_url=world.emu.bot_api_url,
                       bot_username=world.demo.bot_username, user_id=uid, user_name="Eve",
                       storage=world.clicker.storage)
    with os.fdopen(read_fd, "r") as stream:
        await asyncio.wait_for(console(local, stream=stream, out=out, prompt="Eve> "), 30)
    assert out.getvalue() == "Eve>   Приветствую Eve\n  [Клик] [Рейтинг]\nEve> \n"


async def test_the_command_menu_offers_start_only(world):
    assert world.emu.world.bot_commands(world.demo.bot_id) == [{"command": "start", "description": "Регистрация"}]


async def test_a_stop_confirms_what_it_handled_and_leaves_the_rest_to_the_next_run(world):
    uid = await world.user("Frank")
    await world.reply(uid, "/start")
    await world.reply(uid, "Клик")
    await world.stop()
    assert world.emu.world.pending_update_count(world.demo.bot_id) == 0  # nothing handled comes back
    # Sent while no bot runs: Telegram keeps it, and the next run answers it.
    world.emu.world.user_says(uid, world.demo.bot_id, "Клик")
    assert world.emu.world.pending_update_count(world.demo.bot_id) == 1
    said = world.say(uid, "Клик", expect=2)
    task = asyncio.ensure_future(said)
    await asyncio.sleep(0.1)
    await world.start()
    assert (await task).replies == ["Кликов: 2", "Кликов: 3"]
