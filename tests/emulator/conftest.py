from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tools.emulator.app import Demo, Emulator
from tools.emulator.testing import aiogram_bot, running_emulator


@pytest.fixture
async def emu(tmp_path) -> AsyncIterator[Emulator]:
    """An emulator with Telegram's default limits, Bot API only."""
    async with running_emulator(tmp_path / "tg") as emulator:
        yield emulator


@pytest.fixture
def demo(emu: Emulator) -> Demo:
    return emu.demo()


@pytest.fixture
async def bot(emu: Emulator, demo: Demo):
    async with aiogram_bot(emu, demo.bot_token) as b:
        yield b
