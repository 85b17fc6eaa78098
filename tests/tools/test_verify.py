"""verify: passes good storage, and names the exact document at fault (kind, seq, ref, reason)."""

from __future__ import annotations

import json
from pathlib import Path

from snapshot.backends.memory import flip_byte
from tests.tools.chain import build_sync
from tools import verify


def doc(path: Path, ref: str) -> Path:
    return path / "docs" / ref


def run_verify(path: Path, *extra: str) -> int:
    return verify.main(["--storage-dir", str(path), "-q", *extra])


def test_good_storage_passes(tmp_path, capsys):
    chain = build_sync(tmp_path, 10, snapshot_at=4)
    assert run_verify(tmp_path, "--verbose") == 0
    out = capsys.readouterr().out
    assert f"state at seq {chain.last_seq}" in out
    assert "ok    snapshot part seq 4" in out
    for seq in range(5, 11):
        assert f"ok    delta seq {seq} ref {chain.refs[seq]}" in out
    assert "FAIL" not in out


def test_empty_storage_is_its_own_exit_code(tmp_path, capsys):
    assert run_verify(tmp_path) == 5
    assert "storage is empty" in capsys.readouterr().out


def test_a_corrupted_delta_is_named(tmp_path, capsys):
    chain = build_sync(tmp_path, 8, snapshot_at=2)
    victim = doc(tmp_path, chain.refs[5])
    victim.write_bytes(flip_byte(victim.read_bytes(), 200))

    assert run_verify(tmp_path) == 1
    out = capsys.readouterr().out
    fails = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert fails == [f"FAIL  delta seq 5 ref {chain.refs[5]}: SHA-256 differs from the manifest's: the delta is "
                     "corrupt or foreign"]
    assert "1 fault(s)" in out


def test_every_fault_is_listed_not_only_the_first(tmp_path, capsys):
    chain = build_sync(tmp_path, 8, snapshot_at=2)
    doc(tmp_path, chain.refs[4]).unlink()
    victim = doc(tmp_path, chain.refs[7])
    victim.write_bytes(victim.read_bytes()[:-10])

    assert run_verify(tmp_path, "--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert not report["ok"]
    bad = {(c["kind"], c["seq"], c["ref"]): c["reason"] for c in report["checks"] if not c["ok"]}
    assert set(bad) == {("delta", 4, chain.refs[4]), ("delta", 7, chain.refs[7])}
    assert "missing from storage" in bad[("delta", 4, chain.refs[4])]
    assert "truncated" in bad[("delta", 7, chain.refs[7])]
    # the good deltas around them still pass on their own
    good = {c["seq"] for c in report["checks"] if c["ok"] and c["kind"] == "delta"}
    assert good == {3, 5, 6, 8}


def test_a_corrupted_snapshot_part_is_named(tmp_path, capsys):
    build_sync(tmp_path, 6, snapshot_at=6)
    part = next(p for p in (tmp_path / "docs").iterdir() if "snapshot" in p.name)
    part.write_bytes(flip_byte(part.read_bytes(), 150))

    assert run_verify(tmp_path) == 1
    out = capsys.readouterr().out
    assert f"FAIL  snapshot part seq 6 ref {part.name}: SHA-256 differs" in out


def test_a_delta_that_no_longer_links_is_named(tmp_path, capsys):
    """A well-formed delta (its header CRC fixed up) that links to another chain: the link catches it."""
    import hashlib
    import struct
    import zlib

    from snapshot.envelope import HEADER_SIZE, read_header

    # a live writer: its deltas are not listed in the manifest yet, restore finds them by discovery
    chain = build_sync(tmp_path, 5, release=False)
    victim = doc(tmp_path, chain.refs[3])
    data = bytearray(victim.read_bytes())
    data[64:96] = hashlib.sha256(b"another chain").digest()  # the predecessor hash, in the header

    struct.pack_into("<I", data, HEADER_SIZE - 4, zlib.crc32(bytes(data[:HEADER_SIZE - 4])))
    read_header(bytes(data))  # still a well-formed document
    victim.write_bytes(bytes(data))

    assert run_verify(tmp_path) == 1
    out = capsys.readouterr().out
    assert f"FAIL  chain: delta seq 3 ({chain.refs[3]}) does not link to seq 2" in out


def test_a_corrupted_manifest_is_named(tmp_path, capsys):
    build_sync(tmp_path, 3)
    m = max(tmp_path.glob("MANIFEST*"))  # the newest slot
    m.write_bytes(flip_byte(m.read_bytes(), 130))
    assert run_verify(tmp_path) == 1
    assert "FAIL  manifest" in capsys.readouterr().out


def test_encrypted_storage_verifies_with_the_key_and_a_missing_key_is_configuration(tmp_path, capsys):
    key = bytes(range(1, 33))
    chain = build_sync(tmp_path / "s", 5, snapshot_at=2, key=key)
    assert verify.main(["--storage-dir", str(tmp_path / "s"), "-q"]) == 2
    assert "TGSNAP_ENCRYPTION_KEY" in capsys.readouterr().err
    assert verify.main(["--storage-dir", str(tmp_path / "s"), "--encryption-key", key.hex(), "-q"]) == 0
    assert f"state at seq {chain.last_seq}" in capsys.readouterr().out
    # a tampered encrypted delta is a data fault, named like any other
    victim = doc(tmp_path / "s", chain.refs[4])
    victim.write_bytes(flip_byte(victim.read_bytes(), 300))
    assert verify.main(["--storage-dir", str(tmp_path / "s"), "--encryption-key", key.hex(), "-q"]) == 1
    assert f"FAIL  delta seq 4 ref {chain.refs[4]}" in capsys.readouterr().out


async def _bot_api_style_storage(inline_delta_bytes: int):
    """Storage as the Bot API keeps it: no discovery, so deltas ride inline in the manifest or in packs."""
    from snapshot.backends.memory import MemoryBackend
    from snapshot.replica import Replica, ReplicaConfig
    from tests.tools.chain import _changes

    backend = MemoryBackend(can_discover=False)
    replica = Replica(backend, ReplicaConfig(inline_delta_bytes=inline_delta_bytes), writer_id="bot")
    await replica.acquire()
    for seq in range(1, 8):
        await replica.write_delta(_changes(seq, 1000.0 + seq))
    await replica.release()
    return backend


async def test_inline_and_packed_deltas_verify_clean():
    for bound in (2 * 1024 * 1024, 3000):  # everything inline; spilled into packs
        backend = await _bot_api_style_storage(bound)
        report = await verify.verify_storage(backend)
        assert report.faults == [], [str(c) for c in report.faults]
        assert report.last_seq == 7


async def test_a_corrupted_pack_is_named():
    backend = await _bot_api_style_storage(3000)
    packs = [ref for ref, (name, _data) in backend.storage.docs.items() if name.startswith("deltas-")]
    assert packs, "a 3000-byte inline bound must spill deltas into a pack"
    name, data = backend.storage.docs[packs[0]]
    backend.storage.docs[packs[0]] = (name, flip_byte(data))
    report = await verify.verify_storage(backend)
    assert report.faults and all(c.kind == "delta" for c in report.faults if c.seq is not None)
