"""Storage written by tgsnap before envelope v2 and manifest format 3 still restores and continues.

The fixtures are bytes the old code wrote (tests/snapshot/fixtures/make_legacy.py says how): envelope
version 1 documents, a single `MANIFEST` (slot 0), manifest format 1 (a snapshot, listed deltas and
deltas only discovery finds) and format 2 (inline and packed deltas on a backend that cannot discover).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from snapshot.backends.local import MANIFEST_FILE, LocalDirBackend
from snapshot.envelope import read_header
from snapshot.manifest import decode_manifest
from snapshot.replica import Replica, ReplicaConfig
from snapshot.restore import plan, restore
from tests.snapshot.helpers import Live, state
from tests.snapshot.test_formats_doc import _reader

FIXTURES = Path(__file__).parent / "fixtures"
CFG = dict(part_size=2048, shard_size=4096)


class _NoDiscovery(LocalDirBackend):
    @property
    def info(self):
        return dataclasses.replace(super().info, can_discover=False)


def _copy(name: str, tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / name
    shutil.copytree(FIXTURES / name, root)
    expected = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    expected["rows"] = [tuple(r) for r in expected["rows"]]
    return root, expected


@pytest.mark.parametrize("name, backend_cls", [("legacy-f1", LocalDirBackend), ("legacy-f2", _NoDiscovery)])
async def test_old_storage_restores_and_continues(tmp_path, name, backend_cls):
    root, expected = _copy(name, tmp_path)
    raw = (root / MANIFEST_FILE).read_bytes()
    assert read_header(raw).version == 1 and decode_manifest(raw)[0].format == (1 if name.endswith("f1") else 2)

    got = await restore(backend_cls(root, fsync=False))
    assert got.seq == expected["seq"] and state(got.conn) == expected["rows"]
    conn, seq = _reader()["read"](str(root))  # the documented reader reads old storage too
    assert seq == expected["seq"] and state(conn) == expected["rows"]

    r = Replica(backend_cls(root, fsync=False), ReplicaConfig(**CFG))
    got = await r.acquire()  # f1's writer crashed long ago: its lease has expired
    assert got.seq == expected["seq"] and state(got.conn) == expected["rows"]
    assert r.slot == "MANIFEST.000000000001" and (root / MANIFEST_FILE).read_bytes() == raw  # slot 0 untouched
    live = Live(got.conn)
    live.set(900, clicks=1)
    assert await live.flush(r)
    await live.snapshot(r)
    live.set(901, clicks=2)
    assert await live.flush(r)
    await r.release()

    again = await restore(backend_cls(root, fsync=False))
    assert again.seq == expected["seq"] + 2 and state(again.conn) == live.rows()
    p = await plan(backend_cls(root, fsync=False))
    assert not p.forks and not p.foreign and p.manifest.format == 3
    conn, seq = _reader()["read"](str(root))
    assert seq == expected["seq"] + 2 and state(conn) == live.rows()
