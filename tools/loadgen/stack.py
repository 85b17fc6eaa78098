"""A whole clicker to test against: the emulator in this process, the bot (`python -m bot`) in a child.

The bot runs as a separate process so it can be killed with SIGKILL and started again while the
emulator (Telegram) stays up, which is what the crash test and `loadgen` without `--control` need.

    async with ClickerStack(tmp_path) as stack:     # emulator up, bot started and answering
        await stack.bot.kill()                      # SIGKILL
        await stack.bot.start(); await stack.wait_ready()
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any, BinaryIO

from tools.loadgen.control import Control

#: the repository root: the child runs `python -m bot` from here.
ROOT = Path(__file__).resolve().parents[2]


class BotProcess:
    """`python -m bot` as a child process with its own environment; output goes to a log file."""

    def __init__(self, env: dict[str, str], log_path: Path, args: list[str] | None = None):
        self.env = env
        self.log_path = log_path
        self.args = args or []
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        if self.alive:
            raise RuntimeError("the bot is already running")
        self.starts += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("TGSNAP_")}
        env.update(self.env)
        env["PYTHONUNBUFFERED"] = "1"
        with self._open_log() as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", *self.args, cwd=ROOT, env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            )

    def _open_log(self) -> BinaryIO:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed by the caller's `with`
        log.write(f"\n=== start #{self.starts} ===\n".encode())
        log.flush()
        return log

    async def kill(self) -> None:
        """SIGKILL: no flush, no hand-over, like a power cut."""
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def stop(self, grace: float = 60.0) -> int:
        """SIGTERM and wait up to `grace` seconds for the exit code (the graceful path)."""
        assert self.process is not None
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), grace)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class ClickerStack:
    """Emulator (in process) + bot (child process) + a control client, under one data directory."""

    def __init__(self, data_dir: str | os.PathLike[str], *, flush_interval: float = 1.0,
                 storage_mode: str | None = None, knobs: dict[str, Any] | None = None,
                 extra_env: dict[str, str] | None = None):
        self.data_dir = Path(data_dir)
        self.flush_interval = flush_interval
        self.storage_mode = storage_mode
        self.knobs = knobs or {}
        self.extra_env = extra_env or {}
        self.emulator: Any = None
        self.control: Control | None = None
        self.bot: BotProcess = None  # type: ignore[assignment]  # set by start()
        self.demo: Any = None
        self.probe_id: int | None = None

    async def __aenter__(self) -> ClickerStack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        from bot.config import LOCAL_STORAGE_MODE
        from tools.emulator.app import Emulator

        self.data_dir.mkdir(parents=True, exist_ok=True)
        # a bot with a token creates no storage directory (a typo would start it empty): the operator's
        # `mkdir` before the first run, done here
        (self.data_dir / "storage").mkdir(exist_ok=True)
        self.emulator = Emulator(self.data_dir / "emulator", knobs=self.knobs,
                                 mtproto=(self.storage_mode or LOCAL_STORAGE_MODE) == "mtproto")
        await self.emulator.start()
        self.demo = self.emulator.demo()
        self.control = Control(self.emulator.control_url)
        mode = self.storage_mode or LOCAL_STORAGE_MODE
        env = {
            "TGSNAP_BOT_TOKEN": self.demo.bot_token,
            "TGSNAP_BOT_API_URL": self.emulator.bot_api_url,
            "TGSNAP_ADMIN_IDS": str(self.demo.user_id),
            "TGSNAP_FLUSH_INTERVAL": str(self.flush_interval),
            "TGSNAP_STORAGE_MODE": mode,
            "TGSNAP_STORAGE_DIR": str(self.data_dir / "storage"),
            "TGSNAP_STORAGE_CHAT": str(self.demo.storage_chat_id),
            "TGSNAP_DATA_DIR": str(self.data_dir),
        }
        if self.demo.session_string:
            env["TGSNAP_MTPROTO_SESSION"] = self.demo.session_string
        env.update(self.extra_env)
        self.bot = BotProcess(env, self.data_dir / "bot.log")
        await self.bot.start()
        await self.wait_ready()

    async def wait_ready(self, within: float = 60.0) -> None:
        """Until the bot answers a probe user of its own (so no test user's chat gets stray replies)."""
        assert self.control is not None
        if self.probe_id is None:
            self.probe_id = await self.control.create_user("probe")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            if not self.bot.alive:
                raise RuntimeError(f"the bot exited during start-up:\n{self.bot.log_tail()}")
            said = await self.control.say(self.probe_id, self.demo.bot_username, "ping", wait=2.0)
            if said.replies:
                return
            if loop.time() > deadline:
                raise TimeoutError(f"the bot did not answer within {within:g} s:\n{self.bot.log_tail()}")

    async def close(self) -> None:
        if self.bot is not None and self.bot.alive:
            try:
                await self.bot.stop()
            except TimeoutError:
                await self.bot.kill()
        if self.control is not None:
            await self.control.close()
        if self.emulator is not None:
            await self.emulator.close()
