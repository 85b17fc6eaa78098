"""`python -m bot` with a mistake in its configuration: one line naming what to fix, the documented exit
code (the same as the tools': snapshot/exitcodes.py), no traceback, and no empty store started."""

from __future__ import annotations

import asyncio
import sys

from snapshot.exitcodes import EXIT_CONFIG, EXIT_EMPTY
from tests.bot.test_process import clean_env
from tests.tools.chain import build


async def run_bot(cwd, *args: str, **env: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, cwd=cwd, stdin=asyncio.subprocess.DEVNULL, env=clean_env(**env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


def one_line_without_traceback(err: str) -> list[str]:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines


async def test_a_malformed_token_is_one_line_and_exit_2(tmp_path):
    code, err = await run_bot(tmp_path, TGSNAP_BOT_TOKEN="not a token at all")
    assert code == EXIT_CONFIG
    (line,) = one_line_without_traceback(err)
    assert "TGSNAP_BOT_TOKEN is not a bot token" in line and "not a token at all" not in line
    code, err = await run_bot(tmp_path, "--bot-token", "123456:abc", TGSNAP_STORAGE_BOT_TOKEN="x:y")
    assert code == EXIT_CONFIG and "TGSNAP_STORAGE_BOT_TOKEN is not a bot token" in err


async def test_a_data_dir_naming_a_file_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "afile").write_text("x")
    code, err = await run_bot(tmp_path, "--data-dir", str(tmp_path / "afile"))
    assert code == EXIT_CONFIG
    (line,) = one_line_without_traceback(err)
    assert "--data-dir" in line and "names a file" in line
    code, err = await run_bot(tmp_path, "--data-dir", str(tmp_path / "afile" / "below"))
    assert code == EXIT_CONFIG and "cannot create the data directory" in err and "Traceback" not in err


async def test_a_mistyped_storage_dir_is_exit_5_not_an_empty_bot(tmp_path):
    from tools.emulator.testing import running_emulator

    async with running_emulator(tmp_path / "tg") as emu:
        demo = emu.demo()
        code, err = await run_bot(tmp_path, "--storage-mode", "local", "--storage-dir", str(tmp_path / "stroage"),
                                  TGSNAP_BOT_TOKEN=demo.bot_token, TGSNAP_BOT_API_URL=emu.bot_api_url)
        assert code == EXIT_EMPTY, err
        assert "Traceback" not in err and "stroage does not exist" in err and "mkdir -p" in err
        assert not (tmp_path / "stroage").exists()
        # a file named as the storage directory is configuration
        (tmp_path / "f").write_text("")
        code, err = await run_bot(tmp_path, "--storage-mode", "local", "--storage-dir", str(tmp_path / "f"),
                                  TGSNAP_BOT_TOKEN=demo.bot_token, TGSNAP_BOT_API_URL=emu.bot_api_url)
        assert code == EXIT_CONFIG and "names a file" in err and "Traceback" not in err


async def test_a_wrong_encryption_key_exits_2_as_in_the_tools(tmp_path):
    from tools.emulator.testing import running_emulator
    from tools.verify import main as verify

    await build(tmp_path / "s", 3, key=bytes(range(1, 33)))
    wrong = "cd" * 32
    tool = await asyncio.to_thread(verify, ["--storage-dir", str(tmp_path / "s"), "--encryption-key", wrong, "-q"])
    assert tool == EXIT_CONFIG
    async with running_emulator(tmp_path / "tg") as emu:
        demo = emu.demo()
        code, err = await run_bot(tmp_path, "--storage-mode", "local", "--storage-dir", str(tmp_path / "s"),
                                  TGSNAP_ENCRYPTION_KEY=wrong, TGSNAP_BOT_TOKEN=demo.bot_token,
                                  TGSNAP_BOT_API_URL=emu.bot_api_url)
    assert code == EXIT_CONFIG, err
    assert "Traceback" not in err and "different key" in err and wrong not in err


async def test_a_misspelt_token_variable_is_warned_about(tmp_path):
    (tmp_path / "afile").write_text("x")  # stop right after the warnings: the data directory is a file
    code, err = await run_bot(tmp_path, "--data-dir", str(tmp_path / "afile"), TGSNAP_TOKEN="123:abc")
    assert code == EXIT_CONFIG
    assert "warning: TGSNAP_TOKEN is not a tgsnap setting (did you mean TGSNAP_BOT_TOKEN?)" in err
    assert "runs in local mode" in err


def test_the_tools_refuse_a_malformed_token_the_same_way(tmp_path, monkeypatch, capsys):
    from tools import cli

    monkeypatch.chdir(tmp_path)
    for var in ("TGSNAP_BOT_TOKEN", "TGSNAP_STORAGE_BOT_TOKEN", "TGSNAP_MTPROTO_SESSION"):
        monkeypatch.delenv(var, raising=False)
    code = cli.main(["status", "--storage-mode", "botapi", "--storage-chat", "-1001", "--bot-token", "garbage token"])
    assert code == EXIT_CONFIG
    (line,) = one_line_without_traceback(capsys.readouterr().err)
    assert "TGSNAP_BOT_TOKEN is not a bot token" in line and "garbage" not in line
