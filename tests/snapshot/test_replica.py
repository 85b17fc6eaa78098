"""The writer against real and faulty storage: restore equals state, switches are atomic, one writer."""

from __future__ import annotations

import asyncio
import time

import pytest

from snapshot.backends.local import LocalDirBackend
from snapshot.backends.memory import Faults, MemoryBackend, MemoryStorage
from snapshot.errors import BackendError, CorruptDocument, FencedError, StorageBusy
from snapshot.image import capture
from snapshot.manifest import decode_manifest
from snapshot.replica import Replica, ReplicaConfig
from snapshot.restore import plan, restore
from tests.snapshot.helpers import Live, state

SMALL = dict(part_size=2048, shard_size=4096)


def cfg(**kw) -> ReplicaConfig:
    return ReplicaConfig(**{**SMALL, **kw})


@pytest.fixture(params=["memory", "memory-no-discovery", "local"])
def make_backend(request, tmp_path):
    storage = MemoryStorage()
    if request.param == "memory":
        return lambda faults=None: MemoryBackend(storage, faults)
    if request.param == "memory-no-discovery":
        return lambda faults=None: MemoryBackend(storage, faults, can_discover=False)
    return lambda faults=None: LocalDirBackend(tmp_path / "store", fsync=False)


async def _fill(live: Live, replica: Replica, rounds: int, start: int = 0) -> None:
    for i in range(start, start + rounds):
        for k in range(i, i + 15):
            live.set(k, clicks=i * 100 + k)
        if i % 3 == 2:
            live.delete(i)
        assert await live.flush(replica)


async def test_empty_storage_acquire(make_backend):
    r = Replica(make_backend(), cfg())
    got = await r.acquire()
    assert (got.seq, got.epoch, got.snapshot_seq) == (0, 1, None)
    assert got.conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)


async def test_deltas_then_restore_equals_state(make_backend):
    backend = make_backend()
    r = Replica(backend, cfg())
    await r.acquire()
    live = Live()
    await _fill(live, r, 12)
    got = await restore(make_backend())
    assert state(got.conn) == live.rows()
    assert got.seq == 12 == r.status().last_seq


async def test_snapshot_then_deltas_restore_and_superseded_documents_go(make_backend):
    backend = make_backend()
    r = Replica(backend, cfg())
    await r.acquire()
    live = Live()
    await _fill(live, r, 5)
    first = await live.snapshot(r)
    assert first.base_seq == 5 and first.parts >= 2
    await _fill(live, r, 4, start=5)
    p1 = await plan(backend)
    second = await live.snapshot(r)
    await _fill(live, r, 3, start=9)
    got = await restore(make_backend())
    assert state(got.conn) == live.rows()
    assert (got.seq, got.snapshot_seq, got.deltas_applied) == (12, 9, 3)
    st = r.status()
    assert (st.snapshot_seq, st.deltas_since_snapshot, st.snapshot_size) == (9, 3, second.size)
    # the first snapshot's parts and the deltas up to seq 9 are gone
    gone = [p.ref for p in p1.snapshot.parts] + [d.ref for d in p1.chain]
    for ref in gone:
        with pytest.raises(BackendError):
            await backend.get(ref)


async def test_snapshot_switch_is_atomic_when_a_part_upload_fails():
    storage = MemoryStorage()
    faults = Faults(put_match="snapshot-")
    r = Replica(MemoryBackend(storage, faults), cfg())
    await r.acquire()
    live = Live()
    for k in range(400):
        live.set(10_000 + k, clicks=k)
    await _fill(live, r, 6)
    before = storage.manifest
    docs_before = set(storage.docs)
    faults.put_fail_at = {3}
    with pytest.raises(BackendError):
        await live.snapshot(r)
    assert storage.manifest == before  # nothing switched
    assert set(storage.docs) == docs_before  # the parts that did land were cleaned up
    await _fill(live, r, 2, start=6)  # deltas keep flowing on the old snapshot
    got = await restore(MemoryBackend(storage))
    assert state(got.conn) == live.rows() and got.snapshot_seq is None
    faults.put_fail_at = set()
    await live.snapshot(r)
    assert (await restore(MemoryBackend(storage))).snapshot_seq == 8


async def test_crash_mid_snapshot_leaves_the_previous_state_usable():
    storage = MemoryStorage()
    r = Replica(MemoryBackend(storage, latency=0.002), cfg(parallelism=1), writer_id="bot-1")
    await r.acquire()
    live = Live()
    await _fill(live, r, 4)
    await live.snapshot(r)
    await _fill(live, r, 3, start=4)
    expected = live.rows()
    for k in range(400):
        live.set(10_000 + k, clicks=k)
    assert await live.flush(r)
    expected = live.rows()
    task = asyncio.ensure_future(live.snapshot(r))
    # poll storage itself: the "crash" must come after some parts landed
    while not any(name.startswith("snapshot-000000000008") for name, _d in storage.docs.values()):  # noqa: ASYNC110
        await asyncio.sleep(0.001)
    task.cancel()  # the process dies with some parts up and the switch not done
    with pytest.raises(asyncio.CancelledError):
        await task
    # "restart": a new replica with the same writer id takes over its own lease at once
    r2 = Replica(MemoryBackend(storage), cfg(), writer_id="bot-1")
    got = await r2.acquire()
    assert state(got.conn) == expected and got.snapshot_seq == 4 and got.seq == 8 and got.epoch == 2


@pytest.mark.parametrize("discover", [True, False])
async def test_lost_ack_then_superset_retry(discover):
    storage = MemoryStorage()
    faults = Faults()
    # No inline deltas: every delta is a put, so the lost acknowledgement hits one.
    r = Replica(MemoryBackend(storage, faults, can_discover=discover), cfg(inline_delta_bytes=0))
    await r.acquire()
    live = Live()
    await _fill(live, r, 3)
    live.set(1, clicks=111)
    faults.put_lost_ack = 1
    assert not await live.flush(r)  # stored, reported failed: the writer did not advance
    assert r.last_seq == 3
    live.set(2, clicks=222)
    assert await live.flush(r)  # same seq 4 again, a superset
    assert r.last_seq == 4
    await _fill(live, r, 2, start=20)
    got = await restore(MemoryBackend(storage, can_discover=discover))
    assert state(got.conn) == live.rows() and got.seq == 6
    if discover:
        p = await plan(MemoryBackend(storage))
        assert any("superseded attempt" in n for n in p.ignored)


async def test_failed_manifest_publication_does_not_acknowledge_a_delta():
    storage = MemoryStorage()
    faults = Faults()
    r = Replica(MemoryBackend(storage, faults, can_discover=False), cfg())
    await r.acquire()
    live = Live()
    await _fill(live, r, 2)
    live.set(5, clicks=5)
    faults.publish_fail = 1
    assert not await live.flush(r)
    assert r.last_seq == 2
    faults.publish_lost_ack = 1
    assert not await live.flush(r)  # published, reported failed: the next attempt supersedes it
    assert await live.flush(r)
    got = await restore(MemoryBackend(storage, can_discover=False))
    assert state(got.conn) == live.rows() and got.seq == 3


@pytest.mark.parametrize("when", ["before", "after"])
async def test_switch_publication_failure(when):
    storage = MemoryStorage()
    faults = Faults()
    r = Replica(MemoryBackend(storage, faults), cfg())
    await r.acquire()
    live = Live()
    await _fill(live, r, 4)
    if when == "before":
        faults.publish_fail = 1
    else:
        faults.publish_lost_ack = 1
    with pytest.raises(BackendError):
        await live.snapshot(r)
    got = await restore(MemoryBackend(storage))
    assert state(got.conn) == live.rows()
    assert got.snapshot_seq == (None if when == "before" else 4)
    await _fill(live, r, 2, start=4)
    await r.renew()  # nothing due yet
    await live.snapshot(r)
    got = await restore(MemoryBackend(storage))
    assert state(got.conn) == live.rows() and got.snapshot_seq == 6
    # no part is left behind but the current snapshot's
    part_refs = {ref for ref, (name, _d) in storage.docs.items() if name.startswith("snapshot-")}
    m, _ = decode_manifest(storage.manifest)
    assert part_refs == {p.ref for p in m.snapshot.parts}


async def test_corrupted_part_is_named():
    storage = MemoryStorage()
    r = Replica(MemoryBackend(storage), cfg())
    await r.acquire()
    live = Live()
    await _fill(live, r, 5)
    await live.snapshot(r)
    m, _ = decode_manifest(storage.manifest)
    victim = m.snapshot.shards[-1].parts[-1].ref
    reader = MemoryBackend(storage, Faults(corrupt_refs={victim}))
    with pytest.raises(CorruptDocument) as e:
        await restore(reader)
    assert e.value.ref == victim and victim in str(e.value)
    assert f"shard {m.snapshot.shards[-1].index}" in str(e.value)


async def test_corrupted_delta_is_named(make_backend):
    backend = make_backend()
    r = Replica(backend, cfg(inline_delta_bytes=0))  # deltas in documents of their own (or one-delta packs)
    await r.acquire()
    live = Live()
    await _fill(live, r, 3)
    p = await plan(backend)
    victim = p.chain[1].ref
    if isinstance(backend, MemoryBackend):
        reader = MemoryBackend(backend.storage, Faults(corrupt_refs={p.chain[1].document}),
                               can_discover=backend.info.can_discover)
    else:
        path = backend.docs / victim
        data = bytearray(path.read_bytes())
        data[-1] ^= 0x55
        path.write_bytes(bytes(data))
        reader = backend
    with pytest.raises(CorruptDocument) as e:
        await restore(reader)
    assert e.value.ref == victim


async def test_concurrent_deltas_during_a_snapshot():
    storage = MemoryStorage()
    r = Replica(MemoryBackend(storage, latency=0.001), cfg(parallelism=2))
    await r.acquire()
    live = Live()
    for k in range(300):
        live.set(k, clicks=k)
    assert await live.flush(r)
    snap = asyncio.ensure_future(r.write_snapshot(capture(live.conn), r.last_seq, live.clock))
    for i in range(5):
        await _fill(live, r, 1, start=1000 + i * 20)
    receipt = await snap
    assert receipt.base_seq == 1
    m, _ = decode_manifest(storage.manifest)
    assert [d.seq for d in m.deltas] == [2, 3, 4, 5, 6] or m.deltas == []  # listed, or found by discovery
    got = await restore(MemoryBackend(storage))
    assert state(got.conn) == live.rows() and got.seq == 6 and got.snapshot_seq == 1


async def test_second_writer_is_refused_naming_the_holder():
    storage = MemoryStorage()
    first = Replica(MemoryBackend(storage), cfg(), writer_id="bot-A")
    await first.acquire()
    second = Replica(MemoryBackend(storage), cfg(takeover_wait=0.05), writer_id="bot-B")
    with pytest.raises(StorageBusy) as e:
        await second.acquire()
    msg = str(e.value)
    assert "bot-A" in msg and first.host in msg and str(first.pid) in msg and "until" in msg
    await first.write_delta(Live().changes())  # the holder is unaffected


async def test_release_then_takeover_then_old_writer_is_fenced(make_backend):
    first = Replica(make_backend(), cfg(), writer_id="bot-A")
    await first.acquire()
    live = Live()
    await _fill(live, first, 3)
    await first.release()
    with pytest.raises(FencedError):
        await first.write_delta(live.changes())
    second = Replica(make_backend(), cfg(), writer_id="bot-B")
    got = await second.acquire()
    assert got.epoch == 2 and state(got.conn) == live.rows()
    await _fill(Live(got.conn), second, 1, start=50)


async def test_expired_lease_takeover_fences_the_old_writer(make_backend):
    old = Replica(make_backend(), cfg(lease_seconds=0.3), writer_id="bot-A")
    await old.acquire()
    live = Live()
    await _fill(live, old, 2)
    await asyncio.sleep(0.35)  # old writer hangs past its lease
    new = Replica(make_backend(), cfg(lease_seconds=0.3), writer_id="bot-B")
    got = await new.acquire()
    assert got.epoch == 2 and state(got.conn) == live.rows()
    live.set(999, clicks=1)
    with pytest.raises(FencedError, match="bot-B"):
        await old.write_delta(live.changes())
    assert old.fenced
    with pytest.raises(FencedError):
        await old.write_delta(live.changes())  # and it stays stopped


async def test_takeover_wait_sees_a_release():
    storage = MemoryStorage()
    first = Replica(MemoryBackend(storage), cfg(), writer_id="bot-A")
    await first.acquire()
    second = Replica(MemoryBackend(storage), cfg(takeover_wait=5), writer_id="bot-B")
    waiting = asyncio.ensure_future(second.acquire())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await first.release()
    got = await asyncio.wait_for(waiting, 3)
    assert got.epoch == 2


async def test_renew_extends_the_lease_and_checks_the_fence():
    storage = MemoryStorage()
    r = Replica(MemoryBackend(storage), cfg(lease_seconds=0.2))
    await r.acquire()
    first = r.status().lease_expires_at
    await asyncio.sleep(0.12)
    await r.renew()
    assert r.status().lease_expires_at > first
    pubs = storage.manifest_publications
    await r.renew()  # not due yet: no publication
    assert storage.manifest_publications == pubs


async def test_snapshot_due_follows_the_bounds():
    r = Replica(MemoryBackend(), cfg(snapshot_every_deltas=3, snapshot_every_bytes=10**9, snapshot_max_age=3600))
    assert not r.snapshot_due()
    await r.acquire()
    live = Live()
    live.clock = time.time() - 100  # cuts in the past, so "age >= 0" is due
    await _fill(live, r, 2)
    assert not r.snapshot_due()
    await _fill(live, r, 1, start=2)
    assert r.snapshot_due()
    await live.snapshot(r)
    assert not r.snapshot_due()
    r.config.snapshot_every_bytes = 1
    await _fill(live, r, 1, start=3)
    assert r.snapshot_due()
    r.config.snapshot_every_bytes = 10**9
    r.config.snapshot_max_age = 0
    assert r.snapshot_due()


async def test_status_reports_the_writer():
    r = Replica(MemoryBackend(), cfg())
    await r.acquire()
    live = Live()
    await _fill(live, r, 2)
    st = r.status()
    assert (st.epoch, st.last_seq, st.deltas_since_snapshot, st.snapshot_seq) == (1, 2, 2, None)
    assert st.bytes_shipped >= st.bytes_since_snapshot > 0 and st.backend == "memory"
    assert st.lease_expires_at > time.time() and st.last_durable_at is not None


async def test_encrypted_storage_needs_the_key(make_backend):
    key = bytes(range(32))
    r = Replica(make_backend(), cfg(encryption_key=key))
    await r.acquire()
    live = Live()
    await _fill(live, r, 3)
    await live.snapshot(r)
    await _fill(live, r, 1, start=3)
    assert state((await restore(make_backend(), key)).conn) == live.rows()
    from snapshot.errors import EncryptionError

    with pytest.raises(EncryptionError, match="no encryption key"):
        await restore(make_backend())
    with pytest.raises(EncryptionError, match="different key"):
        await restore(make_backend(), bytes(32))
    assert "encryption_key=set" in repr(r.config) and key.hex() not in repr(r.config)


async def test_part_size_must_fit_the_backend():
    from snapshot.errors import ConfigError

    with pytest.raises(ConfigError, match="exceeds"):
        Replica(MemoryBackend(max_document_size=1024 * 1024), ReplicaConfig())


async def test_two_newcomers_racing_for_an_expired_lease_end_with_one_writer():
    storage = MemoryStorage()
    old = Replica(MemoryBackend(storage), cfg(lease_seconds=0.1), writer_id="old")
    await old.acquire()
    await asyncio.sleep(0.12)
    a = Replica(MemoryBackend(storage, latency=0.001), cfg(lease_seconds=0.5), writer_id="bot-A")
    b = Replica(MemoryBackend(storage, latency=0.001), cfg(lease_seconds=0.5), writer_id="bot-B")
    results = await asyncio.gather(a.acquire(), b.acquire(), return_exceptions=True)
    winners = [r for r in results if not isinstance(r, Exception)]
    losers = [r for r in results if isinstance(r, Exception)]
    assert len(winners) == 1 and len(losers) == 1
    assert isinstance(losers[0], StorageBusy) and "lost the claim race" in str(losers[0])
    assert losers[0].writer_id in ("bot-A", "bot-B") and losers[0].epoch == 2


async def test_a_writer_whose_lease_lapsed_reclaims_it_when_nobody_took_over():
    storage = MemoryStorage()
    r = Replica(MemoryBackend(storage), cfg(lease_seconds=0.2), writer_id="bot-A")
    await r.acquire()
    live = Live()
    await _fill(live, r, 1)
    await asyncio.sleep(0.25)  # the writer stalled past its lease
    await _fill(live, r, 1, start=1)
    assert r.status().lease_expires_at > time.time()
    got = await restore(MemoryBackend(storage))
    assert state(got.conn) == live.rows() and got.seq == 2


async def test_a_delta_over_the_backend_limit_is_refused_without_advancing():
    import os

    from snapshot.changes import ChangeSet, TableChanges

    r = Replica(MemoryBackend(max_document_size=1024 * 1024), cfg())
    await r.acquire()
    huge = ChangeSet(1.0, {"blobs": TableChanges("blobs", "CREATE TABLE blobs(id INTEGER PRIMARY KEY, b BLOB)",
                                                 ["id", "b"], ["id"], [(1, os.urandom(2 * 1024 * 1024))])})
    with pytest.raises(BackendError, match="take a snapshot") as e:
        await r.write_delta(huge)
    assert not e.value.retryable and r.last_seq == 0


async def test_snapshot_sweeps_duplicates_and_parts_of_snapshots_that_never_switched():
    storage = MemoryStorage()
    faults = Faults()
    r = Replica(MemoryBackend(storage, faults, latency=0.001), cfg(parallelism=1), writer_id="bot-1")
    await r.acquire()
    live = Live()
    for k in range(300):
        live.set(k, clicks=k)
    faults.put_lost_ack = 1
    assert not await live.flush(r)  # a duplicate of seq 1 stays in storage
    assert await live.flush(r)
    task = asyncio.ensure_future(live.snapshot(r))
    # poll storage itself: the "crash" must come after some parts landed
    while not any(name.startswith("snapshot-") for name, _d in storage.docs.values()):  # noqa: ASYNC110
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    r2 = Replica(MemoryBackend(storage), cfg(), writer_id="bot-1")
    got = await r2.acquire()
    live = Live(got.conn)
    await _fill(live, r2, 2, start=500)
    await live.snapshot(r2)
    await _fill(live, r2, 1, start=600)
    p = await plan(MemoryBackend(storage))
    assert p.snapshot.base_seq == 3 and len(p.chain) == 1
    assert set(storage.docs) == {part.ref for part in p.snapshot.parts} | {d.ref for d in p.chain}
    assert state((await restore(MemoryBackend(storage))).conn) == live.rows()


async def test_a_failed_restore_on_acquire_hands_the_lease_back():
    storage = MemoryStorage()
    r = Replica(MemoryBackend(storage), cfg(), writer_id="bot-A")
    await r.acquire()
    live = Live()
    await _fill(live, r, 2)
    victim = next(iter(storage.docs))
    bad = Replica(MemoryBackend(storage, Faults(corrupt_refs={victim})), cfg(takeover_wait=0), writer_id="bot-B")
    await r.release()
    with pytest.raises(CorruptDocument):
        await bad.acquire()
    m, _ = decode_manifest(storage.manifest)
    assert m.lease.writer_id == "bot-B" and m.lease.released
    again = Replica(MemoryBackend(storage), cfg(), writer_id="bot-C")
    assert (await again.acquire()).epoch == 3
