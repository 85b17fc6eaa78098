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
from typing import Any, TextIO

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
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(f"data directory {data_dir} is not a directory (--data-dir / TGSNAP_DATA_DIR names a file)")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a parent that is a file, no permission, read-only file system
        raise ConfigError(f"cannot create the data directory {data_dir} (--data-dir / TGSNAP_DATA_DIR): "
                          f"{exc.strerror}") from None
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
        port, mtproto_port = _ports(settings)
        emulator = Emulator(settings.data_dir / "emulator", port=port, mtproto_port=mtproto_port)
        try:
            await emulator.start()
        except OSError as exc:
            if settings.local_port or settings.local_mtproto_port:
                raise ConfigError(f"cannot listen on the port asked for (--port / --mtproto-port): {exc}") from None
            # The ports of the last run are taken by now: any free ones (the printed commands change).
            emulator = Emulator(settings.data_dir / "emulator")
            await emulator.start()
        _remember_ports(settings.data_dir, emulator.port, emulator.mtproto_port)
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


_PORTS_FILE = "ports.json"


def _ports(settings: BotSettings) -> tuple[int, int]:
    """--port / --mtproto-port if given, else the ports of the previous run (so the CLI and curl
    commands it printed keep working after a restart), else 0: any free port."""
    saved: dict[str, int] = {}
    try:
        saved = json.loads((settings.data_dir / _PORTS_FILE).read_text())
    except (OSError, ValueError):
        pass
    port = settings.local_port or int(saved.get("port", 0) or 0)
    mtproto = settings.local_mtproto_port or int(saved.get("mtproto_port", 0) or 0)
    return port, mtproto


def _remember_ports(data_dir: Path, port: int | None, mtproto_port: int | None) -> None:
    with contextlib.suppress(OSError):
        (data_dir / _PORTS_FILE).write_text(json.dumps({"port": port, "mtproto_port": mtproto_port}) + "\n")


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
        "Stop with Ctrl+C (or Ctrl+D here): the bot saves everything and exits; run it again to continue "
        "where it stopped (the same ports, so these commands keep working).",
        "",
    ]
    return "\n".join(lines)


def keyboard_line(reply: dict[str, Any]) -> str | None:
    """A reply keyboard as the user would see it under the chat: `[Клик] [Рейтинг]`."""
    markup = reply.get("reply_markup") or {}
    rows = markup.get("keyboard") if isinstance(markup, dict) else None
    if not rows:
        return None
    return " ".join(f"[{b.get('text', b) if isinstance(b, dict) else b}]" for row in rows for b in row)


async def console(world: LocalWorld, stream: TextIO = sys.stdin, out: TextIO = sys.stdout, *,
                  prompt: str | None = None) -> None:
    """Read lines from a terminal and say them to the bot as the demo user, printing its replies (and the
    reply keyboard when one comes). With `prompt`, show it before each line. Returns at end of input
    (Ctrl+D)."""
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

    def show_prompt() -> None:
        if prompt:
            out.write(prompt)
            out.flush()

    loop.add_reader(fd, readable)
    try:
        async with aiohttp.ClientSession() as http:
            show_prompt()
            while (line := await lines.get()) is not None:
                text = line.strip()
                if not text:
                    show_prompt()
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
                    keys = keyboard_line(reply)
                    if keys:
                        out.write("  " + keys + "\n")
                show_prompt()
                out.flush()
            if prompt:
                out.write("\n")  # end of input (Ctrl+D): leave the prompt's line
                out.flush()
    finally:
        loop.remove_reader(fd)


def logs_to_file(path: Path) -> None:
    """While the console runs, log lines go to `path` (warnings and errors still to the terminal), so they
    do not land in the middle of the chat."""
    root = logging.getLogger()
    level = root.level
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(level)
    for existing in root.handlers:
        if isinstance(existing, logging.StreamHandler) and not isinstance(existing, logging.FileHandler):
            existing.setLevel(max(logging.WARNING, level))
    root.addHandler(handler)


def interactive_terminal(stream: TextIO = sys.stdin) -> bool:
    try:
        return stream.isatty() and os.getpgrp() == os.tcgetpgrp(stream.fileno())
    except (OSError, ValueError):
        return False
