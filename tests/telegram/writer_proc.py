"""A small writer process for the hand-over and crash tests: a `core.Store` on a Telegram backend that
inserts rows under load and says on stdout what it acknowledged.

    WRITER_TOKEN=... python -m tests.telegram.writer_proc --mode botapi --chat C --api-url U --name A

The bot token (and, for MTProto, the session string) come from the environment (`WRITER_TOKEN`,
`WRITER_SESSION`), never the command line.

Table `w(writer, i)`; each step inserts the next `--rows` values of i, every `--ack-every` steps it awaits
`store.flush()` and prints `ACK <i>` (every row up to i is durable). Other lines: `START` before taking
the lease, `OPEN <json>` once the store is open (`{"seq", "epoch", "max": {writer: highest i restored}}`),
`CLOSED <i>` after SIGTERM's clean close (final flush, lease released; exit 0), `FENCED <message>` (exit
3), `BUSY <message>` (StorageBusy; exit 4). Not a test itself: tests/telegram/test_handover.py drives it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys

from core import Store, StoreConfig
from snapshot.backends.telegram_budget import BudgetConfig, ChatBudget
from snapshot.backends.telegram_retry import RetryPolicy
from snapshot.errors import FencedError, StorageBusy
from snapshot.replica import ReplicaConfig

SCHEMA = ["CREATE TABLE w(writer TEXT NOT NULL, i INTEGER NOT NULL, PRIMARY KEY (writer, i))"]
#: the emulator runs with its limits off in these tests; the budget must not get in the way either.
UNLIMITED = BudgetConfig(per_minute=600_000, burst=10_000, max_wait=30,
                         edits_per_minute=600_000, edit_burst=10_000)
POLICY = RetryPolicy(attempts=4, backoff=0.05, timeout=10, max_wait=30)


def say(*words: object) -> None:
    print(*words, flush=True)


def backend(args: argparse.Namespace):
    # Import only the backend in use: aiogram alone takes seconds to import on a loaded machine.
    if args.mode == "botapi":
        from snapshot.backends.botapi import BotApiBackend

        return BotApiBackend(os.environ["WRITER_TOKEN"], args.chat, api_url=args.api_url, budget=ChatBudget(UNLIMITED),
                             policy=POLICY)
    from snapshot.backends.mtproto import MTProtoBackend

    return MTProtoBackend(bot_token=os.environ["WRITER_TOKEN"], chat=args.chat,
                          session=os.environ["WRITER_SESSION"], connections=2,
                          budget=ChatBudget(UNLIMITED), policy=POLICY, manifest_min_interval=0.0)


async def run(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    b = await backend(args).open()
    say("START")  # about to take the lease (or wait for it)
    config = StoreConfig(writer_id=args.name, flush_interval=args.flush_interval,
                         replica=ReplicaConfig(lease_seconds=args.lease, takeover_wait=args.wait,
                                               part_size=64 * 1024, shard_size=64 * 1024))
    try:
        try:
            store = await Store.open(b, schema=SCHEMA, config=config)
        except StorageBusy as e:
            say("BUSY", e)
            return 4
        restored = {w: m for w, m in store.execute("SELECT writer, max(i) FROM w GROUP BY writer")}
        st = store.stats()
        say("OPEN", json.dumps({"seq": st.last_seq, "epoch": st.epoch, "max": restored}))
        i = restored.get(args.name, -1)
        step = 0
        try:
            while not stop.is_set():
                store.executemany("INSERT OR REPLACE INTO w(writer, i) VALUES (?, ?)",
                                  [(args.name, i + k) for k in range(1, args.rows + 1)])
                i += args.rows
                step += 1
                if step % args.ack_every == 0:
                    await store.flush()
                    say("ACK", i)
                await asyncio.sleep(args.pause)
            await store.close()
        except FencedError as e:
            say("FENCED", e)
            await store.abandon()
            return 3
        say("CLOSED", i)
        return 0
    finally:
        await b.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["botapi", "mtproto"], required=True)
    p.add_argument("--chat", type=int, required=True)
    p.add_argument("--api-url")
    p.add_argument("--name", required=True)
    p.add_argument("--lease", type=float, default=30.0)
    p.add_argument("--wait", type=float, default=0.0, help="takeover_wait: how long to wait for a live holder")
    p.add_argument("--rows", type=int, default=20, help="rows inserted per step")
    p.add_argument("--ack-every", type=int, default=3)
    p.add_argument("--pause", type=float, default=0.02)
    p.add_argument("--flush-interval", type=float, default=0.5)
    sys.exit(asyncio.run(run(p.parse_args())))


if __name__ == "__main__":
    main()
