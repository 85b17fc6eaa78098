"""The claim protocol as a property: any schedule of claims, writes, and writes frozen before or after
their store (resumed later, in any order) keeps every acknowledged row, and no writer acknowledges
anything once a newer claim exists.

Writers share one writer id (as a same-host takeover does), so a newcomer never waits for a lease: the
schedule alone decides who races whom. Model: the set of acknowledged rows, and the claim count."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snapshot.backends.memory import Faults, MemoryBackend, MemoryStorage
from snapshot.changes import ChangeSet, TableChanges
from snapshot.errors import FencedError
from snapshot.replica import Replica, ReplicaConfig
from snapshot.restore import restore
from tests.snapshot.helpers import COLUMNS, DDL, state

CFG = ReplicaConfig(part_size=2048, shard_size=4096)

ops = st.lists(st.one_of(
    st.tuples(st.just("claim")),
    st.tuples(st.just("write"), st.integers(0, 5), st.sampled_from([None, "before", "after"])),
    st.tuples(st.just("resume"), st.integers(0, 5)),
    st.tuples(st.just("snapshot"), st.integers(0, 5)),
), min_size=1, max_size=25)


async def _scenario(steps, discover: bool) -> None:
    storage = MemoryStorage()
    writers: list[tuple[Replica, Faults, int]] = []  # replica, its faults, claim number
    acked: dict[int, int] = {}  # row id -> clicks acknowledged
    frozen: list[tuple[asyncio.Future, object, int, int, int]] = []  # task, gate, writer claim, row id, value
    claims = 0
    next_id = 0

    async def claim() -> None:
        nonlocal claims
        faults = Faults()
        r = Replica(MemoryBackend(storage, faults, can_discover=discover), CFG, writer_id="w")
        got = await r.acquire()
        claims += 1
        rows = {row[0]: row[2] for row in state(got.conn)}
        assert all(rows.get(k) == v for k, v in acked.items()), "a newcomer lost an acknowledged row"
        writers.append((r, faults, claims))

    def change(k: int, v: int) -> ChangeSet:
        return ChangeSet(float(k), {"users": TableChanges("users", DDL, COLUMNS, ["id"], [(k, f"r{k}", v)])})

    async def finish(task, claim_no: int, k: int, v: int) -> None:
        try:
            await task
        except FencedError:
            return
        assert claim_no == claims, f"writer of claim {claim_no} acknowledged after claim {claims}"
        acked[k] = v

    await claim()
    for step in steps:
        if step[0] == "claim":
            await claim()
        elif step[0] == "write":
            r, faults, claim_no = writers[step[1] % len(writers)]
            if r.fenced or any(f[2] == claim_no for f in frozen):
                continue  # (a frozen call holds the writer's locks: its next call would wait for it)
            next_id += 1
            k, v = next_id, claims * 1000 + next_id
            if step[2] is None:
                await finish(asyncio.ensure_future(r.write_delta(change(k, v))), claim_no, k, v)
                continue
            op = "put" if discover else "replace_slot"
            gate = faults.gate(op, step[2], match="delta-" if discover else None)
            task = asyncio.ensure_future(r.write_delta(change(k, v)))
            done, _ = await asyncio.wait([task, asyncio.ensure_future(gate.reached.wait())],
                                         return_when=asyncio.FIRST_COMPLETED)
            if task in done:  # fenced before reaching the gate
                faults.gates.remove(gate)
                await finish(task, claim_no, k, v)
            else:
                frozen.append((task, gate, claim_no, k, v))
                await asyncio.sleep(0)
        elif step[0] == "resume" and frozen:
            task, gate, claim_no, k, v = frozen.pop(step[1] % len(frozen))
            gate.open()
            await finish(task, claim_no, k, v)
        elif step[0] == "snapshot":
            r, _faults, claim_no = writers[step[1] % len(writers)]
            if r.fenced or r.last_seq == 0 or any(f[2] == claim_no for f in frozen):
                continue
            got = await restore(MemoryBackend(storage, can_discover=discover))
            try:
                await r.write_snapshot(got.conn.serialize(), got.seq, got.captured_at or 0.0)
            except (FencedError, ValueError):
                pass  # fenced, or its base is not this writer's to snapshot
    for task, gate, claim_no, k, v in frozen:
        gate.open()
        await finish(task, claim_no, k, v)
    final = {row[0]: row[2] for row in state((await restore(MemoryBackend(storage, can_discover=discover))).conn)}
    assert all(final.get(k) == v for k, v in acked.items()), "an acknowledged row is not restored"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=ops, discover=st.booleans())
def test_any_schedule_keeps_every_acknowledged_row_and_no_late_acknowledgement(steps, discover):
    asyncio.run(_scenario(steps, discover))
