"""`Store.write_ticket` / `Store.wait_durable`, and the poller's confirmation order.

- A ticket covers every write made before it; waiting forces no flush (the flush loop keeps its own
  interval, so confirmations cost no rate budget) unless `hurry`.
- The poller never sends Telegram an offset above an update whose writes are not durable, whatever
  order handlers finish and flushes land in (hypothesis drives both), and skips outstanding updates
  that Telegram returns again.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiogram import Dispatcher
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.polling import Poller
from core import Store, StoreConfig
from snapshot.backends.memory import MemoryBackend, MemoryStorage

SCHEMA = ["CREATE TABLE t (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)"]


async def _store(medium: MemoryStorage, interval: float) -> Store:
    return await Store.open(MemoryBackend(medium), schema=SCHEMA,
                            config=StoreConfig(flush_interval=interval, writer_id="w"))


async def test_ticket_zero_when_nothing_is_pending_and_waiting_forces_no_flush():
    medium = MemoryStorage()
    store = await _store(medium, interval=30.0)
    try:
        await store.flush()  # what opening wrote (the declared schema) is durable first
        assert store.write_ticket() == 0
        await asyncio.wait_for(store.wait_durable(0), 1)  # nothing pending: at once
        store.execute("INSERT INTO t VALUES (1, 1)")
        ticket = store.write_ticket()
        assert ticket > 0
        with pytest.raises(TimeoutError):  # a 30 s interval, no hurry: nothing ships meanwhile
            await asyncio.wait_for(store.wait_durable(ticket), 0.5)
        assert store.stats().dirty_rows == 1
        await asyncio.wait_for(store.wait_durable(ticket, hurry=True), 5)
        assert store.stats().dirty_rows == 0
        assert store.write_ticket() == 0
    finally:
        await store.abandon()
    # Durable means durable: a crash now keeps it.
    again = await _store(medium, interval=30.0)
    try:
        assert again.execute("SELECT v FROM t WHERE k = 1").fetchone() == (1,)
    finally:
        await again.close()


async def test_a_ticket_covers_writes_made_while_a_capture_is_in_flight():
    medium = MemoryStorage()
    store = await _store(medium, interval=0.05)
    try:
        store.execute("INSERT INTO t VALUES (1, 1)")
        first = store.write_ticket()
        store.execute("INSERT INTO t VALUES (2, 2)")
        second = store.write_ticket()
        assert second >= first
        await asyncio.wait_for(store.wait_durable(second), 5)
        assert store.stats().dirty_rows == 0 and store.stats().in_flight_rows == 0
    finally:
        await store.close()


async def test_wait_durable_raises_when_the_store_stops_first():
    from core.errors import StoreClosed

    store = await _store(MemoryStorage(), interval=30.0)
    store.execute("INSERT INTO t VALUES (1, 1)")
    ticket = store.write_ticket()
    waiting = asyncio.ensure_future(store.wait_durable(ticket))
    await asyncio.sleep(0)
    await store.abandon()  # a crash: never durable
    with pytest.raises(StoreClosed):
        await asyncio.wait_for(waiting, 2)


# ---- the poller against a scripted Telegram and store ------------------------------------------


class FakeStore:
    """Captures numbered by writes; `level` is the highest durable capture (durability is monotonic: a
    durable capture means every earlier one is durable too, as in core)."""

    def __init__(self) -> None:
        self.writes = 0
        self.level = 0
        self.changed = asyncio.Condition()

    def write_ticket(self) -> int:
        return self.writes

    def hurry_wait(self) -> float | None:
        return None  # no rate budget

    async def wait_durable(self, ticket: int, *, hurry: bool = False) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.level >= ticket)

    async def advance(self, level: int) -> None:
        async with self.changed:
            self.level = max(self.level, level)
            self.changed.notify_all()


class FakeTelegram:
    """getUpdates with Telegram's offset rule; records every offset sent with the durable level then."""

    def __init__(self, total: int, store: FakeStore) -> None:
        self.queue = list(range(1, total + 1))
        self.store = store
        self.sent: list[tuple[int, int]] = []

    def _confirm(self, offset: int | None) -> None:
        if offset:
            self.sent.append((offset, self.store.level))
            self.queue = [u for u in self.queue if u >= offset]

    async def __call__(self, method: Any, request_timeout: int | None = None) -> list[dict[str, Any]]:
        self._confirm(method.offset)
        await asyncio.sleep(0)
        return [{"update_id": u} for u in self.queue[: method.limit or 100]]

    async def get_updates(self, offset: int, limit: int, **_: Any) -> list[Any]:  # the final confirm
        self._confirm(offset)
        return []


class Handlers(Dispatcher):
    """Each handler waits to be released (in the order the test draws), then writes once."""

    def __init__(self, store: FakeStore, total: int) -> None:
        super().__init__()
        self.store = store
        self.release = {u: asyncio.Event() for u in range(1, total + 1)}
        self.ticket: dict[int, int] = {}
        self.seen: list[int] = []

    async def feed_update(self, bot: Any, update: Any, **kwargs: Any) -> Any:
        self.seen.append(update.update_id)
        await self.release[update.update_id].wait()
        self.store.writes += 1
        self.ticket[update.update_id] = self.store.writes


TOTAL = 12


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.permutations(list(range(1, TOTAL + 1))), st.lists(st.booleans(), min_size=TOTAL, max_size=TOTAL))
def test_the_offset_never_passes_an_update_that_is_not_durable(order, flush_after):
    async def settle() -> None:
        for _ in range(6):
            await asyncio.sleep(0.001)

    async def scenario() -> None:
        store = FakeStore()
        telegram = FakeTelegram(TOTAL, store)
        dispatcher = Handlers(store, TOTAL)
        poller = Poller(dispatcher, telegram, store, timeout=0, repoll=0.001)  # type: ignore[arg-type]
        running = asyncio.create_task(poller.run())
        await settle()
        for update_id, flush in zip(order, flush_after, strict=True):  # handlers finish in a random order
            dispatcher.release[update_id].set()
            await settle()
            if flush:  # and a flush lands now and then
                await store.advance(store.writes)
                await settle()
        await store.advance(store.writes)
        await settle()
        poller.stop()
        await asyncio.wait_for(running, 5)
        for offset, level in telegram.sent:
            # Every update below an offset sent was handled and its writes were durable by then.
            assert all(u in dispatcher.ticket and dispatcher.ticket[u] <= level for u in range(1, offset)), (
                offset, level, dispatcher.ticket)
        assert dispatcher.seen == list(range(1, TOTAL + 1))  # each handed over once, in order
        assert telegram.sent[-1][0] == TOTAL + 1  # everything durable at the end: all confirmed

    asyncio.run(scenario())
