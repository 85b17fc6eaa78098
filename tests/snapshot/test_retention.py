"""Retention with point-in-time reach: older snapshots (and the deltas between them) kept by policy reach
restore back past the current snapshot; prune lets go of exactly what its dry run lists, never of what
the manifest or a retained point needs, never past Telegram's delete window, never when fenced."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from snapshot import retention
from snapshot.backends.memory import MemoryBackend, MemoryStorage
from snapshot.envelope import decode
from snapshot.errors import ConfigError, CorruptDocument, FencedError, RestoreError
from snapshot.manifest import HistoryPoint, Manifest, SnapshotEntry, decode_manifest
from snapshot.replica import Replica, ReplicaConfig
from snapshot.restore import plan, restore
from tests.snapshot.helpers import Live, state

CFG = ReplicaConfig(part_size=2048, shard_size=4096)


@pytest.fixture(params=[True, False], ids=["discover", "no-discovery"])
def make(request):
    storage = MemoryStorage()
    return lambda **kw: MemoryBackend(storage, can_discover=request.param, **kw)


def _manifest(storage: MemoryStorage) -> Manifest:
    return decode_manifest(storage.manifest)[0]


async def _history_run(make, cfg: ReplicaConfig, rounds: int = 4, per_round: int = 3):
    """Writes, flushes and snapshots; returns the replica, the live store and the state after every seq."""
    r = Replica(make(), cfg)
    await r.acquire()
    live = Live()
    at = {0: []}
    k = 0
    for _ in range(rounds):
        for _ in range(per_round):
            k += 1
            live.set(k % 5, clicks=k)
            if k % 4 == 0:
                live.delete((k + 2) % 5)
            assert await live.flush(r)
            at[r.last_seq] = live.rows()
        await live.snapshot(r)
    return r, live, at


async def test_restore_and_plan_reach_back_past_compactions(make):
    r, live, at = await _history_run(make, ReplicaConfig(part_size=2048, shard_size=4096, keep_snapshots=10))
    m = _manifest(make().storage)
    assert m.snapshot is not None and m.snapshot.base_seq == r.last_seq == 12
    assert [h.base_seq for h in m.history] == [0, 3, 6, 9]
    for seq, rows in at.items():
        got = await restore(make(), to_seq=seq)
        assert (got.seq, state(got.conn)) == (seq, rows), seq
    # by time: each cut's captured_at (Live's clock ticks once per cut) reaches that cut's state
    p = await plan(make(), to_time=1_700_000_005.0)
    assert p.seq == 5 and p.snapshot is not None and p.snapshot.base_seq == 3
    assert state((await restore(make(), to_time=1_700_000_005.0)).conn) == at[5]
    # the latest state is untouched by retention
    assert state((await restore(make())).conn) == live.rows()


async def test_no_retention_by_default_and_history_is_absent_from_the_manifest(make):
    r, _live, at = await _history_run(make, CFG, rounds=2)
    raw = decode(make().storage.manifest).body
    assert "history" not in json.loads(raw)
    with pytest.raises(RestoreError, match="compacted away"):
        await plan(make(), to_seq=2)


async def test_a_point_before_the_oldest_retained_one_was_compacted_away(make):
    r, _live, at = await _history_run(make, ReplicaConfig(part_size=2048, shard_size=4096, keep_snapshots=2))
    assert [h.base_seq for h in _manifest(make().storage).history] == [6, 9]
    for seq in (6, 7, 9, 12):
        assert state((await restore(make(), to_seq=seq)).conn) == at[seq]
    with pytest.raises(RestoreError, match=r"earliest restorable point is seq 6 \(the oldest retained"):
        await plan(make(), to_seq=5)
    with pytest.raises(RestoreError, match="compacted away"):
        await plan(make(), to_time=1_000.0)


async def test_storage_without_any_snapshot_never_claims_compaction(make):
    r = Replica(make(), ReplicaConfig(keep_snapshots=3))
    await r.acquire()
    live = Live()
    live.set(1, clicks=1)
    assert await live.flush(r)
    with pytest.raises(RestoreError) as e:
        await plan(make(), to_seq=-5)
    assert "compacted" not in str(e.value)
    assert state((await restore(make(), to_seq=0)).conn) == []


async def test_retained_inline_deltas_move_to_a_pack_not_into_the_manifest():
    storage = MemoryStorage()
    make = lambda: MemoryBackend(storage, can_discover=False)  # noqa: E731
    r, _live, at = await _history_run(make, ReplicaConfig(part_size=2048, shard_size=4096, keep_snapshots=5),
                                      rounds=2)
    m = _manifest(storage)
    assert all(d.inline is None and d.pack is not None for h in m.history for d in h.deltas)
    for seq, rows in at.items():
        assert state((await restore(make(), to_seq=seq)).conn) == rows


def test_policy_keeps_a_suffix_by_count_and_by_window():
    def pt(seq: int, at: float) -> HistoryPoint:
        return HistoryPoint(SnapshotEntry(seq, "00" * 32, at, 1, 0, "00" * 32))

    hist = [HistoryPoint(None), pt(10, 100.0), pt(20, 200.0), pt(30, 300.0)]
    cur = pt(40, 400.0).snapshot
    assert retention.select_points(hist, cur, 0, 0, 1000.0) == ([], hist)
    assert retention.select_points(hist, cur, 2, 0, 1000.0) == (hist[2:], hist[:2])
    # reach 250: the point at 200 is needed (the next one was captured after 250), and all after it
    assert retention.select_points(hist, cur, 0, 750.0, 1000.0) == (hist[2:], hist[:2])
    assert retention.select_points(hist, cur, 3, 750.0, 1000.0) == (hist[1:], hist[:1])
    assert retention.select_points(hist, cur, 0, 10_000.0, 1000.0) == (hist, [])
    for bad in ({"keep_snapshots": -1}, {"keep_for": float("nan")}, {"keep_snapshots": True}):
        with pytest.raises(ConfigError):
            Replica(MemoryBackend(), ReplicaConfig(**bad))


def test_a_history_with_a_gap_is_refused_by_readers():
    good = Manifest(epoch=1, generation=1, created_at=1.0, format=3, storage_id="0" * 32, claim_id="1" * 32,
                    snapshot=SnapshotEntry(2, "ab" * 32, 2.0, 1, 0, "00" * 32),
                    history=[HistoryPoint(None, deltas=[])])
    with pytest.raises(CorruptDocument, match="does not list exactly"):
        Manifest.from_json(good.to_json())


async def test_prune_dry_run_lists_exactly_what_prune_deletes(make):
    r, live, at = await _history_run(make, ReplicaConfig(part_size=2048, shard_size=4096, keep_snapshots=10))
    await r.release()
    storage = make().storage
    before = set(storage.refs())
    dry = await retention.make_plan(make(), None, keep_snapshots=1)
    assert [h.base_seq for h in dry.kept] == [9] and [h.base_seq for h in dry.dropped] == [0, 3, 6]
    assert set(storage.refs()) == before  # a dry run changes nothing
    done = await retention.prune(make(), None, keep_snapshots=1)
    assert set(done.delete) == set(dry.delete) and done.too_old == dry.too_old == []
    assert before - set(storage.refs()) == set(dry.delete)
    assert [h.base_seq for h in _manifest(storage).history] == [9]
    for seq in (9, 10, 12):
        assert state((await restore(make(), to_seq=seq)).conn) == at[seq]
    with pytest.raises(RestoreError, match="compacted away"):
        await plan(make(), to_seq=8)
    assert state((await restore(make())).conn) == live.rows()
    again = await retention.make_plan(make(), None, keep_snapshots=1)
    assert again.nothing_to_do


async def test_prune_leaves_what_may_be_past_telegrams_delete_window():
    storage = MemoryStorage()
    make = lambda: MemoryBackend(storage, delete_window=48 * 3600.0)  # noqa: E731
    # Live's clock stands in 2023: every cut is far older than 48 h
    r, _live, at = await _history_run(make, ReplicaConfig(part_size=2048, shard_size=4096, keep_snapshots=10),
                                      rounds=2)
    await r.release()
    before = set(storage.refs())
    dry = await retention.make_plan(make(), None)
    assert dry.dropped and dry.too_old and dry.delete == []
    assert "cannot be deleted any more" in str(dry)
    done = await retention.prune(make(), None)
    assert sorted(done.too_old) == sorted(dry.too_old)
    assert set(storage.refs()) == before  # nothing attempted
    assert _manifest(storage).history == []
    assert state((await restore(make())).conn) == at[max(at)]


async def test_a_fenced_writer_never_prunes():
    storage = MemoryStorage()
    make = lambda: MemoryBackend(storage)  # noqa: E731
    cfg = ReplicaConfig(part_size=2048, shard_size=4096, keep_snapshots=10, lease_seconds=0.05)
    r, _live, at = await _history_run(make, cfg, rounds=3)
    await asyncio.sleep(0.1)  # the lease runs out; a newcomer claims without the old writer knowing
    newcomer = Replica(make(), ReplicaConfig(part_size=2048, shard_size=4096, keep_snapshots=10))
    await newcomer.acquire()
    before = set(storage.refs())
    r.config.keep_snapshots = 0
    with pytest.raises(FencedError):
        await r.prune()
    assert set(storage.refs()) == before
    for seq, rows in at.items():
        assert state((await restore(make(), to_seq=seq)).conn) == rows


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.one_of(st.tuples(st.just("write"), st.integers(0, 6)),
                              st.tuples(st.just("write"), st.integers(0, 6)),
                              st.just(("snapshot", 0)), st.just(("snapshot", 0)),
                              st.tuples(st.just("prune"), st.integers(0, 3)),
                              st.tuples(st.just("policy"), st.integers(0, 3))), max_size=40),
       discover=st.booleans())
def test_prune_never_breaks_restore(ops, discover):
    """Random schedules of writes, snapshots, policy changes and prunes (by the writer itself, and by an
    operator's prune between writer sessions): after every step the latest restore equals the live
    state, and every point the manifest says is retained restores to the state at that seq."""

    async def run() -> None:
        storage = MemoryStorage()
        make = lambda: MemoryBackend(storage, can_discover=discover)  # noqa: E731
        cfg = ReplicaConfig(part_size=2048, shard_size=4096, keep_snapshots=2, inline_delta_bytes=600)
        r = Replica(make(), cfg)
        await r.acquire()
        live = Live()
        at: dict[int, list] = {0: []}
        for i, (op, v) in enumerate(ops):
            if op == "write":
                live.set(v, clicks=i)
                if i % 3 == 0:
                    live.delete((v + 1) % 7)
                assert await live.flush(r)
                at[r.last_seq] = live.rows()
            elif op == "snapshot":
                await live.snapshot(r)
            elif op == "policy":
                r.config.keep_snapshots = v
            else:
                if i % 2:
                    r.config.keep_snapshots = v
                    await r.prune()
                else:  # an operator's prune between two writer sessions
                    await r.release()
                    await retention.prune(make(), None, keep_snapshots=v)
                    r = Replica(make(), dataclasses_replace(cfg, keep_snapshots=r.config.keep_snapshots))
                    await r.acquire()
            assert state((await restore(make())).conn) == live.rows()
            m = _manifest(storage)
            reach = [h.base_seq for h in m.history] + [m.base_seq]
            event(f"retained points: {min(len(m.history), 3)}+")
            lowest = reach[0]
            for seq, rows in at.items():
                if seq >= lowest:
                    assert state((await restore(make(), to_seq=seq)).conn) == rows, (seq, reach)
            if reach[0] > 0:
                with pytest.raises(RestoreError, match="compacted away"):
                    await plan(make(), to_seq=reach[0] - 1)

    asyncio.run(run())


def dataclasses_replace(cfg, **kw):
    import dataclasses

    return dataclasses.replace(cfg, **kw)


def test_the_bot_passes_its_retention_settings_to_the_replica():
    from bot.config import load
    from snapshot.settings import StorageSettings

    s = load(["--keep-snapshots", "3"], environ={"TGSNAP_KEEP_FOR": "2d"}, dotenv=False)
    replica = s.store_config(StorageSettings()).replica
    assert (replica.keep_snapshots, replica.keep_for) == (3, 2 * 86400.0)
    for env in ({"TGSNAP_KEEP_SNAPSHOTS": "-1"}, {"TGSNAP_KEEP_FOR": "soon"}):
        with pytest.raises(ConfigError, match=next(iter(env))):
            load([], environ=env, dotenv=False)
    assert retention.parse_duration("90") == 90.0 and retention.parse_duration("45m") == 2700.0


async def test_verify_checks_retained_points_and_names_a_missing_part(make):
    from snapshot.verify import verify

    r, _live, _at = await _history_run(make, ReplicaConfig(part_size=2048, shard_size=4096, keep_snapshots=3))
    report = await verify(make())
    assert report.ok, [c.line() for c in report.faults]
    states = [c for c in report.checks if c.kind == "state"]
    assert len(states) == 4  # the current state and three retained points, each rebuilt
    assert report.last_seq == r.last_seq
    m = _manifest(make().storage)
    victim = m.history[1].snapshot.parts[0].ref
    del make().storage.docs[victim]
    report = await verify(make())
    assert not report.ok and [c.ref for c in report.faults] == [victim]


async def test_status_shows_how_far_back_restore_reaches(make):
    from snapshot.status import status

    r, _live, _at = await _history_run(make, ReplicaConfig(part_size=2048, shard_size=4096, keep_snapshots=2))
    st = await status(make())
    assert (st.retention.points, st.retention.earliest_seq) == (2, 6) and st.retention.bytes > 0
    assert "restore reaches back to seq 6" in st.table()
    assert st.to_json()["retention"]["points"] == 2
