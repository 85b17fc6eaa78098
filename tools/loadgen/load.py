"""The load itself: N users register, then click (Zipf-skewed) and ask for the rating at a target rate.

Arrivals are paced at `rate` messages per second overall; each goes to a user drawn from the Zipf law
and waits in that user's queue, because a person sends the next message after seeing the last reply.
That keeps every user's replies in order, so each «Кликов: N» can be checked against the clicks sent.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from dataclasses import dataclass, field

from tools.loadgen.control import Control, Said
from tools.loadgen.population import Zipf, names
from tools.loadgen.report import Report

log = logging.getLogger(__name__)

CLICK = "Клик"
RATING = "Рейтинг"
_CLICKS = re.compile(r"^Кликов: (\d+)$")


@dataclass
class LoadConfig:
    users: int = 20
    rate: float = 20.0
    duration: float = 10.0
    rating_share: float = 0.05
    zipf_s: float = 1.1
    seed: int = 0
    #: seconds a user waits for each reply.
    wait: float = 10.0
    verify: bool = False


@dataclass
class SimUser:
    index: int
    name: str
    user_id: int = 0
    clicks_sent: int = 0
    #: the last click count the bot reported to this user.
    acked: int = 0
    queue: asyncio.Queue[str] = field(default_factory=asyncio.Queue)


class Load:
    def __init__(self, control: Control, bot: str | int, config: LoadConfig):
        self.control = control
        self.bot = bot
        self.config = config
        self.users = [SimUser(i, name) for i, name in enumerate(names(config.users, config.seed))]
        self.report = Report(users=config.users, target_rate=config.rate, duration=config.duration)
        self._latencies: list[float] = []

    def problem(self, text: str) -> None:
        self.report.problems.append(text)

    async def register(self, concurrency: int = 20) -> None:
        """Create the users in the emulator and /start each; the greeting must carry the exact name."""
        gate = asyncio.Semaphore(concurrency)

        async def one(user: SimUser) -> None:
            async with gate:
                user.user_id = await self.control.create_user(user.name)
                said = await self.control.say(user.user_id, self.bot, "/start", wait=self.config.wait)
            if said.timed_out or not said.replies:
                self.problem(f"user {user.index}: no greeting")
            elif said.replies[0] != f"Приветствую {user.name}":
                self.problem(f"user {user.index}: greeting {said.replies[0]!r} does not carry name {user.name!r}")

        await asyncio.gather(*(one(u) for u in self.users))

    async def run(self) -> Report:
        """Send load for `duration` seconds, let every queued message be answered, and report."""
        cfg = self.config
        zipf = Zipf(len(self.users), cfg.zipf_s, cfg.seed)
        rng = random.Random(cfg.seed + 1)
        workers = [asyncio.create_task(self._worker(u)) for u in self.users]
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            sent = 0
            while True:
                due = started + sent / cfg.rate
                if due - started >= cfg.duration:
                    break
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                user = self.users[zipf.draw()]
                user.queue.put_nowait(RATING if rng.random() < cfg.rating_share else CLICK)
                sent += 1
            await asyncio.wait_for(asyncio.gather(*(u.queue.join() for u in self.users)), cfg.wait * 3 + 30)
        except TimeoutError:
            self.problem("some users' messages were still unanswered long after the load ended")
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        elapsed = loop.time() - started
        report = self.report
        report.achieved_rate = report.answered / elapsed if elapsed > 0 else 0.0
        report.set_latencies(self._latencies)
        if cfg.verify:
            for user in self.users:
                if user.acked != user.clicks_sent:
                    self.problem(f"user {user.index} ({user.user_id}): sent {user.clicks_sent} clicks, "
                                 f"the bot last reported {user.acked}")
            report.verified = not report.problems
        return report

    async def _worker(self, user: SimUser) -> None:
        while True:
            text = await user.queue.get()
            try:
                if text == CLICK:
                    user.clicks_sent += 1
                said = await self.control.say(user.user_id, self.bot, text, wait=self.config.wait)
                self._account(user, text, said)
            except Exception as exc:  # a failed request is a finding, not a crash of the whole run
                self.report.timeouts += 1
                self.problem(f"user {user.index}: {text!r} failed: {exc}")
            finally:
                user.queue.task_done()

    def _account(self, user: SimUser, text: str, said: Said) -> None:
        report = self.report
        report.sent += 1
        if text == CLICK:
            report.clicks += 1
        else:
            report.ratings += 1
        if said.timed_out or not said.replies:
            report.timeouts += 1
            self.problem(f"user {user.index}: no reply to {text!r} within {self.config.wait:g} s")
            return
        report.answered += 1
        self._latencies.append(said.latency)
        reply = said.replies[0]
        if text == CLICK:
            match = _CLICKS.match(reply)
            if match is None:
                self.problem(f"user {user.index}: unexpected reply to a click: {reply!r}")
                return
            user.acked = int(match.group(1))
            if self.config.verify and user.acked != user.clicks_sent:
                self.problem(f"user {user.index}: click #{user.clicks_sent} answered «Кликов: {user.acked}»")
        elif not reply.startswith("Всего: "):
            self.problem(f"user {user.index}: unexpected reply to the rating: {reply!r}")
