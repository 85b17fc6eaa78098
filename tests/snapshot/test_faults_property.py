"""Restore equals state under random faults and crashes (hypothesis drives the writes, a seeded RNG the faults).

Model: the live table of the test writer. After every acknowledged flush a fresh reader must rebuild
exactly it. After a crash, the restarted writer must rebuild the last acknowledged state or a later
attempted one (a lost acknowledgement may have landed), never anything older or different.
"""

from __future__ import annotations

import asyncio
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snapshot.backends.memory import Faults, MemoryBackend, MemoryStorage
from snapshot.errors import BackendError
from snapshot.replica import Replica, ReplicaConfig
from snapshot.restore import restore
from tests.snapshot.helpers import drive, ops_strategy

OPS = ops_strategy(keys=30, min_size=5, max_size=40)


def _faults(seed: int) -> Faults:
    return Faults(rng=random.Random(seed), p_put_fail=0.15, p_put_lost_ack=0.15, p_publish_fail=0.1,
                  p_publish_lost_ack=0.1)


async def _acquire(storage, faults, discover):
    for _ in range(20):
        r = Replica(MemoryBackend(storage, faults, can_discover=discover),
                    ReplicaConfig(part_size=2048, shard_size=4096), writer_id="writer")
        try:
            return r, await r.acquire()
        except BackendError:
            continue
    raise AssertionError("could not acquire through the injected faults")


async def _run(ops, seed: int, discover: bool) -> None:
    storage = MemoryStorage()
    faults = _faults(seed)

    async def acquire(_previous):
        return await _acquire(storage, faults, discover)

    async def read():
        return (await restore(MemoryBackend(storage, can_discover=discover))).conn

    await drive(ops, acquire, read)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, seed=st.integers(0, 2**32 - 1), discover=st.booleans())
def test_restore_equals_state_under_faults(ops, seed, discover):
    asyncio.run(_run(ops, seed, discover))
