"""`python -m bot` as a user runs it: README's command with nothing configured, and SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

from tools.loadgen.control import Control

ROOT = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a fresh machine: no TGSNAP_* settings; the package found from its checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TGSNAP_")}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


async def start_local_bot(cwd: Path) -> tuple[asyncio.subprocess.Process, str, dict[str, str]]:
    """Run `python -m bot` with no configuration in `cwd`; return it and what it printed about itself."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", cwd=cwd, env=clean_env(), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    printed: list[str] = []

    async def read_instructions() -> None:
        while not any(line.startswith("Stop with Ctrl+C") for line in printed):
            line = await proc.stdout.readline()
            assert line, "the bot exited before it was ready:\n" + "".join(printed)
            printed.append(line.decode())

    await asyncio.wait_for(read_instructions(), 90)
    text = "".join(printed)
    control = re.search(r"control:\s+(http://127\.0\.0\.1:\d+/control)", text)
    bot = re.search(r"bot:\s+@(\w+)", text)
    user = re.search(r"demo user:\s+.+\(id (\d+)\)", text)
    assert control and bot and user, text
    # Keep draining the pipe so the bot never blocks on a full one.
    asyncio.get_running_loop().create_task(_drain(proc))
    return proc, text, {"control": control.group(1), "bot": bot.group(1), "user": user.group(1)}


async def _drain(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdout is not None
    while await proc.stdout.readline():
        pass


async def test_readme_command_runs_out_of_the_box_and_keeps_clicks_across_a_restart(tmp_path):
    proc, text, info = await start_local_bot(tmp_path)
    try:
        assert "curl -s" in text and "tools.emulator.cli" in text  # it says how to talk to it
        frozen = re.search(r"(\d+) start-up objects kept out of garbage collection", text)
        assert frozen and int(frozen.group(1)) > 50_000, text  # bot/aiogram_costs.py, cost 3
        async with Control(info["control"]) as control:
            user = int(info["user"])
            assert (await control.say(user, info["bot"], "/start")).replies == ["Приветствую Алиса"]
            assert (await control.say(user, info["bot"], "Клик")).replies == ["Кликов: 1"]
            assert (await control.say(user, info["bot"], "Клик")).replies == ["Кликов: 2"]
            status = await control.say(user, info["bot"], "/status")  # the demo user is an admin
            assert status.replies[0].startswith("Хранилище: ")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 60)
    assert code == 0
    assert (tmp_path / "data" / "emulator").is_dir()

    first_control = info["control"]
    proc, _text, info = await start_local_bot(tmp_path)
    try:
        assert info["control"] == first_control  # the same ports: the printed commands still work
        async with Control(info["control"]) as control:
            said = await control.say(int(info["user"]), info["bot"], "Клик")
            assert said.replies == ["Кликов: 3"]
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl+C: the same clean stop
        assert await asyncio.wait_for(proc.wait(), 60) == 0


async def test_a_second_local_bot_on_the_same_data_is_refused(tmp_path):
    proc, _text, _info = await start_local_bot(tmp_path)
    try:
        second = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", cwd=tmp_path, env=clean_env(), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(second.communicate(), 60)
        assert second.returncode == 2
        assert b"already running" in err
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0


async def test_a_refused_token_exits_2_without_touching_storage(tmp_path):
    from tools.emulator.testing import running_emulator

    async with running_emulator(tmp_path / "tg") as emu:
        demo = emu.demo()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", cwd=tmp_path, stdin=asyncio.subprocess.DEVNULL,
            env=clean_env(TGSNAP_BOT_TOKEN=f"{demo.bot_id}:wrong", TGSNAP_BOT_API_URL=emu.bot_api_url,
                          TGSNAP_STORAGE_MODE="local", TGSNAP_STORAGE_DIR=str(tmp_path / "storage")),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert b"refused the bot token" in err
    assert b"wrong" not in err  # the token is never echoed
    assert not (tmp_path / "storage").exists()
