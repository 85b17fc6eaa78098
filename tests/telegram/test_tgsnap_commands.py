"""The `tgsnap` storage commands against storage kept in the emulator's channel, over the Bot API and over
MTProto, configured the way an operator configures them (TGSNAP_* variables and flags)."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest

from snapshot.replica import Replica, ReplicaConfig
from tests.telegram.conftest import botapi, mtproto
from tests.tools.chain import _changes, rows
from tools import cli


async def _write(backend, deltas: int, snapshot_at: int) -> list[tuple]:
    from snapshot.apply import apply_changes

    model = sqlite3.connect(":memory:")
    replica = Replica(backend, ReplicaConfig(part_size=4096, shard_size=8192), writer_id="bot-1")
    await replica.acquire()
    states = {}
    for seq in range(1, deltas + 1):
        cs = _changes(seq, 1_700_000_000.0 + seq)
        await replica.write_delta(cs)
        apply_changes(model, cs)
        states[seq] = rows(model)
        if seq == snapshot_at:
            await replica.write_snapshot(model.serialize(), seq, 1_700_000_000.0 + seq)
    await replica.release()
    await backend.close()
    return states


@pytest.mark.parametrize("mode", ["botapi", "mtproto"])
async def test_status_verify_export_restore_through_the_emulator(mode, emulator, demo, tmp_path, monkeypatch,
                                                                 capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TGSNAP_BOT_TOKEN", demo.bot_token)
    if mode == "mtproto":
        monkeypatch.setenv("TGSNAP_MTPROTO_SESSION", demo.session_string)
    where = ["--storage-mode", mode, "--storage-chat", str(demo.storage_chat_id), "--bot-api-url", emulator.bot_api_url]

    def run(*argv: str) -> int:
        return cli.main([argv[0], *where, *argv[1:]])

    # an empty channel is exit 5, for every reading command
    for command in ("status", "verify", "export"):
        assert await asyncio.to_thread(run, command, "-q" if command != "status" else "--json") == 5, command
    capsys.readouterr()

    backend = botapi(emulator, demo) if mode == "botapi" else mtproto(emulator, demo)
    await backend.open()
    states = await _write(backend, 6, snapshot_at=3)

    assert await asyncio.to_thread(run, "status", "--json") == 0
    st = json.loads(capsys.readouterr().out)
    assert st["backend"].startswith(mode) and st["last_seq"] == 6 and st["snapshot"]["base_seq"] == 3
    assert st["chain"]["deltas"] == 3 and st["lease"]["released"] is True
    if mode == "mtproto":
        assert st["channel_tip"] and st["channel_tip"] >= 6  # message ids are sequential in a channel

    assert await asyncio.to_thread(run, "verify", "-q") == 0
    assert "all" in capsys.readouterr().out

    assert await asyncio.to_thread(run, "export", "--at-seq", "5", "--to", "at5.sqlite", "-q") == 0
    conn = sqlite3.connect(tmp_path / "at5.sqlite")
    try:
        assert rows(conn) == states[5]
    finally:
        conn.close()
    assert await asyncio.to_thread(run, "restore", "--to", "state.sqlite", "-q") == 0
    conn = sqlite3.connect(tmp_path / "state.sqlite")
    try:
        assert rows(conn) == states[6]
    finally:
        conn.close()
