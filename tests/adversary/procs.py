"""Writer processes and fresh restores for the adversary scenarios (see tests/adversary/writer.py)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from snapshot.backends.local import LocalDirBackend
from snapshot.restore import restore
from tests.telegram.conftest import botapi, mtproto

ROOT = Path(__file__).resolve().parents[2]
#: generous bounds for a loaded 2-core machine: they only stop a broken test from hanging.
LONG = 60.0


@dataclass
class Writer:
    name: str
    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task | None = None
    times: list[float] = field(default_factory=list)  # monotonic time each line arrived (for diagnosis)

    @property
    def acks(self) -> list[int]:
        return [int(line.split()[1]) for line in self.lines if line.startswith("ACK ")]

    @property
    def acked(self) -> int:
        """The highest i this writer acknowledged (-1: none)."""
        return max(self.acks, default=-1)

    def said(self, word: str) -> str | None:
        return next((line for line in self.lines if line == word or line.startswith(word + " ")), None)

    def index(self, word: str) -> int | None:
        return next((k for k, line in enumerate(self.lines) if line == word or line.startswith(word + " ")), None)

    def acks_after(self, word: str) -> list[int]:
        k = self.index(word)
        if k is None:
            return []
        return [int(line.split()[1]) for line in self.lines[k:] if line.startswith("ACK ")]

    @property
    def ended(self) -> bool:
        return self.proc.returncode is not None and self.reader is not None and self.reader.done()

    async def until(self, pred, within: float = LONG) -> None:
        async def poll():
            while not pred(self):
                if self.ended:
                    raise AssertionError(f"writer {self.name} exited {self.proc.returncode}: {self.lines[-5:]}")
                await asyncio.sleep(0.02)
        await asyncio.wait_for(poll(), within)

    async def exit_code(self, within: float = LONG) -> int:
        rc = await asyncio.wait_for(self.proc.wait(), within)
        if self.reader is not None:
            await self.reader
        return rc

    def opened(self) -> dict:
        line = self.said("OPEN")
        assert line is not None, self.lines[-5:]
        return json.loads(line.split(" ", 1)[1])

    async def stop(self) -> int:
        """SIGTERM (a clean close) and the exit code."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
        return await self.exit_code()

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        await self.exit_code()


async def eventually(pred, within: float = LONG) -> None:
    """Wait for `pred()` (no writer's exit is an error here)."""
    async def poll():
        while not pred():  # noqa: ASYNC110 - polls other processes' output, nothing to wait on
            await asyncio.sleep(0.02)
    await asyncio.wait_for(poll(), within)


@dataclass
class Place:
    """One storage on one backend: where writers run and restores read."""

    mode: str
    dir: Path | None
    emu: object | None
    demo: object | None
    writers: list[Writer] = field(default_factory=list)

    def __repr__(self) -> str:
        return self.mode

    async def spawn(self, name: str, *extra: str, dir: Path | None = None, wrap: list[str] | None = None) -> Writer:
        """Start a writer (`wrap`: a command it runs under, given the writer's command line as arguments)."""
        env = dict(os.environ)
        args = [sys.executable, "-m", "tests.adversary.writer", "--mode", self.mode, "--name", name, *extra]
        if self.mode == "local":
            args += ["--dir", str(dir or self.dir)]
        else:
            env.update(WRITER_TOKEN=self.demo.bot_token, WRITER_SESSION=self.demo.session_string or "")
            args += ["--chat", str(self.demo.storage_chat_id)]
            if self.mode == "botapi":
                args += ["--api-url", self.emu.bot_api_url]
        if wrap:
            args = [*wrap, *args]
        proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE, env=env, cwd=ROOT)
        w = Writer(name, proc)

        async def read():
            assert proc.stdout is not None
            async for raw in proc.stdout:
                w.lines.append(raw.decode().rstrip("\n"))
                w.times.append(time.monotonic())

        w.reader = asyncio.ensure_future(read())
        self.writers.append(w)
        return w

    async def cleanup(self) -> None:
        for w in self.writers:
            await w.kill()

    def backend(self, dir: Path | None = None):
        if self.mode == "local":
            return LocalDirBackend(dir or self.dir)
        return (botapi if self.mode == "botapi" else mtproto)(self.emu, self.demo)

    async def rows(self, dir: Path | None = None) -> dict[str, set[int]]:
        """What a fresh restore holds, per writer."""
        b = self.backend(dir)
        b = await b.open() if hasattr(b, "open") else b
        try:
            got = await restore(b)
        finally:
            await b.close()
        out: dict[str, set[int]] = {}
        try:
            for writer, i in got.conn.execute("SELECT writer, i FROM w"):
                out.setdefault(writer, set()).add(i)
        finally:
            got.conn.close()
        return out
