"""Injected faults, seen through real aiogram: what fails, and what was applied anyway."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiogram.exceptions import TelegramNetworkError, TelegramServerError
from aiogram.types import BufferedInputFile

from tools.emulator.knobs import FaultRule


async def add_fault(emu, **rule) -> None:
    async with aiohttp.ClientSession() as http:
        resp = await http.post(emu.control_url + "/faults", json=rule)
        assert resp.status == 200, await resp.text()


async def test_server_error_is_raised_and_nothing_applied(emu, bot, demo):
    await add_fault(emu, kind="server_error", method="sendMessage", status=502)
    with pytest.raises(TelegramServerError):
        await bot.send_message(demo.storage_chat_id, "lost")
    assert emu.world.history(demo.storage_chat_id) == []
    # The rule fired once; the retry goes through.
    assert (await bot.send_message(demo.storage_chat_id, "retried")).message_id == 1


async def test_answer_lost_applies_the_request_but_the_call_fails(emu, bot, demo):
    await add_fault(emu, kind="answer_lost", front="botapi", method="sendDocument")
    with pytest.raises(TelegramNetworkError):
        await bot.send_document(demo.storage_chat_id, BufferedInputFile(b"delta", "delta.bin"))
    (stored,) = emu.world.history(demo.storage_chat_id)
    assert stored.document.name == "delta.bin"
    assert emu.world.read_file(stored.document.id) == b"delta"


async def test_connection_dropped_mid_upload_stores_nothing(emu, bot, demo):
    emu.world.knobs.add_fault(FaultRule("drop_upload", method="sendDocument"))
    with pytest.raises(TelegramNetworkError):
        await bot.send_document(demo.storage_chat_id, BufferedInputFile(b"z" * 200_000, "big.bin"))
    assert emu.world.history(demo.storage_chat_id) == []
    assert list(emu.world.tmp_dir.iterdir()) == []  # the half-received upload was thrown away


async def test_timeout_hangs_then_drops(emu, bot, demo):
    emu.world.knobs.add_fault(FaultRule("timeout", method="getChat", hang_s=0.2))
    with pytest.raises(TelegramNetworkError):
        await bot.get_chat(demo.storage_chat_id)
    assert (await bot.get_chat(demo.storage_chat_id)).id == demo.storage_chat_id


async def test_download_dropped_mid_transfer(emu, bot, demo):
    sent = await bot.send_document(demo.storage_chat_id, BufferedInputFile(b"q" * 300_000, "part.bin"))
    emu.world.knobs.add_fault(FaultRule("answer_lost", method="file"))
    with pytest.raises(aiohttp.ClientError):
        await bot.download(sent.document.file_id)
    assert len((await bot.download(sent.document.file_id)).read()) == 300_000


async def test_latency_and_knobs_through_the_control_api(emu, bot, demo):
    async with aiohttp.ClientSession() as http:
        resp = await http.post(emu.control_url + "/knobs", json={"latency_ms": 150})
        assert (await resp.json())["latency_ms"] == 150
        bad = await http.post(emu.control_url + "/knobs", json={"no_such_knob": 1})
        assert bad.status == 400
    loop = asyncio.get_running_loop()
    start = loop.time()
    await bot.get_me()
    assert loop.time() - start >= 0.15
