"""Measure the RPO a Telegram storage mode achieves against the emulator at its default limits.

    python -m tests.telegram.measure_rpo --mode mtproto --rows 1000000 --dirty-per-second 10000 --seconds 60

Seeds the emulator's demo channel with a snapshot of the bench population, opens a `core.Store` on it
through `snapshot.open.open_backend` (default rate budget, default flush interval), then updates random
rows at the given rate while sampling `Store.stats().lag` — the age of the oldest write not yet durable,
i.e. what a crash at that instant would lose. Prints one JSON object. Not part of the test run (it takes
a minute per mode); docs/telegram.md quotes its output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from typing import Any

from core import Store, StoreConfig
from snapshot.backends.telegram_budget import BudgetConfig, shared_budget
from snapshot.open import open_backend
from snapshot.settings import StorageSettings
from tools.bench.population import USERS_DDL, memory_db, users
from tools.bench.store import seed
from tools.emulator.testing import running_emulator


async def measure(mode: str, rows: int, dirty_per_second: int, seconds: float, channels: int = 1,
                  seed_value: int = 7, budget_config: BudgetConfig | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        async with running_emulator(tmp, mtproto=mode == "mtproto") as emu:  # default knobs: limits on
            demo = emu.demo()
            chats = [demo.storage_chat_id]
            for k in range(1, channels):  # more storage channels, the same bot as admin
                extra = emu.world.create_channel(f"tgsnap storage {k + 1}", demo.user_id)
                emu.world.set_admin(extra.chat_id, demo.bot_id)
                chats.append(extra.chat_id)
            settings = StorageSettings(mode=mode, bot_token=demo.bot_token, storage_chat=",".join(map(str, chats)),
                                       bot_api_url=emu.bot_api_url, mtproto_session=demo.session_string)
            db = memory_db(rows, seed_value)
            backend = await open_backend(settings, budget=budget_config)
            t0 = time.monotonic()
            snapshot_bytes = await seed(backend, db)
            seeded_in = time.monotonic() - t0
            db.close()
            keys = [u[0] for u in users(rows, seed_value)]
            t0 = time.monotonic()
            store = await Store.open(backend, schema=[USERS_DDL], config=StoreConfig(writer_id="rpo-measure"))
            opened_in = time.monotonic() - t0
            rng = random.Random(seed_value)
            samples: list[float] = []
            tick = 0.1
            per_tick = max(1, round(dirty_per_second * tick))
            start = time.monotonic()
            next_sample = start
            try:
                while (now := time.monotonic()) - start < seconds:
                    if dirty_per_second:
                        store.executemany("UPDATE users SET click = click + 1 WHERE chatid = ?",
                                          [(k,) for k in rng.sample(keys, per_tick)])
                    if now >= next_sample:
                        samples.append(store.stats(rows=False).lag)
                        next_sample += 0.5
                    await asyncio.sleep(max(0.0, tick - (time.monotonic() - now)))
                stats = store.stats()
            finally:
                await store.close()
                await backend.close()
            budgets = [shared_budget(demo.bot_id, chat) for chat in chats]
            budget = budgets[0]
            ordered = sorted(samples)
            return {
                "mode": mode,
                "rows": rows,
                "dirty_rows_per_second": dirty_per_second,
                "channels": channels,
                "seconds": seconds,
                "emulator_limits": {"channel_per_minute": emu.world.knobs.channel_per_minute,
                                    "channel_burst": emu.world.knobs.channel_burst,
                                    "message_edits_per_minute": emu.world.knobs.message_edits_per_minute},
                "budget": {"per_minute": budget.config.per_minute, "burst": budget.config.burst,
                           "edits_per_minute": budget.config.edit_rate,
                           "slowest_factor": min(b.stats.slowest_factor for b in budgets)},
                "flush_interval": StoreConfig().flush_interval,
                "rpo_max_seconds": round(ordered[-1], 2),
                "rpo_p95_seconds": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
                "rpo_median_seconds": round(statistics.median(ordered), 2),
                "deltas": stats.last_seq,
                "bytes_shipped": stats.bytes_shipped,
                "budget_slots_used": sum(b.stats.granted for b in budgets),
                "flood_waits": sum(b.stats.flood_pauses for b in budgets),
                "seed_snapshot_bytes": snapshot_bytes,
                "seed_seconds": round(seeded_in, 2),
                "open_seconds": round(opened_in, 2),
            }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["botapi", "mtproto"], required=True)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dirty-per-second", type=int, default=10_000, help="row updates per second (1 %% of 1 M)")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--channels", type=int, default=1, help="storage channels (lanes of a MultiChannelBackend)")
    p.add_argument("--edits-per-minute", type=float, default=None,
                   help="the budget's bound on edits of one message (default: BudgetConfig's)")
    args = p.parse_args(argv)
    config = BudgetConfig(edits_per_minute=args.edits_per_minute) if args.edits_per_minute else None
    print(json.dumps(asyncio.run(measure(args.mode, args.rows, args.dirty_per_second, args.seconds,
                                         args.channels, budget_config=config))))


if __name__ == "__main__":
    main()
