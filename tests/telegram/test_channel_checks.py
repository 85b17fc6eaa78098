"""Opening a storage channel: every misconfiguration is refused with what to fix, and nothing is written."""

from __future__ import annotations

import asyncio

import pytest

from snapshot.errors import BackendError, ConfigError
from tests.telegram.conftest import botapi, mtproto

BACKENDS = {"botapi": botapi, "mtproto": mtproto}


@pytest.fixture(params=sorted(BACKENDS))
def make(request):
    return BACKENDS[request.param]


def snapshot_of(world, chat_id):
    """Everything a backend could have changed in a channel."""
    return ([m.to_dict() for m in world.history(chat_id, limit=1000)], world.pinned_ids(chat_id))


async def refused(backend, *phrases: str) -> str:
    try:
        with pytest.raises(ConfigError) as e:
            await backend.open()
    finally:
        await backend.close()
    text = str(e.value)
    for phrase in phrases:
        assert phrase in text, text
    assert backend.bot_name.lstrip("@") not in {"", None}
    return text


async def test_unknown_chat(emulator, demo, make):
    await refused(make(emulator, demo, chat="-1009999999999"), "not found", "TGSNAP_STORAGE_CHAT",
                  "administrator")


async def test_channel_without_the_bot(emulator, demo, make):
    other = emulator.world.create_channel("somebody else's", demo.user_id)
    await refused(make(emulator, demo, chat=other.chat_id), "not found", "add", "administrator")
    assert snapshot_of(emulator.world, other.chat_id) == ([], [])


async def test_bot_is_a_plain_member(emulator, demo, make):
    world = emulator.world
    world.set_member(demo.storage_chat_id, demo.bot_id, "member")
    before = snapshot_of(world, demo.storage_chat_id)
    await refused(make(emulator, demo), "lacks administrator rights", "Post messages", "Edit messages")
    assert snapshot_of(world, demo.storage_chat_id) == before


@pytest.mark.parametrize("right,label", [("can_post_messages", "Post messages"),
                                         ("can_edit_messages", "Edit messages")])
async def test_bot_lacks_one_right(emulator, demo, make, right, label):
    emulator.world.set_admin(demo.storage_chat_id, demo.bot_id, rights={right: False})
    text = await refused(make(emulator, demo), "lacks administrator rights", label)
    other = "Edit messages" if label == "Post messages" else "Post messages"
    assert other not in text  # names exactly what is missing


@pytest.mark.parametrize("kind", ["text", "document"])
async def test_foreign_pinned_message_is_never_touched(emulator, demo, make, kind):
    world = emulator.world
    chat = demo.storage_chat_id
    world.set_admin(chat, demo.user_id)
    if kind == "text":
        msg = world.send_message(chat, demo.user_id, text="channel rules")
    else:
        msg = world.send_message(chat, demo.user_id, document=world.store_file(b"%PDF", "report.pdf"))
    world.pin_message(chat, msg.message_id)
    before = snapshot_of(world, chat)
    await refused(make(emulator, demo), "is not a tgsnap manifest", "point TGSNAP_STORAGE_CHAT",
                  f"message {msg.message_id}")
    assert snapshot_of(world, chat) == before


async def test_bad_bot_token(emulator, demo):
    await refused(botapi(emulator, demo, token="123456:AAnot-a-real-token"), "TGSNAP_BOT_TOKEN")


async def test_session_of_another_bot(emulator, demo):
    await refused(mtproto(emulator, demo, token="123456:AAnot-a-real-token"), "logged in as bot", str(demo.bot_id))


async def test_unpinned_manifest_is_not_shadowed_by_a_new_storage(emulator, demo):
    world = emulator.world
    b = await mtproto(emulator, demo).open()
    await b.put("delta-000000000001", b"d")
    await b.publish_manifest(b"m")
    await b.close()
    world.unpin_all(demo.storage_chat_id)
    before = snapshot_of(world, demo.storage_chat_id)
    await refused(mtproto(emulator, demo), "is not pinned", "pin it again")
    assert snapshot_of(world, demo.storage_chat_id) == before


async def test_unpinned_manifest_seen_by_a_running_writer(emulator, demo, make):
    b = await make(emulator, demo).open()
    try:
        await b.publish_manifest(b"m")
        emulator.world.unpin_all(demo.storage_chat_id)
        with pytest.raises(BackendError, match="pin it again") as e:
            await b.read_manifest()
        assert not e.value.retryable
    finally:
        await b.close()


async def test_rights_removed_while_running(emulator, demo, make):
    b = await make(emulator, demo).open()
    try:
        await b.put("delta-000000000001", b"ok")
        emulator.world.set_admin(demo.storage_chat_id, demo.bot_id, rights={"can_post_messages": False})
        with pytest.raises(BackendError) as e:
            await b.put("delta-000000000002", b"refused")
        assert not e.value.retryable
        assert "rights" in str(e.value) or "refused" in str(e.value)
    finally:
        await b.close()


async def test_empty_channel_is_initialised_by_the_first_publication(emulator, demo, make):
    world = emulator.world
    b = await make(emulator, demo).open()
    try:
        assert snapshot_of(world, demo.storage_chat_id) == ([], [])  # opening wrote nothing
        assert await b.read_manifest() is None
        await b.publish_manifest(b"first")
        pinned = world.pinned_message(demo.storage_chat_id)
        assert pinned is not None and pinned.document is not None
        assert pinned.document.name == "tgsnap-manifest"
        await b.publish_manifest(b"second")
        assert world.pinned_ids(demo.storage_chat_id) == [pinned.message_id]  # edited in place
        posts = [m for m in world.history(demo.storage_chat_id) if "service" not in m.extra]
        assert len(posts) == 1  # (plus the service message Telegram adds for the pin)
    finally:
        await b.close()


async def test_a_pin_over_the_manifest_stops_a_running_writer(emulator, demo, make):
    world = emulator.world
    b = await make(emulator, demo).open()
    try:
        await b.publish_manifest(b"m")
        world.set_admin(demo.storage_chat_id, demo.user_id)
        other = world.send_message(demo.storage_chat_id, demo.user_id, text="announcement")
        world.pin_message(demo.storage_chat_id, other.message_id)
        with pytest.raises(BackendError, match="unpin it") as e:
            await b.read_manifest()
        assert not e.value.retryable
        with pytest.raises(BackendError):
            await b.publish_manifest(b"must not land")
        assert world.get_message(demo.storage_chat_id, other.message_id).text == "announcement"
    finally:
        await b.close()


async def test_a_saved_session_logs_in_again(emulator, demo):
    b = await mtproto(emulator, demo).open()
    saved = b.session_string()
    await b.close()
    again = await mtproto(emulator, demo, session=saved).open()
    try:
        assert again.me_id == demo.bot_id
    finally:
        await again.close()


async def test_mtproto_requires_cryptg(emulator, demo, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "cryptg", None)  # as if it were not installed
    b = mtproto(emulator, demo)
    with pytest.raises(ConfigError, match="pip install cryptg"):
        await b.open()
    await b.close()


async def test_a_manifest_pinned_while_another_process_opens_is_not_called_lost(emulator, demo):
    """A first claim sends its manifest and pins it a round trip later; a process opening the channel in
    between must wait for the pin, not refuse the storage as one whose pin was lost."""
    world = emulator.world
    b = await mtproto(emulator, demo).open()
    await b.publish_manifest(b"m")
    await b.close()
    world.unpin_all(demo.storage_chat_id)
    manifest_id = b._manifest_id
    assert manifest_id is not None

    async def pin_later():
        await asyncio.sleep(1.0)
        world.pin_message(demo.storage_chat_id, manifest_id)

    later = asyncio.ensure_future(pin_later())
    opened = await mtproto(emulator, demo).open()
    try:
        await later
        assert opened._manifest_id == manifest_id and await opened.read_manifest() == b"m"
    finally:
        await opened.close()
