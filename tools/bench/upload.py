"""The `upload` measure's machinery: an emulator in its own process, and the two uploads to compare.

The emulator runs as `python -m tools.emulator` in a child process so its CPU (decrypting, storing parts)
does not share the client's GIL; the client side is the real MTProtoBackend and a plain Telethon upload
on the same logged-in session.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from tools.emulator.cli import ControlClient

MIB = 1024 * 1024


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used so far, from /proc; None where there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # after "pid (comm)": state is field 3, utime and stime are fields 14 and 15 (proc(5))
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def emulator_process(**knobs: Any) -> Iterator[dict[str, Any]]:
    """Start the emulator with a demo world, set `knobs` through the control API, yield its info line
    (with the child's `pid` added, for `process_cpu`)."""
    with tempfile.TemporaryDirectory(prefix="tgsnap-bench-upload-") as tmp:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tools.emulator", "--data", os.path.join(tmp, "tg"), "--json", "--demo"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the emulator exited before printing its info (rc {proc.wait()})")
            info = json.loads(line)
            info["pid"] = proc.pid
            ControlClient(info["control_url"]).request("POST", "/knobs", knobs)
            yield info
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def compare(info: dict[str, Any], payload: bytes, runs: int) -> dict[str, float]:
    """Best-of-`runs` seconds for Telethon's sequential upload_file and for MTProtoBackend.put().

    Both include the one messages.sendMedia that turns the uploaded parts into a channel document, and
    both use 512 KiB parts (Telethon would pick 256 KiB for 200 MiB, which would flatter the ratio).
    """
    from telethon.tl import functions

    from snapshot.backends.mtproto import MTProtoBackend
    from snapshot.backends.telegram_budget import BudgetConfig, ChatBudget

    budget = ChatBudget(BudgetConfig(per_minute=600_000, burst=10_000, max_wait=60,
                                     edits_per_minute=600_000, edit_burst=10_000))
    backend = MTProtoBackend(bot_token=info["bot_token"], chat=info["storage_chat_id"],
                             session=info["session_string"], budget=budget, manifest_min_interval=0.0)
    await backend.open()
    client = backend.client
    assert client is not None
    best = {"sequential": float("inf"), "parallel": float("inf")}
    cpu: dict[str, tuple[float, float | None]] = {}
    pid = info.get("pid")

    def mark() -> tuple[float, float, float | None]:
        return time.perf_counter(), time.process_time(), process_cpu(pid) if pid else None

    def keep(kind: str, start: tuple[float, float, float | None]) -> None:
        end = mark()
        if end[0] - start[0] < best[kind]:
            best[kind] = end[0] - start[0]
            emu = end[2] - start[2] if end[2] is not None and start[2] is not None else None
            cpu[kind] = (end[1] - start[1], emu)

    try:
        # interleaved rounds: other load on the machine hits both alike
        for i in range(runs):
            t0 = mark()
            handle = await client.upload_file(payload, part_size_kb=512, file_name=f"seq-{i}.bin")
            await client(functions.messages.SendMediaRequest(
                backend._peer, MTProtoBackend._media(handle, f"seq-{i}.bin"), message="", silent=True))
            keep("sequential", t0)
            t0 = mark()
            await backend.put(f"par-{i}", payload)
            keep("parallel", t0)
    finally:
        await backend.close()
    best["connections"] = backend.connections
    for kind, (client_cpu, emu_cpu) in cpu.items():
        best[f"{kind}_cpu_client"] = client_cpu
        if emu_cpu is not None:
            best[f"{kind}_cpu_emulator"] = emu_cpu
    return best
