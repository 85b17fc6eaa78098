"""The poller's window of handled-but-unconfirmed updates, and when it hurries the flush (`HurryRule`).

- Whatever the rule decides, an offset sent to Telegram never passes an update whose writes are not
  durable (hypothesis drives the handlers' finishing order, how long each hurried flush takes to land,
  and what the rate budget answers).
- Without a rate budget the window closes by itself (a hurried cut within `hurry_after`, 10 ms by
  default), long before
  the flush loop's own tick; with a budget that has no slot free, the poller never hurries except when
  the window is full (nothing new could be seen) or it is stopping.
- Over a real `Store` (30 s flush interval) every confirmed update survives a crash right after, and
  with a gathering rule (`hurry_after` 200 ms; the default is 10 ms) a burst of updates costs a few
  group-committed deltas, not one each.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from aiogram import Dispatcher
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.polling import POLL_LIMIT, HurryRule, Poller
from core import Store, StoreConfig
from snapshot.backends.memory import MemoryBackend, MemoryStorage


class HurriedStore:
    """Numbered writes; a flush cuts at the writes made when it starts and lands `delay` later. The flush
    loop's own tick never comes (a long interval): only hurries make anything durable."""

    def __init__(self, budget_wait: float | None, delays: list[float]) -> None:
        self.writes = 0
        self.level = 0
        self.budget_wait = budget_wait
        self.delays = delays
        self.hurries = 0
        self._flushing: asyncio.Task[None] | None = None
        self._again = False
        self.changed = asyncio.Condition()

    def write_ticket(self) -> int:
        return self.writes if self.writes > self.level else 0

    def hurry_wait(self) -> float | None:
        return self.budget_wait

    async def wait_durable(self, ticket: int, *, hurry: bool = False) -> None:
        if hurry:
            self.hurries += 1
            if self._flushing is None:
                self._flushing = asyncio.ensure_future(self._flush())
            else:
                self._again = True  # group commit: the next cut ships when this one lands
        async with self.changed:
            await self.changed.wait_for(lambda: self.level >= ticket)

    async def _flush(self) -> None:
        while True:
            cut = self.writes
            await asyncio.sleep(self.delays[self.hurries % len(self.delays)])
            async with self.changed:
                self.level = max(self.level, cut)
                self.changed.notify_all()
            if not self._again:
                break
            self._again = False
        self._flushing = None


class Telegram:
    """getUpdates with Telegram's offset rule over `total` updates; records each offset with the durable
    level at the moment it was sent."""

    def __init__(self, total: int, store: HurriedStore | Store, level) -> None:
        self.queue = list(range(1, total + 1))
        self.level = level
        self.sent: list[tuple[int, int]] = []
        self.polls = 0
        self.stale = 0
        self.frontier = 0

    def _confirm(self, offset: int | None) -> None:
        if offset:
            self.sent.append((offset, self.level()))
            self.queue = [u for u in self.queue if u >= offset]

    async def __call__(self, method: Any, request_timeout: int | None = None) -> list[dict[str, Any]]:
        self._confirm(method.offset)
        self.polls += 1
        await asyncio.sleep(0)
        batch = self.queue[: method.limit or 100]
        self.stale += sum(1 for u in batch if u < self.frontier)
        self.frontier = max([self.frontier, *(u + 1 for u in batch)])
        return [{"update_id": u} for u in batch]

    async def get_updates(self, offset: int, limit: int, **_: Any) -> list[Any]:  # the final confirm
        self._confirm(offset)
        return []


class Handlers(Dispatcher):
    """Each handler waits to be released, then writes once (`write`), recording its write's number."""

    def __init__(self, total: int, write) -> None:
        super().__init__()
        self.write = write
        self.release = {u: asyncio.Event() for u in range(1, total + 1)}
        self.ticket: dict[int, int] = {}

    async def feed_update(self, bot: Any, update: Any, **kwargs: Any) -> Any:
        await self.release[update.update_id].wait()
        self.ticket[update.update_id] = self.write(update.update_id)


async def _settle(rounds: int = 4) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0.001)


def _check_offsets(telegram: Telegram, handlers: Handlers) -> None:
    for offset, level in telegram.sent:
        # Every update below an offset sent was handled and its write was durable by then.
        assert all(u in handlers.ticket and handlers.ticket[u] <= level for u in range(1, offset)), (
            offset, level)


TOTAL = 130  # more than one poll's worth, so the window can fill


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.randoms(use_true_random=False),
       budget=st.sampled_from([None, 0.0, 30.0]),
       delays=st.lists(st.sampled_from([0.0, 0.001, 0.004, 0.02]), min_size=1, max_size=6),
       batch=st.integers(1, 40))
def test_no_update_is_confirmed_before_its_writes_are_durable_under_the_hurry_rule(order, budget, delays, batch):
    async def scenario() -> None:
        store = HurriedStore(budget, delays)

        def write(_update_id: int) -> int:
            store.writes += 1
            return store.writes

        telegram = Telegram(TOTAL, store, lambda: store.level)
        handlers = Handlers(TOTAL, write)
        poller = Poller(handlers, telegram, store, timeout=0, repoll=0.001,  # type: ignore[arg-type]
                        hurry_after=0.01, hurry_count=8)
        running = asyncio.create_task(poller.run())
        ids = list(range(1, TOTAL + 1))
        order.shuffle(ids)
        # Handlers finish in a random order, `batch` at a time; only seen updates can finish.
        while ids:
            ready = [u for u in ids if u in handlers.ticket or u <= (telegram.frontier - 1)]
            for u in ready[:batch]:
                handlers.release[u].set()
                ids.remove(u)
            await _settle()
            _check_offsets(telegram, handlers)
        for _ in range(200):
            await asyncio.sleep(0.005)
            if telegram.sent and telegram.sent[-1][0] == TOTAL + 1:
                break
        if budget is None:
            # The window closed by hurries alone (no flush tick ever comes in this store).
            assert telegram.sent[-1][0] == TOTAL + 1, (telegram.sent[-1], store.level, store.writes)
        elif budget == 0.0:
            # A free slot is spent only for half a window: what is left waits for the flush loop's tick.
            assert store.writes - store.level < POLL_LIMIT // 2
        else:
            # A busy budget: no hurry but the forced ones (window full); and stopping flushes the rest.
            assert poller.hurry.hurried == 0
        poller.stop()
        await asyncio.wait_for(running, 5)
        _check_offsets(telegram, handlers)
        assert telegram.sent[-1][0] == TOTAL + 1  # all durable at stop: all confirmed
        while store._flushing is not None:  # noqa: ASYNC110 - let the fake's last flush land
            await asyncio.sleep(0.005)

    asyncio.run(scenario())


async def test_a_busy_budget_is_not_spent_early_and_a_free_one_only_for_half_a_window():
    """On a budgeted backend the rule asks for a cut only with a slot free now and half a poll waiting."""
    store = HurriedStore(budget_wait=0.0, delays=[0.0])
    rule = HurryRule(store, limit=POLL_LIMIT)  # type: ignore[arg-type]
    for n in range(1, POLL_LIMIT // 2):
        store.writes = n
        rule.note()
        await asyncio.sleep(0)  # the hurry is a waiter the loop starts
    await asyncio.sleep(0.1)  # far beyond hurry_after: time alone does not spend budget
    assert store.hurries == 0
    store.budget_wait = 5.0  # no slot free: even half a window waits for the flush loop's own pace
    store.writes += 1
    rule.note()
    await asyncio.sleep(0)  # the hurry is a waiter the loop starts
    assert store.hurries == 0
    store.budget_wait = 0.0
    store.writes += 1
    rule.note()
    await asyncio.sleep(0)  # the hurry is a waiter the loop starts
    assert store.hurries == 1 and rule.hurried == 1
    store.budget_wait = 30.0
    store.writes += 1
    rule.note(forced=True)  # a full window: hurried anyway (the budget itself paces that flush)
    await asyncio.sleep(0)
    assert store.hurries == 2 and rule.forced == 1
    rule.close()


async def test_without_a_budget_the_default_rule_cuts_within_10_ms():
    store = HurriedStore(budget_wait=None, delays=[0.0] * 3)
    rule = HurryRule(store, limit=POLL_LIMIT)  # type: ignore[arg-type]
    assert rule.hurry_after == 0.01
    store.writes = 1
    rule.note()
    rule.note()  # a second handler within the 10 ms shares the cut
    await asyncio.sleep(0.05)
    assert store.hurries == 1
    rule.close()


async def test_without_a_budget_a_lone_update_is_cut_within_hurry_after():
    store = HurriedStore(budget_wait=None, delays=[0.0])
    rule = HurryRule(store, limit=POLL_LIMIT, hurry_after=0.05, hurry_count=16)  # type: ignore[arg-type]
    store.writes = 1
    rule.note()
    await asyncio.sleep(0)  # the hurry is a waiter the loop starts
    assert store.hurries == 0  # not at once: a batch gathers for up to hurry_after
    await asyncio.sleep(0.2)
    assert store.hurries == 1
    for n in range(2, 2 + 16):  # hurry_count waiting: at once
        store.writes = n
        rule.note()
        await asyncio.sleep(0)  # the hurry is a waiter the loop starts
    assert store.hurries == 2
    rule.close()


async def test_over_a_real_store_confirmed_updates_survive_a_crash_and_share_deltas():
    medium = MemoryStorage()
    store = await Store.open(MemoryBackend(medium), schema=["CREATE TABLE t (k INTEGER PRIMARY KEY)"],
                             config=StoreConfig(flush_interval=30.0, writer_id="w"))
    await store.flush()
    assert store.hurry_wait() is None  # memory: no rate budget
    total = 60

    def write(update_id: int) -> int:
        store.execute("INSERT INTO t VALUES (?)", (update_id,))
        return update_id

    telegram = Telegram(total, store, lambda: 0)
    handlers = Handlers(total, write)
    # a long gathering window (the default is 10 ms): updates finishing within 200 ms share a cut
    poller = Poller(handlers, telegram, store, timeout=0, repoll=0.001, hurry_after=0.2,  # type: ignore[arg-type]
                    hurry_count=24)
    seen_offsets: list[int] = []
    original = telegram._confirm

    def confirm(offset: int | None) -> None:
        if offset:
            seen_offsets.append(offset)
        original(offset)

    telegram._confirm = confirm  # type: ignore[method-assign]
    running = asyncio.create_task(poller.run())
    rng = random.Random(7)
    ids = list(range(1, total + 1))
    rng.shuffle(ids)
    for u in ids:
        while u > telegram.frontier - 1:  # noqa: ASYNC110 - the fake Telegram has no event to wait on
            await asyncio.sleep(0.001)
        handlers.release[u].set()
        await asyncio.sleep(rng.choice([0, 0, 0.002]))
    for _ in range(200):  # a 30 s interval: only the hurry rule can confirm them within the test
        await asyncio.sleep(0.01)
        if poller.offset == total + 1 and not poller.outstanding:
            break
    assert poller.offset == total + 1 and poller.confirmed == total
    confirmed_below = max(seen_offsets)
    hurries = poller.hurry.hurried + poller.hurry.forced
    assert 1 <= hurries < total // 4, hurries  # group commits, not one delta per update
    await store.abandon()  # a crash: no final flush, no release
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    again = await Store.open(MemoryBackend(medium), config=StoreConfig(writer_id="w"))
    try:
        kept = {k for (k,) in again.execute("SELECT k FROM t")}
    finally:
        await again.close()
    assert set(range(1, confirmed_below)) <= kept
