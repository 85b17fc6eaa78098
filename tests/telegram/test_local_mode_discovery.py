"""The operator commands find the bot's local-mode storage by themselves: `--data-dir DIR` (or ./data when
nothing else names the storage) starts the emulator from the saved world and reads its storage channel."""

from __future__ import annotations

import asyncio
import fcntl
import json

from snapshot.backends.mtproto import MTProtoBackend
from snapshot.replica import Replica, ReplicaConfig
from tests.tools.chain import _changes
from tools import cli
from tools.emulator.app import Emulator

STORAGE_VARS = ("TGSNAP_STORAGE_DIR", "TGSNAP_STORAGE_CHAT", "TGSNAP_STORAGE_MODE", "TGSNAP_BOT_TOKEN",
                "TGSNAP_MTPROTO_SESSION", "TGSNAP_ENCRYPTION_KEY", "TGSNAP_DATA_DIR")


async def _local_mode_storage(data_dir, deltas: int) -> None:
    """What `python -m bot` in local mode leaves behind: a world whose storage channel holds the store."""
    emulator = Emulator(data_dir / "emulator")
    await emulator.start()
    try:
        demo = emulator.demo()
        backend = MTProtoBackend(bot_token=demo.bot_token, chat=demo.storage_chat_id, session=demo.session_string)
        await backend.open()
        replica = Replica(backend, ReplicaConfig(), writer_id="clicker")
        await replica.acquire()
        for seq in range(1, deltas + 1):
            await replica.write_delta(_changes(seq, 1_700_000_000.0 + seq))
        await replica.release()
        await backend.close()
    finally:
        await emulator.close()


async def test_commands_reach_local_mode_storage(tmp_path, monkeypatch, capsys):
    for var in STORAGE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    await _local_mode_storage(tmp_path / "data", 4)

    assert await asyncio.to_thread(cli.main, ["status", "--data-dir", "data", "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["backend"].startswith("mtproto") and st["last_seq"] == 4 and st["lease"]["writer_id"] == "clicker"
    # the default data directory, as the bot's own default
    assert await asyncio.to_thread(cli.main, ["verify", "-q"]) == 0
    assert "state at seq 4" in capsys.readouterr().out
    assert await asyncio.to_thread(cli.main, ["export", "--to", "x.jsonl", "-q"]) == 0
    assert (tmp_path / "x.jsonl").read_text().count("\n") > 0

    # while the bot runs on it (its lock is held), the command refuses instead of serving the world twice
    with open(tmp_path / "data" / ".lock", "a") as lock:  # noqa: ASYNC230 - a lock file, not I/O to wait for
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert await asyncio.to_thread(cli.main, ["status", "--data-dir", "data"]) == 2
        assert "the bot is running in local mode" in capsys.readouterr().err


async def test_a_data_dir_without_a_world_is_exit_5(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    assert await asyncio.to_thread(cli.main, ["status", "--data-dir", str(tmp_path / "d")]) == 5
    assert "holds no local-mode world" in capsys.readouterr().err
