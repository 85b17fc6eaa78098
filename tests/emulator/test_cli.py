"""`python -m tools.emulator` as a program: the JSON line, the control CLI, a clean stop, loopback only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_cli(control_url: str, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "tools.emulator.cli", "--control", control_url, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )
    return out.stdout


@pytest.fixture
def server(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.emulator", "--data", str(tmp_path / "tg"), "--json", "--demo",
         "--log-level", "INFO"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        yield proc, json.loads(line)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=20)


def test_json_line_and_control_cli(server):
    proc, info = server
    for key in ("bot_api_url", "control_url", "mtproto_host", "mtproto_port", "bot_token", "storage_chat_id",
                "user_id", "session_string"):
        assert key in info, key
    assert info["bot_api_url"].startswith("http://127.0.0.1:")
    assert str(info["storage_chat_id"]).startswith("-100")
    if info["mtproto_port"] is not None:
        assert info["mtproto_host"] == "127.0.0.1" and info["session_string"]

    control = info["control_url"]
    said = run_cli(control, "say", "--user", str(info["user_id"]), "--bot", info["bot_username"], "--wait", "0",
                   "Привет")
    assert "(no reply)" in said  # no bot is running behind the emulator
    listing = run_cli(control, "messages", str(info["user_id"]), "--bot", str(info["bot_id"]))
    assert "Привет" in listing
    knobs = json.loads(run_cli(control, "knobs", "latency_ms=5"))
    assert knobs["latency_ms"] == 5.0
    faults = json.loads(run_cli(control, "fault", "server_error", "--method", "sendMessage"))
    assert faults["faults"][0]["method"] == "sendMessage"

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert info["bot_token"] not in proc.stderr.read()  # access logs are redacted


def test_refuses_non_loopback_hosts(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "tools.emulator", "--data", str(tmp_path / "tg"), "--host", "0.0.0.0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode != 0 and "loopback" in out.stderr
    assert not (tmp_path / "tg").exists()
