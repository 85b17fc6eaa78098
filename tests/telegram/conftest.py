"""Fixtures: an in-process emulator (both fronts) and factories for the two Telegram backends on its demo
storage channel. Each factory call returns a *new* backend object on the *same* channel (a reopen)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from snapshot.backends.botapi import BotApiBackend
from snapshot.backends.mtproto import MTProtoBackend
from snapshot.backends.telegram_budget import BudgetConfig, ChatBudget
from snapshot.backends.telegram_retry import RetryPolicy
from tools.emulator.testing import Demo, Emulator, running_emulator

#: a budget that never gets in the way, for tests about something else (the emulator's limits are off too).
UNLIMITED = BudgetConfig(per_minute=600_000, burst=10_000, max_wait=30,
                         edits_per_minute=600_000, edit_burst=10_000)
#: fail fast in tests: short per-call timeout, quick backoff.
QUICK = RetryPolicy(attempts=4, backoff=0.05, timeout=10, max_wait=30)

Factory = Callable[[], Awaitable[object]]


@pytest.fixture
async def emulator(tmp_path):
    async with running_emulator(tmp_path / "tg", mtproto=True, rate_limits=False) as emu:
        assert emu.mtproto_port is not None, emu.mtproto_error
        yield emu


@pytest.fixture
def demo(emulator: Emulator) -> Demo:
    return emulator.demo()


def botapi(emu: Emulator, demo: Demo, *, budget: ChatBudget | BudgetConfig | None = None,
           policy: RetryPolicy = QUICK, chat: int | str | None = None, token: str | None = None) -> BotApiBackend:
    return BotApiBackend(token or demo.bot_token, demo.storage_chat_id if chat is None else chat,
                         api_url=emu.bot_api_url, budget=budget or ChatBudget(UNLIMITED), policy=policy)


def mtproto(emu: Emulator, demo: Demo, *, budget: ChatBudget | BudgetConfig | None = None,
            policy: RetryPolicy = QUICK, chat: int | str | None = None, connections: int = 3,
            session: str | None = None, token: str | None = None, **kw) -> MTProtoBackend:
    return MTProtoBackend(bot_token=token or demo.bot_token, chat=demo.storage_chat_id if chat is None else chat,
                          session=session or demo.session_string, connections=connections,
                          budget=budget or ChatBudget(UNLIMITED), policy=policy, **kw)
