"""A change set over the backend's document limit never stalls: one cut goes out as several delta
documents (all but the last flagged `continued`), acknowledged after the last; readers apply only
complete cuts, and point-in-time restore stops only at the end of a cut."""

from __future__ import annotations

import os

import pytest

from snapshot.backends.memory import Faults, MemoryBackend, MemoryStorage
from snapshot.envelope import read_header
from snapshot.errors import BackendError, OversizeRow
from snapshot.replica import Replica, ReplicaConfig
from snapshot.restore import plan, restore
from tests.snapshot.helpers import Live, state

LIMIT = 3000
CFG = ReplicaConfig(part_size=2048, shard_size=4096, inline_delta_bytes=0)


@pytest.fixture(params=[True, False], ids=["discover", "no-discovery"])
def make(request):
    storage = MemoryStorage()
    return lambda faults=None: MemoryBackend(storage, faults, can_discover=request.param,
                                             max_document_size=LIMIT)


def _big(live: Live, start: int, n: int) -> None:
    for k in range(start, start + n):
        live.set(k, clicks=k, name=os.urandom(40).hex())  # incompressible: ~20 rows per document


def _deltas(storage: MemoryStorage):
    return [read_header(d) for name, d in storage.docs.values() if name.startswith("delta-")]


async def test_an_oversize_cut_is_split_acknowledged_once_and_restores(make):
    r = Replica(make(), CFG)
    await r.acquire()
    live = Live()
    live.set(1, clicks=1)
    assert await live.flush(r)
    _big(live, 100, 150)
    receipt = await r.write_delta(live.changes())
    live.dirty.clear()
    assert receipt.seq > 2  # one cut, several seqs
    got = await restore(make())
    assert state(got.conn) == live.rows() and got.seq == receipt.seq
    backend = make()
    if backend.info.can_discover:
        heads = sorted(_deltas(backend.storage), key=lambda h: h.seq)
        assert [h.continued for h in heads] == [False] + [True] * (receipt.seq - 2) + [False]
    # the next delta continues after the cut
    live.set(2, clicks=2)
    assert await live.flush(r)
    assert state((await restore(make())).conn) == live.rows()


async def test_a_split_cut_that_fails_half_way_is_never_applied_and_the_retry_completes(make):
    faults = Faults(put_match="d")
    r = Replica(make(faults), CFG, writer_id="w")
    await r.acquire()
    live = Live()
    live.set(1, clicks=1)
    assert await live.flush(r)
    before = live.rows()
    _big(live, 100, 150)
    faults.put_fail_at = {faults.puts_seen + 3}  # the third document of the cut fails
    faults.publish_fail = 0
    if not make().info.can_discover:
        faults.put_match = "deltas-"  # one-delta packs carry the pieces
        faults.put_fail_at = {faults.puts_seen + 3}
    assert not await live.flush(r)
    assert r.last_seq == 1
    p = await plan(make())
    assert state((await restore(make())).conn) == before  # the two pieces that landed are not applied
    assert p.seq == 1 and any("never completed" in n for n in p.ignored)
    # a writer that crashed here: its successor continues from the last complete cut
    r2 = Replica(make(), CFG, writer_id="w")  # the same writer restarted
    got = await r2.acquire()
    assert state(got.conn) == before
    assert await live.flush(r2)  # the retry: a superset of the same rows
    assert state((await restore(make())).conn) == live.rows()


async def test_point_in_time_stops_only_at_the_end_of_a_cut(make):
    r = Replica(make(), CFG)
    await r.acquire()
    live = Live()
    live.set(1, clicks=1)
    assert await live.flush(r)
    one = live.rows()
    _big(live, 100, 150)
    receipt = await r.write_delta(live.changes())
    live.dirty.clear()
    for seq in range(1, receipt.seq):
        got = await restore(make(), to_seq=seq)
        assert got.seq == 1 and state(got.conn) == one
    got = await restore(make(), to_seq=receipt.seq)
    assert state(got.conn) == live.rows()


async def test_a_single_row_over_the_limit_is_refused_clearly(make):
    r = Replica(make(), CFG)
    await r.acquire()
    live = Live()
    live.set(1, clicks=1, name=os.urandom(4000).hex())
    with pytest.raises(OversizeRow, match="a row of table 'users' alone is over") as e:
        await r.write_delta(live.changes())
    assert isinstance(e.value, BackendError) and not e.value.retryable and r.last_seq == 0
    assert (e.value.table, e.value.limit) == ("users", LIMIT)


async def test_the_same_writers_retry_of_a_split_cut_wins_over_the_failed_pieces(make):
    faults = Faults(put_match="d")
    r = Replica(make(faults), CFG)
    await r.acquire()
    live = Live()
    live.set(1, clicks=1)
    assert await live.flush(r)
    _big(live, 100, 300)
    faults.put_fail_at = {faults.puts_seen + 5}  # more pieces land than the retry may need
    if not make().info.can_discover:
        faults.put_match = "deltas-"
        faults.put_fail_at = {faults.puts_seen + 5}
    assert not await live.flush(r)
    for k in range(100, 390):
        live.delete(k)  # the retry is smaller: fewer pieces than the failed attempt left
    assert await live.flush(r)
    got = await restore(make())
    assert state(got.conn) == live.rows() and got.seq == r.last_seq


async def test_a_piece_missing_from_a_complete_cut_is_named():
    storage = MemoryStorage()
    r = Replica(MemoryBackend(storage, max_document_size=LIMIT), CFG)
    await r.acquire()
    live = Live()
    live.set(1, clicks=1)
    assert await live.flush(r)
    _big(live, 100, 150)
    await r.write_delta(live.changes())
    pieces = [ref for ref, (name, _d) in storage.docs.items() if name.startswith("delta-")][1:]
    del storage.docs[pieces[0]]  # the cut's first piece, deleted by hand
    from snapshot.errors import ChainError

    with pytest.raises(ChainError, match="delta seq 2 is missing"):
        await restore(MemoryBackend(storage, max_document_size=LIMIT))
