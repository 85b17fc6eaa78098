"""Crash safety of the whole bot: `python -m bot` SIGKILLed at random moments under load, then restarted.

Users click without pause while the bot is killed and restarted around them (their messages wait in
the emulator meanwhile, as in Telegram). After every restart:
- every click acknowledged before an admin's /flush was acknowledged is still counted (durable means durable);
- every click acknowledged more than one flush window before the kill is still counted (loss <= RPO);
- no click is ever counted twice (each «Кликов: N» is at most the clicks that user has sent).
Finally a graceful stop (SIGTERM) must exit 0 and lose nothing at all.

Two storages: a local directory with a 0.5 s flush interval (the tightest window), and local mode's own
storage, the emulator's channel over MTProto, where Telegram's rate budget (18 posts a minute per
channel) paces the deltas, so the window is the budget's, not the interval's.

CI runs 2 + 1 cycles (each restart costs seconds: aiogram alone takes ~3 s of CPU to import). The
documented long run: TGSNAP_CRASH_CYCLES=50 .venv/bin/pytest tests/bot/test_crash.py
"""

from __future__ import annotations

import asyncio
import os
import random
import re
from dataclasses import dataclass, field

import pytest

from tools.loadgen.control import Control
from tools.loadgen.stack import ClickerStack

LONG_RUN = os.environ.get("TGSNAP_CRASH_CYCLES")
USERS = 5
#: how long a user waits for an answer before clicking again: longer than a restart, so a click sent to a
#: dead bot is answered by its successor; a click lost in the crash (taken, never answered) costs this.
PATIENCE = 12.0
_CLICKS = re.compile(r"^Кликов: (\d+)$")


@dataclass(frozen=True)
class Variant:
    storage_mode: str
    flush_interval: float
    #: a click acknowledged this long before a kill must have been flushed.
    window: float
    #: seconds of load between a restart and the next /flush, and between that /flush and the kill
    #: (every other cycle, starting with the first, kills right after the /flush is confirmed: a
    #: confirmation that ran ahead of the upload shows up there).
    load: tuple[float, float]
    cycles: int
    #: end with a SIGTERM and check that it lost nothing (test_process.py does it for local mode too).
    graceful: bool = True

    @property
    def ci_cycles(self) -> int:
        return int(LONG_RUN) if LONG_RUN else self.cycles


BUDGET_SLOT = 60 / 18  # seconds between two posts the Telegram backends allow themselves in one channel
VARIANTS = [
    # interval + the time to write a delta file
    Variant("local", flush_interval=0.5, window=0.5 + 1.0, load=(0.3, 1.5), cycles=2),
    # With a 1 s interval every delta waits for a budget slot, so a /flush answered before its upload
    # landed is caught at once. The window is what the budget allows: after the interval, a delta may
    # queue behind the one before it and a manifest edit (lease renewal) for its own slot; gaps of ~9 s
    # between durable deltas were seen under this load on 2 busy cores.
    Variant("mtproto", flush_interval=1.0, window=1.0 + 3 * BUDGET_SLOT + 1.0, load=(12.0, 12.0), cycles=1,
            graceful=False),
]


@dataclass
class Clicker:
    user_id: int
    sent: int = 0
    #: (loop time received, count) of every «Кликов: N» this user saw.
    acks: list[tuple[float, int]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def acked_between(self, start: float, end: float) -> int:
        return max((k for at, k in self.acks if start < at < end), default=0)

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


@pytest.mark.timeout(120 + 90 * int(LONG_RUN or 1))
@pytest.mark.parametrize("variant", VARIANTS, ids=[v.storage_mode for v in VARIANTS])
async def test_sigkill_under_load_loses_nothing_durable_and_counts_nothing_twice(tmp_path, variant):
    rng = random.Random(int(os.environ.get("TGSNAP_CRASH_SEED", "5")))
    loop = asyncio.get_running_loop()
    # The emulator's flood control is off so users can click fast; the backends keep their own budget.
    async with ClickerStack(tmp_path, flush_interval=variant.flush_interval, storage_mode=variant.storage_mode,
                            knobs={"rate_limits": False}) as stack:
        control, bot = stack.control, stack.demo.bot_username
        assert control is not None
        users = [Clicker(await control.create_user(f"user {i}")) for i in range(USERS)]
        for user in users:
            assert (await control.say(user.user_id, bot, "/start")).replies == [f"Приветствую user {users.index(user)}"]
        stop = asyncio.Event()
        serving_since = loop.time()  # when the running bot process started answering
        tasks = [asyncio.create_task(click_forever(control, bot, u, stop)) for u in users]
        try:
            for cycle in range(variant.ci_cycles):
                await asyncio.sleep(rng.uniform(*variant.load))
                mark = await durable_mark(control, stack)
                assert mark is not None, f"cycle {cycle}: /flush was not confirmed\n{stack.bot.log_tail()}"
                if cycle % 2:
                    await asyncio.sleep(rng.uniform(*variant.load))
                killed_at = loop.time()
                # Only this process's answers count: what an earlier process acknowledged and then lost
                # in its crash (within its window) was checked after that crash, and is gone for good.
                durable = {u.user_id: u.acked_between(serving_since, mark) for u in users}
                windowed = {u.user_id: u.acked_between(serving_since, killed_at - variant.window) for u in users}
                await stack.bot.kill()
                await asyncio.sleep(rng.uniform(0.0, 0.5))  # clicks keep arriving while it is down
                await stack.bot.start()
                await stack.wait_ready()
                restarted_at = serving_since = loop.time()
                while any(u.first_ack_after(restarted_at) is None for u in users):  # everyone answered again
                    assert loop.time() < restarted_at + 2 * PATIENCE, f"cycle {cycle}: a user got no answer"
                    await asyncio.sleep(0.1)
                for u in users:
                    # The first count the new process gave (answers the old one sent just before its death
                    # may still be on their way for a few milliseconds after the kill).
                    after = u.first_ack_after(killed_at + 0.2)
                    assert after is not None
                    assert after > durable[u.user_id], (
                        f"cycle {cycle}: user {u.user_id} had {durable[u.user_id]} clicks confirmed durable, "
                        f"after the restart the count went to {after}")
                    assert after > windowed[u.user_id], (
                        f"cycle {cycle}: user {u.user_id} lost clicks older than the flush window "
                        f"({windowed[u.user_id]} acknowledged by {variant.window:g} s before the kill, then {after})")
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        assert not [p for u in users for p in u.problems]

        for u in users:
            assert u.acks[-1][1] <= u.sent
        if not variant.graceful:
            return
        # Graceful stop: all answered, SIGTERM, exit 0, and every count continues exactly.
        last = {u.user_id: u.acks[-1][1] for u in users}
        assert await stack.bot.stop() == 0, stack.bot.log_tail()
        await stack.bot.start()
        await stack.wait_ready()
        for u in users:
            assert (await control.say(u.user_id, bot, "Клик", wait=20.0)).replies == [f"Кликов: {last[u.user_id] + 1}"]
