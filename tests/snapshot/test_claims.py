"""The claim protocol under races: two newcomers at once, a writer frozen between store and check, a
lost answer on the claim, a fenced writer's late upload, a diverged copy, a deleted manifest.

Each race is driven deterministically: two backend objects on one storage are two processes, and the
memory backend's gates freeze a call before or after the storage acted (the directory backend is raced
through real concurrent threads and a gate-wrapping subclass).
"""

from __future__ import annotations

import asyncio
import copy
import pickle
import shutil
import time

import pytest

from snapshot.backend import SlotRace
from snapshot.backends.local import LocalDirBackend
from snapshot.backends.memory import Faults, MemoryBackend, MemoryStorage
from snapshot.errors import (
    BackendError,
    ChainError,
    ConfigError,
    CorruptDocument,
    DocumentNotFound,
    EncryptionError,
    FencedError,
    MissingManifest,
    OversizeRow,
    RestoreError,
    StorageBusy,
    TgsnapError,
)
from snapshot.replica import Replica, ReplicaConfig
from snapshot.restore import plan, restore
from tests.snapshot.helpers import Live, state
from tools import verify

SMALL = dict(part_size=2048, shard_size=4096)


def cfg(**kw) -> ReplicaConfig:
    return ReplicaConfig(**{**SMALL, **kw})


class GatedDir(LocalDirBackend):
    """A directory backend with the memory backend's gates (freeze a call before/after it acts)."""

    def __init__(self, path, faults: Faults):
        super().__init__(path, fsync=False)
        self.faults = faults

    async def put(self, name, data):
        await self.faults._at("put", "before", name)
        ref = await super().put(name, data)
        await self.faults._at("put", "after", name)
        return ref

    async def replace_slot(self, ref, data):
        await self.faults._at("replace_slot", "before")
        await super().replace_slot(ref, data)
        await self.faults._at("replace_slot", "after")

    async def newer_slot(self, ref, *, stored=None):
        await self.faults._at("newer_slot", "before")
        return await super().newer_slot(ref, stored=stored)


@pytest.fixture(params=["memory", "memory-no-discovery", "local"])
def make_backend(request, tmp_path):
    """`make_backend(faults)`: a new backend object (a process) on the one storage of this test."""
    storage = MemoryStorage()
    if request.param == "memory":
        return lambda faults=None: MemoryBackend(storage, faults)
    if request.param == "memory-no-discovery":
        return lambda faults=None: MemoryBackend(storage, faults, can_discover=False)
    return lambda faults=None: GatedDir(tmp_path / "store", faults or Faults())


async def _flush_rows(live: Live, r: Replica, ids, clicks: int) -> None:
    for k in ids:
        live.set(k, clicks=clicks)
    assert await live.flush(r)


# -- the backends' slot arbitration ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "local"])
async def test_exactly_one_of_many_simultaneous_slot_creations_wins(tmp_path, kind):
    storage = MemoryStorage()
    make = (lambda: MemoryBackend(storage)) if kind == "memory" else (
        lambda: LocalDirBackend(tmp_path / "s", fsync=False))
    first = await make().create_slot(b"base", after=None)
    backends = [make() for _ in range(8)]
    results = await asyncio.gather(*(b.create_slot(bytes([i]), after=first) for i, b in enumerate(backends)),
                                   return_exceptions=True)
    won = [r for r in results if isinstance(r, str)]
    assert len(won) == 1 and all(isinstance(r, SlotRace) for r in results if not isinstance(r, str))
    b = make()
    assert (await b.newest_slot()).ref == won[0]
    assert await b.newer_slot(won[0]) is None and await b.newer_slot(first) == won[0]


# -- two newcomers at once -------------------------------------------------------------------------------


@pytest.mark.parametrize("before", ["empty", "released", "expired"])
async def test_two_acquires_at_the_same_moment_end_with_one_writer(make_backend, before):
    if before != "empty":
        old = Replica(make_backend(), cfg(lease_seconds=0.1), writer_id="old")
        await old.acquire()
        live = Live()
        await _flush_rows(live, old, range(5), 1)
        if before == "released":
            await old.release()
        else:
            await asyncio.sleep(0.15)
    a = Replica(make_backend(), cfg(), writer_id="bot-A")
    b = Replica(make_backend(), cfg(), writer_id="bot-B")
    results = await asyncio.gather(a.acquire(), b.acquire(), return_exceptions=True)
    winners = [r for r, x in zip((a, b), results, strict=True) if not isinstance(x, BaseException)]
    losers = [x for x in results if isinstance(x, BaseException)]
    assert len(winners) == 1 and len(losers) == 1, results
    busy = losers[0]
    assert isinstance(busy, StorageBusy)
    w = winners[0]
    # structured: the holder's fields, not prose to parse
    assert busy.writer_id == w.writer_id and busy.epoch == w.epoch and busy.expires_at > time.time()
    loser = b if w is a else a
    with pytest.raises(TgsnapError):
        await loser.write_delta(Live().changes())
    live = Live()
    await _flush_rows(live, w, range(100, 103), 7)
    got = await restore(make_backend())
    assert [r for r in state(got.conn) if r[0] >= 100] == live.rows()


# -- a writer frozen between its store and its check -----------------------------------------------------


async def test_writer_frozen_between_store_and_check_while_a_newcomer_claims_never_acknowledges(make_backend):
    f1 = Faults()
    w1 = Replica(make_backend(f1), cfg(lease_seconds=0.2), writer_id="w1")
    await w1.acquire()
    live = Live()
    await _flush_rows(live, w1, range(10), 1)  # acknowledged
    acked = live.rows()
    # the next acknowledgement is frozen right after its storing step
    discover = w1.backend.info.can_discover
    gate = f1.gate("put", "after", match="delta-") if discover else f1.gate("replace_slot", "after")
    for k in range(10, 13):
        live.set(k, clicks=2)
    frozen = asyncio.ensure_future(w1.write_delta(live.changes()))
    await asyncio.wait_for(gate.reached.wait(), 5)
    await asyncio.sleep(0.25)  # frozen past its lease: a newcomer takes over
    w2 = Replica(make_backend(), cfg(), writer_id="w2")
    got = await w2.acquire()
    assert set(acked) <= set(state(got.conn))  # everything acknowledged before the claim is there
    gate.open()
    with pytest.raises(FencedError) as e:
        await frozen  # stored, but the check after it sees w2's claim: not acknowledged
    assert e.value.rival_claim == w2.claim_id.hex() and e.value.claim == w1.claim_id.hex()
    assert e.value.rival_writer == "w2" and e.value.rival_epoch == w2.epoch
    with pytest.raises(FencedError):
        await w1.write_delta(live.changes())  # fenced for good
    with pytest.raises(FencedError):
        await w1.renew()
    # the successor goes on; a later reader sees exactly its state
    live2 = Live(got.conn)
    await _flush_rows(live2, w2, range(50, 52), 9)
    again = await restore(make_backend())
    assert state(again.conn) == live2.rows()


async def test_a_frozen_writer_that_was_not_superseded_acknowledges_after_resuming(make_backend):
    f1 = Faults()
    w1 = Replica(make_backend(f1), cfg(), writer_id="w1")
    await w1.acquire()
    live = Live()
    gate = f1.gate("newer_slot", "before")
    live.set(1, clicks=1)
    task = asyncio.ensure_future(w1.write_delta(live.changes()))
    await asyncio.wait_for(gate.reached.wait(), 5)
    await asyncio.sleep(0.05)
    gate.open()
    assert (await task).seq == 1


# -- a lost answer on the claim ------------------------------------------------------------------------


async def test_a_lost_answer_on_the_claim_is_recognised_as_our_own_slot():
    storage = MemoryStorage()
    old = Replica(MemoryBackend(storage), cfg(), writer_id="old")
    await old.acquire()
    live = Live()
    await _flush_rows(live, old, range(4), 1)
    await old.release()
    faults = Faults(lose={"create_slot": 1})
    r = Replica(MemoryBackend(storage, faults), cfg(), writer_id="new")
    got = await r.acquire()  # the slot was created, the answer lost: found again by its claim id
    assert any("answer lost" in line or "reported failed" in line for line in faults.log)
    assert state(got.conn) == live.rows() and len(storage.slots) == 2 and r.slot == "s1"
    await _flush_rows(live, r, [9], 9)
    assert state((await restore(MemoryBackend(storage))).conn) == live.rows()


async def test_a_claimer_frozen_while_restoring_is_waited_for_then_stepped_over():
    storage = MemoryStorage()
    old = Replica(MemoryBackend(storage), cfg(), writer_id="old")
    await old.acquire()
    live = Live()
    await _flush_rows(live, old, range(4), 1)
    await old.release()
    faults = Faults()
    ghost = Replica(MemoryBackend(storage, faults), cfg(lease_seconds=0.3), writer_id="ghost")
    gate = faults.gate("read_slot", "before")  # claimed and checked; frozen before reading its predecessor
    task = asyncio.ensure_future(ghost.acquire())
    await asyncio.wait_for(gate.reached.wait(), 5)
    # ... and stays frozen there: its slot holds only a claim
    assert state((await restore(MemoryBackend(storage))).conn) == live.rows()  # readers step over it
    newcomer = Replica(MemoryBackend(storage), cfg(), writer_id="newcomer")
    with pytest.raises(StorageBusy) as e:
        await newcomer.acquire()
    assert e.value.writer_id == "ghost"
    await asyncio.sleep(0.35)
    got = await newcomer.acquire()  # the claim's lease ran out: through the claim-only slot to old's manifest
    assert state(got.conn) == live.rows() and len(storage.slots) == 3
    gate.open()  # the ghost resumes: restores, publishes in its own (older) slot, checks, and gives up
    with pytest.raises(StorageBusy) as e:
        await task
    assert e.value.writer_id is None and "newer claim" in str(e.value)
    assert state((await restore(MemoryBackend(storage))).conn) == live.rows()
    await _flush_rows(live, newcomer, [77], 7)


# -- a fenced writer's late upload ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "local"])
async def test_late_delta_of_a_fenced_writer_after_the_successor_snapshotted_and_closed_is_never_applied(
        tmp_path, kind):
    storage = MemoryStorage()
    f1 = Faults()

    def make(faults=None):
        if kind == "memory":
            return MemoryBackend(storage, faults)
        return GatedDir(tmp_path / "s", faults or Faults())

    w1 = Replica(make(f1), cfg(lease_seconds=0.2), writer_id="w1")
    await w1.acquire()
    live = Live()
    await _flush_rows(live, w1, range(6), 1)
    gate = f1.gate("put", "before", match="delta-")  # frozen mid-upload: the bytes land later
    live.set(0, clicks=666)
    late = asyncio.ensure_future(w1.write_delta(live.changes()))
    await asyncio.wait_for(gate.reached.wait(), 5)
    await asyncio.sleep(0.25)
    w2 = Replica(make(), cfg(), writer_id="w2")
    got = await w2.acquire()
    successor = Live(got.conn)
    await successor.snapshot(w2)  # at the same seq the late delta builds on
    await w2.release()
    gate.open()
    with pytest.raises(FencedError):
        await late  # the upload lands now (seq 2 of w1's chain), after w2's claim: never acknowledged
    p = await plan(make())
    assert any("late document of claim " + w1.claim_id.hex() in n for n in p.ignored), p.ignored
    assert not p.forks and not p.foreign
    again = await restore(make())
    assert state(again.conn) == successor.rows()
    assert all(row[2] != 666 for row in state(again.conn))
    if kind == "local":
        assert await asyncio.to_thread(verify.main, ["--storage-dir", str(tmp_path / "s"), "-q"]) == 0


async def test_a_fenced_writer_deletes_nothing(make_backend):
    f1 = Faults()
    w1 = Replica(make_backend(f1), cfg(lease_seconds=0.2), writer_id="w1")
    await w1.acquire()
    live = Live()
    await _flush_rows(live, w1, range(30), 1)
    await live.snapshot(w1)
    await _flush_rows(live, w1, range(30), 2)
    # the next switch is frozen right after storing the manifest, before its check
    gate = f1.gate("replace_slot", "after")
    snap = asyncio.ensure_future(live.snapshot(w1))
    await asyncio.wait_for(gate.reached.wait(), 5)
    await asyncio.sleep(0.25)
    w2 = Replica(make_backend(), cfg(), writer_id="w2")
    got = await w2.acquire()
    before = await plan(make_backend())
    gate.open()
    with pytest.raises(FencedError):
        await snap
    after = await plan(make_backend())
    assert before.snapshot == after.snapshot
    assert state((await restore(make_backend())).conn) == state(got.conn) == live.rows()


# -- forks and foreign documents ------------------------------------------------------------------------


async def test_a_copy_continued_elsewhere_and_copied_back_is_named_a_fork_and_never_preferred(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    r = Replica(LocalDirBackend(a, fsync=False), cfg())
    await r.acquire()
    live = Live()
    await _flush_rows(live, r, range(5), 1)
    await r.release()
    shutil.copytree(a, b)
    # the copy is continued elsewhere, longer than the original (equal epochs)
    rb = Replica(LocalDirBackend(b, fsync=False), cfg())
    await rb.acquire()
    other = Live()
    for i in range(6):
        await _flush_rows(other, rb, [1000 + i], i)
    await rb.release()
    # the original goes on
    ra = Replica(LocalDirBackend(a, fsync=False), cfg())
    got = await ra.acquire()
    assert ra.epoch == rb.epoch
    mine = Live(got.conn)
    await _flush_rows(mine, ra, [7], 7)
    # the copy's documents are copied back (what does not clash by name)
    for f in (b / "docs").iterdir():
        if not (a / "docs" / f.name).exists():
            shutil.copy(f, a / "docs" / f.name)
    p = await plan(LocalDirBackend(a, fsync=False))
    assert p.forks and all("never preferred" in n for n in p.forks)
    got = await restore(LocalDirBackend(a, fsync=False))
    assert state(got.conn) == mine.rows()
    assert await asyncio.to_thread(verify.main, ["--storage-dir", str(a), "-q"]) == 1
    assert "FAIL  fork" in capsys.readouterr().out
    # a writer continuing the original keeps its own chain
    await ra.release()
    ra2 = Replica(LocalDirBackend(a, fsync=False), cfg())
    assert state((await ra2.acquire()).conn) == mine.rows()


async def test_documents_of_another_storage_are_named_foreign(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    ra = Replica(LocalDirBackend(a, fsync=False), cfg())
    await ra.acquire()
    live = Live()
    await _flush_rows(live, ra, range(3), 1)
    rb = Replica(LocalDirBackend(b, fsync=False), cfg())
    await rb.acquire()
    for i in range(6):
        await _flush_rows(Live(), rb, [500 + i], i)
    for f in sorted((b / "docs").iterdir()):
        if not (a / "docs" / f.name).exists():
            shutil.copy(f, a / "docs" / f.name)
    p = await plan(LocalDirBackend(a, fsync=False))
    assert p.foreign and not p.forks
    assert state((await restore(LocalDirBackend(a, fsync=False))).conn) == live.rows()


# -- a deleted manifest ------------------------------------------------------------------------------------


async def test_documents_without_a_manifest_are_refused_by_writers_and_failed_by_verify(tmp_path, capsys):
    root = tmp_path / "s"
    r = Replica(LocalDirBackend(root, fsync=False), cfg())
    await r.acquire()
    live = Live()
    await _flush_rows(live, r, range(20), 1)
    await live.snapshot(r)
    await r.release()
    for m in root.glob("MANIFEST*"):
        m.unlink()
    with pytest.raises(MissingManifest, match="no manifest") as e:
        await Replica(LocalDirBackend(root, fsync=False), cfg()).acquire()
    assert isinstance(e.value, ConfigError)
    assert len(list((root / "docs").iterdir())) > 1  # nothing swept
    with pytest.raises(MissingManifest):
        await restore(LocalDirBackend(root, fsync=False))
    assert await asyncio.to_thread(verify.main, ["--storage-dir", str(root), "-q"]) == 1
    assert "no manifest" in capsys.readouterr().out


async def test_a_writer_whose_slot_is_deleted_by_hand_is_fenced(tmp_path):
    root = tmp_path / "s"
    r = Replica(LocalDirBackend(root, fsync=False), cfg())
    await r.acquire()
    live = Live()
    await _flush_rows(live, r, [1], 1)
    (root / r.slot).unlink()
    with pytest.raises(FencedError, match="vanished"):
        await r.write_delta(live.changes())


# -- errors carry their fields through copies and pickles ------------------------------------------------


@pytest.mark.parametrize("exc", [
    TgsnapError("x"), ConfigError("bad"), BackendError("down", retryable=False, retry_after=3.5),
    DocumentNotFound("m17"), CorruptDocument("r1", "payload checksum mismatch"), EncryptionError("key"),
    ChainError("gap"), RestoreError("digest"), MissingManifest("none"), SlotRace("lost", newer="s4"),
    OversizeRow("too big", table="users", limit=20_000_000),
    StorageBusy("held", writer_id="w", host="h", pid=7, expires_at=12.5, epoch=3),
    FencedError("fenced", rival_claim="ab" * 16, rival_epoch=4, rival_writer="w2", claim="cd" * 16),
])
def test_errors_survive_copy_and_pickle(exc):
    for twin in (copy.copy(exc), pickle.loads(pickle.dumps(exc))):
        assert type(twin) is type(exc) and str(twin) == str(exc) and twin.args == exc.args
        assert twin.__dict__ == exc.__dict__
