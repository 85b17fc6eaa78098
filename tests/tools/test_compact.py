"""compact: folds the chain (state equal, chain gone, old documents deleted), dry-run changes nothing,
a live writer's lease makes it refuse with exit 3 and the holder's name."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from snapshot.backends.local import LocalDirBackend
from snapshot.manifest import decode_manifest
from tests.tools.chain import build_sync, restored_rows
from tools import compact


def manifest(path: Path):
    raw = asyncio.run(LocalDirBackend(path, fsync=False).read_manifest())
    return decode_manifest(raw)[0]


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_compact_folds_the_chain_into_a_snapshot(tmp_path, capsys):
    chain = build_sync(tmp_path, 12, snapshot_at=4)
    before = manifest(tmp_path)
    assert before.snapshot.base_seq == 4 and len(before.deltas) == 8
    old_docs = set(os.listdir(tmp_path / "docs"))

    assert compact.main(["--storage-dir", str(tmp_path), "--quiet"]) == 0

    out = capsys.readouterr().out
    assert "8 delta(s) folded into a snapshot at seq 12" in out
    after = manifest(tmp_path)
    assert after.snapshot.base_seq == 12
    assert after.deltas == []
    assert after.lease.released  # handed back: the bot can start at once
    # every document of the old snapshot and chain is gone; only the new snapshot's parts remain
    remaining = set(os.listdir(tmp_path / "docs"))
    assert not (remaining & old_docs)
    assert all("snapshot-000000000012" in name for name in remaining)
    assert restored_rows(tmp_path) == chain.states[12]


def test_compact_without_any_snapshot_and_then_again_is_a_no_op(tmp_path, capsys):
    chain = build_sync(tmp_path, 5)
    assert compact.main(["--storage-dir", str(tmp_path), "-q"]) == 0
    assert manifest(tmp_path).snapshot.base_seq == 5
    capsys.readouterr()
    snapshot_files = tree(tmp_path / "docs")
    assert compact.main(["--storage-dir", str(tmp_path), "-q"]) == 0
    assert "nothing to fold" in capsys.readouterr().out
    assert tree(tmp_path / "docs") == snapshot_files
    assert restored_rows(tmp_path) == chain.states[5]


def test_dry_run_prints_the_plan_and_changes_nothing(tmp_path, capsys):
    build_sync(tmp_path, 9, snapshot_at=3)
    before = tree(tmp_path)

    assert compact.main(["--storage-dir", str(tmp_path), "--dry-run", "-q"]) == 0
    text = capsys.readouterr().out
    assert "6 delta(s)" in text
    assert "new snapshot with base seq 9" in text
    assert "folding seq 4..9" in text
    assert tree(tmp_path) == before

    assert compact.main(["--storage-dir", str(tmp_path), "--dry-run", "--json", "-q"]) == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    assert plan["deltas_folded"] == 6
    assert plan["new_snapshot_base_seq"] == 9
    assert plan["current_snapshot_seq"] == 3
    assert plan["read_bytes"] > plan["delta_bytes"] > 0
    assert tree(tmp_path) == before


def test_refuses_while_a_live_writer_holds_the_lease(tmp_path, capsys):
    build_sync(tmp_path, 4, release=False, writer_id="clicker-bot-1")
    before = tree(tmp_path)

    assert compact.main(["--storage-dir", str(tmp_path), "-q"]) == 3
    err = capsys.readouterr().err
    assert "storage busy" in err
    assert "clicker-bot-1" in err
    assert "until" in err and "UTC" in err and "--wait SECONDS" in err
    assert tree(tmp_path) == before  # refused before writing anything

    # the dry run says the same thing without failing
    assert compact.main(["--storage-dir", str(tmp_path), "--dry-run", "-q"]) == 0
    assert "held by clicker-bot-1" in capsys.readouterr().out


def test_wait_outlasts_an_expiring_lease(tmp_path):
    chain = build_sync(tmp_path, 4, release=False, lease_seconds=0.6)
    assert compact.main(["--storage-dir", str(tmp_path), "--wait", "10", "-q"]) == 0
    assert manifest(tmp_path).snapshot.base_seq == 4
    assert restored_rows(tmp_path) == chain.states[4]


def test_compacts_encrypted_storage_with_the_key(tmp_path, capsys):
    key = bytes(range(32))
    chain = build_sync(tmp_path, 6, key=key)
    assert compact.main(["--storage-dir", str(tmp_path), "-q"]) == 2  # no key: a configuration error
    assert "encrypt" in capsys.readouterr().err
    key_file = tmp_path.parent / "key.hex"
    key_file.write_text(key.hex())
    assert compact.main(["--storage-dir", str(tmp_path), "--key-file", str(key_file), "-q"]) == 0
    assert restored_rows(tmp_path, key) == chain.states[6]


def test_progress_goes_to_stderr(tmp_path, capsys):
    build_sync(tmp_path, 6, snapshot_at=2)
    assert compact.main(["--storage-dir", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "download: 1/1" in captured.err  # the old snapshot's parts fetched
    assert "upload: " in captured.err  # the new snapshot's parts stored
    assert "compaction plan:" in captured.err
    assert captured.out.startswith("compacted: 4 delta(s) folded")
