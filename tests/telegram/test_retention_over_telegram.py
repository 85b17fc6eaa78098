"""Retention over the real Telegram backends (emulator): restore reaches back past snapshot switches,
prune deletes exactly the messages its dry run lists (and restore still holds), and a message that may be
older than Telegram's 48 h delete window is left in the channel and reported, never attempted."""

from __future__ import annotations

import time

import pytest

from snapshot import retention
from snapshot.replica import Replica, ReplicaConfig
from snapshot.restore import plan, restore
from tests.snapshot.helpers import Live, state
from tests.telegram.conftest import botapi, mtproto

BACKENDS = {"botapi": botapi, "mtproto": mtproto}
CFG = dict(part_size=4096, shard_size=8192)


@pytest.fixture(params=sorted(BACKENDS))
def mode(request) -> str:
    return request.param


async def _open(mode, emu, demo):
    kw = {"manifest_min_interval": 0.0} if mode == "mtproto" else {}
    return await BACKENDS[mode](emu, demo, **kw).open()


def _mid(ref: str) -> int:
    return int(ref.split(":")[0])  # Bot API refs are "message_id:file_id", MTProto refs the message id


async def _history(mode, emu, demo, clock: float):
    backend = await _open(mode, emu, demo)
    r = Replica(backend, ReplicaConfig(**CFG, keep_snapshots=5), writer_id="writer")
    await r.acquire()
    live = Live()
    live.clock = clock
    at = {0: []}
    for k in range(1, 10):
        live.set(k % 4, clicks=k)
        assert await live.flush(r)
        at[r.last_seq] = live.rows()
        if k % 3 == 0:
            await live.snapshot(r)
    await r.release()
    await backend.close()
    return at


async def test_restore_reaches_back_and_prune_deletes_what_its_dry_run_lists(emulator, demo, mode):
    at = await _history(mode, emulator, demo, clock=time.time() - 600)
    backend = await _open(mode, emulator, demo)
    try:
        for seq, rows in at.items():
            assert state((await restore(backend, to_seq=seq)).conn) == rows, seq
        dry = await retention.make_plan(backend, None, keep_snapshots=1)
        assert [h.base_seq for h in dry.dropped] == [0, 3] and dry.delete and not dry.too_old
        done = await retention.prune(backend, None, keep_snapshots=1)
        assert sorted(done.delete) == sorted(dry.delete)
        chat = demo.storage_chat_id
        assert all(emulator.world.get_message(chat, _mid(ref)) is None for ref in done.delete)
        for seq in (6, 7, 9):
            assert state((await restore(backend, to_seq=seq)).conn) == at[seq]
        with pytest.raises(Exception, match="compacted away"):
            await plan(backend, to_seq=5)
    finally:
        await backend.close()


async def test_prune_leaves_messages_past_the_delete_window(emulator, demo, mode):
    at = await _history(mode, emulator, demo, clock=time.time() - 3 * 86400)  # cuts three days old
    backend = await _open(mode, emulator, demo)
    try:
        done = await retention.prune(backend, None, keep_snapshots=0)
        assert done.dropped and done.too_old and not done.delete
        chat = demo.storage_chat_id
        assert all(emulator.world.get_message(chat, _mid(ref)) is not None for ref in done.too_old)
        assert state((await restore(backend)).conn) == at[max(at)]
    finally:
        await backend.close()
