"""The MTProto front against real, unmodified Telethon: what tgsnap's storage backend relies on."""

from __future__ import annotations

import asyncio
import io
import os
from dataclasses import dataclass
from typing import Any

import pytest
from telethon import TelegramClient, errors, functions, types
from telethon.sessions import StringSession

from snapshot.backends import mtproto_transfer as transfer
from tools.emulator.mtproto import serve_mtproto, session_string
from tools.emulator.world import World

pytestmark = pytest.mark.timeout(60)

MiB = 1024 * 1024


@dataclass
class Emu:
    world: World
    front: Any
    bot_id: int
    chat_id: int
    channel_id: int
    peer: types.InputPeerChannel
    clients: list[TelegramClient]

    async def client(self, **kwargs: Any) -> TelegramClient:
        string = session_string(self.world, self.bot_id, "127.0.0.1", self.front.port)
        client = TelegramClient(StringSession(string), api_id=1, api_hash="x" * 32, receive_updates=False, **kwargs)
        await client.connect()
        self.clients.append(client)
        return client


@pytest.fixture
async def emu(tmp_path):
    world = World.open(tmp_path / "world")
    bot = world.create_bot("storage_bot")
    owner = world.create_user("Owner")
    channel = world.create_channel("storage", owner.user_id)
    world.set_admin(channel.chat_id, bot.user_id)
    front = await serve_mtproto(world, "127.0.0.1", 0)
    # Telethon caches help.getConfig on the class; every test has its own port.
    TelegramClient._config = None
    emu = Emu(
        world,
        front,
        bot.user_id,
        channel.chat_id,
        channel.channel_id,
        types.InputPeerChannel(channel.channel_id, channel.access_hash),
        [],
    )
    yield emu
    for client in emu.clients:
        await client.disconnect()
    await front.close()
    world.close()


def named(data: bytes, name: str) -> io.BytesIO:
    stream = io.BytesIO(data)
    stream.name = name
    return stream


async def test_get_me_is_the_bot(emu: Emu) -> None:
    client = await emu.client()
    me = await client.get_me()
    assert me.id == emu.bot_id
    assert me.bot and me.is_self
    assert me.username == "storage_bot"
    assert await client.is_user_authorized()


async def test_send_small_file_get_messages_and_download(emu: Emu) -> None:
    client = await emu.client()
    data = os.urandom(3 * MiB + 12345)
    sent = await client.send_file(emu.peer, named(data, "snap-0001.bin"), caption="part 1", force_document=True)
    assert isinstance(sent.media, types.MessageMediaDocument)
    doc = sent.media.document
    assert doc.size == len(data)
    assert sent.file.name == "snap-0001.bin"
    assert sent.message == "part 1"
    assert doc.id and doc.access_hash and doc.file_reference

    # The world holds the very same message and bytes (what the Bot API front would serve).
    stored = emu.world.get_message(emu.chat_id, sent.id)
    assert stored is not None and stored.caption == "part 1"
    assert emu.world.read_file(stored.document.id) == data

    fetched = await client.get_messages(types.PeerChannel(emu.channel_id), ids=sent.id)
    assert fetched.id == sent.id and fetched.file.size == len(data)
    assert await client.download_media(fetched, file=bytes) == data


async def test_big_file_uses_save_big_file_part(emu: Emu) -> None:
    client = await emu.client()
    data = os.urandom(12 * MiB + 777)
    totals: set[int | None] = set()
    original = emu.front.uploads.save_part

    def save_part(*args: Any, total_parts: int | None) -> None:
        totals.add(total_parts)
        original(*args, total_parts=total_parts)

    emu.front.uploads.save_part = save_part  # type: ignore[method-assign]
    sent = await client.send_file(emu.peer, named(data, "big.bin"), force_document=True)
    assert totals == {-(-len(data) // (128 * 1024))}  # every part via saveBigFilePart, one consistent total
    assert sent.file.size == len(data)
    assert await client.download_media(sent, file=bytes) == data


async def test_getfile_rules(emu: Emu) -> None:
    client = await emu.client()
    data = os.urandom(2 * MiB)
    sent = await client.send_file(emu.peer, named(data, "r.bin"), force_document=True)
    doc = sent.media.document
    loc = types.InputDocumentFileLocation(doc.id, doc.access_hash, doc.file_reference, "")

    ok = await client(functions.upload.GetFileRequest(loc, offset=MiB, limit=MiB))
    assert ok.bytes == data[MiB:]
    ok = await client(functions.upload.GetFileRequest(loc, offset=4096, limit=4096))
    assert ok.bytes == data[4096:8192]
    past_end = await client(functions.upload.GetFileRequest(loc, offset=4 * MiB, limit=4096))
    assert past_end.bytes == b""

    with pytest.raises(errors.OffsetInvalidError):
        await client(functions.upload.GetFileRequest(loc, offset=1000, limit=4096))
    with pytest.raises(errors.LimitInvalidError):
        await client(functions.upload.GetFileRequest(loc, offset=0, limit=1000))
    with pytest.raises(errors.LimitInvalidError):  # crosses the 1 MiB boundary
        await client(functions.upload.GetFileRequest(loc, offset=MiB - 4096, limit=8192))
    with pytest.raises(errors.LimitInvalidError):
        await client(functions.upload.GetFileRequest(loc, offset=0, limit=2 * MiB))
    with pytest.raises(errors.LimitInvalidError):  # 1 MiB is not divisible by 12 KiB
        await client(functions.upload.GetFileRequest(loc, offset=0, limit=12 * 1024))
    # precise: 1 KiB granularity is allowed
    precise = await client(functions.upload.GetFileRequest(loc, offset=1024, limit=3072, precise=True))
    assert precise.bytes == data[1024:4096]

    wrong_hash = types.InputDocumentFileLocation(doc.id, doc.access_hash ^ 1, doc.file_reference, "")
    with pytest.raises(errors.FileIdInvalidError):
        await client(functions.upload.GetFileRequest(wrong_hash, offset=0, limit=4096))


async def test_file_reference_expiry_is_recovered_by_telethon(emu: Emu) -> None:
    client = await emu.client()
    data = os.urandom(300_000)
    sent = await client.send_file(emu.peer, named(data, "ref.bin"), force_document=True)
    doc = sent.media.document
    emu.front.file_refs.expire_all()

    stale = types.InputDocumentFileLocation(doc.id, doc.access_hash, doc.file_reference, "")
    with pytest.raises(errors.FileReferenceExpiredError):
        await client(functions.upload.GetFileRequest(stale, offset=0, limit=4096))
    # Downloading a Message: Telethon refetches it with channels.getMessages and retries.
    assert await client.download_media(sent, file=bytes) == data


async def test_edit_text_and_replace_media(emu: Emu) -> None:
    client = await emu.client()
    text = await client.send_message(emu.peer, "manifest v1")
    edited = await client.edit_message(emu.peer, text.id, "manifest v2")
    assert edited.message == "manifest v2" and edited.edit_date is not None
    assert emu.world.get_message(emu.chat_id, text.id).text == "manifest v2"

    first = await client.send_file(emu.peer, named(b"a" * 5000, "m1.json"), caption="c1", force_document=True)
    replacement = os.urandom(70_000)
    swapped = await client.edit_message(emu.peer, first.id, file=named(replacement, "m2.json"), force_document=True)
    assert swapped.id == first.id
    assert swapped.file.name == "m2.json"
    assert swapped.media.document.id != first.media.document.id
    assert await client.download_media(swapped, file=bytes) == replacement
    again = await client.get_messages(emu.peer, ids=first.id)
    assert again.media.document.id == swapped.media.document.id

    with pytest.raises(errors.MessageNotModifiedError):
        await client.edit_message(emu.peer, text.id, "manifest v2")


async def test_pin_shows_in_full_channel_then_unpin(emu: Emu) -> None:
    client = await emu.client()
    msg = await client.send_message(emu.peer, "manifest")
    await client.pin_message(emu.peer, msg.id, notify=False)
    full = await client(functions.channels.GetFullChannelRequest(emu.peer))
    assert full.full_chat.pinned_msg_id == msg.id
    assert emu.world.pinned_message(emu.chat_id).message_id == msg.id
    pinned = await client.get_messages(emu.peer, ids=types.InputMessagePinned())
    assert pinned.id == msg.id
    await client.unpin_message(emu.peer, msg.id)
    full = await client(functions.channels.GetFullChannelRequest(emu.peer))
    assert full.full_chat.pinned_msg_id is None


async def test_delete_then_get_messages_sees_empty(emu: Emu) -> None:
    client = await emu.client()
    keep = await client.send_message(emu.peer, "keep")
    gone = await client.send_message(emu.peer, "gone")
    affected = await client.delete_messages(emu.peer, [gone.id])
    assert affected[0].pts_count == 1
    got = await client.get_messages(emu.peer, ids=[keep.id, gone.id, 9999])
    assert got[0].message == "keep"
    assert got[1] is None and got[2] is None
    assert emu.world.get_message(emu.chat_id, gone.id) is None


async def test_flood_wait_from_the_shared_limiter(emu: Emu) -> None:
    emu.world.knobs.update({"channel_burst": 2, "channel_per_minute": 6})
    client = await emu.client(flood_sleep_threshold=0)
    await client.send_message(emu.peer, "1")
    await client.send_message(emu.peer, "2")
    with pytest.raises(errors.FloodWaitError) as caught:
        await client.send_message(emu.peer, "3")
    assert 1 <= caught.value.seconds <= 10
    # Edits spend the same budget.
    with pytest.raises(errors.FloodWaitError):
        await client.edit_message(emu.peer, 1, "edited")
    assert [m.text for m in emu.world.history(emu.chat_id, newest_first=False)] == ["1", "2"]


async def _no_refresh() -> Any:
    raise AssertionError("no file reference expires here")


async def test_parallel_senders_share_the_auth_key(emu: Emu) -> None:
    # the production transfer code (snapshot/backends/mtproto_transfer.py), not a copy of it
    client = await emu.client()
    pool = transfer.SenderPool(client, 4)
    try:
        data = os.urandom(11 * MiB + 5)
        input_file = await transfer.upload(pool, data, "parallel.bin")
        assert isinstance(input_file, types.InputFileBig)
        sent = await client.send_file(emu.peer, input_file, force_document=True)
        assert sent.file.size == len(data)
        doc = sent.media.document
        location = types.InputDocumentFileLocation(doc.id, doc.access_hash, doc.file_reference, "")
        assert await transfer.download(pool, location, doc.size, refresh=_no_refresh, what="parallel.bin") == data
        # Small files go through saveFilePart, parts arriving out of order.
        small = os.urandom(3 * MiB + 100)
        input_small = await transfer.upload(pool, small, "small.bin", part_size=256 * 1024)
        assert isinstance(input_small, types.InputFile)
        sent_small = await client.send_file(emu.peer, input_small, force_document=True)
        assert await client.download_media(sent_small, file=bytes) == small
    finally:
        await pool.close()


async def test_concurrent_connections_are_really_concurrent(emu: Emu) -> None:
    client = await emu.client()
    seen: list[int] = []
    original = emu.front.uploads.save_part

    def save_part(*args: Any, **kwargs: Any) -> None:
        seen.append(emu.front.connection_count)
        original(*args, **kwargs)

    emu.front.uploads.save_part = save_part  # type: ignore[method-assign]
    pool = transfer.SenderPool(client, 3)
    try:
        await transfer.upload(pool, os.urandom(2 * MiB), "c.bin", part_size=128 * 1024)
    finally:
        await pool.close()
    # The main connection plus three senders were open while the parts arrived.
    assert max(seen) >= 4


async def test_upload_rule_violations(emu: Emu) -> None:
    client = await emu.client()

    async def send(input_file: Any) -> Any:
        media = types.InputMediaUploadedDocument(
            input_file, "application/octet-stream", [types.DocumentAttributeFilename("x.bin")]
        )
        return await client(
            functions.messages.SendMediaRequest(emu.peer, media, "", random_id=int.from_bytes(os.urandom(7), "big"))
        )

    # Part sizes must divide 512 KiB and be multiples of 1 KiB.
    # Part 0 alone may be a whole small file; a second part proves it was not the last one.
    await client(functions.upload.SaveFilePartRequest(1, 0, b"x" * 1000))
    with pytest.raises(errors.FilePartSizeInvalidError):
        await client(functions.upload.SaveFilePartRequest(1, 1, b"x" * 1000))
    await client(functions.upload.SaveFilePartRequest(7, 0, b"x" * 3072))
    with pytest.raises(errors.FilePartSizeInvalidError):  # out of order: part 0 is not the last
        await client(functions.upload.SaveFilePartRequest(7, 2, b"x" * 3072))

    # A missing part is named.
    await client(functions.upload.SaveFilePartRequest(2, 0, b"x" * 1024))
    await client(functions.upload.SaveFilePartRequest(2, 2, b"x" * 10))
    with pytest.raises(errors.FilePartMissingError) as missing:
        await send(types.InputFile(2, 3, "x.bin", ""))
    assert missing.value.which == 1

    # Too-big and empty parts are refused at once.
    with pytest.raises(errors.FilePartTooBigError):
        await client(functions.upload.SaveFilePartRequest(3, 0, b"x" * (512 * 1024 + 1024)))
    with pytest.raises(errors.FilePartEmptyError):
        await client(functions.upload.SaveFilePartRequest(3, 0, b""))

    # A big file keeps its total part count.
    await client(functions.upload.SaveBigFilePartRequest(4, 0, 30, b"x" * 512 * 1024))
    with pytest.raises(errors.FilePartsInvalidError):
        await client(functions.upload.SaveBigFilePartRequest(4, 1, 31, b"x" * 512 * 1024))

    # The MD5 of a small file is checked.
    await client(functions.upload.SaveFilePartRequest(5, 0, b"hello"))
    with pytest.raises(errors.Md5ChecksumInvalidError):
        await send(types.InputFile(5, 1, "x.bin", "0" * 32))

    # A changed part size in the middle is refused.
    await client(functions.upload.SaveFilePartRequest(6, 0, b"x" * 4096))
    await client(functions.upload.SaveFilePartRequest(6, 1, b"x" * 4096))
    with pytest.raises(errors.FilePartSizeChangedError):
        await client(functions.upload.SaveFilePartRequest(6, 0 + 1, b"x" * 8192))
    assert emu.world.history(emu.chat_id) == []


async def test_bot_must_be_admin_to_post(emu: Emu) -> None:
    client = await emu.client()
    emu.world.set_member(emu.chat_id, emu.bot_id, "member")
    with pytest.raises(errors.ChatAdminRequiredError):
        await client.send_message(emu.peer, "hi")
    emu.world.set_member(emu.chat_id, emu.bot_id, "left")
    with pytest.raises(errors.ChannelPrivateError):
        await client.get_messages(emu.peer, ids=1)


async def test_unknown_method_answers_instead_of_hanging(emu: Emu, caplog: pytest.LogCaptureFixture) -> None:
    client = await emu.client()
    with pytest.raises(errors.BadRequestError, match="METHOD_NOT_SUPPORTED_BY_EMULATOR"):
        await client(functions.account.GetPasswordRequest())
    assert "account.GetPasswordRequest" in caplog.text
    assert (await client.get_me()).id == emu.bot_id  # the connection is still usable


async def test_entities_usernames_and_permissions(emu: Emu) -> None:
    client = await emu.client()
    chat = emu.world.channel_by_id(emu.channel_id)
    emu.world.create_channel("public", emu.world.users(bots=False)[0].user_id, username="public_store")
    public = await client.get_entity("@public_store")
    assert isinstance(public, types.Channel) and public.broadcast and public.left
    bot = await client.get_entity("@storage_bot")
    assert bot.id == emu.bot_id and bot.bot
    entity = await client.get_entity(types.PeerChannel(emu.channel_id))
    assert entity.id == emu.channel_id and entity.access_hash == chat.access_hash
    assert entity.admin_rights.post_messages and entity.admin_rights.edit_messages
    perms = await client.get_permissions(entity, "me")
    assert perms.is_admin and perms.post_messages and perms.delete_messages
    with pytest.raises(errors.ChannelInvalidError):
        await client(functions.channels.GetFullChannelRequest(types.InputChannel(emu.channel_id, 12345)))


async def test_bots_cannot_read_history(emu: Emu) -> None:
    client = await emu.client()
    await client.send_message(emu.peer, "x")
    with pytest.raises(errors.BotMethodInvalidError):
        await client.get_messages(emu.peer, limit=10)


async def test_flood_wait_then_retry_with_the_same_random_id_succeeds(emu: Emu) -> None:
    emu.world.knobs.update({"channel_burst": 1, "channel_per_minute": 60})
    client = await emu.client(flood_sleep_threshold=5)  # Telethon sleeps, then re-sends the same request
    await client.send_message(emu.peer, "1")
    second = await client.send_message(emu.peer, "2")
    assert second.message == "2"
    assert [m.text for m in emu.world.history(emu.chat_id, newest_first=False)] == ["1", "2"]


async def test_batch_of_requests_in_one_container(emu: Emu) -> None:
    client = await emu.client()
    first = await client.send_message(emu.peer, "a")
    second = await client.send_message(emu.peer, "b")
    reqs = [functions.channels.GetMessagesRequest(emu.peer, [types.InputMessageID(i)]) for i in (first.id, second.id)]
    reqs.append(functions.PingRequest(ping_id=12345))
    results = await client(reqs)
    assert [r.messages[0].message for r in results[:2]] == ["a", "b"]
    assert results[2].ping_id == 12345


async def test_unknown_auth_key_is_refused_not_hung(emu: Emu) -> None:
    session = StringSession()
    session.set_dc(2, "127.0.0.1", emu.front.port)
    from telethon.crypto import AuthKey

    session.auth_key = AuthKey(os.urandom(256))
    client = TelegramClient(session, api_id=1, api_hash="x" * 32, receive_updates=False)
    emu.clients.append(client)
    with pytest.raises((errors.AuthKeyNotFound, ConnectionError)):
        await asyncio.wait_for(client.connect(), 20)
        await asyncio.wait_for(client.get_me(), 20)


async def test_answer_lost_then_resent_is_a_duplicate(emu: Emu) -> None:
    from tools.emulator.knobs import FaultRule

    # RANDOM_ID_DUPLICATE is a 500: Telethon retries those, then raises the last one when told to.
    client = await emu.client(request_retries=0, raise_last_call_error=True)
    emu.world.knobs.add_fault(FaultRule(kind="answer_lost", front="mtproto", method="messages.SendMessageRequest"))
    # Telethon reconnects and re-sends the same request (same random_id): Telegram refuses the copy.
    with pytest.raises(errors.RandomIdDuplicateError):
        await client.send_message(emu.peer, "once")
    assert [m.text for m in emu.world.history(emu.chat_id)] == ["once"]


async def test_dropped_upload_part_is_resent_after_reconnect(emu: Emu) -> None:
    from tools.emulator.knobs import FaultRule

    client = await emu.client()
    emu.world.knobs.add_fault(FaultRule(kind="drop_upload", front="mtproto", method="upload.SaveFilePartRequest"))
    data = os.urandom(600_000)
    sent = await client.send_file(emu.peer, named(data, "d.bin"), force_document=True)
    assert await client.download_media(sent, file=bytes) == data


async def test_session_survives_emulator_restart(emu: Emu, tmp_path) -> None:
    client = await emu.client()
    msg = await client.send_message(emu.peer, "before restart")
    string = session_string(emu.world, emu.bot_id, "127.0.0.1", emu.front.port)
    await client.disconnect()
    await emu.front.close()
    emu.world.close()

    world = World.open(tmp_path / "world")
    front = await serve_mtproto(world, "127.0.0.1", 0)
    try:
        assert session_string(world, emu.bot_id, "127.0.0.1", 1)[1:] != string[1:]  # port differs, key same
        TelegramClient._config = None
        again = TelegramClient(StringSession(string), api_id=1, api_hash="x" * 32, receive_updates=False)
        again.session.set_dc(2, "127.0.0.1", front.port)
        await again.connect()
        try:
            got = await again.get_messages(emu.peer, ids=msg.id)
            assert got.message == "before restart"
        finally:
            await again.disconnect()
    finally:
        await front.close()
        emu.world = world  # the fixture closes this one


async def test_fresh_session_logs_in_with_bot_token(emu: Emu) -> None:
    """No pre-shared key: Telethon creates one by DH, then imports the bot authorization."""
    from tools.emulator.mtproto.handshake import trust_emulator_rsa_key

    trust_emulator_rsa_key(emu.world)
    session = StringSession()
    session.set_dc(2, "127.0.0.1", emu.front.port)
    client = TelegramClient(session, api_id=1, api_hash="x" * 32, receive_updates=False)
    emu.clients.append(client)
    await client.connect()
    assert not await client.is_user_authorized()
    with pytest.raises(errors.AccessTokenInvalidError):
        await client.sign_in(bot_token="123:nope")
    await client.start(bot_token=emu.world.user(emu.bot_id).token)
    me = await client.get_me()
    assert me.id == emu.bot_id and me.bot
    sent = await client.send_message(emu.peer, "via a DH key")
    assert emu.world.get_message(emu.chat_id, sent.id).text == "via a DH key"

    # The new key survives: a second client reusing the saved session is logged in already.
    saved = client.session.save()
    await client.disconnect()
    again = TelegramClient(StringSession(saved), api_id=1, api_hash="x" * 32, receive_updates=False)
    emu.clients.append(again)
    await again.connect()
    assert (await again.get_me()).id == emu.bot_id


async def test_bots_cannot_delete_channel_messages_older_than_48_hours(emu: Emu) -> None:
    client = await emu.client()
    emu.world.knobs.clock_offset_s = -(48 * 3600 + 60)
    old = await client.send_message(emu.peer, "old")
    emu.world.knobs.clock_offset_s = 0
    young = await client.send_message(emu.peer, "young")
    with pytest.raises(errors.MessageDeleteForbiddenError):
        await client.delete_messages(emu.peer, [old.id, young.id])
    assert emu.world.get_message(emu.chat_id, young.id) is not None  # all or nothing
    await client.delete_messages(emu.peer, [young.id])
    assert emu.world.get_message(emu.chat_id, young.id) is None


async def test_one_auth_key_from_two_addresses_is_killed(emu: Emu) -> None:
    here = await emu.client()
    await here.get_me()
    string = session_string(emu.world, emu.bot_id, "127.0.0.1", emu.front.port)
    there = TelegramClient(StringSession(string), api_id=1, api_hash="x" * 32, receive_updates=False,
                           local_addr=("127.0.0.2", 0))
    emu.clients.append(there)
    with pytest.raises(errors.AuthKeyDuplicatedError):
        await there.connect()
    with pytest.raises(errors.AuthKeyDuplicatedError):  # dead for good, for the first holder too
        await here.get_me()


async def test_bot_logins_are_flood_limited(emu: Emu) -> None:
    from tools.emulator.mtproto.handshake import trust_emulator_rsa_key

    trust_emulator_rsa_key(emu.world)
    emu.world.knobs.update({"login_flood_logins": 2, "login_flood_wait_s": 1500})
    token = emu.world.user(emu.bot_id).token
    base = StringSession(session_string(emu.world, emu.bot_id, "127.0.0.1", emu.front.port))
    waits = []
    for _ in range(4):
        fresh = StringSession()
        fresh.set_dc(base.dc_id, base.server_address, base.port)
        client = TelegramClient(fresh, api_id=1, api_hash="x" * 32, receive_updates=False, flood_sleep_threshold=0)
        emu.clients.append(client)
        await client.connect()
        try:
            await client.sign_in(bot_token=token)
            waits.append(0)
        except errors.FloodWaitError as e:
            waits.append(e.seconds)
    assert waits[:2] == [0, 0]
    assert waits[2] == 1500 and waits[3] > 2900  # a login during the wait makes it longer


async def test_a_client_of_another_layer_is_refused_clearly(emu: Emu) -> None:
    from telethon.tl.alltlobjects import LAYER

    client = await emu.client()
    with pytest.raises(errors.ConnectionLayerInvalidError):
        await client(functions.InvokeWithLayerRequest(LAYER - 10, functions.help.GetConfigRequest()))


async def test_upload_media_then_send_the_document(emu: Emu) -> None:
    client = await emu.client()
    data = os.urandom(5000)
    handle = await client.upload_file(data, file_name="m.bin")
    media = types.InputMediaUploadedDocument(handle, "application/octet-stream",
                                             [types.DocumentAttributeFilename("m.bin")])
    got = await client(functions.messages.UploadMediaRequest(emu.peer, media))
    assert isinstance(got, types.MessageMediaDocument) and got.document.size == len(data)
    assert emu.world.history(emu.chat_id) == []  # nothing was sent
    doc = got.document
    sent = await client.send_file(emu.peer, types.InputDocument(doc.id, doc.access_hash, doc.file_reference))
    assert await client.download_media(sent, file=bytes) == data


async def test_a_pin_adds_a_service_message_with_an_id_of_its_own(emu: Emu) -> None:
    client = await emu.client()
    post = await client.send_message(emu.peer, "pin me")
    service = await client.pin_message(emu.peer, post.id, notify=False)
    assert isinstance(service.action, types.MessageActionPinMessage) and service.id == post.id + 1
    assert service.reply_to.reply_to_msg_id == post.id
    got = await client(functions.channels.GetMessagesRequest(
        types.InputChannel(emu.channel_id, 0), [types.InputMessageID(service.id)]))
    assert isinstance(got.messages[0], types.MessageService)
    nxt = await client.send_message(emu.peer, "next")
    assert nxt.id == post.id + 2


async def test_pool_connections_send_parts_without_gzip_attempts(emu: Emu, monkeypatch) -> None:
    # Telethon tries zlib-9 on every request over 512 bytes; the pool's senders must not (29 ms per part)
    from telethon.tl.core import gzippacked

    sizes: list[int] = []
    original = gzippacked.GzipPacked.gzip_if_smaller

    def spy(content_related: bool, data: bytes) -> bytes:
        sizes.append(len(data))
        return original(content_related, data)

    monkeypatch.setattr(gzippacked.GzipPacked, "gzip_if_smaller", staticmethod(spy))
    client = await emu.client()
    pool = transfer.SenderPool(client, 2)
    try:
        data = bytes(3 * MiB)  # zeros: gzip would shrink them, yet the parts go out as they are
        handle = await transfer.upload(pool, data, "zeros.bin")
        sent = await client.send_file(emu.peer, handle, force_document=True)
        assert await client.download_media(sent, file=bytes) == data
    finally:
        await pool.close()
    assert sizes and max(sizes) < transfer.UPLOAD_PART  # only the main client's small requests were tried


async def test_lean_framing_reads_and_writes_telethons_bytes() -> None:
    from telethon.errors import InvalidChecksumError
    from telethon.network.connection.tcpfull import FullPacketCodec

    from snapshot.backends import telethon_compat as compat

    payloads = [os.urandom(n) for n in (12, 4096, 600_000)]
    ours, theirs = compat._LeanFullCodec(None), FullPacketCodec(None)
    for p in payloads:
        head, tail = ours.frame(p)
        assert head + p + tail == theirs.encode_packet(p)
    reader = asyncio.StreamReader()
    reader.feed_data(b"".join(FullPacketCodec(None).encode_packet(p) for p in payloads))
    assert [await compat._LeanFullCodec(None).read_packet(reader) for _ in payloads] == payloads
    bad = bytearray(FullPacketCodec(None).encode_packet(payloads[1]))
    bad[20] ^= 1
    reader = asyncio.StreamReader()
    reader.feed_data(bytes(bad))
    with pytest.raises(InvalidChecksumError):
        await compat._LeanFullCodec(None).read_packet(reader)
