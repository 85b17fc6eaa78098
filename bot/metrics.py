"""Health and metrics over HTTP: `/healthz`, `/readyz` and Prometheus `/metrics`, fed from `Store.stats()`.

`MetricsServer(store.stats, MetricsConfig(...))` serves on one address (127.0.0.1:9464 style; bind to a
public interface only behind something that authenticates), separate from the bot's own traffic:

- `/healthz`: 200 while the process answers at all (its event loop runs). Liveness only: restarting a
  fenced bot does not help it (its successor holds the storage), so fencing is a readiness matter.
- `/readyz`: 200 when the store can acknowledge writes; 503 with one reason per line when it is fenced
  (another writer took the storage), closed, when the lag (age of the oldest write not yet durable)
  exceeds `max_lag`, or when the last self-verification (restore of the storage, compared with the live
  state) failed. Load balancers and orchestrators take a 503 out of rotation.
- `/metrics`: the Prometheus text format, computed at scrape time from one `stats()` call (a stale
  sample can never be served): `tgsnap_lag_seconds`, `tgsnap_last_durable_timestamp_seconds`,
  `tgsnap_bytes_shipped_total`, `tgsnap_deltas_shipped_total`, `tgsnap_flush_errors_total`,
  `tgsnap_budget_wait_seconds_total` / `_flood_pauses_total` / `_refusals_total` (Telegram rate budget),
  `tgsnap_snapshot_age_seconds`, `tgsnap_snapshot_size_bytes`, `tgsnap_rows{table}`,
  `tgsnap_dirty_rows`, `tgsnap_last_seq`, `tgsnap_epoch`, `tgsnap_fenced`, `tgsnap_ready`, and
  `tgsnap_last_verified_restore_timestamp_seconds` (0 until a self-verification passed).

A sampler task looks at the stats every `sample_interval` seconds: it counts flush errors (each time the
store goes from healthy to failing, or the error changes) when the store does not count them itself, and
pings `heartbeat_url` (an HTTP GET, e.g. a dead man's switch such as healthchecks.io) only while ready, so
the absence of pings is the alarm: a bot that hangs, is fenced or falls behind stops pinging.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from core.stats import StoreStats
from snapshot.errors import ConfigError

log = logging.getLogger("tgsnap.metrics")


def parse_addr(text: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 as [::1]:PORT); ConfigError naming TGSNAP_METRICS_ADDR / --metrics-addr otherwise."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"metrics address {text!r} is not HOST:PORT (e.g. 127.0.0.1:9464): "
                          "set --metrics-addr / TGSNAP_METRICS_ADDR")
    return host, int(port)


@dataclass
class Verification:
    """The outcome of one self-verification (restore of the storage compared with the live state)."""

    ok: bool
    at: float
    seq: int
    detail: str = ""


@dataclass
class MetricsConfig:
    host: str = "127.0.0.1"
    port: int = 9464
    #: /readyz fails when the oldest write not yet durable is older than this, seconds.
    max_lag: float = 60.0
    heartbeat_url: str | None = None
    heartbeat_interval: float = 60.0
    sample_interval: float = 1.0


@dataclass
class _Counts:
    flush_errors: int = 0
    last_error: str | None = None
    first_seq: int | None = None
    heartbeats: int = 0
    heartbeat_failures: int = 0
    last_heartbeat: float = field(default=0.0)


def budget_stats() -> tuple[float, int, int]:
    """(seconds waited, flood pauses, refusals) over every Telegram rate budget in this process."""
    try:
        from snapshot.backends import telegram_budget
    except ImportError:  # a build without the Telegram backends
        return 0.0, 0, 0
    budgets = list(getattr(telegram_budget, "_SHARED", {}).values())  # the process-wide (bot, chat) buckets
    return (sum(b.stats.waited for b in budgets), sum(b.stats.flood_pauses for b in budgets),
            sum(b.stats.refused for b in budgets))


class _StoreCollector(Collector):
    def __init__(self, server: MetricsServer):
        self.server = server

    def collect(self) -> Iterable[Any]:
        s = self.server.stats()
        counts = self.server.counts
        self.server.observe(s)

        def gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=float("nan") if value is None else float(value))

        yield gauge("tgsnap_lag_seconds", "Age of the oldest write not yet durable (0 when all are).", s.lag)
        yield gauge("tgsnap_last_durable_timestamp_seconds", "Unix time the last delta became durable.",
                    s.last_flush_at)
        yield CounterMetricFamily("tgsnap_bytes_shipped", "Bytes stored by this writer.", value=s.bytes_shipped)
        first = counts.first_seq if counts.first_seq is not None else s.last_seq
        yield CounterMetricFamily("tgsnap_deltas_shipped", "Deltas made durable since metrics started.",
                                  value=max(0, s.last_seq - first))
        errors = getattr(s, "flush_errors", None)
        yield CounterMetricFamily("tgsnap_flush_errors", "Failed uploads (episodes, when the store does not "
                                  "count them itself).", value=counts.flush_errors if errors is None else errors)
        waited, pauses, refused = budget_stats()
        yield CounterMetricFamily("tgsnap_budget_wait_seconds", "Seconds spent waiting for Telegram rate "
                                  "budget slots.", value=waited)
        yield CounterMetricFamily("tgsnap_budget_flood_pauses", "429 / FLOOD_WAIT answers that paused a chat.",
                                  value=pauses)
        yield CounterMetricFamily("tgsnap_budget_refusals", "Sends deferred because the rate budget was spent.",
                                  value=refused)
        yield gauge("tgsnap_snapshot_age_seconds", "Seconds since the current snapshot's cut.", s.snapshot_age)
        yield gauge("tgsnap_snapshot_size_bytes", "Stored size of the current snapshot.", s.snapshot_size)
        rows = GaugeMetricFamily("tgsnap_rows", "Application rows per table.", labels=["table"])
        for table, n in sorted(s.rows.items()):
            rows.add_metric([table], n)
        yield rows
        yield gauge("tgsnap_dirty_rows", "Rows changed since the last capture.", s.dirty_rows)
        yield gauge("tgsnap_last_seq", "Last delta sequence number durable in storage.", s.last_seq)
        yield gauge("tgsnap_epoch", "This writer's epoch.", s.epoch)
        yield gauge("tgsnap_fenced", "1 when another writer took the storage over.", int(s.fenced))
        yield gauge("tgsnap_ready", "1 when /readyz answers 200.", int(not self.server.problems(s)))
        v = self.server.last_verified
        yield gauge("tgsnap_last_verified_restore_timestamp_seconds",
                    "Unix time of the last self-verification that passed (0: none yet).", v.at if v else 0)
        last = self.server.verification
        yield gauge("tgsnap_last_verification_ok", "1 when the last self-verification passed, 0 when it failed, "
                    "NaN before the first.", None if last is None else int(last.ok))


class MetricsServer:
    """The HTTP endpoints over a `stats()` callable (`Store.stats`); `start()`, then `stop()`."""

    def __init__(self, stats: Callable[..., StoreStats], config: MetricsConfig | None = None):
        self.stats = stats
        self.config = config or MetricsConfig()
        self.counts = _Counts()
        #: the last self-verification, and the last one that passed (set by `record_verification`).
        self.verification: Verification | None = None
        self.last_verified: Verification | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_StoreCollector(self))
        self._runner: web.AppRunner | None = None
        self._sampler: asyncio.Task[None] | None = None
        self.address: tuple[str, int] | None = None

    # -- state --------------------------------------------------------------------------------------------

    def record_verification(self, result: Verification) -> None:
        self.verification = result
        if result.ok:
            self.last_verified = result

    def observe(self, s: StoreStats) -> None:
        """Count what polling can see: the first seq, and each start (or change) of a storage error."""
        c = self.counts
        if c.first_seq is None:
            c.first_seq = s.last_seq
        if s.last_error is not None and s.last_error != c.last_error:
            c.flush_errors += 1
        c.last_error = s.last_error

    def problems(self, s: StoreStats) -> list[str]:
        """Why the store is not ready (empty: ready)."""
        out = []
        if s.fenced:
            out.append("fenced: another writer took the storage over; this one acknowledges nothing")
        if s.closed:
            out.append("closed: the store is shut down")
        if s.lag > self.config.max_lag:
            out.append(f"lag {s.lag:.1f} s exceeds {self.config.max_lag:g} s"
                       + (f" (last error: {s.last_error})" if s.last_error else ""))
        if self.verification is not None and not self.verification.ok:
            out.append(f"self-verification failed at seq {self.verification.seq}: {self.verification.detail}")
        return out

    # -- HTTP -----------------------------------------------------------------------------------------------

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _request: web.Request) -> web.Response:
        s = self.stats(rows=False)  # probed every few seconds: no row counts (a scan of every table)
        self.observe(s)
        problems = self.problems(s)
        if problems:
            return web.Response(status=503, text="".join(p + "\n" for p in problems))
        return web.Response(text="ready\n")

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def start(self) -> tuple[str, int]:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise ConfigError(f"cannot serve metrics on {self.config.host}:{self.config.port}: {exc.strerror} "
                              "(--metrics-addr / TGSNAP_METRICS_ADDR)") from None
        server = site._server  # the bound socket tells the real port when 0 was asked for
        sock = server.sockets[0] if server is not None and server.sockets else None  # type: ignore[union-attr]
        self.address = sock.getsockname()[:2] if sock is not None else (self.config.host, self.config.port)
        self._sampler = asyncio.get_running_loop().create_task(self._sample(), name="tgsnap-metrics-sampler")
        return self.address

    async def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            await asyncio.gather(self._sampler, return_exceptions=True)
            self._sampler = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _sample(self) -> None:
        session: ClientSession | None = None
        try:
            while True:
                s = self.stats(rows=False)  # once a second: no row counts (a scan of every table)
                self.observe(s)
                now = time.time()
                if (self.config.heartbeat_url and not self.problems(s)
                        and now - self.counts.last_heartbeat >= self.config.heartbeat_interval):
                    session = session or ClientSession(timeout=ClientTimeout(total=10))
                    await self._heartbeat(session, now)
                await asyncio.sleep(self.config.sample_interval)
        finally:
            if session is not None:
                await session.close()

    async def _heartbeat(self, session: ClientSession, now: float) -> None:
        self.counts.last_heartbeat = now
        try:
            async with session.get(self.config.heartbeat_url) as resp:  # type: ignore[arg-type]
                if resp.status >= 400:
                    raise OSError(f"HTTP {resp.status}")
            self.counts.heartbeats += 1
        except (TimeoutError, OSError, ClientError) as exc:
            self.counts.heartbeat_failures += 1
            log.warning("tgsnap: heartbeat to the configured URL failed (%s)", exc)  # never log the URL: a secret
