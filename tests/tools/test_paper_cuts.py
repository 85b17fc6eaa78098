"""The operator's paper cuts: read-only tools write nothing, empty or missing storage is exit 5, the
documented rescue (`export --at-seq N-1` when delta N is damaged) works, and bad input is a true message."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

from snapshot.backends.memory import flip_byte
from tests.tools.chain import build_sync, rows
from tools import cli

READERS = {
    "verify": ["verify", "-q"],
    "status": ["status"],
    "export": ["export", "-q", "--to", "{out}/x.jsonl"],
    "restore": ["restore", "-q", "--to", "{out}/x.sqlite"],
    "compact --dry-run": ["compact", "--dry-run", "-q"],
}


def tree(path) -> dict[str, str]:
    """Every file and directory under `path`, with a digest of each file's bytes."""
    out = {}
    for p in sorted(path.rglob("*")):
        out[str(p.relative_to(path))] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def run(name: str, store, out) -> int:
    args = [a.replace("{out}", str(out)) for a in READERS[name]]
    return cli.main([args[0], "--storage-dir", str(store), *args[1:]])


@pytest.mark.parametrize("name", sorted(READERS))
def test_read_only_tools_write_nothing_into_storage(name, tmp_path):
    store, out = tmp_path / "store", tmp_path / "out"
    out.mkdir()
    build_sync(store, 6, snapshot_at=3)
    before = tree(store)
    assert run(name, store, out) == 0
    assert tree(store) == before


@pytest.mark.parametrize("name", sorted(READERS))
def test_an_empty_directory_is_exit_5_and_stays_empty(name, tmp_path, capsys):
    store, out = tmp_path / "store", tmp_path / "out"
    store.mkdir()
    out.mkdir()
    assert run(name, store, out) == 5
    assert list(store.iterdir()) == []  # no docs/ created
    assert list(out.iterdir()) == []  # nothing exported either
    captured = capsys.readouterr()
    assert "empty" in captured.out + captured.err


@pytest.mark.parametrize("name", sorted(READERS))
def test_a_missing_directory_is_exit_5_and_not_created(name, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    assert run(name, tmp_path / "typo", out) == 5
    assert not (tmp_path / "typo").exists()
    assert "does not exist" in capsys.readouterr().err


def test_a_storage_dir_naming_a_file_is_configuration(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert cli.main(["verify", "--storage-dir", str(tmp_path / "f"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "not a directory" in err and "Traceback" not in err


@pytest.mark.parametrize("tool", ["export", "restore"])
def test_a_negative_seq_is_a_usage_error_with_a_true_message(tool, tmp_path, capsys):
    build_sync(tmp_path / "s", 3)
    with pytest.raises(SystemExit) as e:
        cli.main([tool, "--storage-dir", str(tmp_path / "s"), "--at-seq", "-5", "--to", str(tmp_path / "o.sqlite")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "-5 is not a sequence number" in err and "compacted" not in err


def _damage(path, how: str) -> None:
    if how == "missing":
        path.unlink()
    elif how == "corrupt":
        path.write_bytes(flip_byte(path.read_bytes(), 200))
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:40])  # not even a whole header
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("listed", [True, False], ids=["listed", "discovered"])
@pytest.mark.parametrize("how", ["corrupt", "missing", "truncated"])
def test_the_documented_rescue_exports_the_state_before_a_damaged_delta(how, listed, tmp_path, capsys):
    """docs/operations.md, 'When verify fails': delta N is damaged -> `export --at-seq N-1` saves the rest."""
    store = tmp_path / "store"
    # listed: a released writer's manifest lists every delta; discovered: a writer that crashed, whose
    # later deltas are found beyond the manifest.
    chain = build_sync(store, 9, snapshot_at=2, release=listed)
    n = 6
    _damage(store / "docs" / chain.refs[n], how)

    target = tmp_path / "latest.sqlite"
    assert cli.main(["export", "--storage-dir", str(store), "--to", str(target), "-q"]) == 1
    assert not target.exists()
    assert cli.main(["verify", "--storage-dir", str(store), "-q"]) == 1
    capsys.readouterr()

    rescue = tmp_path / "rescue.sqlite"
    assert cli.main(["export", "--storage-dir", str(store), "--at-seq", str(n - 1), "--to", str(rescue),
                     "-q"]) == 0
    conn = sqlite3.connect(rescue)
    try:
        assert rows(conn) == chain.states[n - 1]
    finally:
        conn.close()
    # the target itself, and anything past the damage, still refuse (they would need delta N)
    for seq in (n, n + 1):
        assert cli.main(["export", "--storage-dir", str(store), "--at-seq", str(seq), "--to",
                         str(tmp_path / f"at-{seq}.sqlite"), "-q"]) == 1
        assert not (tmp_path / f"at-{seq}.sqlite").exists()
