"""Real deploys: the files a platform reads, SIGTERM inside the 30 s grace period, and a deploy overlap.

- SIGTERM while storage refuses every delta: the process still exits inside the grace period, and the
  clicks it could not make durable were never confirmed, so Telegram delivers them to the next process
  and they count (exactly once).
- Deploy overlap (a dyno or rolling update starts the new process before the old one stops): the new
  process waits at the single-writer protocol while the old one serves; SIGTERM to the old one hands
  the storage over; every click sent during the overlap counts once.
"""

from __future__ import annotations

import asyncio
import re
import tomllib
from pathlib import Path

from bot import config
from tools.loadgen.stack import ROOT, BotProcess, ClickerStack

_CLICKS = re.compile(r"^Кликов: (\d+)$")


def test_deploy_files_match_the_readme_and_the_package():
    readme = (ROOT / "README.md").read_text()
    install = ".venv/bin/pip install -q -e ."
    assert f"python3 -m venv .venv && {install}" in readme
    docker = (ROOT / "Dockerfile").read_text()
    assert f"RUN python3 -m venv .venv && {install}" in docker  # README's install, verbatim
    users = re.findall(r"^USER (\S+)$", docker, re.M)
    assert users and users[-1] not in ("root", "0")
    assert docker.index("USER ") < docker.index("RUN python3 -m venv")  # nothing installed as root
    assert re.search(r'^CMD \[".venv/bin/python", "-m", "bot"\]$', docker, re.M)
    assert (ROOT / "Procfile").read_text().strip() == "worker: python -m bot"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"]["text"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    known = {o.env for o in config.OPTIONS}
    example = re.findall(r"^#? ?(TGSNAP_[A-Z_]+)=", (ROOT / ".env.example").read_text(), re.M)
    assert example and set(example) <= known, set(example) - known


async def _counts(control, user: int, bot: str, text: str = "Клик", wait: float = 20.0) -> list[int]:
    said = await control.say(user, bot, text, wait=wait)
    return [int(m.group(1)) for m in map(_CLICKS.match, said.replies) if m]


async def test_sigterm_with_storage_down_exits_in_grace_and_loses_no_click(tmp_path):
    async with ClickerStack(tmp_path, flush_interval=0.5, storage_mode="botapi",
                            knobs={"rate_limits": False}) as stack:
        control, bot = stack.control, stack.demo.bot_username
        assert control is not None
        user = await control.create_user("Ann")
        await control.say(user, bot, "/start")
        assert await _counts(control, user, bot) == [1]
        await asyncio.sleep(1.5)  # click 1 durable
        # Storage down from now on: every delta upload fails with 500.
        await control.request("POST", "/faults", {"kind": "server_error", "front": "botapi",
                                                   "method": "sendDocument", "count": None, "probability": 1.0})
        for n in (2, 3, 4):
            assert await _counts(control, user, bot) == [n]  # replies stay immediate
        loop = asyncio.get_running_loop()
        started = loop.time()
        code = await stack.bot.stop(grace=35.0)
        took = loop.time() - started
        assert took < 30.0, f"SIGTERM took {took:.1f} s\n{stack.bot.log_tail()}"
        assert code == 0, stack.bot.log_tail()
        await control.request("DELETE", "/faults")
        await stack.bot.start()
        await stack.wait_ready()
        # Clicks 2-4 were never confirmed: Telegram delivered them again, and they counted once each.
        counts = await _counts(control, user, bot)
        assert counts and max(counts) == 5, (counts, stack.bot.log_tail())


async def test_deploy_overlap_hands_over_with_nothing_lost(tmp_path):
    async with ClickerStack(tmp_path, flush_interval=0.5, storage_mode="local",
                            knobs={"rate_limits": False}) as stack:
        control, bot = stack.control, stack.demo.bot_username
        assert control is not None
        users = [await control.create_user(f"u{i}") for i in range(3)]
        for u in users:
            await control.say(u, bot, "/start")
        sent = dict.fromkeys(users, 0)
        stop = asyncio.Event()

        async def click(u: int) -> None:
            while not stop.is_set():
                sent[u] += 1
                await control.say(u, bot, "Клик", wait=15.0)

        tasks = [asyncio.create_task(click(u)) for u in users]
        old = stack.bot
        new = BotProcess(old.env, Path(tmp_path) / "bot-new.log")
        try:
            await asyncio.sleep(1.0)
            await new.start()  # the new release comes up while the old one serves
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 90.0  # its start-up (aiogram's import) on busy shared cores
            while "waiting up to" not in new.log_tail(400):  # it met the live writer's lease, and waits
                assert new.alive and loop.time() < deadline, new.log_tail()
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)
            assert new.alive and old.alive  # both up; only the old one writes
            assert await old.stop(grace=35.0) == 0, old.log_tail()
            stack.bot = new
            await stack.wait_ready()
            await asyncio.sleep(1.0)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        for u in users:
            counts = await _counts(control, u, bot)
            assert counts and max(counts) == sent[u] + 1, (u, sent[u], counts, new.log_tail())
