"""The recovery point measured, not computed: a live Store on the emulator at Telegram's limits.

The emulator (in this process, default knobs: 20 messages per minute per channel) holds a snapshot of
the population; a `core.Store` opened on it through `snapshot.open.open_backend` (default rate budget,
default flush interval) takes random row updates at a steady rate while `Store.stats().lag` (the age of
the oldest write not yet durable: what a crash at that instant would lose) is sampled every 0.5 s.
(tests/telegram/measure_rpo.py is the same loop as a script, with a multi-channel option.)
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from typing import Any


async def measure(mode: str, rows: int, dirty_per_second: int, seconds: float, seed_value: int = 7) -> dict[str, Any]:
    from core import Store, StoreConfig
    from snapshot.backends.telegram_budget import shared_budget
    from snapshot.open import open_backend
    from snapshot.settings import StorageSettings
    from tools.bench.population import USERS_DDL, memory_db, users
    from tools.bench.store import seed
    from tools.emulator.testing import running_emulator

    with tempfile.TemporaryDirectory() as tmp:
        async with running_emulator(tmp, mtproto=mode == "mtproto") as emu:
            demo = emu.demo()
            settings = StorageSettings(mode=mode, bot_token=demo.bot_token, storage_chat=str(demo.storage_chat_id),
                                       bot_api_url=emu.bot_api_url, mtproto_session=demo.session_string)
            db = memory_db(rows, seed_value)
            backend = await open_backend(settings)
            await seed(backend, db)
            db.close()
            keys = [u[0] for u in users(rows, seed_value)]
            store = await Store.open(backend, schema=[USERS_DDL], config=StoreConfig(writer_id="bench-rpo"))
            budget = shared_budget(demo.bot_id, demo.storage_chat_id)
            slots0, seq0 = budget.stats.granted, store.stats().last_seq  # seeding and the claim are not flushes
            rng = random.Random(seed_value)
            samples: list[float] = []
            tick = 0.1
            per_tick = max(1, round(dirty_per_second * tick))
            start = next_sample = time.monotonic()
            try:
                while (now := time.monotonic()) - start < seconds:
                    store.executemany("UPDATE users SET click = click + 1 WHERE chatid = ?",
                                      [(k,) for k in rng.sample(keys, min(per_tick, len(keys)))])
                    if now >= next_sample:
                        samples.append(store.stats(rows=False).lag)
                        next_sample += 0.5
                    await asyncio.sleep(max(0.0, tick - (time.monotonic() - now)))
                stats = store.stats()
            finally:
                await store.close()
                await backend.close()
            ordered = sorted(samples)
            slots, deltas = budget.stats.granted - slots0, stats.last_seq - seq0
            return {
                "seconds": seconds,
                "rows": rows,
                "dirty_rows_per_second": dirty_per_second,
                "emulator_channel_per_minute": emu.world.knobs.channel_per_minute,
                "budget_per_minute": budget.config.per_minute,
                "rpo_max_seconds": round(ordered[-1], 2),
                "rpo_median_seconds": round(statistics.median(ordered), 2),
                "deltas": deltas,
                "budget_slots_used": slots,  # while measuring, up to the clean close (its last flush and release)
                "messages_per_flush": round(slots / deltas, 2) if deltas else None,
                "flood_waits": budget.stats.flood_pauses,
            }
