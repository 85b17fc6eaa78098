"""Every `tgsnap` / `python -m tools.*` example in docs/operations.md runs, and succeeds, against real
storage in ./data (a fresh copy per example, so `compact` does not change what `export --at-seq` sees)."""

from __future__ import annotations

import asyncio
import re
import shlex
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from snapshot.backends.local import LocalDirBackend
from snapshot.replica import Replica, ReplicaConfig
from tests.tools.chain import _changes
from tools import cli

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "operations.md"


def examples() -> list[str]:
    out = []
    for block in re.findall(r"```sh\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S):
        for line in block.splitlines():
            line = line.split("#")[0].strip()
            if line.startswith(("tgsnap ", "python -m tools")):
                out.append(line)
    return out


@pytest.fixture(scope="module")
def storage(tmp_path_factory) -> Path:
    """1300 deltas, one every 2 s from 2026-11-26 17:00 UTC (so --at-seq 1200 and --at-time 17:30 exist)."""
    path = tmp_path_factory.mktemp("ops") / "data"
    t0 = datetime(2026, 11, 26, 17, 0, tzinfo=UTC).timestamp()

    async def build():
        replica = Replica(LocalDirBackend(path, fsync=False), ReplicaConfig(snapshot_every_deltas=10**9),
                          writer_id="bot-1")
        await replica.acquire()
        for seq in range(1, 1301):
            await replica.write_delta(_changes(seq % 50 + 1, t0 + 2 * seq))
        await replica.release()

    asyncio.run(build())
    return path


def test_the_guide_has_examples_of_every_storage_command():
    used = {shlex.split(e)[1] if e.startswith("tgsnap ") else shlex.split(e)[2].removeprefix("tools.")
            for e in examples()}
    assert {"status", "verify", "compact", "export", "restore"} <= used


@pytest.mark.parametrize("example", examples())
def test_example_runs(example, storage, tmp_path, monkeypatch, capsys):
    shutil.copytree(storage, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    command = example.split(" | ")[0].split(" > ")[0]
    words = shlex.split(command)
    argv = words[1:] if words[0] == "tgsnap" else [words[2].removeprefix("tools."), *words[3:]]
    assert cli.main(argv) == 0, capsys.readouterr().err
