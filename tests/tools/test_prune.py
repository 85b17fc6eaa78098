"""`tgsnap prune` and point-in-time reach through the tools: export reaches retained points past a
compaction, the dry run lists exactly what prune deletes, and prune refuses while a live writer holds
the storage."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

from snapshot.apply import apply_changes
from snapshot.backends.local import LocalDirBackend
from snapshot.compact import compact
from snapshot.replica import Replica, ReplicaConfig
from tests.tools.chain import _changes, rows
from tools import cli, export


def _build(path: Path, deltas: int, snapshots: set[int], keep: int, release: bool = True):
    async def go():
        r = Replica(LocalDirBackend(path, fsync=False),
                    ReplicaConfig(part_size=1400, shard_size=8192, keep_snapshots=keep), writer_id="bot-1")
        await r.acquire()
        model = sqlite3.connect(":memory:")
        states, captured = {0: []}, {}
        t0 = time.time() - 1000.0
        for seq in range(1, deltas + 1):
            cs = _changes(seq, t0 + seq)
            await r.write_delta(cs)
            apply_changes(model, cs)
            states[seq], captured[seq] = rows(model), t0 + seq
            if seq in snapshots:
                await r.write_snapshot(model.serialize(), seq, t0 + seq)
        if release:
            await r.release()
        return r, states, captured

    return asyncio.run(go())


def _exported(path: Path, *args: str) -> list[tuple]:
    out = path.parent / f"x{time.monotonic_ns()}.sqlite"
    assert export.main(["--storage-dir", str(path), *args, "--to", str(out), "-q"]) == 0
    conn = sqlite3.connect(out)
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'users'").fetchone() is None:
            return []  # seq 0: the empty database
        return rows(conn)
    finally:
        conn.close()


def test_export_reaches_back_past_compactions(tmp_path):
    store = tmp_path / "store"
    _r, states, captured = _build(store, 12, {4, 8}, keep=5)
    # and an operator's compaction on top: it keeps the history and adds the point it supersedes
    asyncio.run(compact(LocalDirBackend(store, fsync=False)))
    for seq in (0, 2, 4, 5, 8, 11, 12):
        assert _exported(store, "--at-seq", str(seq)) == states[seq], seq
    moment = (captured[6] + captured[7]) / 2
    assert _exported(store, "--at-time", str(moment)) == states[6]
    assert _exported(store) == states[12]


def test_prune_dry_run_lists_exactly_what_prune_deletes(tmp_path, capsys):
    store = tmp_path / "store"
    _r, states, _c = _build(store, 12, {3, 6, 9}, keep=5)
    before = {p.name for p in (store / "docs").iterdir()}
    assert cli.main(["prune", "--storage-dir", str(store), "--keep-snapshots", "1", "--dry-run", "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)["plan"]
    assert [p["base_seq"] for p in dry["kept"]] == [6] and [p["base_seq"] for p in dry["dropped"]] == [0, 3]
    assert {p.name for p in (store / "docs").iterdir()} == before
    assert dry["delete"] and not dry["too_old"]
    assert cli.main(["prune", "--storage-dir", str(store), "--keep-snapshots", "1"]) == 0
    out = capsys.readouterr().out
    assert "pruned: 2 point(s) dropped" in out
    gone = before - {p.name for p in (store / "docs").iterdir()}
    assert gone == {Path(ref).name for ref in dry["delete"]}
    for seq in (6, 7, 12):
        assert _exported(store, "--at-seq", str(seq)) == states[seq]
    assert export.main(["--storage-dir", str(store), "--at-seq", "5", "--to", str(tmp_path / "y.sqlite"),
                        "-q"]) == 1
    assert "compacted away" in capsys.readouterr().err
    # nothing left to do: exit 0, nothing changes
    assert cli.main(["prune", "--storage-dir", str(store), "--keep-snapshots", "1"]) == 0
    assert "nothing to prune" in capsys.readouterr().out


def test_prune_refuses_while_a_live_writer_holds_the_storage(tmp_path, capsys):
    store = tmp_path / "store"
    _build(store, 4, {2}, keep=3, release=False)
    before = {p.name for p in (store / "docs").iterdir()}
    assert cli.main(["prune", "--storage-dir", str(store)]) == 3
    err = capsys.readouterr().err
    assert "run prune with --wait SECONDS" in err
    assert {p.name for p in (store / "docs").iterdir()} == before


def test_bad_durations_are_usage_errors(tmp_path, capsys):
    for bad in ("7x", "-1d", "nan"):
        try:
            cli.main(["prune", "--storage-dir", str(tmp_path), "--keep-for", bad])
        except SystemExit as e:
            assert e.code == 2
        else:
            raise AssertionError(bad)
        assert "--keep-for" in capsys.readouterr().err


def test_compact_on_storage_that_retains_history_says_it_keeps_it(tmp_path, capsys):
    store = tmp_path / "store"
    _r, states, _c = _build(store, 6, {3}, keep=2)
    assert cli.main(["compact", "--storage-dir", str(store), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "then keep: the superseded snapshot and its deltas as a retained point" in out
    assert cli.main(["compact", "--storage-dir", str(store), "-q"]) == 0
    capsys.readouterr()
    for seq in (0, 3, 5, 6):
        assert _exported(store, "--at-seq", str(seq)) == states[seq]
