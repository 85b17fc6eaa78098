"""Load generator for the clicker: N simulated users against the emulator, at a target rate.

    python -m tools.loadgen --users 50 --rate 40 --duration 20 --verify
    python -m tools.loadgen --control http://127.0.0.1:PORT/control --bot tgsnap_demo_bot --users 10

Without --control it runs its own emulator and bot (`python -m bot` in a child process); with it, it
drives an emulator that is already running (e.g. the one `python -m bot` starts in local mode).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import Sequence

from tools.loadgen.control import Control
from tools.loadgen.load import Load, LoadConfig
from tools.loadgen.report import Report

__all__ = ["Load", "LoadConfig", "Report", "main"]

#: private-chat and per-bot reply limits a run raises (unless --keep-limits), so it measures the bot and
#: its store rather than the emulator's flood control (~1 reply/s per chat, ~30/s per bot, as Telegram).
UNLIMITED_REPLIES = {"private_per_second": 10_000.0, "private_burst": 10_000, "global_per_second": 10_000.0,
                     "global_burst": 10_000}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.loadgen", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=20, help="simulated users (default 20)")
    p.add_argument("--rate", type=float, default=20.0, help="messages per second, all users together (default 20)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load (default 10)")
    p.add_argument("--verify", action="store_true",
                   help="check every «Кликов: N» against the clicks that user sent; exit 1 on any mismatch")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--rating-share", type=float, default=0.05, help="share of messages that ask for the rating")
    p.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent of the click distribution (default 1.1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--wait", type=float, default=10.0, help="seconds a user waits for each reply (default 10)")
    p.add_argument("--keep-limits", action="store_true",
                   help="keep the emulator's flood control for bot replies (latency then includes 429 waits)")
    target = p.add_argument_group("an emulator that is already running")
    target.add_argument("--control", metavar="URL", help="its control URL (printed by `python -m bot`)")
    target.add_argument("--bot", metavar="USERNAME", help="the bot's username there (default tgsnap_demo_bot)")
    own = p.add_argument_group("an emulator and bot of its own (without --control)")
    own.add_argument("--data", metavar="DIR", help="where they keep their state (default: a temporary directory)")
    own.add_argument("--flush-interval", type=float, default=1.0, help="the bot's flush interval (default 1)")
    own.add_argument("--storage-mode", choices=("local", "botapi", "mtproto"),
                     help="the bot's storage (default: as in local mode)")
    own.add_argument("--webhook", action="store_true",
                     help="run the bot in webhook mode (the emulator posts updates to it) instead of polling")
    return p


async def run(args: argparse.Namespace) -> Report:
    config = LoadConfig(users=args.users, rate=args.rate, duration=args.duration, rating_share=args.rating_share,
                        zipf_s=args.zipf, seed=args.seed, wait=args.wait, verify=args.verify)
    if args.control:
        async with Control(args.control) as control:
            return await _drive(control, args.bot or "tgsnap_demo_bot", config, args.keep_limits)
    from tools.loadgen.stack import ClickerStack

    with tempfile.TemporaryDirectory(prefix="tgsnap-loadgen-") as tmp:
        extra_env = {}
        if args.webhook:
            port = _free_port()
            extra_env = {"TGSNAP_WEBHOOK_URL": f"http://127.0.0.1:{port}/tg", "TGSNAP_WEBHOOK_PORT": str(port),
                         "TGSNAP_WEBHOOK_HOST": "127.0.0.1"}
        async with ClickerStack(args.data or tmp, flush_interval=args.flush_interval,
                                storage_mode=args.storage_mode, extra_env=extra_env) as stack:
            assert stack.control is not None
            return await _drive(stack.control, stack.demo.bot_username, config, args.keep_limits)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _drive(control: Control, bot: str, config: LoadConfig, keep_limits: bool) -> Report:
    saved = None
    if not keep_limits:
        saved = {k: v for k, v in (await control.knobs()).items() if k in UNLIMITED_REPLIES}
        await control.knobs(UNLIMITED_REPLIES)
    try:
        load = Load(control, bot, config)
        await load.register()
        return await load.run()
    finally:
        if saved is not None:
            await control.knobs(saved)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.users < 1 or args.rate <= 0 or args.duration <= 0:
        sys.stderr.write("python -m tools.loadgen: --users, --rate and --duration must be positive\n")
        return 2
    report = asyncio.run(run(args))
    print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2) if args.json else report.text())
    return 1 if report.verified is False else 0
