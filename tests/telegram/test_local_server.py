"""A self-hosted telegram-bot-api started with --local: absolute file paths, documents over 20 MB."""

from __future__ import annotations

import os

import pytest

from snapshot.backends.botapi import BOTAPI_MAX_DOCUMENT, BotApiBackend
from snapshot.errors import BackendError, ConfigError
from tests.telegram.conftest import QUICK, UNLIMITED, botapi

pytestmark = pytest.mark.timeout(60)


async def test_a_local_server_serves_big_documents_from_its_disk(emulator, demo):
    emulator.world.knobs.update({"botapi_local_mode": True})
    b = await BotApiBackend(demo.bot_token, demo.storage_chat_id, api_url=emulator.bot_api_url, local=True,
                            budget=UNLIMITED, policy=QUICK).open()
    try:
        assert b.info.max_document_size > BOTAPI_MAX_DOCUMENT
        data = os.urandom(BOTAPI_MAX_DOCUMENT + 1024 * 1024)  # over the cloud server's getFile cap
        ref = await b.put("snapshot-000000000001-0000-0001", data)
        assert await b.get(ref) == data
    finally:
        await b.close()


async def test_the_cloud_server_refuses_what_getfile_could_not_return(emulator, demo):
    b = await botapi(emulator, demo).open()
    try:
        with pytest.raises(BackendError, match="local-mode Bot API server or MTProto"):
            await b.put("snapshot-000000000001-0000-0001", b"x" * (BOTAPI_MAX_DOCUMENT + 1))
    finally:
        await b.close()


def test_local_mode_needs_the_servers_url(demo):
    with pytest.raises(ConfigError, match="TGSNAP_BOT_API_URL"):
        BotApiBackend(demo.bot_token, demo.storage_chat_id, local=True)
