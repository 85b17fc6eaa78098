"""A writer process for the adversary scenarios: a `core.Store` on the directory backend or one of the
Telegram backends that inserts rows and says on stdout what it acknowledged.

    python -m tests.adversary.writer --mode local --dir D --name A
    WRITER_TOKEN=... [WRITER_SESSION=...] python -m tests.adversary.writer --mode botapi --chat C --api-url U --name A

The one writer process of the process-level tests: the adversary scenarios (tests/adversary) and the
deploy hand-over tests (tests/telegram/test_handover.py) both drive it. The bot token (and, for MTProto,
the session string) come from the environment, never the command line.

Table `w(writer, i)`; each step inserts the next `--rows` values of i; every `--ack-every` steps it
awaits `store.flush()`, then prints `ACK <i>` (every row of this writer up to i is durable). Lines:
`READY` (imports done, backend open), `OPEN <json>` once the store is open (`{"seq", "epoch", "max":
{writer: highest i restored}}`),
`FROZEN <method>` just before it stops itself (SIGSTOP) inside a backend call, `SNAPSHOT`, `CLOSED <i>`
(clean close; exit 0), `FENCED <message>` (exit 3), `BUSY <message>` (exit 4), `REFUSED <type> <message>`
(any other tgsnap error while opening; exit 5).

Scenario knobs:
- `--go FILE`: after READY, wait for FILE to exist, then open: the test releases several writers at one
  instant.
- `--freeze METHOD[:PREFIX] --freeze-nth N`: the Nth call (after OPEN) of backend method METHOD (whose
  first argument starts with PREFIX, if given) prints FROZEN, stops this process, and once resumed
  (SIGCONT) performs the call it was about to make: an upload that lands late.
- `--snapshot-close`: right after opening, take a snapshot, then close (no delta of its own).
- `--steps N`: close cleanly after N steps (acknowledged every `--ack-every`; 0: run until SIGTERM).
- `--snapshot-every N`: the replica snapshots after N deltas (a writer that switches snapshots often).
- `--bot-takeover`: open through `bot.takeover.open_store` (the bot's same-host takeover rules).
- `--pretend-pid N` / `--pretend-pidns X`: the lease names pid N / pid namespace X instead of this
  process's own (a process of another PID namespace on the same host, as containers sharing a hostname
  look to each other).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys

from core import Store, StoreConfig
from snapshot.errors import FencedError, StorageBusy, TgsnapError
from snapshot.replica import ReplicaConfig

SCHEMA = ["CREATE TABLE w(writer TEXT NOT NULL, i INTEGER NOT NULL, PRIMARY KEY (writer, i))"]


def say(*words: object) -> None:
    print(*words, flush=True)


def backend(args: argparse.Namespace):
    if args.mode == "local":
        from snapshot.backends.local import LocalDirBackend

        return LocalDirBackend(args.dir)
    # Import only the backend in use: aiogram alone takes seconds to import on a loaded machine.
    from snapshot.backends.telegram_budget import BudgetConfig, ChatBudget
    from snapshot.backends.telegram_retry import RetryPolicy

    unlimited = ChatBudget(BudgetConfig(per_minute=600_000, burst=10_000, max_wait=30))
    policy = RetryPolicy(attempts=4, backoff=0.05, timeout=10, max_wait=30)
    if args.mode == "botapi":
        from snapshot.backends.botapi import BotApiBackend

        return BotApiBackend(os.environ["WRITER_TOKEN"], args.chat, api_url=args.api_url, budget=unlimited,
                             policy=policy)
    from snapshot.backends.mtproto import MTProtoBackend

    return MTProtoBackend(bot_token=os.environ["WRITER_TOKEN"], chat=args.chat, session=os.environ["WRITER_SESSION"],
                          connections=2, budget=unlimited, policy=policy, manifest_min_interval=0.0)


def arm_freeze(b, spec: str, nth: int, armed: list[bool]) -> None:
    """Replace backend method `spec` (METHOD[:PREFIX]) on this instance by one that stops the process on
    its `nth` matching call once `armed[0]` is set, then makes the real call."""
    method, _, prefix = spec.partition(":")
    real = getattr(b, method)
    seen = 0

    async def frozen(*a, **kw):
        nonlocal seen
        if armed[0] and (not prefix or (a and isinstance(a[0], str) and a[0].startswith(prefix))):
            seen += 1
            if seen == nth:
                say("FROZEN", spec)
                os.kill(os.getpid(), signal.SIGSTOP)  # the test resumes us with SIGCONT
        return await real(*a, **kw)

    setattr(b, method, frozen)


def pretend(args: argparse.Namespace) -> None:
    """Make this process's lease describe another process (see --pretend-pid)."""
    from snapshot import replica

    if args.pretend_pid is not None:
        real_os = replica.os

        class _Os:
            def __getattr__(self, name):
                return getattr(real_os, name)

            @staticmethod
            def getpid() -> int:
                return args.pretend_pid

        replica.os = _Os()
    if args.pretend_pidns is not None:
        try:
            from snapshot import proc_identity
        except ImportError:  # a tgsnap that records no process identity in its lease
            return
        proc_identity.PRETEND["pid_ns"] = args.pretend_pidns
        if args.pretend_pid is not None:
            proc_identity.PRETEND["pid"] = args.pretend_pid


async def run(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    b = backend(args)
    b = await b.open() if hasattr(b, "open") else b
    armed = [False]
    if args.freeze:
        arm_freeze(b, args.freeze, args.freeze_nth, armed)
    pretend(args)
    say("READY")
    if args.go:
        # a busy poll on purpose: every writer waiting on the file starts within a millisecond of the others
        while not os.path.exists(args.go):  # noqa: ASYNC110, ASYNC240
            await asyncio.sleep(0.001)
    config = StoreConfig(writer_id=args.name, flush_interval=args.flush_interval,
                         replica=ReplicaConfig(lease_seconds=args.lease, takeover_wait=args.wait,
                                               part_size=64 * 1024, shard_size=64 * 1024,
                                               snapshot_every_deltas=args.snapshot_every))
    try:
        try:
            if args.bot_takeover:
                from bot.takeover import open_store

                store = await open_store(b, SCHEMA, config)
            else:
                store = await Store.open(b, schema=SCHEMA, config=config)
        except StorageBusy as e:
            say("BUSY", str(e).replace("\n", " "))
            return 4
        except FencedError as e:
            say("FENCED", str(e).replace("\n", " "))
            return 3
        except TgsnapError as e:
            say("REFUSED", type(e).__name__, str(e).replace("\n", " "))
            return 5
        restored = {w: m for w, m in store.execute("SELECT writer, max(i) FROM w GROUP BY writer")}
        st = store.stats()
        say("OPEN", json.dumps({"seq": st.last_seq, "epoch": st.epoch, "max": restored}))
        armed[0] = True
        i = restored.get(args.name, -1)
        step = 0
        try:
            if args.snapshot_close:
                await store.snapshot()
                say("SNAPSHOT")
                stop.set()
            while not stop.is_set() and (args.steps == 0 or step < args.steps):
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
            say("FENCED", str(e).replace("\n", " "))
            await store.abandon()
            return 3
        say("CLOSED", i)
        return 0
    finally:
        await b.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["local", "botapi", "mtproto"], required=True)
    p.add_argument("--dir")
    p.add_argument("--chat", type=int)
    p.add_argument("--api-url")
    p.add_argument("--name", required=True)
    p.add_argument("--lease", type=float, default=30.0)
    p.add_argument("--wait", type=float, default=0.0, help="takeover_wait: how long to wait for a live holder")
    p.add_argument("--rows", type=int, default=5, help="rows inserted per step")
    p.add_argument("--ack-every", type=int, default=1, help="flush and print ACK every this many steps")
    p.add_argument("--pause", type=float, default=0.02)
    p.add_argument("--flush-interval", type=float, default=0.2)
    p.add_argument("--go")
    p.add_argument("--freeze")
    p.add_argument("--freeze-nth", type=int, default=1)
    p.add_argument("--snapshot-close", action="store_true")
    p.add_argument("--steps", type=int, default=0)
    p.add_argument("--snapshot-every", type=int, default=1000, help="snapshot after this many deltas")
    p.add_argument("--bot-takeover", action="store_true")
    p.add_argument("--pretend-pid", type=int)
    p.add_argument("--pretend-pidns")
    sys.exit(asyncio.run(run(p.parse_args())))


if __name__ == "__main__":
    main()
