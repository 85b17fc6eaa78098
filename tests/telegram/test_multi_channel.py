"""Storage over several channels and storage bots: the same contract, and a budget per lane."""

from __future__ import annotations

import asyncio

import pytest

from snapshot.backends.telegram_budget import BudgetConfig, ChatBudget
from snapshot.backends.telegram_multi import MultiChannelBackend
from snapshot.open import open_backend
from snapshot.settings import StorageSettings
from tests.snapshot.backend_contract import BackendContract
from tests.telegram.conftest import UNLIMITED, botapi, mtproto


@pytest.fixture
def second(emulator, demo):
    """A second storage channel, served by a second storage bot."""
    world = emulator.world
    bot = world.create_bot("tgsnap_store2_bot")
    chat = world.create_channel("tgsnap storage 2", demo.user_id)
    world.set_admin(chat.chat_id, bot.user_id)
    return {"chat": chat.chat_id, "token": bot.token, "session": emulator.session_string(bot.user_id),
            "bot_id": bot.user_id}


class TestMultiMTProto(BackendContract):
    large_size = 3 * 1024 * 1024 + 7

    @pytest.fixture
    def backend_factory(self, emulator, demo, second):
        budgets = [ChatBudget(UNLIMITED), ChatBudget(UNLIMITED)]
        return lambda: MultiChannelBackend([
            mtproto(emulator, demo, budget=budgets[0]),
            mtproto(emulator, demo, budget=budgets[1], chat=second["chat"], token=second["token"],
                    session=second["session"]),
        ]).open()


class TestMultiBotApi(BackendContract):
    @pytest.fixture
    def backend_factory(self, emulator, demo, second):
        budgets = [ChatBudget(UNLIMITED), ChatBudget(UNLIMITED)]
        return lambda: MultiChannelBackend([
            botapi(emulator, demo, budget=budgets[0]),
            botapi(emulator, demo, budget=budgets[1], chat=second["chat"], token=second["token"]),
        ]).open()


@pytest.mark.parametrize("mode", ["botapi", "mtproto"])
async def test_lanes_multiply_the_budget(emulator, demo, second, mode):
    # Telegram's limits and tgsnap's budget at 30x speed: two lanes take twice the sends, never a 429.
    emulator.world.knobs.update({"rate_limits": True, "channel_per_minute": 600, "channel_burst": 5,
                                 "message_edits_per_minute": 15 * 30})
    make = botapi if mode == "botapi" else mtproto
    extra = {} if mode == "botapi" else {"session": second["session"]}
    budgets = [ChatBudget(BudgetConfig(per_minute=540, burst=3, edits_per_minute=12 * 30)) for _ in range(2)]
    b = await MultiChannelBackend([
        make(emulator, demo, budget=budgets[0]),
        make(emulator, demo, budget=budgets[1], chat=second["chat"], token=second["token"], **extra),
    ]).open()
    try:
        refs = await asyncio.gather(*(b.put(f"delta-{i:012d}", bytes([i])) for i in range(24)))
        assert [await b.get(r) for r in refs] == [bytes([i]) for i in range(24)]
        lanes = [int(r.split(":")[1]) for r in refs]
        assert lanes.count(0) >= 8 and lanes.count(1) >= 8  # both lanes carried the load
        assert sum(x.stats.flood_pauses for x in budgets) == 0
        world = emulator.world
        for chat, lane in ((demo.storage_chat_id, 0), (second["chat"], 1)):
            assert len(world.history(chat, limit=100)) == lanes.count(lane)
    finally:
        await b.close()


async def test_open_backend_builds_every_mode(emulator, demo, second, tmp_path):
    local = await open_backend(StorageSettings(mode="local", local_dir=tmp_path / "store"))
    assert local.info.name.startswith("local:")
    await local.close()
    common = dict(storage_chat=str(demo.storage_chat_id), bot_api_url=emulator.bot_api_url)
    b = await open_backend(StorageSettings(mode="botapi", bot_token=demo.bot_token, **common))
    assert not b.info.can_discover and b.info.max_document_size == 20_000_000
    await b.close()
    m = await open_backend(StorageSettings(mode="mtproto", bot_token=demo.bot_token,
                                           mtproto_session=demo.session_string, **common))
    assert m.info.can_discover and m.info.max_document_size >= 2000 * 1024 * 1024
    await m.close()
    multi = await open_backend(StorageSettings(
        mode="mtproto", storage_chat=f"{demo.storage_chat_id},{second['chat']}",
        storage_bot_token=f"{demo.bot_token},{second['token']}",
        mtproto_session=f"{demo.session_string},{second['session']}"))
    try:
        assert isinstance(multi, MultiChannelBackend) and multi.info.can_discover
        ref = await multi.put("delta-000000000001", b"through the factory")
        assert await multi.discover(None) == [ref]
    finally:
        await multi.close()

