"""Fixtures for the clicker's tests: a real Store on the memory backend, and the whole bot in-process
against the emulator (real aiogram over HTTP, users acting through the emulator's control API)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.app import SCHEMA, Clicker
from bot.config import BotSettings
from bot.fsm_storage import StoreStorage
from bot.users import MIGRATIONS, PREVIOUS_SCHEMA
from core import Store, StoreConfig
from snapshot.backends.memory import MemoryBackend, MemoryStorage
from tools.emulator.app import Demo, Emulator
from tools.emulator.testing import running_emulator
from tools.loadgen.control import Control, Said


@pytest.fixture
async def medium() -> MemoryStorage:
    """The durable medium: outlives every store opened on it, so a test can restart a store. It starts as
    the previous release left it (its schema, schema version 0), so every store opened on it migrates."""
    medium = MemoryStorage()
    previous = await Store.open(MemoryBackend(medium), schema=PREVIOUS_SCHEMA + StoreStorage.SCHEMA,
                                config=StoreConfig(flush_interval=0.05, writer_id="the-clicker"))
    await previous.close()
    return medium


@pytest.fixture
async def open_store(medium: MemoryStorage) -> AsyncIterator[Callable[..., Awaitable[Store]]]:
    """Opens stores on the shared medium; any a test leaves open is abandoned (as by a crash) at the end."""
    opened: list[Store] = []

    async def opener(schema: list[str] | None = None) -> Store:
        store = await Store.open(MemoryBackend(medium), schema=SCHEMA if schema is None else schema,
                                 config=StoreConfig(flush_interval=0.05, writer_id="the-clicker"),
                                 migrations=MIGRATIONS)
        opened.append(store)
        return store

    yield opener
    for s in opened:
        if not s.stats().closed:
            await s.abandon()


@pytest.fixture
async def store(open_store) -> AsyncIterator[Store]:
    s = await open_store()
    yield s
    await s.close()


@dataclass
class World:
    """The running clicker and the means to talk to it as users."""

    emu: Emulator
    demo: Demo
    control: Control
    data_dir: Path
    clicker: Clicker | None = None

    @property
    def admin_id(self) -> int:
        return self.demo.user_id

    async def user(self, first_name: str) -> int:
        return await self.control.create_user(first_name)

    async def say(self, user_id: int, text: str, *, expect: int = 1, wait: float = 5.0) -> Said:
        return await self.control.say(user_id, self.demo.bot_username, text, wait=wait, expect=expect)

    async def reply(self, user_id: int, text: str) -> str:
        """The bot's one answer to `text` (fails the test on silence)."""
        said = await self.say(user_id, text)
        assert said.replies, f"no reply to {text!r}"
        return said.replies[0]

    def settings(self, flush_interval: float = 0.2) -> BotSettings:
        values = {
            "TGSNAP_BOT_TOKEN": self.demo.bot_token,
            "TGSNAP_BOT_API_URL": self.emu.bot_api_url,
            "TGSNAP_STORAGE_MODE": "local",
            "TGSNAP_STORAGE_DIR": str(self.data_dir / "storage"),
        }
        return BotSettings(values=values, admin_ids=frozenset({self.admin_id}), flush_interval=flush_interval)

    async def start(self, flush_interval: float = 0.2, **kwargs) -> Clicker:
        settings = self.settings(flush_interval)
        self.clicker = await Clicker.start(settings, settings.storage_settings(), **kwargs)
        return self.clicker

    async def stop(self) -> None:
        if self.clicker is not None:
            await self.clicker.stop()
            self.clicker = None


@pytest.fixture
async def world(tmp_path) -> AsyncIterator[World]:
    """The clicker running in-process against an emulator without flood control (tests need no pacing)."""
    async with running_emulator(tmp_path / "tg", rate_limits=False) as emu:
        async with Control(emu.control_url) as control:
            w = World(emu=emu, demo=emu.demo(), control=control, data_dir=tmp_path)
            await w.start()
            try:
                yield w
            finally:
                await w.stop()
