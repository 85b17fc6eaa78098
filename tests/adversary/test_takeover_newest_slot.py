"""Same-host takeover judges the holder of the newest slot: a claimer that died while restoring (its
claim-only slot holds a live lease) is taken over at once on proof, not waited out because the last
full manifest's lease was released."""

from __future__ import annotations

import asyncio
import time

from bot import takeover
from snapshot import proc_identity
from snapshot.backends.memory import MemoryBackend, MemoryStorage
from snapshot.manifest import decode_manifest
from snapshot.replica import Replica, ReplicaConfig
from snapshot.restore import current_lease, read_current_manifest
from tests.adversary.test_takeover_proof import SCHEMA, config, dead_pid


class FrozenAfterClaim(MemoryBackend):
    """A backend on which the claimer's check after its claim never returns (a process that dies there)."""

    frozen: asyncio.Event

    async def newer_slot(self, ref, *, stored=None):
        self.frozen.set()  # the claim slot is stored; the process dies before its check returns
        await asyncio.Event().wait()


async def _dead_claimer(storage: MemoryStorage) -> None:
    backend = FrozenAfterClaim(storage)
    backend.frozen = asyncio.Event()
    claimer = Replica(backend, ReplicaConfig(lease_seconds=30), writer_id="dead-claimer")
    claimer.pid = dead_pid()
    task = asyncio.ensure_future(claimer.acquire())
    await asyncio.wait_for(backend.frozen.wait(), 10)
    task.cancel()  # killed between its claim and its restore: the claim-only slot stays, lease live
    await asyncio.gather(task, return_exceptions=True)


async def test_a_dead_claimer_in_the_newest_slot_is_taken_over_at_once():
    storage = MemoryStorage()
    first = Replica(MemoryBackend(storage), ReplicaConfig(lease_seconds=30), writer_id="old-bot")
    await first.acquire()
    await first.release()
    await _dead_claimer(storage)
    newest, _h = decode_manifest(storage.manifest)
    assert newest.is_claim and newest.lease.writer_id == "dead-claimer" and newest.lease.live(time.time())
    full, _h = await read_current_manifest(MemoryBackend(storage), None)
    assert full is not None and full.lease.released  # the old way saw no live holder to prove gone
    assert (await current_lease(MemoryBackend(storage), None)).writer_id == "dead-claimer"
    found = await takeover.dead_local_holder(MemoryBackend(storage), config())
    assert found is not None and found[0].writer_id == "dead-claimer" and "no longer exists" in found[1]
    t0 = time.monotonic()
    store = await takeover.open_store(MemoryBackend(storage), SCHEMA, config())
    try:
        assert time.monotonic() - t0 < 5  # not the claimer's 30 s lease
    finally:
        await store.close()


async def test_a_live_claimer_in_the_newest_slot_is_no_proof():
    storage = MemoryStorage()
    first = Replica(MemoryBackend(storage), ReplicaConfig(lease_seconds=30), writer_id="old-bot")
    await first.acquire()
    await first.release()
    await _dead_claimer(storage)
    real = proc_identity.holder_gone
    try:
        proc_identity.holder_gone = lambda *a: None  # as if the claimer's process still ran
        assert await takeover.dead_local_holder(MemoryBackend(storage), config()) is None
    finally:
        proc_identity.holder_gone = real
