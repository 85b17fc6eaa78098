"""The clicker's life cycle: restore, serve, stop cleanly.

    clicker = await Clicker.start(bot_settings, storage_settings)   # restore, then poll
    ...
    await clicker.stop()   # stop taking updates, finish handlers, final flush, hand the lease over

`serve()` wraps that for `python -m bot`: SIGTERM and SIGINT trigger `stop()` and the process exits 0.
A crash needs nothing special: the next start restores the last flushed state, and Telegram delivers
again the updates the dead process had not confirmed (a click already counted is not counted twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterable

from aiogram import Bot, Dispatcher, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramAPIError
from aiogram.types import BotCommand

from bot import texts
from bot.aiogram_costs import freeze_startup_objects
from bot.config import BotSettings
from bot.fsm_storage import StoreStorage
from bot.handlers import routers
from bot.polling import Poller
from bot.retry import RetryAfter
from bot.takeover import open_store
from bot.users import MIGRATIONS, Users
from bot.users import SCHEMA as USERS_SCHEMA
from bot.webhook import DurableWebhook, derive_secret
from core import Store
from snapshot.backend import Backend
from snapshot.errors import ConfigError, NoStorage
from snapshot.settings import StorageSettings

log = logging.getLogger(__name__)

SCHEMA = USERS_SCHEMA + StoreStorage.SCHEMA

#: a graceful stop (SIGTERM) finishes within this: Heroku, Docker and Kubernetes send SIGKILL after 30 s
#: by default. What cannot be made durable in time stays unconfirmed in Telegram, not lost.
GRACE = 28.0
#: how long a graceful stop waits for running handlers (and their durability) before it flushes anyway.
DRAIN_TIMEOUT = 20.0


async def open_backend(settings: StorageSettings, *, create_dir: bool = True) -> Backend:
    """The storage backend `settings` describe, opened and checked.

    `create_dir=False`: a local storage directory must exist already (NoStorage, exit 5, if not): a typo
    in --storage-dir would otherwise start an empty bot beside the real state."""
    from snapshot.open import open_backend as factory  # imports Telethon only when needed

    if settings.mode == "local" and settings.local_dir is not None:
        where = settings.local_dir
        if where.exists() and not where.is_dir():
            raise ConfigError(f"storage directory {where} is not a directory (--storage-dir / TGSNAP_STORAGE_DIR "
                              "names a file)")
        if not where.exists() and not create_dir:
            raise NoStorage(f"storage directory {where} does not exist: check --storage-dir / TGSNAP_STORAGE_DIR, "
                            f"or create it (mkdir -p {where}) to start a new storage there")
    return await factory(settings)


class RestoreProgress:
    """Logs restore progress: each stage's start and end, and in between at most every few seconds."""

    def __init__(self, interval: float = 3.0):
        self.interval = interval
        self._stage: str | None = None
        self._last = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        finished = total > 0 and done >= total
        if stage == self._stage and not finished and now - self._last < self.interval:
            return
        self._stage, self._last = stage, now
        log.info("restore: %s %d/%d", stage, done, total) if total else log.info("restore: %s %d", stage, done)


def build_dispatcher(store: Store, admin_ids: Iterable[int], storage_description: str,
                     extra_routers: Iterable[Router] = ()) -> Dispatcher:
    """The clicker's dispatcher: FSM state in the store, the store's tables reachable from handlers."""
    dispatcher = Dispatcher(storage=StoreStorage(store))
    dispatcher["store"] = store
    dispatcher["users"] = Users(store)
    dispatcher["storage_description"] = storage_description
    dispatcher.include_routers(*extra_routers, *routers(admin_ids))
    return dispatcher


def make_bot(token: str, api_url: str | None) -> Bot:
    from aiogram.methods import DeleteWebhook, GetMe, GetUpdates, SendMessage, SetWebhook

    from bot.aiogram_costs import keep_response_types

    keep_response_types(SendMessage, GetUpdates, GetMe, SetWebhook, DeleteWebhook)  # per-answer cost: see there
    session = AiohttpSession(api=TelegramAPIServer.from_base(api_url)) if api_url else AiohttpSession()
    session.middleware(RetryAfter())
    return Bot(token=token, session=session)  # no parse_mode: names are shown as typed, HTML included


class Clicker:
    """One running clicker: its store, bot, dispatcher and poller."""

    def __init__(self, store: Store, bot: Bot, dispatcher: Dispatcher, storage: StorageSettings,
                 backend: Backend):
        self.store = store
        self.backend = backend
        self.bot = bot
        self.dispatcher = dispatcher
        self.storage = storage
        self.poller = Poller(dispatcher, bot, store)
        #: set in webhook mode: updates come from Telegram's POSTs instead of the poller.
        self.webhook: DurableWebhook | None = None
        self._polling: asyncio.Task[None] | None = None
        self._stopped = False

    @classmethod
    async def start(cls, settings: BotSettings, storage: StorageSettings, *,
                    extra_routers: Iterable[Router] = ()) -> Clicker:
        """Restore the store from storage, then start polling in the background."""
        token = storage.bot_token
        assert token, "storage settings carry the bot token"
        bot = make_bot(token, storage.bot_api_url)
        try:
            me = await bot.get_me()  # a wrong token fails here, before the storage is touched
        except BaseException:
            await bot.session.close()
            raise
        log.info("bot @%s (id %d); storage: %s", me.username, me.id, storage.describe())
        try:
            backend = await open_backend(storage, create_dir=settings.create_storage_dir)
        except BaseException:
            await bot.session.close()
            raise
        started = time.monotonic()
        try:
            store = await open_store(backend, SCHEMA, settings.store_config(storage), progress=RestoreProgress(),
                                     migrations=MIGRATIONS)
        except BaseException:
            await backend.close()
            await bot.session.close()
            raise
        stats = store.stats()
        log.info("restored %s in %.2f s (epoch %d)", _rows(stats.rows), time.monotonic() - started, stats.epoch)
        dispatcher = build_dispatcher(store, settings.admin_ids, storage.describe(), extra_routers)
        clicker = cls(store, bot, dispatcher, storage, backend)
        await _advertise_commands(bot)
        await dispatcher.emit_startup(bot=bot)
        if settings.webhook_url:
            # Set only now, after the storage is ours: a predecessor deletes its webhook before releasing
            # the storage, so in a deploy overlap the newcomer's setWebhook comes last and stays.
            clicker.webhook = DurableWebhook(
                dispatcher, bot, store, url=settings.webhook_url,
                secret_token=settings.webhook_secret or derive_secret(token), host=settings.webhook_host,
                port=settings.webhook_port, max_connections=settings.webhook_max_connections)
            try:
                await clicker.webhook.start()  # a port in use or a refused setWebhook fails here
            except BaseException:
                await clicker.webhook.close_server()
                await store.close()
                await backend.close()
                await bot.session.close()
                raise
            clicker._polling = asyncio.create_task(clicker.webhook.run(drain=DRAIN_TIMEOUT), name="clicker-webhook")
        else:
            clicker._polling = asyncio.create_task(clicker.poller.run(), name="clicker-polling")
        return clicker

    def _stop_receiving(self) -> None:
        if self.webhook is not None:
            self.webhook.stop()
        else:
            self.poller.stop()

    async def abandon(self) -> None:
        """Stop without a final flush or hand-over: for a writer that was fenced (its writes are refused)."""
        self._stopped = True
        self._stop_receiving()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self.polling), DRAIN_TIMEOUT)
        with contextlib.suppress(Exception):
            await self.store.close()
        await self.backend.close()
        await self.bot.session.close()

    @property
    def polling(self) -> asyncio.Task[None]:
        assert self._polling is not None
        return self._polling

    async def stop(self) -> None:
        """Stop taking updates, let running handlers finish, flush everything and hand the storage over."""
        if self._stopped:
            return
        self._stopped = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GRACE
        self._stop_receiving()
        try:
            await asyncio.wait_for(asyncio.shield(self.polling), DRAIN_TIMEOUT + 1.0)
        except TimeoutError:
            log.warning("handlers still running after %.0f s; flushing without them", DRAIN_TIMEOUT)
            self.polling.cancel()
        except Exception:
            log.exception("polling failed")
        try:
            await self.dispatcher.emit_shutdown(bot=self.bot)
        finally:
            try:
                # The final flush, then the lease is released for a successor. Bounded: rows it could
                # not ship belong to updates that were never confirmed, so Telegram sends them again.
                await self.store.close(timeout=max(1.0, deadline - loop.time()))
                log.info("final flush done; storage handed over")
            except TimeoutError:
                log.error("stopped before everything was durable; the updates behind it stay unconfirmed "
                          "in Telegram and are handled again by the next start")
            finally:
                await self.backend.close()
                await self.bot.session.close()


async def _advertise_commands(bot: Bot) -> None:
    try:
        await bot.set_my_commands([BotCommand(command="start", description=texts.START_DESCRIPTION)])
    except TelegramAPIError as exc:  # a menu is a nicety; never a reason not to serve
        log.warning("could not set the command menu: %s", exc)


def _rows(rows: dict[str, int]) -> str:
    return ", ".join(f"{count} {table}" for table, count in sorted(rows.items())) or "an empty store"


async def serve(settings: BotSettings, storage: StorageSettings, *,
                on_ready: Callable[[Clicker], None] | None = None, stop: asyncio.Event | None = None,
                freeze: bool = False) -> int:
    """Run until SIGTERM/SIGINT or `stop` is set (exit 0), until another writer takes the storage over
    (exit 3), or until polling fails for good, e.g. a revoked token (exit 1).

    `freeze`: once up, keep every start-up object out of later garbage collections (bot/aiogram_costs.py);
    a decision for the whole process, so only its entry point (`python -m bot`) makes it."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Installed before the restore: a signal during it stops the bot cleanly once it is up.
        loop.add_signal_handler(sig, stop.set)
    metrics_addr, verify_every = settings.metrics_addr, settings.self_verify_interval  # bad values: exit 2 now
    observers: list[Callable[[], Awaitable[None]]] = []
    try:
        clicker = await Clicker.start(settings, storage)
        observers = await _start_observers(clicker, storage, metrics_addr, verify_every)
        fenced = asyncio.create_task(_wait_fenced(clicker.store))
        stopping = asyncio.create_task(stop.wait())
        if freeze:
            log.info("%d start-up objects kept out of garbage collection", freeze_startup_objects())
        log.info("serving; stop with Ctrl+C or SIGTERM")
        if on_ready is not None:
            on_ready(clicker)
        try:
            await asyncio.wait({clicker.polling, fenced, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            fenced.cancel()
            stopping.cancel()
        if fenced.done() and not fenced.cancelled():
            log.error("another process took the storage over; this one stops writing and exits")
            await clicker.abandon()
            return 3
        failed = clicker.polling.done() and not stop.is_set()
        if failed:
            log.error("polling stopped: %s", clicker.polling.exception())
        log.info("stopping")
        await clicker.stop()
        return 1 if failed else 0
    finally:
        for stop_observer in observers:
            await stop_observer()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _start_observers(clicker: Clicker, storage: StorageSettings, metrics_addr: tuple[str, int] | None,
                           verify_every: float) -> list[Callable[[], Awaitable[None]]]:
    """The metrics server and the self-verifier, when configured; returns how to stop them."""
    from bot.metrics import MetricsConfig, MetricsServer, Verification
    from core.selfcheck import SelfCheck, SelfVerifier

    stops: list[Callable[[], Awaitable[None]]] = []
    server = None
    if metrics_addr is not None:
        server = MetricsServer(clicker.store.stats, MetricsConfig(host=metrics_addr[0], port=metrics_addr[1]))
        host, port = await server.start()
        stops.append(server.stop)
        log.info("health and metrics on http://%s:%d/ (/healthz, /readyz, /metrics)", host, port)
    if verify_every > 0:
        def record(result: SelfCheck) -> None:
            if server is not None and result.ok is not None:
                server.record_verification(Verification(result.ok, result.at, result.seq, result.detail))

        verifier = SelfVerifier(clicker.store, clicker.backend, storage.encryption_key, interval=verify_every,
                                on_result=record)
        verifier.start()
        stops.insert(0, verifier.stop)
    return stops


async def _wait_fenced(store: Store, every: float = 1.0) -> None:
    """Return once the store finds another writer took over (core then refuses every write)."""
    while True:
        # Store.fenced, not stats(): stats() counts every table's rows (a full scan of 1 M users, milliseconds
        # on the event loop, every second)
        if store.fenced:
            return
        await asyncio.sleep(every)
