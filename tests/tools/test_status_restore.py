"""`tgsnap status` (table and stable JSON, exit codes) and `tgsnap restore` (the exact database, the plan)."""

from __future__ import annotations

import json
import sqlite3

from tests.tools.chain import build_sync, rows
from tools import cli


def test_status_table_and_json(tmp_path, capsys):
    chain = build_sync(tmp_path, 8, snapshot_at=3)
    assert cli.main(["status", "--storage-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "snapshot" in out and "base seq 3" in out and "5 delta(s) (seq 4..8)" in out
    assert "writer" in out and "bot-under-test" in out
    assert cli.main(["status", "--storage-dir", str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["status_format"] == 1 and data["ok"] is True
    assert data["last_seq"] == chain.last_seq and data["snapshot"]["base_seq"] == 3
    assert data["chain"]["deltas"] == 5 and data["storage"].startswith("local: directory")


def test_status_of_empty_storage_exits_5(tmp_path, capsys):
    (tmp_path / "docs").mkdir()
    assert cli.main(["status", "--storage-dir", str(tmp_path)]) == 5
    assert "empty" in capsys.readouterr().out


def test_status_of_a_broken_chain_exits_1_and_still_shows_the_rest(tmp_path, capsys):
    chain = build_sync(tmp_path, 6, snapshot_at=2)
    (tmp_path / "docs" / chain.refs[4]).unlink()
    assert cli.main(["status", "--storage-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "chain error" in out and "seq 4" in out and "base seq 2" in out


def test_restore_writes_the_exact_database_and_the_plan_writes_nothing(tmp_path, capsys):
    store = tmp_path / "store"
    chain = build_sync(store, 9, snapshot_at=5)
    target = tmp_path / "state.sqlite"
    assert cli.main(["restore", "--storage-dir", str(store), "--dry-run", "--to", str(target)]) == 0
    out = capsys.readouterr().out
    assert "apply delta" in out and "fetch part" in out and not target.exists()

    assert cli.main(["restore", "--storage-dir", str(store), "--to", str(target), "-q"]) == 0
    conn = sqlite3.connect(target)
    try:
        assert rows(conn) == chain.states[9]
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def test_restore_refuses_to_overwrite_and_reaches_back_by_seq(tmp_path, capsys):
    import pytest

    store = tmp_path / "store"
    chain = build_sync(store, 7)
    target = tmp_path / "s.sqlite"
    target.write_bytes(b"keep me")
    with pytest.raises(SystemExit) as e:
        cli.main(["restore", "--storage-dir", str(store), "--to", str(target), "-q"])
    assert e.value.code == 2 and target.read_bytes() == b"keep me"
    assert cli.main(["restore", "--storage-dir", str(store), "--to", str(target), "--at-seq", "4", "--force",
                     "-q"]) == 0
    conn = sqlite3.connect(target)
    try:
        assert rows(conn) == chain.states[4]
    finally:
        conn.close()


def test_restore_and_export_share_one_tail_a_write_that_fails_is_one_line_and_exit_1(tmp_path, capsys):
    import pytest

    store = tmp_path / "store"
    build_sync(store, 4, snapshot_at=2)
    for command, target in (("restore", tmp_path / "no-such-dir" / "s.sqlite"),
                            ("export", tmp_path / "no-such-dir" / "e.jsonl")):
        assert cli.main([command, "--storage-dir", str(store), "--to", str(target), "-q"]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"tgsnap {command}: cannot write {target}: ") and err.count("\n") == 1
        assert "Traceback" not in err and not target.parent.exists()
    with pytest.raises(SystemExit):
        cli.main(["restore", "--help"])
    assert "--at-seq SEQ" in capsys.readouterr().out


def test_restore_reports_what_it_wrote(tmp_path, capsys):
    store = tmp_path / "store"
    chain = build_sync(store, 5, snapshot_at=3)
    target = tmp_path / "s.sqlite"
    assert cli.main(["restore", "--storage-dir", str(store), "--to", str(target), "-q"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("restored seq 5 ") and "2 delta(s) after the snapshot" in err
    assert f"{len(chain.states[5])} row(s) in the application" in err
