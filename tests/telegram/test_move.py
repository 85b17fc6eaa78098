"""`move` into a fresh Telegram channel: the state restored from the new channel equals the old one's."""

from __future__ import annotations

import pytest

from snapshot.backends.local import LocalDirBackend
from snapshot.move import move
from snapshot.restore import restore
from tests.telegram.conftest import botapi, mtproto
from tests.tools.chain import build, rows

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("make", [botapi, mtproto], ids=["botapi", "mtproto"])
async def test_move_into_a_new_channel(emulator, demo, tmp_path, make):
    chain = await build(tmp_path / "old", 9, snapshot_at=4)
    fresh = emulator.world.create_channel("tgsnap storage (moved)", demo.user_id)
    emulator.world.set_admin(fresh.chat_id, demo.bot_id)
    source = LocalDirBackend(tmp_path / "old", fsync=False)
    target = await make(emulator, demo, chat=fresh.chat_id).open()
    try:
        result = await move(source, target)
        assert result.seq == 9 and result.rows == len(chain.states[9])
        again = await restore(target)
        assert rows(again.conn) == chain.states[9]
        # the bot, pointed at the new channel, finds it through the pin
        reopened = await make(emulator, demo, chat=fresh.chat_id).open()
        try:
            assert rows((await restore(reopened)).conn) == chain.states[9]
        finally:
            await reopened.close()
    finally:
        await target.close()
