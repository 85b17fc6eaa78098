"""docs/formats.md is enough to write a reader: run the independent reader printed there."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from snapshot.backends.local import LocalDirBackend
from snapshot.manifest import decode_manifest
from snapshot.replica import Replica, ReplicaConfig
from tests.snapshot.helpers import Live, state

DOC = Path(__file__).resolve().parents[2] / "docs" / "formats.md"


def _reader() -> dict:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## A reader in", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(code, str(DOC), "exec"), scope)  # noqa: S102 - the documented reader, verbatim
    return scope


async def test_the_documented_reader_rebuilds_the_state(tmp_path):
    root = tmp_path / "store"
    r = Replica(LocalDirBackend(root, fsync=False), ReplicaConfig(part_size=2048, shard_size=4096))
    await r.acquire()
    live = Live()
    for i in range(200):
        live.set(i, clicks=i, name=f"имя {i} \x00 🎉")
    assert await live.flush(r)
    await live.snapshot(r)
    for i in range(5):
        live.set(i, clicks=-(2**63) if i == 0 else 1.5)
        live.delete(100 + i)
        assert await live.flush(r)  # found by the reader through discovery after last_ref
    conn, seq = _reader()["read"](str(root))
    assert seq == 6 and state(conn) == live.rows()


async def test_the_documented_reader_reads_a_chain_without_snapshot(tmp_path):
    root = tmp_path / "store"
    r = Replica(LocalDirBackend(root, fsync=False), ReplicaConfig())
    await r.acquire()
    live = Live()
    for i in range(3):
        live.set(i, clicks=i, name=None)
        assert await live.flush(r)
    conn, seq = _reader()["read"](str(root))
    assert seq == 3 and state(conn) == live.rows()


class _NoDiscovery(LocalDirBackend):
    """A local directory that pretends it cannot list documents, as the Bot API: inline and packed deltas."""

    @property
    def info(self):
        return dataclasses.replace(super().info, can_discover=False)


async def test_the_documented_reader_reads_inline_and_packed_deltas(tmp_path):
    root = tmp_path / "store"
    r = Replica(_NoDiscovery(root, fsync=False), ReplicaConfig(part_size=2048, shard_size=4096,
                                                               inline_delta_bytes=1232))
    await r.acquire()
    live = Live()
    for i in range(8):
        for k in range(i * 3, i * 3 + 3):
            live.set(k, clicks=i, name=f"имя {k}")
        assert await live.flush(r)
    m, _ = decode_manifest((root / r.slot).read_bytes())
    assert m.format == 3 and any(e.pack for e in m.deltas) and any(e.inline for e in m.deltas)
    conn, seq = _reader()["read"](str(root))
    assert seq == 8 and state(conn) == live.rows()


async def test_the_documented_reader_applies_only_complete_split_cuts(tmp_path):
    import os

    class Small(LocalDirBackend):
        @property
        def info(self):
            return dataclasses.replace(super().info, max_document_size=3000)

    root = tmp_path / "store"
    r = Replica(Small(root, fsync=False), ReplicaConfig(part_size=2048, shard_size=4096))
    await r.acquire()
    live = Live()
    live.set(1, clicks=1)
    assert await live.flush(r)
    before = live.rows()
    for k in range(100, 250):
        live.set(k, clicks=k, name=os.urandom(40).hex())
    assert await live.flush(r)
    conn, seq = _reader()["read"](str(root))
    assert seq == r.last_seq > 2 and state(conn) == live.rows()
    last = max((root / "docs").iterdir())
    last.unlink()  # the cut's last piece, as if the writer died before storing it
    conn, seq = _reader()["read"](str(root))
    assert seq == 1 and state(conn) == before
