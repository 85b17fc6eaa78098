"""Storage written by tgsnap before envelope v2 and manifest format 3 still restores and continues.

The fixtures are bytes the old code wrote (tests/snapshot/fixtures/make_legacy.py says how): envelope
version 1 documents, a single `MANIFEST` (slot 0), manifest format 1 (a snapshot, listed deltas and
deltas only discovery finds) and format 2 (inline and packed deltas on a backend that cannot discover);
and storage of each delta body version (fixtures/make_versioned.py: delta-v2 written at fbe0e21, delta-v3).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from snapshot.backends.local import MANIFEST_FILE, LocalDirBackend
from snapshot.changes import ChangeSet, TableChanges
from snapshot.envelope import read_header
from snapshot.manifest import decode_manifest
from snapshot.replica import Replica, ReplicaConfig
from snapshot.restore import plan, restore
from tests.snapshot.fixtures.make_versioned import dump
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
    # the new snapshot has state digest 2, which only manifest format 4 holds
    assert not p.forks and not p.foreign and p.manifest.format == 4 and p.snapshot.digest == 2
    conn, seq = _reader()["read"](str(root))
    assert seq == expected["seq"] + 2 and state(conn) == live.rows()


async def test_format3_storage_with_whole_image_digest_restores_and_continues(tmp_path):
    """legacy-f3 (tests/snapshot/fixtures/make_legacy_f3.py): envelope v2, manifest format 3, a snapshot
    whose state digest is SHA-256 of the whole image (digest 1), shards of several parts, a delta only
    discovery finds."""
    root, expected = _copy("legacy-f3", tmp_path)
    p = await plan(LocalDirBackend(root, fsync=False))
    assert p.manifest.format == 3 and p.snapshot is not None and p.discovered == 1
    assert any(len(sh.parts) > 1 for sh in p.snapshot.shards) and len(p.snapshot.shards) > 1
    got = await restore(LocalDirBackend(root, fsync=False))
    assert got.seq == expected["seq"] and state(got.conn) == expected["rows"]
    conn, seq = _reader()["read"](str(root))  # the documented reader reads it too
    assert seq == expected["seq"] and state(conn) == expected["rows"]

    r = Replica(LocalDirBackend(root, fsync=False), ReplicaConfig(**CFG))
    got = await r.acquire()  # the writer crashed long ago: its lease has expired
    assert got.seq == expected["seq"] and state(got.conn) == expected["rows"]
    live = Live(got.conn)
    live.set(900, clicks=1)
    assert await live.flush(r)
    await live.snapshot(r)  # written in the current encoding
    live.set(901, clicks=2)
    assert await live.flush(r)
    await r.release()
    again = await restore(LocalDirBackend(root, fsync=False))
    assert again.seq == expected["seq"] + 2 and state(again.conn) == live.rows()
    p = await plan(LocalDirBackend(root, fsync=False))
    assert p.manifest.format == 4 and p.snapshot.digest == 2
    conn, seq = _reader()["read"](str(root))
    assert seq == expected["seq"] + 2 and state(conn) == live.rows()


def test_a_damaged_byte_in_an_old_image_is_still_caught(tmp_path):
    """Digest-1 snapshots are still checked in full: a shard whose raw bytes differ from what the manifest's
    whole-image digest says is refused (here: the manifest's image digest itself altered)."""
    import glob

    from snapshot import image as image_mod
    from snapshot.errors import RestoreError

    root, _ = _copy("legacy-f3", tmp_path)
    m, _h = decode_manifest(Path(sorted(glob.glob(str(root / "MANIFEST.*")))[-1]).read_bytes())
    snap = m.snapshot
    frames = []
    for sh in snap.shards:
        body = b"".join(LocalDirBackend(root, fsync=False).root.joinpath("docs", p.ref).read_bytes()[144:]
                        for p in sh.parts)
        frames.append((body, sh.raw_size, bytes.fromhex(sh.sha256)))
    good = bytes.fromhex(snap.image_sha256)
    img = image_mod.assemble(frames, image_size=snap.image_size, image_sha256=good)
    assert len(img) == snap.image_size
    with pytest.raises(RestoreError, match="state digest"):
        image_mod.assemble(frames, image_size=snap.image_size, image_sha256=bytes(32))


@pytest.mark.parametrize("name, version", [("delta-v2", 2), ("delta-v3", 3)])
async def test_storage_of_each_delta_body_version_restores_and_continues(tmp_path, name, version):
    """Deltas of body version 2 (written at fbe0e21) and 3, holding every kind of SQLite value, composite
    TEXT/BLOB keys, deletions and schema statements, restore exactly (storage class and bytes of every
    value), through tgsnap and through the documented reader; a writer continues such storage with
    version 3 deltas, and the mixed chain restores."""
    root, _ = tmp_path / name, shutil.copytree(FIXTURES / name, tmp_path / name)
    expected = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    seq = expected.pop("seq")
    docs = sorted((root / "docs").iterdir())
    assert docs and all(read_header(p.read_bytes()).version == version for p in docs)

    got = await restore(LocalDirBackend(root, fsync=False))
    assert got.seq == seq and dump(got.conn) == expected
    conn, rseq = _reader()["read"](str(root))
    assert rseq == seq and dump(conn) == expected

    r = Replica(LocalDirBackend(root, fsync=False), ReplicaConfig(**CFG))
    got = await r.acquire()
    assert dump(got.conn) == expected
    got.conn.execute("UPDATE kv SET v = x'00' WHERE k = 'a' AND b = x''")
    got.conn.execute("DELETE FROM users WHERE chatid = 100000000")
    got.conn.commit()
    kv = TableChanges("kv", "", ["k", "b", "v"], ["k", "b"], [("a", b"", b"\x00")])
    users = TableChanges("users", "", ["chatid", "name", "click", "state", "lang"], ["chatid"], [], [(100000000,)])
    await r.write_delta(ChangeSet(1_800_000_000.0, {"kv": kv, "users": users}, user_version=2))
    await r.release()
    after = dump(got.conn)
    newest = max((root / "docs").iterdir())
    assert read_header(newest.read_bytes()).version == 3
    again = await restore(LocalDirBackend(root, fsync=False))
    assert again.seq == seq + 1 and dump(again.conn) == after != expected
    conn, rseq = _reader()["read"](str(root))
    assert rseq == seq + 1 and dump(conn) == after
