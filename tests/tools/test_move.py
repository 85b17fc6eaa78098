"""move: the current state copied into an empty storage and verified there; the source left as it was; a
non-empty target or a live writer's lease refused."""

from __future__ import annotations

import asyncio

from tests.tools.chain import build, build_sync, restored_rows
from tools import move


def tree(path):
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_move_copies_the_current_state_and_leaves_the_source_alone(tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    chain = build_sync(src, 12, snapshot_at=5)
    before = tree(src)
    assert move.main(["--storage-dir", str(src), "--to-dir", str(dst), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "at seq 12" in out and "verified" in out and f"TGSNAP_STORAGE_DIR={dst}" in out
    assert restored_rows(dst) == chain.states[12]
    after = tree(src)
    assert {k for k in after if "MANIFEST" not in k} == {k for k in before if "MANIFEST" not in k}
    assert restored_rows(src) == chain.states[12]  # the lease came and went; the state did not change


def test_a_target_that_holds_anything_is_refused(tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    build_sync(src, 3)
    other = build_sync(dst, 2)
    assert move.main(["--storage-dir", str(src), "--to-dir", str(dst), "-q"]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert restored_rows(dst) == other.states[2]


def test_a_live_writer_on_the_source_is_refused(tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    asyncio.run(build(src, 3, release=False, lease_seconds=300, writer_id="the-bot"))
    assert move.main(["--storage-dir", str(src), "--to-dir", str(dst), "-q"]) == 3
    err = capsys.readouterr().err
    assert "the-bot" in err and "stop the bot first" in err


def test_exactly_one_target(tmp_path, capsys):
    assert move.main(["--storage-dir", str(tmp_path)]) == 2
    assert "exactly one of --to-chat and --to-dir" in capsys.readouterr().err
