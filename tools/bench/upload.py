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


@contextlib.contextmanager
def emulator_process(**knobs: Any) -> Iterator[dict[str, Any]]:
    """Start the emulator with a demo world, set `knobs` through the control API, yield its info line."""
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
    try:
        # interleaved rounds: other load on the machine hits both alike
        for i in range(runs):
            t0 = time.perf_counter()
            handle = await client.upload_file(payload, part_size_kb=512, file_name=f"seq-{i}.bin")
            await client(functions.messages.SendMediaRequest(
                backend._peer, MTProtoBackend._media(handle, f"seq-{i}.bin"), message="", silent=True))
            best["sequential"] = min(best["sequential"], time.perf_counter() - t0)
            t0 = time.perf_counter()
            await backend.put(f"par-{i}", payload)
            best["parallel"] = min(best["parallel"], time.perf_counter() - t0)
    finally:
        await backend.close()
    best["connections"] = backend.connections
    return best
