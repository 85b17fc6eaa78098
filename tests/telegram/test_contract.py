"""Both Telegram backends pass the same backend contract as the local directory, against the emulator."""

from __future__ import annotations

import pytest

from snapshot.backends.telegram_budget import ChatBudget
from tests.snapshot.backend_contract import BackendContract
from tests.telegram.conftest import UNLIMITED, botapi, mtproto


class TestBotApiContract(BackendContract):
    @pytest.fixture
    def backend_factory(self, emulator, demo):
        budget = ChatBudget(UNLIMITED)
        return lambda: botapi(emulator, demo, budget=budget).open()


class TestMTProtoContract(BackendContract):
    large_size = 12 * 1024 * 1024 + 7  # over 10 MB: exercises upload.saveBigFilePart

    @pytest.fixture
    def backend_factory(self, emulator, demo):
        budget = ChatBudget(UNLIMITED)
        return lambda: mtproto(emulator, demo, budget=budget).open()
