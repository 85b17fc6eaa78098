"""The `tgsnap` command: every subcommand dispatches, teaches with examples whose flags exist, and its
reference in docs/cli.md is exactly what `--help` prints (generated, never hand-kept)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tools import cli

ROOT = Path(__file__).resolve().parents[2]
AVAILABLE = [c.name for c in cli.available_commands()]


def test_docs_reference_matches_the_parsers():
    current = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert cli.render_docs(current) == current, (
        "docs/cli.md differs from the parsers' --help: run `python -m tools.cli --write-docs`")


def test_every_available_command_has_a_section():
    current = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    for name in AVAILABLE:
        assert f"\n## tgsnap {name}\n" in current


def test_the_console_script_is_declared():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["tgsnap"] == "tools.cli:main"


def test_prune_is_offered():
    assert "prune" in AVAILABLE


@pytest.mark.parametrize("name", AVAILABLE)
def test_help_names_the_subcommand_and_has_examples(name, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([name, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: tgsnap {name} ")
    assert "examples:" in out


def _example_lines(text: str) -> list[list[str]]:
    """Command lines in an epilog's examples: `tgsnap NAME ...`, `python -m tools.NAME ...`."""
    out = []
    for line in text.splitlines():
        line = line.split(" | ")[0].split(" > ")[0].strip()
        if not re.match(r"^([A-Z_]+=\S+ )*(tgsnap |python -m tools\.)", line):
            continue
        if " [" in line:
            continue  # a synopsis (`--data DIR [--demo] ...`), not an example
        words = shlex.split(line, comments=True)
        while words and re.match(r"^[A-Z_]+=", words[0]):
            words.pop(0)  # VAR=value prefixes
        if not words:
            continue
        if words[0] == "tgsnap" and len(words) > 1:
            out.append([words[1], *words[2:]])
        elif words[:2] == ["python", "-m"] and len(words) > 2 and words[2].startswith("tools."):
            out.append([words[2].removeprefix("tools.").split(".")[0], *words[3:]])
    return out


@pytest.mark.parametrize("name", AVAILABLE)
def test_every_example_uses_real_flags(name):
    cmd = next(c for c in cli.COMMANDS if c.name == name)
    parser = cmd.parser()
    examples = _example_lines(parser.epilog or "") + _example_lines(parser.description or "")
    by_name = {c.name: c for c in cli.available_commands()}
    assert examples or name in ("bench",), f"{name}: no example command lines found"
    for words in examples:
        target = by_name.get(words[0])
        if target is None:
            continue  # an example of another program (e.g. `python -m tools.emulator.cli`)
        try:
            target.parser().parse_args(words[1:])
        except SystemExit as exc:
            pytest.fail(f"example `{' '.join(words)}` of {name} does not parse (exit {exc.code})")


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["frobnicate"])
    assert e.value.code == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_usage_errors_name_tgsnap(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["verify", "--no-such-flag"])
    assert e.value.code == 2
    assert "tgsnap verify: error: unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_runtime_messages_name_tgsnap(tmp_path, capsys):
    (tmp_path / "file").write_text("not a directory")
    assert cli.main(["verify", "--storage-dir", str(tmp_path / "file"), "-q"]) == 2
    assert capsys.readouterr().err.startswith("tgsnap verify: configuration error:")


def test_python_dash_m_forms_keep_working():
    for args in (["-m", "tools", "--help"], ["-m", "tools.status", "--help"], ["-m", "tools.compact", "--help"]):
        r = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "usage:" in r.stdout
