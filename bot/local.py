"""Local mode: with no bot token, run the clicker against a Telegram emulator started in this process.

The emulator keeps its world (bot, storage channel, demo user, every message and document) under
`<data dir>/emulator`, so stopping and starting `python -m bot` again continues where it stopped: the
store restores from the emulator's storage channel exactly as it would from Telegram.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import fcntl
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import aiohttp

from bot import texts
from bot.config import LOCAL_STORAGE_MODE, BotSettings
from snapshot.errors import ConfigError
from snapshot.settings import StorageSettings

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class LocalWorld:
    """What local mode set up: where to reach the emulator and who is who in it."""

    control_url: str
    bot_api_url: str
    bot_username: str
    user_id: int
    user_name: str
    storage: StorageSettings


@contextlib.contextmanager
def _single_instance(data_dir: Path):
    """Refuse a second local-mode bot on the same data directory (two emulators on one world)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lock_path = data_dir / ".lock"
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another `python -m bot` is already running on {data_dir}; stop it or pass "
                              f"another --data-dir") from None
        yield


@contextlib.asynccontextmanager
async def local_world(settings: BotSettings) -> AsyncIterator[LocalWorld]:
    """Start the emulator, make sure the demo world exists, and describe it; stop the emulator on exit."""
    from tools.emulator.app import Emulator

    with _single_instance(settings.data_dir):
        emulator = Emulator(settings.data_dir / "emulator")
        await emulator.start()
        try:
            demo = emulator.demo()
            user = emulator.world.user(demo.user_id)
            mode = settings.values.get("TGSNAP_STORAGE_MODE") or LOCAL_STORAGE_MODE
            storage = settings.storage_settings(
                mode=mode, bot_token=demo.bot_token, storage_chat=str(demo.storage_chat_id),
                bot_api_url=emulator.bot_api_url, mtproto_session=demo.session_string,
            )
            yield LocalWorld(
                control_url=emulator.control_url, bot_api_url=emulator.bot_api_url, bot_username=demo.bot_username,
                user_id=demo.user_id, user_name=user.first_name if user else str(demo.user_id), storage=storage,
            )
        finally:
            await emulator.close()


def instructions(world: LocalWorld, data_dir: Path, interactive: bool) -> str:
    say = json.dumps({"user_id": world.user_id, "bot": world.bot_username, "text": texts.CLICK_BUTTON},
                     ensure_ascii=False)
    lines = [
        "",
        f"The clicker bot is running in local mode: a Telegram emulator on 127.0.0.1, state under {data_dir}/.",
        f"  bot:        @{world.bot_username}",
        f"  demo user:  {world.user_name} (id {world.user_id}), also an admin",
        f"  storage:    {world.storage.describe()}",
        f"  control:    {world.control_url}",
        "",
    ]
    if interactive:
        lines += [
            f"Talk to it here as {world.user_name}: type /start, then {texts.CLICK_BUTTON} or {texts.RATING_BUTTON} "
            "(admin: /status, /flush, /snapshot) and press Enter.",
        ]
    lines += [
        "From another terminal (each prints the bot's answer):",
        f"  {sys.executable} -m tools.emulator.cli --control {world.control_url} say --user {world.user_id} "
        f"--bot {world.bot_username} {texts.CLICK_BUTTON}",
        f"  curl -s {world.control_url}/say -H 'Content-Type: application/json' -d '{say}'",
        "Stop with Ctrl+C: the bot saves everything and exits; run it again to continue where it stopped.",
        "",
    ]
    return "\n".join(lines)


async def console(world: LocalWorld, stream: TextIO = sys.stdin, out: TextIO = sys.stdout) -> None:
    """Read lines from a terminal and say them to the bot as the demo user, printing its replies."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    fd = stream.fileno()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""

    def readable() -> None:
        # Read the descriptor directly: a buffered readline() would strand pasted lines in its buffer.
        nonlocal pending
        data = os.read(fd, 65536)
        pending += decoder.decode(data, final=not data)
        *complete, pending = pending.split("\n")
        for line in complete:
            lines.put_nowait(line)
        if not data:
            loop.remove_reader(fd)
            if pending:
                lines.put_nowait(pending)
            lines.put_nowait(None)

    loop.add_reader(fd, readable)
    try:
        async with aiohttp.ClientSession() as http:
            while (line := await lines.get()) is not None:
                text = line.strip()
                if not text:
                    continue
                try:
                    async with http.post(f"{world.control_url}/say", json={
                        "user_id": world.user_id, "bot": world.bot_username, "text": text, "wait": 10,
                    }) as response:
                        result = await response.json()
                except (aiohttp.ClientError, ValueError) as exc:
                    out.write(f"  (could not reach the emulator: {exc})\n")
                    continue
                replies = result.get("replies") or []
                if not replies:
                    out.write("  (no reply)\n" if "error" not in result else f"  ({result['error']})\n")
                for reply in replies:
                    body = reply.get("text") or ""
                    out.write("  " + body.replace("\n", "\n  ") + "\n")
                out.flush()
    finally:
        loop.remove_reader(fd)


def interactive_terminal(stream: TextIO = sys.stdin) -> bool:
    try:
        return stream.isatty() and os.getpgrp() == os.tcgetpgrp(stream.fileno())
    except (OSError, ValueError):
        return False
