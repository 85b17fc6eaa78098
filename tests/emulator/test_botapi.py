"""Real aiogram 3.31 against the Bot API front: the storage document flow, limits and errors."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramUnauthorizedError,
)
from aiogram.types import BotCommand, BufferedInputFile, InputMediaDocument

from tools.emulator.testing import aiogram_bot, running_emulator


def doc(data: bytes, name: str = "snap.json") -> BufferedInputFile:
    return BufferedInputFile(data, name)


async def test_get_me(bot, demo):
    me = await bot.get_me()
    assert me.id == demo.bot_id and me.is_bot and me.username == demo.bot_username


async def test_wrong_token_is_unauthorized(emu, demo):
    async with aiogram_bot(emu, f"{demo.bot_id}:wrong") as impostor:
        with pytest.raises(TelegramUnauthorizedError):
            await impostor.get_me()


async def test_document_flow_send_pin_getchat_getfile_edit_delete(bot, demo):
    chat = demo.storage_chat_id
    payload = bytes(range(256)) * 400
    sent = await bot.send_document(chat, doc(payload, "delta-000001.bin"), caption="delta 1")
    assert sent.chat.id == chat and sent.chat.type == "channel" and sent.sender_chat.id == chat
    assert sent.document.file_name == "delta-000001.bin" and sent.document.file_size == len(payload)
    assert sent.caption == "delta 1"

    assert await bot.pin_chat_message(chat, sent.message_id, disable_notification=True)
    info = await bot.get_chat(chat)
    assert info.pinned_message.message_id == sent.message_id
    assert info.pinned_message.document.file_unique_id == sent.document.file_unique_id

    file = await bot.get_file(sent.document.file_id)
    assert file.file_size == len(payload) and file.file_path
    assert (await bot.download(file)).read() == payload

    new = b'{"manifest": 2}'
    edited = await bot.edit_message_media(
        InputMediaDocument(media=doc(new, "manifest.json"), caption="v2"), chat_id=chat, message_id=sent.message_id
    )
    assert edited.message_id == sent.message_id and edited.edit_date is not None
    assert edited.document.file_unique_id != sent.document.file_unique_id and edited.caption == "v2"
    again = await bot.get_chat(chat)
    assert (await bot.download(again.pinned_message.document.file_id)).read() == new

    # Reusing an existing file_id (no upload) also works, and "not modified" is refused like Telegram does.
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_media(InputMediaDocument(media=edited.document.file_id, caption="v2"),
                                     chat_id=chat, message_id=sent.message_id)
    resent = await bot.send_document(chat, edited.document.file_id)
    assert resent.document.file_unique_id == edited.document.file_unique_id

    assert await bot.delete_message(chat, sent.message_id)
    with pytest.raises(TelegramBadRequest, match="message to delete not found"):
        await bot.delete_message(chat, sent.message_id)
    assert (await bot.get_chat(chat)).pinned_message is None


async def test_pinned_message_is_the_most_recent_by_sending_date(emu, bot, demo):
    chat = demo.storage_chat_id
    older = await bot.send_message(chat, "manifest A")
    emu.world.knobs.clock_offset_s = 60
    newer = await bot.send_message(chat, "manifest B")
    await bot.pin_chat_message(chat, newer.message_id)
    await bot.pin_chat_message(chat, older.message_id)  # pinned last, but sent first
    assert (await bot.get_chat(chat)).pinned_message.message_id == newer.message_id
    await bot.unpin_chat_message(chat, message_id=newer.message_id)
    assert (await bot.get_chat(chat)).pinned_message.message_id == older.message_id


async def test_delete_is_refused_after_48_hours(emu, bot, demo):
    msg = await bot.send_message(demo.storage_chat_id, "old")
    emu.world.knobs.clock_offset_s = 48 * 3600 + 1
    with pytest.raises(TelegramBadRequest, match="message can't be deleted"):
        await bot.delete_message(demo.storage_chat_id, msg.message_id)


async def test_flood_control_raises_retry_after_and_edits_share_the_budget(emu, bot, demo):
    emu.world.knobs.update({"botapi_flood_hold_s": 0})  # answer at once instead of holding
    chat = demo.storage_chat_id
    first = await bot.send_message(chat, "0")
    for i in range(1, 5):
        await bot.send_message(chat, str(i))
    with pytest.raises(TelegramRetryAfter) as err:
        await bot.send_message(chat, "one too many")
    assert 1 <= err.value.retry_after <= 3
    with pytest.raises(TelegramRetryAfter):
        await bot.edit_message_text("edited", chat_id=chat, message_id=first.message_id)
    # Pins are not messages: they do not spend the budget.
    assert await bot.pin_chat_message(chat, first.message_id)


async def test_raw_429_has_telegrams_shape(emu, demo):
    url = f"{emu.bot_api_url}/bot{demo.bot_token}/sendMessage"
    emu.world.knobs.update({"channel_burst": 1, "botapi_flood_hold_s": 2})
    async with aiohttp.ClientSession() as http:
        ok = await http.post(url, data={"chat_id": demo.storage_chat_id, "text": "a"})
        assert (await ok.json())["ok"] is True
        resp = await http.post(url, json={"chat_id": demo.storage_chat_id, "text": "b"})
        body = await resp.json()
    assert resp.status == 429
    assert body["ok"] is False and body["error_code"] == 429
    assert body["description"].startswith("Too Many Requests: retry after ")
    assert body["parameters"]["retry_after"] == 3


async def test_upload_and_download_size_limits(emu, bot, demo):
    emu.world.knobs.update({"botapi_upload_limit": 4096, "botapi_download_limit": 1024})
    with pytest.raises(TelegramEntityTooLarge):
        await bot.send_document(demo.storage_chat_id, doc(b"x" * 5000))
    assert emu.world.history(demo.storage_chat_id) == []
    small = await bot.send_document(demo.storage_chat_id, doc(b"x" * 1000))
    big = await bot.send_document(demo.storage_chat_id, doc(b"y" * 4096))
    assert (await bot.download(small.document.file_id)).read() == b"x" * 1000
    with pytest.raises(TelegramBadRequest, match="file is too big"):
        await bot.get_file(big.document.file_id)


def test_default_limits_are_telegrams():
    from tools.emulator.knobs import MB, Knobs

    knobs = Knobs()
    assert (knobs.botapi_upload_limit, knobs.botapi_download_limit) == (50 * MB, 20 * MB)
    assert knobs.rate_limits and knobs.channel_per_minute == 20


async def test_bot_needs_admin_rights_in_the_channel(emu, demo):
    outsider = emu.world.create_bot("outsider_bot")
    member = emu.world.create_bot("member_bot")
    emu.world.set_member(demo.storage_chat_id, member.user_id, "member")
    public = emu.world.create_channel("public", demo.user_id, username="public_news")
    async with aiogram_bot(emu, outsider.token) as b:
        with pytest.raises(TelegramBadRequest, match="chat not found"):  # a private channel: invisible
            await b.send_message(demo.storage_chat_id, "hi")
        with pytest.raises(TelegramBadRequest, match="chat not found"):
            await b.get_chat(demo.storage_chat_id)
        with pytest.raises(TelegramForbiddenError, match="not a member"):  # a public one: forbidden
            await b.send_message("@public_news", "hi")
        assert (await b.get_chat(public.chat_id)).title == "public"
    async with aiogram_bot(emu, member.token) as b:
        with pytest.raises(TelegramBadRequest, match="need administrator rights"):
            await b.send_document(demo.storage_chat_id, doc(b"data"))
    emu.world.set_admin(demo.storage_chat_id, member.user_id, {"can_edit_messages": False})
    async with aiogram_bot(emu, member.token) as b:
        msg = await b.send_message(demo.storage_chat_id, "now I can post")
        with pytest.raises(TelegramBadRequest, match="not enough rights"):
            await b.pin_chat_message(demo.storage_chat_id, msg.message_id)


async def test_bot_cannot_start_a_dialog_or_use_another_bots_file_id(emu, bot, demo):
    stranger = emu.world.create_user("Stranger")
    with pytest.raises(TelegramForbiddenError, match="can't initiate conversation"):
        await bot.send_message(stranger.user_id, "hello")
    sent = await bot.send_document(demo.storage_chat_id, doc(b"abc"))
    other = emu.world.create_bot("other_bot")
    emu.world.set_admin(demo.storage_chat_id, other.user_id)
    async with aiogram_bot(emu, other.token) as b:
        with pytest.raises(TelegramBadRequest, match=r"^Telegram server says - Bad Request: invalid file_id$"):
            await b.get_file(sent.document.file_id)
        seen = await b.get_chat(demo.storage_chat_id)
        assert seen.id == demo.storage_chat_id


async def test_chat_members_forward_copy_commands(emu, bot, demo):
    chat = demo.storage_chat_id
    me = await bot.get_chat_member(chat, demo.bot_id)
    assert me.status == "administrator" and me.can_post_messages and me.can_edit_messages
    owner = await bot.get_chat_member(chat, demo.user_id)
    assert owner.status == "creator"
    admins = await bot.get_chat_administrators(chat)
    assert {a.user.id for a in admins} == {demo.bot_id, demo.user_id}

    original = await bot.send_document(chat, doc(b"part", "part-1.zst"), caption="p1")
    fwd = await bot.forward_message(chat, chat, original.message_id)
    assert fwd.forward_origin.chat.id == chat and fwd.forward_origin.message_id == original.message_id
    assert fwd.document.file_unique_id == original.document.file_unique_id
    copied = await bot.copy_message(chat, chat, original.message_id, caption="copy")
    assert copied.message_id == fwd.message_id + 1
    assert emu.world.get_message(chat, copied.message_id).caption == "copy"

    await bot.set_my_commands([BotCommand(command="start", description="Начать")])
    assert [c.command for c in await bot.get_my_commands()] == ["start"]
    with pytest.raises(TelegramNotFound):
        await bot.session.make_request(bot, _Unknown())


class _Unknown:
    """A method the emulator does not know (aiogram sends it like any other)."""

    __api_method__ = "sendDice"
    __returning__ = bool

    def model_dump(self, warnings: bool = False) -> dict:
        return {}


async def test_access_log_never_shows_the_token(tmp_path, caplog):
    async with running_emulator(tmp_path / "tg") as emu:
        demo = emu.demo()
        with caplog.at_level("INFO", logger="tools.emulator.access"):
            async with aiogram_bot(emu, demo.bot_token) as b:
                await b.get_me()
    assert "getMe" in caplog.text
    assert demo.bot_token not in caplog.text and demo.bot_token.split(":")[1] not in caplog.text


async def test_delete_messages_batch_fails_whole_when_one_cannot_be_deleted(emu, bot, demo):
    # telegram-bot-api: unknown ids are skipped, then tdlib deletes all of the rest or none
    chat = demo.storage_chat_id
    emu.world.knobs.clock_offset_s = -(48 * 3600 + 60)
    old = await bot.send_message(chat, "old")
    emu.world.knobs.clock_offset_s = 0
    young = await bot.send_message(chat, "young")
    with pytest.raises(TelegramBadRequest, match="message can't be deleted"):
        await bot.delete_messages(chat, [old.message_id, young.message_id, 999_999])
    assert emu.world.get_message(chat, young.message_id) is not None
    assert await bot.delete_messages(chat, [young.message_id, 999_999])
    assert emu.world.get_message(chat, young.message_id) is None


async def test_short_flood_waits_are_slow_answers_like_telegram_bot_api(emu, bot, demo):
    # TDLib inside telegram-bot-api waits out a FLOOD_WAIT and resends while the total stays within 60 s
    emu.world.knobs.update({"channel_burst": 1, "channel_per_minute": 60})
    chat = demo.storage_chat_id
    await bot.send_message(chat, "a")
    started = asyncio.get_running_loop().time()
    await bot.send_message(chat, "b")  # over the limit: held about a second, then sent
    assert asyncio.get_running_loop().time() - started >= 0.9
    assert emu.world.limiter.held >= 1
