"""Progress: plain start/end lines when not a terminal, rich bars on one, nothing with --quiet."""

from __future__ import annotations

import io

from tests.tools.chain import build_sync
from tools import cli
from tools.progress import ProgressPrinter


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    p = ProgressPrinter(out)
    p("manifest", 1, 1)
    p("discover", 3, 0)
    for i in range(0, 11):
        p("download", i, 10)
    p.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "manifest: 1/1"
    assert lines[1] == "discover: 3"
    assert lines[2] == "download: 0/10 ..."
    assert lines[3].startswith("download: 10/10 in ") and lines[3].endswith("/s")
    assert len(lines) == 4 and "\r" not in out.getvalue()


def test_bars_on_a_terminal_show_count_rate_and_eta():
    out = Terminal()
    p = ProgressPrinter(out)
    assert p.terminal
    for i in range(0, 6):
        p("download", i, 5)
    p.close()
    text = out.getvalue()
    assert "download" in text and "5/5" in text and "/s" in text and "ETA" in text


def test_quiet_prints_nothing():
    out = Terminal()
    p = ProgressPrinter(out, quiet=True)
    p("download", 1, 2)
    p.close()
    assert out.getvalue() == ""


def test_a_tool_reports_progress_on_stderr_and_quiet_silences_it(tmp_path, capsys):
    build_sync(tmp_path / "s", 6, snapshot_at=3)
    assert cli.main(["restore", "--storage-dir", str(tmp_path / "s"), "--to", str(tmp_path / "a.sqlite")]) == 0
    err = capsys.readouterr().err
    assert "download: 1/1" in err or "download: 0/" in err
    assert "apply: " in err
    assert cli.main(["restore", "--storage-dir", str(tmp_path / "s"), "--to", str(tmp_path / "b.sqlite"), "-q"]) == 0
    assert capsys.readouterr().err.startswith("restored seq 6")
