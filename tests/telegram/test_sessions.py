"""What a first deployment on real Telegram meets with MTProto sessions, against the emulator's Telegram rules:
logins limited (FLOOD_WAIT), one auth key in two places killed (AUTH_KEY_DUPLICATED), Telegram's error names
kept, Telethon's private internals checked at start-up."""

from __future__ import annotations

import logging
import os
import time

import pytest
from telethon import errors
from telethon.sessions import StringSession

from snapshot.backends import mtproto as mtproto_mod
from snapshot.backends import telethon_compat as compat
from snapshot.backends.mtproto import _classify
from snapshot.errors import BackendError, ConfigError
from tests.telegram.conftest import mtproto
from tools.emulator.mtproto.crypto import AuthKey
from tools.emulator.mtproto.handshake import trust_emulator_rsa_key
from tools.emulator.mtproto.keys import KeyRing

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _trust_the_emulator(emulator):
    """New keys are made by DH with the emulator's RSA key (real Telegram's keys ship with Telethon)."""
    trust_emulator_rsa_key(emulator.world)


def unbound_session(emulator, demo) -> str:
    """A session on the emulator with a key Telegram knows but that is logged in as nobody (a fresh DH key)."""
    key = AuthKey(os.urandom(256))
    KeyRing(emulator.world).add(key, None, "dh")
    base = StringSession(demo.session_string)
    s = StringSession()
    s.set_dc(base.dc_id, base.server_address, base.port)
    from telethon.crypto import AuthKey as TelethonKey

    s.auth_key = TelethonKey(key.key)
    return s.save()


def key_id(session: str) -> int:
    return StringSession(session).auth_key.key_id


# -- error identity --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("exc", "name", "retryable"), [
    (errors.FilePartMissingError(None, capture=3), "FILE_PART_3_MISSING", True),
    (errors.MessageIdInvalidError(None), "MESSAGE_ID_INVALID", False),
    (errors.PeerIdInvalidError(None), "PEER_ID_INVALID", False),
    (errors.FileReferenceExpiredError(None), "FILE_REFERENCE_EXPIRED", False),
    (errors.AuthKeyDuplicatedError(None), "AUTH_KEY_DUPLICATED", False),
    (errors.FloodWaitError(None, capture=17), "FLOOD_WAIT_17", True),
    (errors.BadRequestError(None, "SOMETHING_NEW_INVALID", 400), "SOMETHING_NEW_INVALID", False),
])
def test_telegram_error_names_are_kept(exc, name, retryable):
    err = _classify(exc)
    assert isinstance(err, BackendError)
    assert err.telegram_error == name and name in str(err)
    assert "BAD_REQUEST" not in str(err)
    assert err.retryable is retryable
    if name.startswith("FLOOD_WAIT"):
        assert err.retry_after == 17 and err.telegram_code == 420


def test_a_refused_token_is_a_config_error():
    err = _classify(errors.AccessTokenInvalidError(None))
    assert isinstance(err, ConfigError) and "TGSNAP_BOT_TOKEN" in str(err)


async def test_wrong_token_at_login_is_the_documented_config_error(emulator, demo, tmp_path):
    b = mtproto(emulator, demo, session=unbound_session(emulator, demo), token="123456:AAnot-a-real-token",
                session_dir=tmp_path / "s")
    with pytest.raises(ConfigError, match="Telegram rejected the bot token: check TGSNAP_BOT_TOKEN"):
        await b.open()
    await b.close()


# -- Telethon internals ----------------------------------------------------------------------------------


async def test_missing_telethon_internals_are_a_config_error_naming_the_version(emulator, demo, monkeypatch):
    monkeypatch.setattr(compat, "CLIENT_ATTRS", (*compat.CLIENT_ATTRS, "_renamed_in_a_later_release"))
    b = mtproto(emulator, demo)
    with pytest.raises(ConfigError) as caught:
        await b.open()
    await b.close()
    import telethon

    assert f"Telethon {telethon.__version__}" in str(caught.value)
    assert "_renamed_in_a_later_release" in str(caught.value)


# -- sessions saved once per host, one key per process --------------------------------------------------


async def test_a_session_is_saved_once_per_host_and_reused(emulator, demo, tmp_path):
    start = unbound_session(emulator, demo)
    first = await mtproto(emulator, demo, session=start, session_dir=tmp_path / "s").open()
    assert first.logins == 1 and first.session_slot.index == 0
    saved = first.session_string()
    await first.close()
    again = await mtproto(emulator, demo, session=start, session_dir=tmp_path / "s").open()
    try:
        assert again.logins == 0  # the saved session, not a new login
        assert again.session_string() == saved
        assert emulator._mtproto.logins.attempts[demo.bot_id] == 1
    finally:
        await again.close()


async def test_two_processes_on_one_host_never_share_a_key(emulator, demo, tmp_path):
    a = await mtproto(emulator, demo, session_dir=tmp_path / "s").open()
    b = await mtproto(emulator, demo, session_dir=tmp_path / "s").open()
    try:
        assert (a.session_slot.index, b.session_slot.index) == (0, 1)
        assert a.logins == 0 and b.logins == 1  # the second took a key of its own
        assert key_id(a.session_string()) != key_id(b.session_string())
        await a.put("delta-000000000001", b"a")
        await b.put("delta-000000000002", b"b")
    finally:
        await a.close()
        await b.close()
    c = await mtproto(emulator, demo, session_dir=tmp_path / "s").open()  # slot 0 is free again
    try:
        assert c.session_slot.index == 0 and c.logins == 0
    finally:
        await c.close()


def test_a_session_file_from_another_host_is_not_used(tmp_path, monkeypatch):
    from snapshot.backends import mtproto_sessions as sessions

    slot = sessions.claim_slot(tmp_path, "42")
    slot.save("secret-session")
    assert slot.load() == "secret-session"
    assert slot.path.stat().st_mode & 0o077 == 0
    monkeypatch.setattr(sessions, "this_host", lambda: "machine-id:another")
    assert slot.load() is None  # the file itself, copied elsewhere
    there = sessions.claim_slot(tmp_path, "42")  # another host sharing the directory: its own slots
    assert there.index == 0 and there.path != slot.path and there.load() is None
    there.release()
    slot.release()


async def test_auth_key_duplicated_logs_in_again_on_a_new_key(emulator, demo, tmp_path):
    shared = demo.session_string
    here = await mtproto(emulator, demo, session=shared).open()
    # the same session string on a second host (another address) kills the key for both
    there = await mtproto(emulator, demo, session=shared, local_addr="127.0.0.2",
                          session_dir=tmp_path / "there").open()
    try:
        assert there.logins == 1
        assert key_id(there.session_string()) != key_id(shared)
        ref = await here.put("delta-000000000001", b"after the key died")  # re-login inside the call
        assert here.logins == 1 and key_id(here.session_string()) != key_id(shared)
        assert await there.get(ref) == b"after the key died"
    finally:
        await here.close()
        await there.close()


async def test_a_login_flood_wait_is_waited_out_and_explained(emulator, demo, tmp_path, caplog):
    emulator.world.knobs.update({"login_flood_logins": 1, "login_flood_wait_s": 2})
    first = await mtproto(emulator, demo, session=unbound_session(emulator, demo), session_dir=tmp_path / "a").open()
    await first.close()
    caplog.set_level(logging.WARNING, logger=mtproto_mod.__name__)
    started = time.monotonic()
    second = await mtproto(emulator, demo, session=unbound_session(emulator, demo),
                           session_dir=tmp_path / "b").open()
    try:
        assert time.monotonic() - started >= 1.5
        assert second.logins == 2  # refused once, waited, then logged in: no give-up loop
        text = caplog.text
        assert "refuses bot logins for 2 s (FLOOD_WAIT_2)" in text and "waiting until" in text
        assert "TGSNAP_MTPROTO_SESSION_DIR" in text
    finally:
        await second.close()


async def test_a_login_flood_longer_than_allowed_stops_with_the_time_named(emulator, demo, tmp_path):
    emulator.world.knobs.update({"login_flood_logins": 1, "login_flood_wait_s": 1500})
    first = await mtproto(emulator, demo, session=unbound_session(emulator, demo), session_dir=tmp_path / "a").open()
    await first.close()
    b = mtproto(emulator, demo, session=unbound_session(emulator, demo), session_dir=tmp_path / "b",
                login_max_wait=60)
    with pytest.raises(BackendError, match=r"for 1500 s \(FLOOD_WAIT_1500, until") as caught:
        await b.open()
    await b.close()
    assert not caught.value.retryable and caught.value.retry_after == 1500


async def test_concurrent_lookups_share_one_get_messages(emulator, demo):
    import asyncio

    from telethon.tl import functions

    b = await mtproto(emulator, demo).open()
    try:
        refs = [await b.put(f"delta-{i:012d}", bytes([i]) * 10) for i in range(1, 31)]
        sent = []
        original = b._invoke

        async def counting(request):
            if isinstance(request, functions.channels.GetMessagesRequest):
                sent.append(len(request.id))
            return await original(request)

        b._invoke = counting
        got = await asyncio.gather(*(b.get(r) for r in refs))
        assert got == [bytes([i]) * 10 for i in range(1, 31)]
        assert len(sent) <= 3 and max(sent) == 30  # one batched look-up, not thirty (refreshes aside)
    finally:
        await b.close()


@pytest.mark.parametrize("reported", [True, False], ids=["media-dc", "file-migrate"])
async def test_files_on_another_dc_are_read_from_there(emulator, demo, reported):
    from telethon import TelegramClient

    TelegramClient._config = None  # Telethon caches help.getConfig (DC addresses) per class: this emulator's port
    b = await mtproto(emulator, demo).open()
    try:
        data = os.urandom(3 * 1024 * 1024 + 5)
        ref = await b.put("snapshot-000000000001-0000-0001", data)
        emulator.world.knobs.update({"file_dc": 4, "file_dc_reported": reported})
        assert await b.get(ref) == data
    finally:
        await b.close()
