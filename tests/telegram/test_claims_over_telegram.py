"""The claim protocol over both Telegram backends against the emulator: two newcomers at once end with
one writer, and a writer whose claim was superseded while it was away never acknowledges again (the
Bot API through the pin check, MTProto through the gap check over message ids and the pin check)."""

from __future__ import annotations

import asyncio

import pytest

from snapshot.errors import FencedError, StorageBusy
from snapshot.replica import Replica, ReplicaConfig
from snapshot.restore import plan, restore
from tests.snapshot.helpers import Live, state
from tests.telegram.conftest import botapi, mtproto

BACKENDS = {"botapi": botapi, "mtproto": mtproto}
SMALL = dict(part_size=4096, shard_size=8192)


@pytest.fixture(params=sorted(BACKENDS))
def mode(request) -> str:
    return request.param


async def _backend(mode, emu, demo):
    kw = {"manifest_min_interval": 0.0} if mode == "mtproto" else {}
    return await BACKENDS[mode](emu, demo, **kw).open()


async def test_two_newcomers_at_once_end_with_one_writer(emulator, demo, mode):
    a = Replica(await _backend(mode, emulator, demo), ReplicaConfig(**SMALL), writer_id="A")
    b = Replica(await _backend(mode, emulator, demo), ReplicaConfig(**SMALL), writer_id="B")
    try:
        results = await asyncio.gather(a.acquire(), b.acquire(), return_exceptions=True)
        ok = [r for r, x in zip((a, b), results, strict=True) if not isinstance(x, BaseException)]
        errors = [x for x in results if isinstance(x, BaseException)]
        assert len(ok) == 1 and len(errors) == 1 and isinstance(errors[0], StorageBusy), results
        w = ok[0]
        live = Live()
        for i in range(3):
            live.set(i, clicks=i)
            assert await live.flush(w)
        reader = await _backend(mode, emulator, demo)
        try:
            assert state((await restore(reader)).conn) == live.rows()
        finally:
            await reader.close()
    finally:
        await a.backend.close()
        await b.backend.close()


async def test_a_superseded_writer_never_acknowledges_again(emulator, demo, mode):
    old = Replica(await _backend(mode, emulator, demo), ReplicaConfig(**SMALL, lease_seconds=0.5), writer_id="old")
    new = None
    try:
        got = await old.acquire()
        live = Live(got.conn)
        for i in range(3):
            live.set(i, clicks=i)
            assert await live.flush(old)
        acked = live.rows()
        await asyncio.sleep(0.6)  # the old writer is "frozen" past its lease
        new = Replica(await _backend(mode, emulator, demo), ReplicaConfig(**SMALL), writer_id="new")
        got2 = await new.acquire()
        assert state(got2.conn) == acked
        live.set(99, clicks=99)
        with pytest.raises(FencedError) as e:
            await old.write_delta(live.changes())  # stored (MTProto: a message), then the check fences
        assert e.value.rival_claim == new.claim_id.hex() and e.value.rival_writer == "new"
        with pytest.raises(FencedError):
            await old.write_delta(live.changes())
        reader = await _backend(mode, emulator, demo)
        try:
            p = await plan(reader)
            assert not p.forks and not p.foreign
            assert state((await restore(reader)).conn) == acked  # the fenced delta is never applied
        finally:
            await reader.close()
        succ = Live(got2.conn)
        succ.set(7, clicks=7)
        assert await succ.flush(new)
    finally:
        await old.backend.close()
        if new is not None:
            await new.backend.close()


async def test_a_takeover_under_the_same_identity_fences_the_old_process_at_its_next_store(emulator, demo, mode):
    """bot/takeover.py continues a crashed predecessor under its writer id; if the predecessor was alive
    after all, its very next delta (the lease still fresh: no renewal first) is stored and then fenced
    (MTProto: the new claim's manifest message lies in the id gap before the delta)."""
    old = Replica(await _backend(mode, emulator, demo), ReplicaConfig(**SMALL), writer_id="bot")
    new = Replica(await _backend(mode, emulator, demo), ReplicaConfig(**SMALL), writer_id="bot")
    try:
        live = Live((await old.acquire()).conn)
        live.set(1, clicks=1)
        assert await live.flush(old)
        got = await new.acquire()
        assert state(got.conn) == live.rows()
        live.set(2, clicks=2)
        with pytest.raises(FencedError) as e:
            await old.write_delta(live.changes())
        assert e.value.rival_claim == new.claim_id.hex() and e.value.claim == old.claim_id.hex()
        reader = await _backend(mode, emulator, demo)
        try:
            assert state((await restore(reader)).conn) == [r for r in live.rows() if r[0] == 1]
        finally:
            await reader.close()
    finally:
        await old.backend.close()
        await new.backend.close()
