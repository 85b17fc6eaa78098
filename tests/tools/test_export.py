"""export: the restored state round-trips into SQLite and JSON lines, latest or at a point in time."""

from __future__ import annotations

import base64
import json
import sqlite3

import pytest

from tests.tools.chain import build_sync, rows
from tools import export


def exported_sqlite(path) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert tables == ["users"]  # tgsnap's internal tables stay behind
        return rows(conn)
    finally:
        conn.close()


def from_jsonl(text: str) -> list[tuple]:
    out = []
    for line in text.splitlines():
        obj = json.loads(line)
        assert obj["table"] == "users"
        r = obj["row"]
        avatar = base64.b64decode(r["avatar"]["$base64"]) if r["avatar"] is not None else None
        out.append((r["chatid"], r["name"], r["click"], avatar))
    return out


def test_export_to_sqlite_round_trips(tmp_path):
    store = tmp_path / "store"
    chain = build_sync(store, 9, snapshot_at=5)
    target = tmp_path / "out.sqlite"
    assert export.main(["--storage-dir", str(store), "--to", str(target), "-q"]) == 0
    assert exported_sqlite(target) == chain.states[9]
    # never overwrites silently
    with pytest.raises(SystemExit) as e:
        export.main(["--storage-dir", str(store), "--to", str(target), "-q"])
    assert e.value.code == 2
    assert export.main(["--storage-dir", str(store), "--to", str(target), "--force", "--at-seq", "6", "-q"]) == 0
    assert exported_sqlite(target) == chain.states[6]


def test_export_jsonl_to_stdout_round_trips_unicode_and_blobs(tmp_path, capsys):
    store = tmp_path / "store"
    chain = build_sync(store, 7)
    assert export.main(["--storage-dir", str(store), "--format", "jsonl", "--to", "-", "-q"]) == 0
    captured = capsys.readouterr()
    assert from_jsonl(captured.out) == chain.states[7]
    assert "Анна" in captured.out  # UTF-8, not \\u escapes
    assert "exported" in captured.err


def test_export_jsonl_file_is_chosen_by_extension_and_deterministic(tmp_path):
    store = tmp_path / "store"
    build_sync(store, 4)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert export.main(["--storage-dir", str(store), "--to", str(a), "-q"]) == 0
    assert export.main(["--storage-dir", str(store), "--to", str(b), "-q"]) == 0
    assert a.read_bytes() == b.read_bytes() and a.read_bytes().startswith(b'{"table": "users"')


@pytest.mark.parametrize("seq", [0, 3, 8, 12])
def test_point_in_time_by_seq(tmp_path, capsys, seq):
    store = tmp_path / "store"
    chain = build_sync(store, 12)
    assert export.main(["--storage-dir", str(store), "--at-seq", str(seq), "--to", "-", "--format", "jsonl",
                        "-q"]) == 0
    assert from_jsonl(capsys.readouterr().out) == chain.states[seq]


def test_point_in_time_by_time(tmp_path, capsys):
    store = tmp_path / "store"
    chain = build_sync(store, 10, snapshot_at=2)
    # between the cuts of deltas 6 and 7: the state after delta 6
    moment = (chain.captured[6] + chain.captured[7]) / 2
    assert export.main(["--storage-dir", str(store), "--at-time", str(moment), "--to", "-", "--format", "jsonl",
                        "-q"]) == 0
    assert from_jsonl(capsys.readouterr().out) == chain.states[6]
    # ISO 8601 is accepted too (UTC)
    from datetime import UTC, datetime

    iso = datetime.fromtimestamp((chain.captured[4] + chain.captured[5]) / 2, UTC).replace(tzinfo=None).isoformat()
    assert export.main(["--storage-dir", str(store), "--at-time", iso, "--to", "-", "--format", "jsonl", "-q"]) == 0
    assert from_jsonl(capsys.readouterr().out) == chain.states[4]


def test_before_the_snapshot_is_refused_with_the_reason(tmp_path, capsys):
    store = tmp_path / "store"
    build_sync(store, 6, snapshot_at=4)
    assert export.main(["--storage-dir", str(store), "--at-seq", "2", "--to", str(tmp_path / "x.sqlite"),
                        "-q"]) == 1
    err = capsys.readouterr().err
    assert "earliest restorable point is seq 4" in err
    assert not (tmp_path / "x.sqlite").exists()
