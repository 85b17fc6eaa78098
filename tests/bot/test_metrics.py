"""bot/metrics.py scraped over HTTP on 127.0.0.1 while faults are injected into the store's storage:
a failing upload makes /readyz 503 with the lag named and counts flush errors; a takeover makes it 503
as fenced; a failed self-verification too; the heartbeat is pinged only while ready."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiohttp import web

from bot.metrics import MetricsConfig, MetricsServer, Verification, parse_addr
from core import Store, StoreConfig
from snapshot.backends.memory import Faults, MemoryBackend, MemoryStorage
from snapshot.errors import ConfigError
from snapshot.replica import ReplicaConfig

USERS = "CREATE TABLE users (chat_id INTEGER PRIMARY KEY, name TEXT NOT NULL, clicks INTEGER NOT NULL DEFAULT 0)"


async def open_store(storage: MemoryStorage, faults: Faults, writer: str = "bot-1", **kw) -> Store:
    cfg = StoreConfig(flush_interval=0.05, retry_min=0.02, retry_max=0.05, writer_id=writer,
                      replica=ReplicaConfig(**kw))
    return await Store.open(MemoryBackend(storage, faults), schema=[USERS], config=cfg)


async def get(session: aiohttp.ClientSession, server: MetricsServer, path: str) -> tuple[int, str]:
    host, port = server.address
    async with session.get(f"http://{host}:{port}{path}") as resp:
        return resp.status, await resp.text()


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


async def wait_for(cond, within: float = 5.0):
    deadline = time.monotonic() + within
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


async def test_healthy_then_failing_uploads_then_recovered():
    storage, faults = MemoryStorage(), Faults()
    store = await open_store(storage, faults)
    server = MetricsServer(store.stats, MetricsConfig(port=0, max_lag=0.3, sample_interval=0.02))
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'Анна')")
            await store.flush()
            assert await get(http, server, "/healthz") == (200, "ok\n")
            assert await get(http, server, "/readyz") == (200, "ready\n")
            status, text = await get(http, server, "/metrics")
            assert status == 200
            assert metric(text, "tgsnap_lag_seconds") == 0.0
            assert metric(text, "tgsnap_bytes_shipped_total") > 0
            assert metric(text, 'tgsnap_rows{table="users"}') == 1
            assert metric(text, "tgsnap_last_durable_timestamp_seconds") > time.time() - 60
            assert metric(text, "tgsnap_ready") == 1 and metric(text, "tgsnap_fenced") == 0
            assert metric(text, "tgsnap_last_verified_restore_timestamp_seconds") == 0

            # storage starts refusing every upload: writes pile up, the lag passes the bound
            faults.put_fail = 10**6
            store.execute("UPDATE users SET clicks = clicks + 1 WHERE chat_id = 1")

            async def not_ready():
                return (await get(http, server, "/readyz"))[0] == 503
            await wait_for(not_ready)
            status, body = await get(http, server, "/readyz")
            assert "lag" in body and "exceeds 0.3 s" in body and "last error" in body
            _, text = await get(http, server, "/metrics")
            assert metric(text, "tgsnap_flush_errors_total") >= 1
            assert metric(text, "tgsnap_lag_seconds") > 0.3 and metric(text, "tgsnap_ready") == 0
            assert metric(text, "tgsnap_dirty_rows") >= 1 or metric(text, "tgsnap_lag_seconds") > 0

            # storage recovers: the rows go out, ready again
            faults.put_fail = 0

            async def ready():
                return (await get(http, server, "/readyz"))[0] == 200
            await wait_for(ready)
            _, text = await get(http, server, "/metrics")
            assert metric(text, "tgsnap_lag_seconds") == 0.0
            assert metric(text, "tgsnap_deltas_shipped_total") >= 1
    finally:
        await server.stop()
        await store.abandon()


async def test_a_takeover_fences_and_readyz_says_so():
    storage, faults = MemoryStorage(), Faults()
    first = await open_store(storage, faults, "bot-1", lease_seconds=0.3)
    server = MetricsServer(first.stats, MetricsConfig(port=0, sample_interval=0.02))
    await server.start()
    second = None
    try:
        first.execute("INSERT INTO users (chat_id, name) VALUES (1, 'a')")
        await first.flush()
        # the first writer freezes before its next manifest write (a lease renewal, say); its lease runs
        # out and a newcomer claims the storage; then the first one resumes
        gate = faults.gate("replace_slot", "before")
        first.execute("INSERT INTO users (chat_id, name) VALUES (2, 'b')")
        second = await open_store(storage, Faults(), "bot-2", takeover_wait=5.0)
        gate.open()
        first.execute("INSERT INTO users (chat_id, name) VALUES (3, 'c')")
        async with aiohttp.ClientSession() as http:
            async def fenced():
                return "fenced" in (await get(http, server, "/readyz"))[1]
            await wait_for(fenced)
            status, body = await get(http, server, "/readyz")
            assert status == 503 and body.startswith("fenced")
            _, text = await get(http, server, "/metrics")
            assert metric(text, "tgsnap_fenced") == 1 and metric(text, "tgsnap_ready") == 0
    finally:
        await server.stop()
        await first.abandon()
        if second is not None:
            await second.abandon()


async def test_verification_results_reach_readyz_and_metrics():
    store = await open_store(MemoryStorage(), Faults())
    server = MetricsServer(store.stats, MetricsConfig(port=0))
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            server.record_verification(Verification(ok=True, at=1234.5, seq=3))
            _, text = await get(http, server, "/metrics")
            assert metric(text, "tgsnap_last_verified_restore_timestamp_seconds") == 1234.5
            assert metric(text, "tgsnap_last_verification_ok") == 1
            server.record_verification(Verification(ok=False, at=1300.0, seq=4, detail="digest differs"))
            status, body = await get(http, server, "/readyz")
            assert status == 503 and "self-verification failed at seq 4: digest differs" in body
            _, text = await get(http, server, "/metrics")
            assert metric(text, "tgsnap_last_verified_restore_timestamp_seconds") == 1234.5  # the last good one
            assert metric(text, "tgsnap_last_verification_ok") == 0
    finally:
        await server.stop()
        await store.abandon()


async def test_the_heartbeat_is_pinged_only_while_ready():
    pings: list[float] = []

    async def ping(_request):
        pings.append(time.monotonic())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/ping", ping)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    storage, faults = MemoryStorage(), Faults()
    store = await open_store(storage, faults)
    server = MetricsServer(store.stats, MetricsConfig(port=0, max_lag=0.2, sample_interval=0.02,
                                                      heartbeat_url=f"http://127.0.0.1:{port}/ping",
                                                      heartbeat_interval=0.05))
    await server.start()
    try:
        async def pinged():
            return len(pings) >= 2
        await wait_for(pinged)
        faults.put_fail = 10**6
        store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'a')")

        async def unready():
            return bool(server.problems(store.stats()))
        await wait_for(unready)
        await asyncio.sleep(0.1)
        silent_from = len(pings)
        await asyncio.sleep(0.4)
        assert len(pings) == silent_from  # not ready: no heartbeat, so the external monitor alarms
        faults.put_fail = 0

        async def again():
            return len(pings) > silent_from
        await wait_for(again)
    finally:
        await server.stop()
        await store.abandon()
        await runner.cleanup()


@pytest.mark.parametrize("text", ["9464", "localhost", "127.0.0.1:http", "127.0.0.1:70000", ":9464"])
def test_a_bad_address_is_a_configuration_error_naming_the_setting(text):
    with pytest.raises(ConfigError, match="TGSNAP_METRICS_ADDR"):
        parse_addr(text)


def test_addresses():
    assert parse_addr("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_addr("[::1]:0") == ("::1", 0)


async def test_a_port_in_use_is_a_configuration_error():
    store = await open_store(MemoryStorage(), Faults())
    a = MetricsServer(store.stats, MetricsConfig(port=0))
    host, port = await a.start()
    try:
        with pytest.raises(ConfigError, match="cannot serve metrics"):
            await MetricsServer(store.stats, MetricsConfig(host=host, port=port)).start()
    finally:
        await a.stop()
        await store.abandon()


async def test_only_a_scrape_counts_rows():
    """Counting rows scans every table on the event loop: the once-a-second sampler and /readyz (probed
    every few seconds) ask for stats without them; only /metrics, scraped far less often, counts."""
    store = await open_store(MemoryStorage(), Faults())
    store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'Анна'), (2, 'Bob')")
    calls: list[bool] = []

    def stats(*, rows: bool = True):
        calls.append(rows)
        return store.stats(rows=rows)

    server = MetricsServer(stats, MetricsConfig(port=0, sample_interval=0.02))
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            await asyncio.sleep(0.1)
            assert (await get(http, server, "/readyz"))[0] == 200
            assert calls and not any(calls)  # sampler and readiness: never counted
            _, text = await get(http, server, "/metrics")
            assert 'tgsnap_rows{table="users"} 2.0' in text
            assert calls.count(True) == 1
    finally:
        await server.stop()
        await store.close()
    assert store.stats(rows=False).rows == {}
