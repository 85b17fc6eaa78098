"""The reader: point-in-time restore, plans as printable values, and the chain selection rules."""

from __future__ import annotations

import sqlite3

import pytest

from snapshot.backends.memory import MemoryBackend, MemoryStorage
from snapshot.changes import ChangeSet, TableChanges
from snapshot.delta import encode_delta
from snapshot.envelope import GENESIS, document_hash
from snapshot.errors import ChainError, RestoreError
from snapshot.manifest import Manifest, encode_manifest
from snapshot.naming import delta_name
from snapshot.replica import Replica, ReplicaConfig
from snapshot.restore import execute, plan, restore
from tests.snapshot.helpers import COLUMNS, DDL, Live, state

CFG = dict(part_size=2048, shard_size=4096)


async def _history(storage: MemoryStorage, rounds: int = 6, snapshot_at: int | None = None):
    """A writer that records the state after every delta."""
    r = Replica(MemoryBackend(storage), ReplicaConfig(**CFG))
    await r.acquire()
    live = Live()
    states = {0: []}
    times = {}
    for i in range(1, rounds + 1):
        live.set(i, clicks=i)
        live.set(1, clicks=100 + i)
        if i == 4:
            live.delete(2)
        assert await live.flush(r)
        states[i], times[i] = live.rows(), live.clock
        if i == snapshot_at:
            await live.snapshot(r)
    return r, live, states, times


async def test_point_in_time_by_seq():
    storage = MemoryStorage()
    _r, _live, states, _t = await _history(storage)
    for seq in range(0, 7):
        got = await restore(MemoryBackend(storage), to_seq=seq)
        assert got.seq == seq and state(got.conn) == states[seq] if seq else got.conn.execute(
            "SELECT count(*) FROM sqlite_master").fetchone() == (0,)


async def test_point_in_time_by_time():
    storage = MemoryStorage()
    _r, _live, states, times = await _history(storage)
    got = await restore(MemoryBackend(storage), to_time=times[3] + 0.5)
    assert got.seq == 3 and state(got.conn) == states[3]
    got = await restore(MemoryBackend(storage), to_time=times[5])
    assert got.seq == 5
    got = await restore(MemoryBackend(storage), to_time=times[6] + 1000)
    assert got.seq == 6


async def test_point_in_time_before_the_snapshot_is_refused_clearly():
    storage = MemoryStorage()
    _r, _live, states, times = await _history(storage, rounds=6, snapshot_at=3)
    got = await restore(MemoryBackend(storage), to_seq=4)
    assert state(got.conn) == states[4] and got.snapshot_seq == 3
    got = await restore(MemoryBackend(storage), to_seq=3)
    assert state(got.conn) == states[3] and got.deltas_applied == 0
    with pytest.raises(RestoreError, match="earliest restorable point is seq 3"):
        await restore(MemoryBackend(storage), to_seq=2)
    with pytest.raises(RestoreError, match="earliest restorable point"):
        await restore(MemoryBackend(storage), to_time=times[2])
    with pytest.raises(RestoreError, match="last delta in storage is seq 6"):
        await restore(MemoryBackend(storage), to_seq=7)


async def test_plan_prints_what_would_be_fetched_and_fetches_no_part():
    storage = MemoryStorage()
    await _history(storage, rounds=5, snapshot_at=3)
    backend = MemoryBackend(storage)
    p = await plan(backend)
    text = str(p)
    for part in p.snapshot.parts:
        assert f"fetch part  {part.ref}" in text
    for d in p.deltas:
        assert f"apply delta {d.ref}" in text
    assert "base seq 3" in text and "total to fetch" in text and "lease:" in text
    assert p.total_bytes == p.snapshot.stored_size + sum(d.size for d in p.deltas)
    events = []
    got = await execute(p, backend, progress=lambda *e: events.append(e))
    assert got.seq == 5
    stages = {e[0] for e in events}
    assert {"download", "decompress", "apply"} <= stages
    assert events[-1] == ("apply", 2, 2)


async def test_restore_into_a_given_connection():
    storage = MemoryStorage()
    _r, live, _s, _t = await _history(storage, rounds=4, snapshot_at=2)
    target = sqlite3.connect(":memory:")
    target.execute("CREATE TABLE leftovers(x)")
    got = await restore(MemoryBackend(storage), into=target)
    assert got.conn is target and state(target) == live.rows()
    assert target.execute("SELECT name FROM sqlite_master WHERE name = 'leftovers'").fetchone() is None


async def test_restore_into_a_non_empty_connection_without_snapshot_is_refused():
    storage = MemoryStorage()
    await _history(storage, rounds=2)
    target = sqlite3.connect(":memory:")
    target.execute("CREATE TABLE leftovers(x)")
    with pytest.raises(RestoreError, match="not empty"):
        await restore(MemoryBackend(storage), into=target)


# -- chain selection, with documents written by hand ------------------------------------------------------


def _cs(at: float, *rows) -> ChangeSet:
    return ChangeSet(at, {"users": TableChanges("users", DDL, COLUMNS, ["id"], list(rows))})


class Chain:
    """Writes delta documents straight into storage, as any writer (or zombie) would."""

    def __init__(self, storage: MemoryStorage):
        self.storage = storage
        self.backend = MemoryBackend(storage)
        # An empty manifest of a writer without storage or claim ids (format 1): every discovered
        # document counts, and the chain rules alone choose among them.
        storage.manifest = encode_manifest(Manifest(epoch=1, generation=1, created_at=0.0))

    async def put(self, seq, prev, epoch, *rows, at=None) -> bytes:
        data = encode_delta(_cs(at if at is not None else float(seq), *rows), epoch=epoch, seq=seq, prev=prev)
        await self.backend.put(delta_name(seq), data)
        return document_hash(data)


async def test_zombie_of_an_older_epoch_is_fenced():
    storage = MemoryStorage()
    c = Chain(storage)
    h1 = await c.put(1, GENESIS, 1, (1, "a", 1))
    z2 = await c.put(2, h1, 1, (1, "zombie", 2))  # the old writer, still running
    await c.put(2, h1, 2, (1, "new", 2))  # the new writer's own seq 2
    await c.put(3, z2, 1, (1, "zombie", 3))  # the zombie goes on, on its dead branch
    p = await plan(c.backend)
    assert [d.epoch for d in p.chain] == [1, 2]
    assert any("fenced" in n for n in p.ignored)
    got = await execute(p, c.backend)
    assert state(got.conn) == [(1, "new", 2)]


async def test_zombie_seen_before_the_new_writer_wrote_is_kept():
    storage = MemoryStorage()
    c = Chain(storage)
    h1 = await c.put(1, GENESIS, 1, (1, "a", 1))
    await c.put(2, h1, 1, (1, "late but valid", 2))
    got = await restore(c.backend)
    assert state(got.conn) == [(1, "late but valid", 2)]


async def test_duplicate_seq_prefers_the_branch_that_continues():
    storage = MemoryStorage()
    c = Chain(storage)
    h1 = await c.put(1, GENESIS, 1, (1, "a", 1))
    good = await c.put(2, h1, 1, (1, "acked", 2), at=2.0)
    await c.put(3, good, 1, (2, "b", 3))
    await c.put(2, h1, 1, (1, "stale attempt that landed late", 2), at=1.5)  # later in storage order
    got = await restore(c.backend)
    assert state(got.conn) == [(1, "acked", 2), (2, "b", 3)] and got.seq == 3


async def test_duplicate_seq_at_the_tip_prefers_the_later_cut():
    storage = MemoryStorage()
    c = Chain(storage)
    h1 = await c.put(1, GENESIS, 1, (1, "a", 1))
    await c.put(2, h1, 1, (1, "retry superset", 2), (2, "b", 2), at=3.0)
    await c.put(2, h1, 1, (1, "first attempt", 2), at=2.0)
    got = await restore(c.backend)
    assert state(got.conn) == [(1, "retry superset", 2), (2, "b", 2)]


async def test_gap_in_the_chain_is_named():
    storage = MemoryStorage()
    c = Chain(storage)
    h1 = await c.put(1, GENESIS, 1, (1, "a", 1))
    h2 = await c.put(2, h1, 1, (1, "b", 2))
    await c.put(3, h2, 1, (1, "c", 3))
    victim = list(storage.docs)[1]
    del storage.docs[victim]
    with pytest.raises(ChainError, match="delta seq 2 is missing.*seq 3"):
        await restore(c.backend)


async def test_broken_link_is_named():
    storage = MemoryStorage()
    c = Chain(storage)
    await c.put(1, GENESIS, 1, (1, "a", 1))
    await c.put(2, b"\x01" * 32, 1, (1, "b", 2))
    with pytest.raises(ChainError, match="delta seq 2 .* does not link to seq 1"):
        await restore(c.backend)


async def test_listed_delta_missing_from_storage_is_named():
    storage = MemoryStorage()
    # No inline deltas: each goes out as a one-delta pack document.
    r = Replica(MemoryBackend(storage, can_discover=False), ReplicaConfig(**CFG, inline_delta_bytes=0))
    await r.acquire()
    live = Live()
    for i in range(3):
        live.set(i, clicks=i)
        assert await live.flush(r)
    p = await plan(MemoryBackend(storage, can_discover=False))
    victim = p.chain[1]
    del storage.docs[victim.document]
    with pytest.raises(ChainError, match=f"delta seq 2 \\(pack {victim.document}\\) is listed in the manifest but "
                                         "missing"):
        await restore(MemoryBackend(storage, can_discover=False))


async def test_foreign_document_among_discovered_is_named():
    storage = MemoryStorage()
    c = Chain(storage)
    await c.put(1, GENESIS, 1, (1, "a", 1))
    ref = await c.backend.put("delta-000000000002", b"this is not a tgsnap document")
    from snapshot.errors import CorruptDocument

    with pytest.raises(CorruptDocument, match="not a tgsnap document") as e:
        await restore(c.backend)
    assert e.value.ref == ref
