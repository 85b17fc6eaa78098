"""Every piece of advice in a message names something real: each `--flag` in the strings of the library,
the bot and the operator tools is a flag of a tgsnap command or of the bot, and each `TGSNAP_*` name is a
variable tgsnap reads; a misspelt variable is warned about, never silently ignored."""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest

from snapshot.settings import unknown_variables
from tools import cli
from tools.cli_common import known_variables

ROOT = Path(__file__).resolve().parents[2]
OPERATOR = ["tools/cli_common.py", "tools/verify.py", "tools/compact.py", "tools/export.py", "tools/status.py",
            "tools/restore.py", "tools/cli.py"]
SOURCES = sorted({*(str(p.relative_to(ROOT)) for d in ("snapshot", "core", "bot") for p in (ROOT / d).rglob("*.py")),
                  *OPERATOR})


def _strings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def _flags_of(parser: argparse.ArgumentParser) -> set[str]:
    """Every --flag of a parser and of its subcommands' parsers."""
    flags: set[str] = set()
    for action in parser._actions:
        flags.update(o for o in action.option_strings if o.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= _flags_of(sub)
    return flags


def _all_flags() -> set[str]:
    flags: set[str] = {"--write-docs"}  # `python -m tools.cli --write-docs`, handled before the parsers
    parsers = [c.parser() for c in cli.available_commands()]
    # the bot's own flags, and the emulator CLI whose commands local mode prints
    from bot.config import parser as bot_parser
    from tools.emulator.cli import build_parser as emulator_cli_parser

    parsers += [bot_parser(), emulator_cli_parser()]
    for p in parsers:
        flags |= _flags_of(p)
    return flags


@pytest.mark.parametrize("source", SOURCES)
def test_flags_named_in_messages_exist(source):
    flags = _all_flags()
    named = {f for s in _strings(ROOT / source) for f in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", s)}
    assert named <= flags, f"{source} names flags no command has: {sorted(named - flags)}"


@pytest.mark.parametrize("source", SOURCES)
def test_variables_named_in_messages_exist(source):
    known = known_variables()
    named = {v for s in _strings(ROOT / source) for v in re.findall(r"TGSNAP_[A-Z0-9_]+", s)}
    assert not unknown_variables({v: "" for v in named}, known), source


def test_a_misspelt_variable_is_warned_about_with_the_right_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TGSNAP_TOKEN", "123:abc")
    monkeypatch.setenv("TGSNAP_STORAGE_DRI", str(tmp_path))
    assert cli.main(["status", "--storage-dir", str(tmp_path / "s")]) == 5
    err = capsys.readouterr().err
    assert "TGSNAP_TOKEN is not a tgsnap setting (did you mean TGSNAP_BOT_TOKEN?)" in err
    assert "TGSNAP_STORAGE_DRI is not a tgsnap setting (did you mean TGSNAP_STORAGE_DIR?)" in err


def test_known_variables_are_not_warned_about(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TGSNAP_ADMIN_IDS", "1")
    monkeypatch.setenv("TGSNAP_FLUSH_INTERVAL", "4")
    cli.main(["status", "--storage-dir", str(tmp_path / "s")])
    assert "warning" not in capsys.readouterr().err


def test_a_binary_env_file_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_bytes(b"\xff\xfe\x00TGSNAP\x00")
    assert cli.main(["verify", "--storage-dir", str(tmp_path), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ".env is not UTF-8 text" in err and "Traceback" not in err
