"""What every tool shares: --help that teaches, and bad configuration as exit 2 with the reason."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from tools import compact, export, verify
from tools.bench import __main__ as bench

TOOLS = {"compact": compact.main, "verify": verify.main, "export": export.main, "bench": bench.main}


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_help_has_examples(name, capsys):
    with pytest.raises(SystemExit) as e:
        TOOLS[name](["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert "python -m tools." in out or f"tgsnap {name}" in out


@pytest.mark.parametrize("name", ["compact", "verify", "export"])
def test_missing_storage_configuration_is_exit_2(name, monkeypatch, tmp_path, capsys):
    for var in ("TGSNAP_STORAGE_MODE", "TGSNAP_STORAGE_DIR", "TGSNAP_STORAGE_CHAT", "TGSNAP_API_ID",
                "TGSNAP_API_HASH", "TGSNAP_MTPROTO_SESSION", "TGSNAP_ENCRYPTION_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env here
    assert TOOLS[name](["-q"]) == 2
    assert "TGSNAP_STORAGE_DIR" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["compact", "verify", "export"])
def test_a_directory_that_does_not_exist_is_exit_5_and_not_created(name, tmp_path, capsys):
    missing = tmp_path / "typo"
    assert TOOLS[name](["--storage-dir", str(missing), "-q"]) == 5
    assert "does not exist" in capsys.readouterr().err
    assert not missing.exists()


def test_a_malformed_key_is_exit_2_and_not_echoed(tmp_path, capsys):
    (tmp_path / "docs").mkdir()
    assert verify.main(["--storage-dir", str(tmp_path), "--encryption-key", "not-a-secret-at-all", "-q"]) == 2
    err = capsys.readouterr().err
    assert "encryption key" in err and "not-a-secret-at-all" not in err


def test_storage_in_telegram_without_a_token_is_exit_2(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("TGSNAP_BOT_TOKEN", raising=False)
    monkeypatch.delenv("TGSNAP_STORAGE_BOT_TOKEN", raising=False)
    monkeypatch.chdir(tmp_path)
    assert verify.main(["--storage-mode", "botapi", "--storage-chat", "-1001", "-q"]) == 2
    assert "TGSNAP_BOT_TOKEN" in capsys.readouterr().err


ROOT = Path(__file__).resolve().parents[2]
#: the per-tool console scripts the one `tgsnap` command replaced (issue 12).
DROPPED = re.compile(r"tgsnap-(compact|verify|export|move|follow|bench|emulator|emulator-cli|loadgen|prune|restore"
                     r"|status)(?![@\w-])")


def test_one_console_script_for_the_tools():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"tgsnap": "tools.cli:main", "tgsnap-bot": "bot.__main__:main"}


def test_nothing_names_a_dropped_script():
    # Writer ids (`tgsnap-compact@host:pid`, `writer_id="tgsnap-bench"`) and temporary-directory prefixes
    # (`tgsnap-bench-`) are not commands: the lookahead and the writer_id test spare them.
    paths = [ROOT / "README.md", ROOT / "Procfile", ROOT / "Dockerfile", *(ROOT / "docs").glob("*.md"),
             *[p for d in ("bot", "core", "snapshot", "tools", "examples", "tests") for p in (ROOT / d).rglob("*.py")]]
    found = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}" for p in paths if p.exists()
             for n, line in enumerate(p.read_text().splitlines(), 1)
             if DROPPED.search(line) and "writer_id" not in line]
    assert found == []


def test_a_tool_run_as_python_m_names_itself_as_a_tgsnap_command(capsys):
    with pytest.raises(SystemExit):
        verify.main(["--help"])
    assert capsys.readouterr().out.startswith("usage: tgsnap verify ")
