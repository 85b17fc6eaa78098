"""`python -m tools.bench.budgetcheck`: the clicker on Telegram storage under load, and what it spends.

The product bot (`python -m bot`, durable polling, default 4 s flush interval and rate budget) with
storage in a channel of the emulator at Telegram's limits (20 posts a minute per channel, edits
included; the emulator answers 429 beyond), only the per-chat reply limits raised (as loadgen does).
`--rate` messages per second for `--seconds`; every second the bot's /metrics are sampled: the lag
(age of the oldest write not yet durable), deltas shipped, 429s, budget waits. The report: worst and
median lag, deltas per minute, 429 answers (0 means the budget kept every post inside Telegram's
limit), and the load generator's reply latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import statistics
import sys
import tempfile
import time
from typing import Any

import aiohttp


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{name}(?:_total)? ([0-9.eE+-]+)$", text, re.M)
    return float(m.group(1)) if m else float("nan")


async def run(mode: str, rate: float, seconds: float, users: int) -> dict[str, Any]:
    from tools.loadgen import UNLIMITED_REPLIES
    from tools.loadgen.load import Load, LoadConfig
    from tools.loadgen.stack import ClickerStack

    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="tgsnap-budgetcheck-") as tmp:
        async with ClickerStack(tmp, flush_interval=4.0, storage_mode=mode,
                                extra_env={"TGSNAP_METRICS_ADDR": f"127.0.0.1:{port}"}) as stack:
            assert stack.control is not None
            await stack.control.knobs(dict(UNLIMITED_REPLIES))
            load = Load(stack.control, stack.demo.bot_username,
                        LoadConfig(users=users, rate=rate, duration=seconds, rating_share=0.1, verify=True))
            await load.register()
            samples: list[dict[str, float]] = []

            async def sample() -> None:
                async with aiohttp.ClientSession() as http:
                    while True:
                        async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                            text = await r.text()
                        samples.append({"t": time.monotonic(), "lag": _metric(text, "tgsnap_lag_seconds"),
                                        "deltas": _metric(text, "tgsnap_deltas_shipped"),
                                        "floods": _metric(text, "tgsnap_budget_flood_pauses"),
                                        "waited": _metric(text, "tgsnap_budget_wait_seconds")})
                        await asyncio.sleep(1.0)

            sampler = asyncio.create_task(sample())
            report = await load.run()
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
    first, last = samples[0], samples[-1]
    minutes = (last["t"] - first["t"]) / 60
    lags = [s["lag"] for s in samples]
    return {"mode": mode, "rate": rate, "seconds": seconds, "sent": report.sent, "answered": report.answered,
            "verified": report.verified, "problems": report.problems[:3],
            "reply_latency_ms": report.latency_ms,
            "lag_s": {"worst": round(max(lags), 2), "median": round(statistics.median(lags), 2)},
            "deltas_per_minute": round((last["deltas"] - first["deltas"]) / minutes, 1) if minutes else None,
            "flood_answers_429": last["floods"], "budget_wait_s": round(last["waited"], 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench.budgetcheck", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("botapi", "mtproto"), default="botapi")
    p.add_argument("--rate", type=float, default=30.0, help="messages per second (default 30)")
    p.add_argument("--seconds", type=float, default=60.0, help="seconds of load (default 60)")
    p.add_argument("--users", type=int, default=100)
    args = p.parse_args(argv)
    print(json.dumps(asyncio.run(run(args.mode, args.rate, args.seconds, args.users)), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
