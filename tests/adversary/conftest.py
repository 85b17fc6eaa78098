"""Fixtures of the adversary scenarios: the emulator of tests/telegram (both fronts) and one `Place` per
backend, which spawns writer processes (tests/adversary/writer.py) and restores afresh.

Writer processes on the Telegram backends cost seconds each (aiogram and Telethon imports), so the
default run (well under a minute) covers every scenario on the directory backend and one on MTProto;
`TGSNAP_ADVERSARY=telegram` adds every scenario on both Telegram backends, `TGSNAP_ADVERSARY=full` also
repeats the racy ones (`TGSNAP_ADVERSARY_ROUNDS`, default 5) and reads longer beside a live writer.
"""

from __future__ import annotations

import os

import pytest

from tests.adversary.procs import Place
from tests.telegram.conftest import demo, emulator  # noqa: F401 - fixtures reused

FULL = os.environ.get("TGSNAP_ADVERSARY") == "full"
TELEGRAM = FULL or os.environ.get("TGSNAP_ADVERSARY") == "telegram"
ROUNDS = int(os.environ.get("TGSNAP_ADVERSARY_ROUNDS", "5")) if FULL else 1


@pytest.fixture
def local(tmp_path) -> Place:
    return Place("local", tmp_path / "storage", None, None)


@pytest.fixture
def botapi(emulator, demo) -> Place:  # noqa: F811
    return Place("botapi", None, emulator, demo)


@pytest.fixture
def mtproto(emulator, demo) -> Place:  # noqa: F811
    return Place("mtproto", None, emulator, demo)


@pytest.fixture
def place(request) -> Place:
    return request.getfixturevalue(request.param)
