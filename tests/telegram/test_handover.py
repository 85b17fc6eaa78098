"""One writer, with real processes against the emulator (docs/formats.md "One writer").

- Deploy overlap: writer A under load acknowledges writes; writer B starts on the same channel and waits
  for the lease while A keeps writing; a newcomer with a short wait is refused, naming A; A gets SIGTERM,
  flushes, releases and exits 0; B takes over, restores every row A wrote and continues.
- Fencing: A is paused (SIGSTOP) until its lease runs out, B takes over, A resumes: A's next flush finds
  itself fenced, it acknowledges nothing more and exits non-zero with a clear message.
- Crash: a writer on the Bot API backend SIGKILLed at random moments and restarted keeps everything it
  acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from dataclasses import dataclass, field

import pytest

from core import Store, StoreConfig
from snapshot.errors import StorageBusy
from snapshot.replica import ReplicaConfig
from snapshot.restore import restore
from tests.telegram.conftest import botapi, mtproto
from tools.emulator.testing import Demo, Emulator

BACKENDS = {"botapi": botapi, "mtproto": mtproto}
#: generous bounds for a loaded 2-core machine: they only stop a broken test from hanging.
LONG = 60.0


@dataclass
class Writer:
    name: str
    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task | None = None

    @property
    def acks(self) -> list[int]:
        return [int(line.split()[1]) for line in self.lines if line.startswith("ACK ")]

    def said(self, word: str) -> str | None:
        return next((line for line in self.lines if line.startswith(word + " ")), None)

    async def until(self, pred) -> None:
        async def poll():
            while not pred(self):
                if self.proc.returncode is not None and self.reader is not None and self.reader.done():
                    raise AssertionError(f"writer {self.name} exited {self.proc.returncode}: {self.lines[-5:]}")
                await asyncio.sleep(0.05)
        await asyncio.wait_for(poll(), LONG)

    async def exit_code(self) -> int:
        rc = await asyncio.wait_for(self.proc.wait(), LONG)
        if self.reader is not None:
            await self.reader
        return rc

    def opened(self) -> dict:
        line = self.said("OPEN")
        assert line is not None
        return json.loads(line.split(" ", 1)[1])


async def spawn(mode: str, emu: Emulator, demo: Demo, name: str, *extra: str) -> Writer:
    env = dict(os.environ, WRITER_TOKEN=demo.bot_token, WRITER_SESSION=demo.session_string or "")
    # the hand-over's pace: 20 rows a step, a flush every 3 steps, the flush loop every 0.5 s
    args = [sys.executable, "-m", "tests.adversary.writer", "--mode", mode, "--chat", str(demo.storage_chat_id),
            "--name", name, "--rows", "20", "--ack-every", "3", "--flush-interval", "0.5", *extra]
    if mode == "botapi":
        args += ["--api-url", emu.bot_api_url]
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE, env=env,
                                                cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    w = Writer(name, proc)

    async def read():
        assert proc.stdout is not None
        async for raw in proc.stdout:
            w.lines.append(raw.decode().rstrip("\n"))

    w.reader = asyncio.ensure_future(read())
    return w


async def final_rows(mode: str, emu: Emulator, demo: Demo) -> dict[str, set[int]]:
    b = await BACKENDS[mode](emu, demo).open()
    try:
        got = await restore(b)
    finally:
        await b.close()
    out: dict[str, set[int]] = {}
    for writer, i in got.conn.execute("SELECT writer, i FROM w"):
        out.setdefault(writer, set()).add(i)
    return out


@pytest.fixture(params=sorted(BACKENDS))
def mode(request) -> str:
    return request.param


async def test_deploy_overlap_hands_over_without_losing_an_acknowledged_write(emulator, demo, mode):
    a = await spawn(mode, emulator, demo, "A")
    b = None
    try:
        await a.until(lambda w: w.said("OPEN") is not None)
        b = await spawn(mode, emulator, demo, "B", "--wait", str(LONG))
        # Both alive under load for a while: A keeps acknowledging while B waits for the lease.
        await b.until(lambda w: "READY" in w.lines)
        acked_before = len(a.acks)
        await asyncio.sleep(2.0)
        await a.until(lambda w: len(w.acks) >= acked_before + 5)
        assert b.said("OPEN") is None and b.proc.returncode is None

        # A newcomer that will not wait is refused at once, naming the holder.
        impatient = await BACKENDS[mode](emulator, demo).open()
        try:
            with pytest.raises(StorageBusy) as busy:
                await Store.open(impatient, config=StoreConfig(writer_id="C", replica=ReplicaConfig(takeover_wait=0.3)))
        finally:
            await impatient.close()
        assert "writer A (host" in str(busy.value) and f"pid {a.proc.pid}" in str(busy.value)

        a.proc.send_signal(signal.SIGTERM)
        assert await a.exit_code() == 0
        closed = a.said("CLOSED")
        assert closed is not None, a.lines[-5:]
        last_a = int(closed.split()[1])
        assert last_a >= max(a.acks)

        # B takes over: it restored every row A wrote (A's close flushed them all), then continues.
        await b.until(lambda w: w.said("OPEN") is not None)
        opened = b.opened()
        assert opened["max"].get("A") == last_a and opened["epoch"] == 2
        await b.until(lambda w: len(w.acks) >= 3)
        b.proc.send_signal(signal.SIGTERM)
        assert await b.exit_code() == 0
        last_b = int(b.said("CLOSED").split()[1])
    finally:
        for w in (a, b):
            if w is not None and w.proc.returncode is None:
                w.proc.kill()
                await w.exit_code()

    rows = await final_rows(mode, emulator, demo)
    assert rows["A"] == set(range(last_a + 1)) and rows["B"] == set(range(last_b + 1))


async def test_a_paused_writer_whose_lease_was_taken_is_fenced_and_exits_non_zero(emulator, demo):
    mode = "mtproto"  # its deltas need no manifest edit: the zombie really stores one before it finds out
    a = await spawn(mode, emulator, demo, "A", "--lease", "2", "--ack-every", "1", "--pause", "0.1")
    b = None
    try:
        await a.until(lambda w: len(w.acks) >= 3)
        a.proc.send_signal(signal.SIGSTOP)
        acked_a = max(a.acks) if a.acks else -1
        b = await spawn(mode, emulator, demo, "B", "--wait", str(LONG), "--lease", "30")
        await b.until(lambda w: len(w.acks) >= 2)
        opened = b.opened()
        assert opened["max"]["A"] >= acked_a  # everything A acknowledged before it froze
        a.proc.send_signal(signal.SIGCONT)
        assert await a.exit_code() == 3
        fenced = a.said("FENCED")
        assert fenced is not None and "fenced" in fenced and "B (host" in fenced
        assert max(a.acks) == acked_a  # nothing acknowledged after the takeover
        seen = len(b.acks)
        await b.until(lambda w: len(w.acks) >= seen + 2)
        b.proc.send_signal(signal.SIGTERM)
        assert await b.exit_code() == 0
        last_b = int(b.said("CLOSED").split()[1])
    finally:
        for w in (a, b):
            if w is not None and w.proc.returncode is None:
                w.proc.send_signal(signal.SIGCONT)
                w.proc.kill()
                await w.exit_code()

    rows = await final_rows(mode, emulator, demo)
    # A's rows are exactly what B restored (its acknowledged ones at least); the zombie's later ones are not.
    assert rows["A"] == set(range(opened["max"]["A"] + 1)) and rows["B"] == set(range(last_b + 1))


async def test_sigkill_at_random_moments_over_the_bot_api_loses_nothing_acknowledged(emulator, demo):
    rng = random.Random(4)
    acked = -1
    for _round in range(3):
        w = await spawn("botapi", emulator, demo, "K", "--ack-every", "1")
        try:
            await w.until(lambda w: w.said("OPEN") is not None)
            # Everything acknowledged by an earlier incarnation is there after the restart.
            assert w.opened()["max"].get("K", -1) >= acked
            await w.until(lambda w: len(w.acks) >= 1)
            await asyncio.sleep(rng.uniform(0.0, 0.5))
        finally:
            w.proc.kill()
            await w.exit_code()
        acked = max([acked, *w.acks])
    rows = await final_rows("botapi", emulator, demo)
    top = max(rows["K"])
    assert top >= acked and rows["K"] == set(range(top + 1))
