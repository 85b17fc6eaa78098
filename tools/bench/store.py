"""Seed storage with the bench population the way a running bot would leave it, and open Stores on it.

A snapshot of the population at seq 0 is written through the real Replica, so restore and Store.open
measure exactly what the bot does at start-up.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from snapshot.backend import Backend
from snapshot.replica import Replica, ReplicaConfig


async def seed(backend: Backend, db: sqlite3.Connection) -> int:
    """Write `db` as the storage's snapshot; returns the stored snapshot bytes."""
    replica = Replica(backend, ReplicaConfig(), writer_id="tgsnap-bench-seed")
    restored = await replica.acquire()
    restored.conn.close()
    receipt = await replica.write_snapshot(db.serialize(), 0, time.time())
    await replica.release()
    return receipt.size


def seed_local(path: Path, db: sqlite3.Connection) -> int:
    from snapshot.backends.local import LocalDirBackend

    return asyncio.run(seed(LocalDirBackend(path, fsync=False), db))


async def open_store(backend: Backend):
    from core import Store, StoreConfig
    from tools.bench.population import USERS_DDL

    # no flushes during a measurement: the loop would compete with the writes being timed
    return await Store.open(backend, schema=[USERS_DDL], config=StoreConfig(flush_interval=3600.0,
                                                                            writer_id="tgsnap-bench"))


def store_from_dir(path: Path):
    """For the memory child: a Store restored from the seeded directory, exactly as the bot starts.

    Returns (store, loop); close with `loop.run_until_complete(store.close())`.
    """
    from snapshot.backends.local import LocalDirBackend

    loop = asyncio.new_event_loop()
    store = loop.run_until_complete(open_store(LocalDirBackend(path, fsync=False)))
    return store, loop
