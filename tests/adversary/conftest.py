"""Fixtures of the adversary scenarios: the emulator of tests/telegram (both fronts) and one `Place` per
backend, which spawns writer processes (tests/adversary/writer.py) and restores afresh.

The default run covers each scenario on every backend it concerns but keeps the Telegram matrix small;
`TGSNAP_ADVERSARY=full` runs every combination and repeats the racy ones (`TGSNAP_ADVERSARY_ROUNDS`, 5).
"""

from __future__ import annotations

import os

import pytest

from tests.adversary.procs import Place
from tests.telegram.conftest import demo, emulator  # noqa: F401 - fixtures reused

FULL = os.environ.get("TGSNAP_ADVERSARY") == "full"
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
