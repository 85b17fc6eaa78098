"""Deletes within Telegram's rules, against the emulator's (bots: only messages younger than 48 h, on both
fronts; a Bot API deleteMessages batch with one undeletable message fails whole)."""

from __future__ import annotations

import pytest

from snapshot.errors import DocumentNotFound
from tests.telegram.conftest import botapi, mtproto

BACKENDS = {"botapi": botapi, "mtproto": mtproto}
pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=sorted(BACKENDS))
def make(request):
    return BACKENDS[request.param]


def mid(ref: str) -> int:
    return int(ref.split(":", 1)[0])


async def test_old_documents_stay_young_ones_go_and_only_deleted_refs_are_forgotten(emulator, demo, make):
    world = emulator.world
    chat = demo.storage_chat_id
    writer = await make(emulator, demo).open()
    world.knobs.clock_offset_s = -49 * 3600  # this one is stored "49 hours ago"
    old = await writer.put("delta-000000000001", b"old")
    world.knobs.clock_offset_s = 0
    await writer.close()
    b = await make(emulator, demo).open()  # a later process: it does not know how old `old` is
    try:
        young = [await b.put(f"delta-00000000000{i}", f"young {i}".encode()) for i in (2, 3)]
        await b.delete([old, *young])
        assert world.get_message(chat, mid(old)) is not None  # Telegram refused it: still there
        assert [world.get_message(chat, mid(r)) for r in young] == [None, None]
        assert await b.get(old) == b"old"  # not forgotten: a failed batch marks nothing deleted
        for ref in young:
            with pytest.raises(DocumentNotFound):
                await b.get(ref)
    finally:
        await b.close()


async def test_a_writer_that_knows_a_document_is_old_does_not_try(emulator, demo):
    world = emulator.world
    b = await botapi(emulator, demo).open()
    try:
        world.knobs.clock_offset_s = -49 * 3600
        old = await b.put("delta-000000000001", b"old")
        world.knobs.clock_offset_s = 0
        young = await b.put("delta-000000000002", b"young")
        calls = []
        original = b.bot.delete_messages

        async def spy(*args, **kwargs):
            calls.append(args)
            return await original(*args, **kwargs)

        b.bot.delete_messages = spy
        await b.delete([old, young])
        assert world.get_message(demo.storage_chat_id, mid(young)) is None
        assert world.get_message(demo.storage_chat_id, mid(old)) is not None
        assert calls == []  # one young message: deleteMessage, not a batch that would fail whole
    finally:
        await b.close()
