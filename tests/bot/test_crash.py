"""Exactly-once clicks: `python -m bot` SIGKILLed at random moments under load, then restarted.

Users click without pause while the bot is killed and restarted around them (their messages wait in
the emulator meanwhile, as in Telegram, which outlives the bot). The bot confirms an update to Telegram
only once its effect is durable, so Telegram delivers again whatever a dead process had not made
durable, and the click counts once (bot/users.py). So, whatever the moment of the kills:
- no click is ever counted twice (each «Кликов: N» is at most the clicks that user has sent);
- every click acknowledged before an admin's /flush was acknowledged is still counted after a kill;
- at the end (every user answered, a graceful SIGTERM, a restart) each user's count EQUALS the clicks
  that user sent: zero lost, zero doubled.

Storages: a local directory (0.5 s flush interval), the Bot API channel and the emulator's channel over
MTProto (Telegram's rate budget paces the deltas there), and the webhook mode on a local directory.

CI runs a few cycles (each restart costs seconds: aiogram alone takes ~3 s of CPU to import). The
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
    name: str
    storage_mode: str
    flush_interval: float
    #: seconds of load between a restart and the kill (a random point in it).
    load: tuple[float, float]
    cycles: int
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def ci_cycles(self) -> int:
        return int(LONG_RUN) if LONG_RUN else self.cycles


VARIANTS = [
    Variant("local", "local", flush_interval=0.5, load=(0.3, 3.0), cycles=2),
    # Every delta waits for a slot in the channel's rate budget (18 posts a minute): kills land while
    # many answered updates wait for durability.
    Variant("botapi", "botapi", flush_interval=1.0, load=(2.0, 6.0), cycles=1),
    Variant("mtproto", "mtproto", flush_interval=1.0, load=(2.0, 6.0), cycles=1),
    Variant("webhook", "local", flush_interval=0.5, load=(0.3, 3.0), cycles=2,
            extra_env={"TGSNAP_WEBHOOK_URL": "http://127.0.0.1:{port}/tg", "TGSNAP_WEBHOOK_PORT": "{port}"}),
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


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.timeout(150 + 60 * int(LONG_RUN or 1))
@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
async def test_sigkill_under_load_loses_no_click_and_counts_none_twice(tmp_path, variant):
    rng = random.Random(int(os.environ.get("TGSNAP_CRASH_SEED", "5")))
    loop = asyncio.get_running_loop()
    port = _free_port()
    env = {k: v.format(port=port) for k, v in variant.extra_env.items()}
    # The emulator's flood control is off so users can click fast; the backends keep their own budget.
    async with ClickerStack(tmp_path, flush_interval=variant.flush_interval, storage_mode=variant.storage_mode,
                            knobs={"rate_limits": False}, extra_env=env) as stack:
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
                mark = None
                if cycle % 2:
                    mark = await durable_mark(control, stack)
                    assert mark is not None, f"cycle {cycle}: /flush was not confirmed\n{stack.bot.log_tail()}"
                    await asyncio.sleep(rng.uniform(0.0, 1.0))
                killed_at = loop.time()
                durable = {u.user_id: u.acked_between(serving_since, mark) for u in users} if mark else {}
                await stack.bot.kill()
                await asyncio.sleep(rng.uniform(0.0, 0.5))  # clicks keep arriving while it is down
                await stack.bot.start()
                await stack.wait_ready()
                restarted_at = serving_since = loop.time()
                while any(u.first_ack_after(restarted_at) is None for u in users):  # everyone answered again
                    assert loop.time() < restarted_at + 2 * PATIENCE, f"cycle {cycle}: a user got no answer"
                    await asyncio.sleep(0.1)
                for u in users:
                    after = u.first_ack_after(killed_at + 0.2)
                    assert after is not None
                    assert after > durable.get(u.user_id, 0), (
                        f"cycle {cycle}: user {u.user_id} had {durable[u.user_id]} clicks confirmed durable, "
                        f"after the restart the count went to {after}")
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        assert not [p for u in users for p in u.problems]
        # Every click sent was answered by now or waits in Telegram; a graceful stop confirms only what is
        # durable, and a restart handles whatever is left.
        assert await stack.bot.stop() == 0, stack.bot.log_tail()
        await stack.bot.start()
        await stack.wait_ready()
        for u in users:
            said = await control.say(u.user_id, bot, "Клик", wait=20.0)
            # Answers to redelivered clicks may come first (in webhook mode a chat's updates come one at a
            # time, after Telegram's retry delays): read the chat until the last click is answered.
            deadline = loop.time() + 60.0
            while True:
                texts = [m.get("text") or "" for m in await control.bot_messages(u.user_id, bot,
                                                                                 after=said.sent_id)]
                counts = [int(m.group(1)) for m in map(_CLICKS.match, texts) if m]
                if u.sent + 1 in counts or loop.time() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert counts and max(counts) == u.sent + 1, (
                f"user {u.user_id} sent {u.sent + 1} clicks in all; the bot answered {texts}\n"
                f"{stack.bot.log_tail()}")
