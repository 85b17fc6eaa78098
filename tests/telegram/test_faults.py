"""Telegram misbehaving: 429 storms, lost answers, dropped connections, timeouts, latency, restarts, expired
file references. Each test ends with every acknowledged document readable (and no duplicate where the
protocol lets us avoid one), or a clear, retryable refusal."""

from __future__ import annotations

import asyncio
import os

import pytest

from snapshot.backends.telegram_budget import BudgetConfig, ChatBudget
from snapshot.errors import BackendError
from tests.telegram.conftest import UNLIMITED, botapi, mtproto
from tools.emulator.knobs import FaultRule
from tools.emulator.mtproto.filerefs import FileReferences
from tools.emulator.testing import Emulator

BACKENDS = {"botapi": botapi, "mtproto": mtproto}
SEND = {"botapi": "sendDocument", "mtproto": "messages.SendMediaRequest"}


@pytest.fixture(params=sorted(BACKENDS))
def mode(request) -> str:
    return request.param


def documents(world, chat_id) -> list:
    return [m for m in world.history(chat_id, limit=1000, newest_first=False) if m.document is not None]


async def test_429_storm_delays_but_loses_nothing(emulator, demo, mode):
    # Telegram's ratio at 30x speed, and a client budget far too generous: the server must push back.
    emulator.world.knobs.update({"rate_limits": True, "channel_per_minute": 600, "channel_burst": 2})
    budget = ChatBudget(BudgetConfig(per_minute=600_000, burst=1000, max_wait=60, edits_per_minute=600_000,
                                         edit_burst=1000))
    b = await BACKENDS[mode](emulator, demo, budget=budget).open()
    try:
        payloads = [os.urandom(50 + i) for i in range(8)]
        refs = await asyncio.gather(*(b.put(f"delta-{i:012d}", p) for i, p in enumerate(payloads)))
        await b.publish_manifest(b"after the storm")
        # the storm happened: FLOOD_WAITs, or (Bot API) answers telegram-bot-api held back while it waited them out
        assert budget.stats.flood_pauses >= 1 or (mode == "botapi" and emulator.world.limiter.held >= 1)
        assert [await b.get(r) for r in refs] == payloads
        assert await b.read_manifest() == b"after the storm"
        assert len(documents(emulator.world, demo.storage_chat_id)) == len(payloads) + 1  # no duplicates
    finally:
        await b.close()


async def test_budget_keeps_inside_the_emulators_limits(emulator, demo, mode):
    # The defaults (Telegram 20/min burst 5, tgsnap 18/min burst 3) scaled 30x so the test is quick.
    emulator.world.knobs.update({"rate_limits": True, "channel_per_minute": 20 * 30, "channel_burst": 5,
                                 "message_edits_per_minute": 15 * 30})
    budget = ChatBudget(BudgetConfig(per_minute=18 * 30, burst=3, max_wait=60, edits_per_minute=12 * 30))
    b = await BACKENDS[mode](emulator, demo, budget=budget).open()
    try:
        refs = []
        for i in range(16):
            refs.append(await b.put(f"delta-{i:012d}", bytes([i])))
            if i % 2:
                await b.publish_manifest(bytes([i]) * 10)
        assert budget.stats.flood_pauses == 0  # never a single 429 / FLOOD_WAIT
        assert budget.stats.granted >= 16 + 8
        assert [await b.get(r) for r in refs] == [bytes([i]) for i in range(16)]
    finally:
        await b.close()


async def test_a_spent_budget_refuses_with_retry_after(emulator, demo, mode):
    budget = ChatBudget(BudgetConfig(per_minute=1, burst=1, max_wait=0.5))
    b = await BACKENDS[mode](emulator, demo, budget=budget).open()
    try:
        await b.put("delta-000000000001", b"first")
        with pytest.raises(BackendError) as e:
            await b.put("delta-000000000002", b"second")
        assert e.value.retryable and e.value.retry_after and e.value.retry_after > 50
        assert len(documents(emulator.world, demo.storage_chat_id)) == 1
    finally:
        await b.close()


async def test_answer_lost_after_send(emulator, demo, mode):
    emulator.world.knobs.add_fault(FaultRule("answer_lost", method=SEND[mode], count=1))
    b = await BACKENDS[mode](emulator, demo).open()
    try:
        ref = await b.put("delta-000000000001", b"landed once")
        assert await b.get(ref) == b"landed once"
        docs = documents(emulator.world, demo.storage_chat_id)
        if mode == "mtproto":
            # the resend is refused as RANDOM_ID_DUPLICATE and the stored copy is found by its tag
            assert [str(m.message_id) for m in docs] == [ref]
        else:
            # the Bot API has no idempotency key: a harmless duplicate, and the ref we got works
            assert 1 <= len(docs) <= 2
    finally:
        await b.close()


async def test_answer_lost_after_manifest_edit(emulator, demo, mode):
    b = await BACKENDS[mode](emulator, demo).open()
    try:
        await b.publish_manifest(b"v1")
        edit = "editMessageMedia" if mode == "botapi" else "messages.EditMessageRequest"
        emulator.world.knobs.add_fault(FaultRule("answer_lost", method=edit, count=1))
        await b.publish_manifest(b"v2")
        assert await b.read_manifest() == b"v2"
        assert len(emulator.world.pinned_ids(demo.storage_chat_id)) == 1
    finally:
        await b.close()


@pytest.mark.parametrize("kind", ["drop_upload", "server_error", "timeout"])
async def test_send_fails_then_succeeds(emulator, demo, mode, kind):
    emulator.world.knobs.add_fault(FaultRule(kind, method=SEND[mode], count=1, status=502, hang_s=0.3))
    b = await BACKENDS[mode](emulator, demo).open()
    try:
        data = os.urandom(300_000)
        ref = await b.put("delta-000000000001", data)
        assert await b.get(ref) == data
        assert len(documents(emulator.world, demo.storage_chat_id)) == 1  # none of these faults applied it
    finally:
        await b.close()


async def test_connection_dropped_mid_part(emulator, demo):
    emulator.world.knobs.add_fault(FaultRule("drop_upload", front="mtproto", method="upload.SaveBigFilePartRequest",
                                             count=2))
    emulator.world.knobs.add_fault(FaultRule("timeout", front="mtproto", method="upload.GetFileRequest", count=2,
                                             hang_s=0.2))
    b = await mtproto(emulator, demo).open()
    try:
        data = os.urandom(11 * 1024 * 1024 + 3)
        ref = await b.put("snapshot-000000000001-0000-0000", data)
        assert await b.get(ref) == data
        assert emulator.world.knobs.faults == []  # all four faults fired
    finally:
        await b.close()


async def test_download_cut_short_is_retried(emulator, demo):
    emulator.world.knobs.add_fault(FaultRule("drop_upload", front="botapi", method="file", count=1))
    b = await botapi(emulator, demo).open()
    try:
        data = os.urandom(2_000_000)
        ref = await b.put("delta-000000000001", data)
        emulator.world.knobs.add_fault(FaultRule("timeout", front="botapi", method="file", count=1, hang_s=0.2))
        assert await b.get(ref) == data
    finally:
        await b.close()


@pytest.mark.parametrize("latency_ms", [50, 200])
async def test_latency(emulator, demo, mode, latency_ms):
    b = await BACKENDS[mode](emulator, demo).open()
    emulator.world.knobs.update({"latency_ms": latency_ms})  # on every request from here (opening is chatty)
    try:
        data = os.urandom(1024 * 1024 + 1 if latency_ms < 100 else 200_000)  # several parts; fewer when slow
        ref = await b.put("snapshot-000000000001-0000-0000", data)
        await b.publish_manifest(b"slow but sure")
        assert await b.get(ref) == data
        assert await b.read_manifest() == b"slow but sure"
    finally:
        await b.close()


async def test_file_reference_expired_mid_download_is_refreshed(emulator, demo):
    b = await mtproto(emulator, demo).open()
    try:
        data = os.urandom(3 * 1024 * 1024 + 11)
        ref = await b.put("snapshot-000000000001-0000-0000", data)
        fetched = []
        original = b._message

        async def fetch_then_expire(mid):
            msg = await original(mid)
            fetched.append(mid)
            if len(fetched) == 1:
                FileReferences(emulator.world).expire_all()  # the reference just handed out is now stale
            return msg

        b._message = fetch_then_expire
        assert await b.get(ref) == data
        assert fetched == [int(ref), int(ref)]  # the message was refetched once for a fresh reference
    finally:
        await b.close()


async def test_parallel_upload_uses_several_connections(emulator, demo):
    emulator.world.knobs.update({"latency_ms": 20})
    b = await mtproto(emulator, demo, connections=4).open()
    try:
        in_flight, peak = 0, 0
        invoke = b.pool.invoke

        async def counting(request):
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                return await invoke(request)
            finally:
                in_flight -= 1

        b.pool.invoke = counting
        data = os.urandom(6 * 1024 * 1024 + 5)
        ref = await b.put("snapshot-000000000001-0000-0000", data)
        assert peak >= 3
        assert emulator._mtproto.connection_count >= 4  # the client's own + the transfer connections
        assert await b.get(ref) == data
    finally:
        await b.close()


async def test_emulator_restart_during_upload(tmp_path, mode):
    """The storage restarts under a large upload: the put fails retryably or lands; nothing earlier is lost."""
    emu = await Emulator(tmp_path / "tg", knobs={"rate_limits": False}).start()
    demo = emu.demo()
    make = BACKENDS[mode]
    b = await make(emu, demo, budget=ChatBudget(UNLIMITED)).open()
    try:
        before = await b.put("delta-000000000001", b"acknowledged before the restart")
        await b.publish_manifest(b"manifest before")
        emu.world.knobs.update({"bandwidth_bytes_per_s": 4 * 1024 * 1024})
        data = os.urandom(6 * 1024 * 1024)
        upload = asyncio.ensure_future(b.put("snapshot-000000000001-0000-0000", data))
        await asyncio.sleep(0.4)
        port, mport = emu.port, emu.mtproto_port
        await emu.close()
        emu = await Emulator(tmp_path / "tg", port=port, mtproto_port=mport, knobs={"rate_limits": False}).start()
        try:
            ref = await upload  # Telethon / aiogram reconnected and the retries finished the job
        except BackendError as e:
            assert e.retryable, e
            ref = await b.put("snapshot-000000000001-0000-0000", data)
        assert await b.get(ref) == data
        assert await b.get(before) == b"acknowledged before the restart"
        assert await b.read_manifest() == b"manifest before"
    finally:
        await b.close()
        await emu.close()
