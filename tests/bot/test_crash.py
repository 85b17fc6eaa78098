"""Crash safety of the whole bot: `python -m bot` SIGKILLed at random moments under load, then restarted.

Users click without pause while the bot is killed and restarted around them (their messages wait in
the emulator meanwhile, as in Telegram). After every restart:
- every click acknowledged before an admin's /flush was acknowledged is still counted (durable means durable);
- every click acknowledged more than one flush window before the kill is still counted (loss <= RPO);
- no click is ever counted twice (each «Кликов: N» is at most the clicks that user has sent).
Finally a graceful stop (SIGTERM) must exit 0 and lose nothing at all.

CI runs 2 cycles (each restart costs seconds: aiogram alone takes ~3 s of CPU to import). The documented
long run: TGSNAP_CRASH_CYCLES=50 .venv/bin/pytest tests/bot/test_crash.py
"""

from __future__ import annotations

import asyncio
import os
import random
import re
from dataclasses import dataclass, field

from tools.loadgen.control import Control
from tools.loadgen.stack import ClickerStack

CYCLES = int(os.environ.get("TGSNAP_CRASH_CYCLES", "2"))
FLUSH_INTERVAL = 0.5
#: a click acknowledged this long before a kill must have been flushed (interval + time to ship a delta).
WINDOW = FLUSH_INTERVAL + 1.0
USERS = 5
#: how long a user waits for an answer before clicking again: longer than a restart, so a click sent to a
#: dead bot is answered by its successor; a click lost in the crash (taken, never answered) costs this.
PATIENCE = 12.0
_CLICKS = re.compile(r"^Кликов: (\d+)$")


@dataclass
class Clicker:
    user_id: int
    sent: int = 0
    #: (loop time received, count) of every «Кликов: N» this user saw.
    acks: list[tuple[float, int]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def acked_before(self, t: float) -> int:
        return max((k for at, k in self.acks if at < t), default=0)

    def first_ack_after(self, t: float) -> int | None:
        return next((k for at, k in self.acks if at > t), None)


async def click_forever(control: Control, bot: str, user: Clicker, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        user.sent += 1
        said = await control.say(user.user_id, bot, "Клик", wait=PATIENCE)
        for text in said.replies:
            match = _CLICKS.match(text)
            if match is None:
                user.problems.append(f"unexpected reply {text!r}")
                continue
            count = int(match.group(1))
            user.acks.append((loop.time(), count))
            if count > user.sent:
                user.problems.append(f"counted twice: «Кликов: {count}» after {user.sent} clicks sent")


async def durable_mark(control: Control, stack: ClickerStack) -> float | None:
    """Send /flush as the admin; the loop time it was sent if the bot confirmed it (quoting it), else None."""
    loop = asyncio.get_running_loop()
    sent_at = loop.time()
    said = await control.say(stack.demo.user_id, stack.demo.bot_username, "/flush", wait=20.0)
    confirmed = any(to == said.sent_id and text.startswith("Сохранено")
                    for text, to in zip(said.replies, said.reply_to, strict=True))
    return sent_at if confirmed else None


async def test_sigkill_under_load_loses_nothing_durable_and_counts_nothing_twice(tmp_path):
    rng = random.Random(int(os.environ.get("TGSNAP_CRASH_SEED", "5")))
    loop = asyncio.get_running_loop()
    async with ClickerStack(tmp_path, flush_interval=FLUSH_INTERVAL, knobs={"rate_limits": False}) as stack:
        control, bot = stack.control, stack.demo.bot_username
        assert control is not None
        users = [Clicker(await control.create_user(f"user {i}")) for i in range(USERS)]
        for user in users:
            assert (await control.say(user.user_id, bot, "/start")).replies == [f"Приветствую user {users.index(user)}"]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(click_forever(control, bot, u, stop)) for u in users]
        try:
            for cycle in range(CYCLES):
                await asyncio.sleep(rng.uniform(0.3, 1.5))
                mark = await durable_mark(control, stack)
                assert mark is not None, f"cycle {cycle}: /flush was not confirmed\n{stack.bot.log_tail()}"
                await asyncio.sleep(rng.uniform(0.0, 1.5))
                killed_at = loop.time()
                durable = {u.user_id: u.acked_before(mark) for u in users}
                windowed = {u.user_id: u.acked_before(killed_at - WINDOW) for u in users}
                await stack.bot.kill()
                await asyncio.sleep(rng.uniform(0.0, 0.5))  # clicks keep arriving while it is down
                await stack.bot.start()
                await stack.wait_ready()
                restarted_at = loop.time()
                while any(u.first_ack_after(restarted_at) is None for u in users):  # everyone answered again
                    assert loop.time() < restarted_at + 2 * PATIENCE, f"cycle {cycle}: a user got no answer"
                    await asyncio.sleep(0.1)
                for u in users:
                    after = u.first_ack_after(killed_at)
                    assert after is not None
                    assert after > durable[u.user_id], (
                        f"cycle {cycle}: user {u.user_id} had {durable[u.user_id]} clicks confirmed durable, "
                        f"after the restart the count went to {after}")
                    assert after > windowed[u.user_id], (
                        f"cycle {cycle}: user {u.user_id} lost clicks older than the flush window "
                        f"({windowed[u.user_id]} acknowledged by {WINDOW:g} s before the kill, then {after})")
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        assert not [p for u in users for p in u.problems]

        # Graceful stop: all answered, SIGTERM, exit 0, and every count continues exactly.
        last = {u.user_id: u.acks[-1][1] for u in users}
        assert await stack.bot.stop() == 0, stack.bot.log_tail()
        await stack.bot.start()
        await stack.wait_ready()
        for u in users:
            assert (await control.say(u.user_id, bot, "Клик", wait=20.0)).replies == [f"Кликов: {last[u.user_id] + 1}"]
        for u in users:
            assert last[u.user_id] <= u.sent
