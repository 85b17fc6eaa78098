"""The per-chat rate budget as a specification: never more than burst + rate × window, FIFO, no loss."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapshot.backends.telegram_budget import BudgetConfig, ChatBudget, shared_budget
from snapshot.errors import BackendError, ConfigError


class FakeTime:
    """A clock that only moves when someone sleeps; sleeping yields to the loop like asyncio.sleep."""

    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


def budget(t: FakeTime, **kw) -> ChatBudget:
    return ChatBudget(BudgetConfig(**kw), clock=t.clock, sleep=t.sleep)


def max_in_window(stamps: list[float], window: float) -> int:
    stamps = sorted(stamps)
    best, lo = 0, 0
    for hi, s in enumerate(stamps):
        while s - stamps[lo] >= window - 1e-9:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


@settings(max_examples=60, deadline=None)
@given(per_minute=st.floats(1, 120), burst=st.integers(1, 6), calls=st.integers(1, 40),
       gaps=st.lists(st.floats(0, 10), min_size=40, max_size=40))
def test_grants_never_exceed_burst_plus_rate(per_minute, burst, calls, gaps):
    t = FakeTime()
    b = budget(t, per_minute=per_minute, burst=burst, max_wait=10_000)
    stamps: list[float] = []

    async def run():
        for i in range(calls):
            t.now += gaps[i]
            await b.acquire()
            stamps.append(t.now)

    asyncio.run(run())
    assert len(stamps) == calls  # nobody is dropped
    interval = 60.0 / per_minute
    for window in (interval, 10 * interval, 60.0):
        # GCRA: at most `burst` at once, then one per interval
        assert max_in_window(stamps, window) <= burst + int(window / interval + 1e-9)


async def test_a_burst_then_the_sustained_rate():
    t = FakeTime()
    b = budget(t, per_minute=18, burst=3)
    start = t.now
    stamps = []
    for _ in range(6):
        await b.acquire()
        stamps.append(round(t.now - start, 6))
    assert stamps == [0, 0, 0, pytest.approx(10 / 3), pytest.approx(20 / 3), pytest.approx(10.0)]
    assert b.stats.granted == 6


async def test_waiters_are_served_in_arrival_order():
    t = FakeTime()
    b = budget(t, per_minute=60, burst=1)
    order: list[int] = []

    async def caller(i: int):
        await b.acquire()
        order.append(i)

    await asyncio.gather(*(caller(i) for i in range(8)))
    assert order == list(range(8))


async def test_a_flood_pause_holds_everyone_then_one_at_a_time():
    t = FakeTime()
    b = budget(t, per_minute=60, burst=5)
    await b.acquire()
    b.pause(30)
    assert b.next_slot_in() == pytest.approx(30)
    stamps = []
    for _ in range(3):
        await b.acquire()
        stamps.append(t.now - 1000.0)
    assert stamps[0] >= 30
    # after a pause the bucket restarts empty: no burst right after the pause
    assert stamps[1] - stamps[0] >= 1.0 - 1e-9 and stamps[2] - stamps[1] >= 1.0 - 1e-9
    assert b.stats.flood_pauses == 1


async def test_a_caller_that_would_wait_too_long_is_refused_with_retry_after():
    t = FakeTime()
    b = budget(t, per_minute=6, burst=1, max_wait=5)
    await b.acquire()  # the burst
    with pytest.raises(BackendError) as e:
        await b.acquire()  # next slot in 10 s > 5 s
    assert e.value.retryable and e.value.retry_after == pytest.approx(10)
    assert "rate budget" in str(e.value)
    assert b.stats.refused == 1
    # refusal reserved nothing: a patient caller gets the slot at 10 s
    await b.acquire(max_wait=60)
    assert t.now - 1000.0 == pytest.approx(10)


def test_bad_configuration_is_refused():
    for kw in ({"per_minute": 0}, {"burst": 0}, {"max_wait": -1}):
        with pytest.raises(ConfigError):
            BudgetConfig(**kw)


def test_one_budget_per_bot_and_chat_in_a_process():
    a = shared_budget(1, -100123)
    assert shared_budget(1, "-100123") is a
    assert shared_budget(2, -100123) is not a


# -- adaptive: slower after a flood answer, back gradually ---------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(floods=st.integers(1, 5), per_minute=st.floats(6, 60))
def test_each_flood_answer_slows_the_rate_down_to_a_floor_and_it_recovers_gradually(floods, per_minute):
    t = FakeTime()
    b = budget(t, per_minute=per_minute, burst=1, max_wait=10_000)
    for _ in range(floods):
        b.pause(1)
    expected = max(b.config.min_factor, 0.5 ** floods)
    assert b.factor == pytest.approx(expected)
    assert b.stats.slowest_factor == pytest.approx(expected)
    seen = [b.factor]
    for _ in range(20):  # recovery: one step per recovery_s, never a jump back to full speed
        t.now += b.config.recovery_s
        seen.append(b.factor)
    steps = [later - earlier for earlier, later in zip(seen, seen[1:], strict=False)]
    assert all(0 <= s <= b.config.recovery_step + 1e-9 for s in steps)
    assert seen[-1] == 1.0


def test_after_a_flood_grants_follow_the_slower_rate():
    t = FakeTime()
    b = budget(t, per_minute=20, burst=1, max_wait=10_000)
    stamps = []

    async def run():
        b.pause(5)  # one 429: the chat waits 5 s, then goes on at half the rate
        for _ in range(6):
            await b.acquire()
            stamps.append(t.now)

    asyncio.run(run())
    gaps = [later - earlier for earlier, later in zip(stamps, stamps[1:], strict=False)]
    assert stamps[0] >= 1005
    assert all(g >= 6.0 - 1e-9 for g in gaps)  # 60/20 = 3 s between slots before, 6 s now


def test_edits_of_one_message_have_their_own_bound():
    t = FakeTime()
    b = budget(t, per_minute=600, burst=50, max_wait=10_000, edits_per_minute=12, edit_burst=2)
    stamps = []

    async def run():
        for _ in range(14):
            await b.acquire(edit_of=42)
            stamps.append(t.now)
        await b.acquire(edit_of=43)  # another message is not held up by the first one's edits
        stamps.append(t.now)

    asyncio.run(run())
    assert max_in_window(stamps[:14], 60.0) <= 12 + 1
    assert stamps[-1] == stamps[-2]


def test_an_edit_that_would_wait_too_long_is_refused_with_retry_after():
    t = FakeTime()
    b = budget(t, per_minute=600, burst=50, max_wait=1, edits_per_minute=6, edit_burst=1)

    async def run():
        await b.acquire(edit_of=7)
        with pytest.raises(BackendError, match="edits of message 7") as e:
            await b.acquire(edit_of=7)
        assert e.value.retryable and e.value.retry_after == pytest.approx(10)

    asyncio.run(run())
