"""Telegram storage over MTProto (Telethon), logged in as a bot: large parts, parallel transfers, discovery.

- Login: `TelegramClient(StringSession(session), api_id, api_hash, receive_updates=False)`, then
  `sign_in(bot_token=...)` unless the session is already authorised (the emulator hands out such
  sessions). The storage client never competes with the bot for updates.
- Documents: one message each, the file named after the replica's hint; ref = the message id, so
  `order_key` is storage order (channel message ids are sequential). Files up to 2000 MiB, moved in
  parallel over `connections` extra connections (see `mtproto_transfer`); cryptg is required.
- Manifest: the pinned message (`channels.getFullChannel` → `pinned_msg_id`), edited in place with
  `messages.editMessage(media=...)`: one atomic edit per publication.
- Discovery (`can_discover=True`): bots may not call messages.getHistory, but they may call
  `channels.getMessages` by id, so `discover(after)` reads ids after `after` in batches of 100 until
  `discover_gap` consecutive ids are empty past the highest id this process knows. Deltas therefore need
  no manifest edit to be findable after a crash: each delta costs one budget slot, and the manifest is
  republished only every `manifest_min_interval` seconds.
- `get` refetches the message (`channels.getMessages`) for a fresh file reference and refetches again if
  the reference expires mid-download (FILE_REFERENCE_EXPIRED).
- Sends carry a `random_id` and a caption tag derived from it: when an answer is lost and the resend is
  refused as RANDOM_ID_DUPLICATE, the stored message is found by its tag instead of being posted twice.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from telethon import TelegramClient, errors, utils
from telethon.sessions import StringSession
from telethon.tl import functions, types

from snapshot.backend import Backend, BackendInfo, Slot, SlotRace
from snapshot.backends import mtproto_sessions as sessions
from snapshot.backends import mtproto_transfer as transfer
from snapshot.backends import telegram_channel as channel
from snapshot.backends import telethon_compat as compat
from snapshot.backends.telegram_budget import BudgetConfig, ChatBudget, shared_budget
from snapshot.backends.telegram_retry import RetryPolicy, call
from snapshot.errors import BackendError, ConfigError, DocumentNotFound, TelegramAnswer

log = logging.getLogger(__name__)

MIME = "application/octet-stream"
#: placeholders Telethon insists on when a pre-authorised session (the emulator's) comes without them.
_PLACEHOLDER_API = (1, "0" * 32)
#: bots may delete channel messages only this long after they were sent, MTProto included; the margin keeps a
#: batch from being refused for one message that crossed the line on the way.
DELETE_WINDOW_S = 48 * 3600
DELETE_MARGIN_S = 600
#: how long `open` waits for an unpinned manifest to be pinned before calling its pin lost: a first claim
#: pins its manifest one round trip after sending it (a loaded host, a slow answer: seconds, not minutes).
PIN_SETTLE_SECONDS = 5.0


def require_cryptg() -> None:
    try:
        import cryptg  # noqa: F401
    except ImportError:
        raise ConfigError("MTProto storage needs cryptg for fast encryption: pip install cryptg "
                          "(without it Telethon moves ~0.3 MiB/s)") from None


#: the auth key is no longer usable: log in again with the bot token on a fresh key (never reuse this one).
SESSION_DEAD = frozenset({"AUTH_KEY_UNREGISTERED", "AUTH_KEY_DUPLICATED", "AUTH_KEY_INVALID", "AUTH_KEY_PERM_EMPTY",
                          "SESSION_REVOKED", "SESSION_EXPIRED", "SESSION_PASSWORD_NEEDED"})
#: the bot token itself is refused: a configuration error (exit 2), retrying cannot help.
BAD_TOKEN = frozenset({"ACCESS_TOKEN_INVALID", "ACCESS_TOKEN_EXPIRED", "BOT_INVALID", "USER_DEACTIVATED",
                       "USER_DEACTIVATED_BAN"})
#: the bot lost its place or rights in the storage channel.
NO_RIGHTS = frozenset({"CHAT_ADMIN_REQUIRED", "CHAT_WRITE_FORBIDDEN", "CHANNEL_PRIVATE", "CHAT_FORBIDDEN",
                       "MESSAGE_AUTHOR_REQUIRED", "RIGHT_FORBIDDEN", "CHANNEL_INVALID", "USER_BANNED_IN_CHANNEL"})
#: the document is not there (deleted message, a file id Telegram no longer knows).
GONE = frozenset({"MESSAGE_ID_INVALID", "FILE_ID_INVALID", "LOCATION_INVALID", "MEDIA_EMPTY"})
_FLOOD = re.compile(r"(FLOOD_WAIT|FLOOD_PREMIUM_WAIT|SLOWMODE_WAIT|FLOOD_TEST_PHONE_WAIT)_(\d+)")
_PARTS = re.compile(r"FILE_PART_\d+_MISSING|FILE_PARTS_INVALID|FILE_PART_0_MISSING")


def parts_lost(name: str | None) -> bool:
    """The server no longer holds (all) the parts of an upload: upload again, then retry the send."""
    return bool(name and _PARTS.fullmatch(name))


def _classify(exc: BaseException) -> BackendError | ConfigError | None:
    """Telethon's exceptions → what to do, with Telegram's error name and code kept on the error.

    Decided by the RPC error's name (`telethon_compat.rpc_name`) and numeric class, never by Telethon's
    class-level `message` (which reads 'BAD_REQUEST' for every 400)."""
    if isinstance(exc, errors.RPCError):
        name, code = compat.rpc_name(exc), compat.rpc_code(exc)
        named: TelegramAnswer = {"telegram_error": name, "telegram_code": code}
        flood = _FLOOD.fullmatch(name)
        if flood or code == 420:
            seconds = int(flood.group(2)) if flood else int(getattr(exc, "seconds", 0) or 1)
            return BackendError(f"Telegram {name}: retry after {seconds}s", retryable=True,
                                retry_after=float(max(1, seconds)), **named)
        if code >= 500 or name in ("TIMEOUT", "RPC_CALL_FAIL", "RPC_MCGET_FAIL"):
            return BackendError(f"Telegram internal error {name} ({code})", retryable=True, **named)
        if name in BAD_TOKEN:
            return channel.bad_token()
        if name in SESSION_DEAD:
            return BackendError(f"Telegram no longer accepts this MTProto session ({name}): tgsnap logs in again "
                                "with the bot token on a new key", retryable=False, **named)
        if name in NO_RIGHTS:
            return BackendError(f"Telegram refused ({name}): the storage bot lost its administrator rights "
                                "in the storage channel; restore them (post and edit messages)", retryable=False,
                                **named)
        if parts_lost(name):
            return BackendError(f"Telegram lost the uploaded parts ({name}): uploading again", retryable=True,
                                **named)
        if code == 303:  # *_MIGRATE_X: the transfer code follows FILE_MIGRATE itself; anything else is new here
            return BackendError(f"Telegram asks to repeat the call on another DC ({name})", retryable=False,
                                **named)
        return BackendError(f"Telegram refused: {name} ({code})", retryable=False, **named)
    if isinstance(exc, OSError | ConnectionError | asyncio.IncompleteReadError):
        return BackendError(f"Telegram unreachable: {exc}", retryable=True)
    return None


def _document(msg: object) -> types.Document | None:
    if isinstance(msg, types.Message) and isinstance(msg.media, types.MessageMediaDocument):
        doc = msg.media.document
        if isinstance(doc, types.Document):
            return doc
    return None


def _file_name(doc: types.Document) -> str | None:
    return next((a.file_name for a in doc.attributes if isinstance(a, types.DocumentAttributeFilename)), None)


def _tag(random_id: int) -> str:
    return f"#{random_id & (2**64 - 1):016x}"


_TAG = re.compile(r"#[0-9a-f]{16}")


@dataclass
class _Sent:
    message_id: int


_DUPLICATE = object()  # sentinel: RANDOM_ID_DUPLICATE, the first copy of this send was stored
_PARTS_LOST = object()  # sentinel: the server no longer has the uploaded parts


class MTProtoBackend(Backend):
    """Documents and the pinned manifest in one channel over MTProto. Build, then `await open()`."""

    def __init__(self, *, bot_token: str | None, chat: str | int, api_id: int | None = None,
                 api_hash: str | None = None, session: str | None = None, connections: int = 6,
                 budget: ChatBudget | BudgetConfig | None = None, policy: RetryPolicy | None = None,
                 manifest_min_interval: float = 3.0, discover_gap: int = 200,
                 token_var: str = "TGSNAP_BOT_TOKEN", session_dir: str | Path | None = None,
                 login_max_wait: float | None = None, local_addr: str | None = None) -> None:
        self._chat_arg = channel.parse_chat(chat)
        self._token = bot_token
        self._token_var = token_var
        self._session = session or ""
        # a host-local session store: always without a given session, and beside one when asked for
        self._session_dir = Path(session_dir) if session_dir is not None else None if session else \
            sessions.default_dir()
        self.session_slot: sessions.SessionSlot | None = None
        #: longest login FLOOD_WAIT waited out at start (None: as long as Telegram says; a restart would only
        #: make it longer).
        self.login_max_wait = login_max_wait
        self.logins = 0  # auth.importBotAuthorization calls this backend made
        self._local_addr = local_addr  # the source address of our connections (a multi-homed host)
        self._relogin_lock = asyncio.Lock()
        self._logins_done = 0  # re-logins while running (a generation: see _relogin)
        if not (api_id and api_hash) and not session:
            raise ConfigError("MTProto storage needs TGSNAP_API_ID and TGSNAP_API_HASH (from my.telegram.org)")
        self._api = (api_id, api_hash) if api_id and api_hash else _PLACEHOLDER_API
        self.connections = connections
        self._budget_arg = budget
        self.budget: ChatBudget | None = budget if isinstance(budget, ChatBudget) else None
        max_wait = budget.max_wait if isinstance(budget, BudgetConfig) else budget.config.max_wait if budget else 60.0
        self.policy = policy or RetryPolicy(max_wait=max_wait)
        self.manifest_min_interval = manifest_min_interval
        self.discover_gap = max(1, discover_gap)
        self.client: TelegramClient | None = None
        self.pool: transfer.SenderPool | None = None
        self.chat_title = str(self._chat_arg)
        self.bot_name = "the bot"
        self.me_id: int | None = None
        self._channel: types.InputChannel | None = None
        self._peer: types.InputPeerChannel | None = None
        self._manifest_id: int | None = None
        self._manifest_pinned = False
        self._top = 0  # highest message id this process has seen in the channel
        self._dates: dict[int, float] = {}  # message id → its date, where seen (the 48 h delete rule)
        self._lookups: dict[int, list[asyncio.Future]] = {}  # message ids waiting for the next batched look-up
        self._lookup_scheduled = False
        self._lookup_tasks: set[asyncio.Task] = set()
        self._manifest_lock = asyncio.Lock()
        #: the gap check (newer_slot after a put): every message id up to `_checked` has been examined
        #: since our slot was made; `_own` are the ids this process sent above it (skipped, not read).
        self._checked = 0
        self._own: set[int] = set()

    def __repr__(self) -> str:
        return f"MTProtoBackend(chat={self.chat_title!r})"

    @property
    def info(self) -> BackendInfo:
        return BackendInfo(name=f"mtproto:{self.chat_title}", can_discover=True,
                           max_document_size=transfer.MAX_FILE, manifest_min_interval=self.manifest_min_interval,
                           delete_window=48 * 3600.0)

    # -- opening and checks ------------------------------------------------------------------------

    async def open(self) -> MTProtoBackend:
        """Log in, check the chat, the bot's rights and the pinned message. Writes nothing."""
        require_cryptg()
        if not self._token and not self._session:
            raise ConfigError(f"MTProto storage needs a bot token: set {self._token_var}")
        if self._session_dir is not None:
            bot = self._token.split(":", 1)[0] if self._token else "session"
            self.session_slot = sessions.claim_slot(self._session_dir, bot)
        try:
            await self._log_in()
        except BaseException:
            await self._drop_client()
            raise
        assert self.client is not None
        # self.client, not a local: a re-login inside a call replaces the client
        me = await self._call(lambda: self.client.get_me(), "getMe")
        if me is None or not me.bot:
            raise ConfigError("the MTProto session is not a bot's: tgsnap logs in with a bot token "
                              f"({self._token_var}); clear TGSNAP_MTPROTO_SESSION to log in afresh")
        if self._token and self._token.split(":", 1)[0] != str(me.id):
            raise ConfigError(f"TGSNAP_MTPROTO_SESSION is logged in as bot {me.id}, not the bot of "
                              f"{self._token_var}; clear the session or use the matching token")
        self.me_id = me.id
        self.bot_name = f"@{me.username}" if me.username else f"bot {me.id}"
        await self._resolve_chat()
        if self.budget is None:
            config = self._budget_arg if isinstance(self._budget_arg, BudgetConfig) else None
            assert self._channel is not None
            self.budget = shared_budget(me.id, utils.get_peer_id(types.PeerChannel(self._channel.channel_id)),
                                        config)
        if self.pool is None or self.pool.client is not self.client:
            self.pool = transfer.SenderPool(self.client, self.connections, timeout=self.policy.timeout)
        if await self._pinned_message() is None:
            await self._refuse_unpinned_storage()
        return self

    # -- sessions and logins -------------------------------------------------------------------------

    def _initial_session(self) -> str | StringSession:
        """Which session to start from: this slot's saved one; else the given one, but only in slot 0 — a
        second process on the same host gets its own key (one key in two places is AUTH_KEY_DUPLICATED)."""
        slot = self.session_slot
        if slot is not None:
            saved = slot.load()
            if saved:
                return saved
            if slot.index > 0 and self._session:
                return _fresh_key_at(self._session)
        return self._session

    async def _connect(self, session: str | StringSession) -> TelegramClient:
        api_id, api_hash = self._api
        client = self.client = TelegramClient(
            StringSession(session) if isinstance(session, str) else session, api_id, api_hash,
            receive_updates=False, flood_sleep_threshold=0, request_retries=2, connection_retries=3, retry_delay=1,
            timeout=10, local_addr=(self._local_addr, 0) if self._local_addr else None)
        compat.check(client)
        try:
            await asyncio.wait_for(client.connect(), self.policy.timeout)
        except (OSError, TimeoutError) as e:
            raise BackendError(f"cannot reach Telegram over MTProto: {e}", retryable=True) from None
        except errors.RPCError as e:  # connect() already sends initConnection: a dead key is refused here
            err = _classify(e)
            if err is None:
                raise
            raise err from e
        return client

    async def _drop_client(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            self.pool = None
        if self.client is not None:
            await self.client.disconnect()
            self.client = None

    async def _log_in(self) -> None:
        """Connect on the chosen session; log in with the bot token when the key is not logged in, or on a
        fresh key when Telegram refuses this one for good (AUTH_KEY_DUPLICATED & co.)."""
        session = self._initial_session()
        try:
            client = await self._connect(session)
            state = await self._session_state()
        except BackendError as e:
            if e.telegram_error not in SESSION_DEAD:
                raise
            state = e.telegram_error
        if state == "ok":
            self._save_session()
            return
        if not self._token:
            raise ConfigError("the MTProto session is not logged in and no bot token is set: set "
                              f"{self._token_var}")
        if state != "AUTH_KEY_UNREGISTERED":
            log.warning("Telegram refused the saved MTProto session (%s): logging in again on a new key", state)
            if self.session_slot is not None:
                self.session_slot.discard()
            await self._drop_client()
            client = await self._connect(_fresh_key_at(session) if isinstance(session, str) else StringSession())
        await self._sign_in(client)
        self._save_session()

    async def _session_state(self) -> str:
        """'ok' if the session is logged in, else Telegram's name for why not."""
        try:
            await self._call(lambda: self._invoke(functions.users.GetUsersRequest([types.InputUserSelf()])),
                             "checking the session", relogin=False)
        except BackendError as e:
            if e.telegram_error in SESSION_DEAD:
                return e.telegram_error
            raise
        return "ok"

    async def _sign_in(self, client: TelegramClient) -> None:
        """auth.importBotAuthorization; a FLOOD_WAIT on it is waited out here, explained, with its length and
        end named: giving up and restarting would log in again and make Telegram's wait longer."""
        while True:
            self.logins += 1
            try:
                await asyncio.wait_for(client.sign_in(bot_token=self._token), self.policy.timeout)
                return
            except errors.RPCError as e:
                err = _classify(e)
                if isinstance(err, BackendError) and err.telegram_code == 420 and err.retry_after:
                    await self._login_flood_wait(err.retry_after, err.telegram_error or "FLOOD_WAIT")
                    continue
                if err is None:
                    raise
                raise err from e
            except (OSError, TimeoutError) as e:
                raise BackendError(f"logging in: cannot reach Telegram over MTProto: {e}", retryable=True) from None

    async def _login_flood_wait(self, seconds: float, name: str) -> None:
        until = time.strftime("%H:%M:%S UTC", time.gmtime(time.time() + seconds))
        advice = ("Telegram limits how often a bot logs in; tgsnap keeps one saved session per host and process "
                  f"slot in {self._session_dir} (TGSNAP_MTPROTO_SESSION_DIR) so that restarts do not log in again")
        if self.login_max_wait is not None and seconds > self.login_max_wait:
            raise BackendError(f"Telegram refuses logins of {self._token_var}'s bot for {seconds:.0f} s ({name}, "
                               f"until {until}), longer than login_max_wait={self.login_max_wait:g} s. {advice}",
                               retryable=False, retry_after=seconds, telegram_error=name, telegram_code=420)
        log.warning("Telegram refuses bot logins for %.0f s (%s): waiting until %s before logging in again. %s",
                    seconds, name, until, advice)
        left = seconds
        while left > 0:  # a reminder every five minutes, so a long silent wait is not taken for a hang
            await asyncio.sleep(min(left, 300.0))
            left -= 300.0
            if left > 0:
                log.warning("still waiting %.0f s for Telegram's login FLOOD_WAIT to end", left)

    def _save_session(self) -> None:
        if self.session_slot is not None and self.client is not None:
            self.session_slot.save(StringSession.save(self.client.session))

    async def _relogin(self, reason: str, generation: int | None = None) -> None:
        """The session died while running (AUTH_KEY_DUPLICATED: someone else used the key): a fresh key.

        Calls that fail together log in once: a call that started before the last re-login (`generation`)
        just tries again on the new key."""
        async with self._relogin_lock:
            if generation is not None and generation != self._logins_done:
                return
            await self._relogin_now(reason)
            self._logins_done += 1

    async def _relogin_now(self, reason: str) -> None:
        log.warning("Telegram refused the MTProto session while running (%s): logging in again on a new key",
                    reason)
        if not self._token:
            raise ConfigError(f"Telegram refused the MTProto session ({reason}) and no bot token is set to log "
                              f"in again: set {self._token_var}")
        assert self.client is not None
        old = StringSession.save(self.client.session)
        if self.session_slot is not None:
            self.session_slot.discard()
        await self._drop_client()
        client = await self._connect(_fresh_key_at(old))
        await self._sign_in(client)
        self._save_session()
        self.pool = transfer.SenderPool(client, self.connections, timeout=self.policy.timeout)

    async def _resolve_chat(self) -> None:
        assert self.client is not None
        try:
            entity = await self._call(lambda: self.client.get_entity(self._chat_arg), "finding the storage chat")
        except (ValueError, BackendError) as e:
            if isinstance(e, BackendError) and e.retryable:
                raise
            raise channel.chat_not_found(self._chat_arg, self.bot_name) from None
        if isinstance(entity, types.ChannelForbidden):
            raise channel.chat_not_found(self._chat_arg, self.bot_name)
        if not isinstance(entity, types.Channel):
            raise channel.not_a_channel(self._chat_arg, type(entity).__name__.lower())
        if entity.megagroup:
            raise channel.not_a_channel(self._chat_arg, "group")
        if entity.left:
            raise channel.chat_not_found(self._chat_arg, self.bot_name)
        self.chat_title = f"{entity.title!r} ({utils.get_peer_id(entity)})"
        self._channel = types.InputChannel(entity.id, entity.access_hash or 0)
        self._peer = types.InputPeerChannel(entity.id, entity.access_hash or 0)
        self._check_rights(entity)

    def _check_rights(self, entity: types.Channel) -> None:
        """Our rights come with the channel object itself (`admin_rights` is the caller's own)."""
        if entity.creator:
            return
        rights = entity.admin_rights
        if rights is None:
            raise channel.missing_rights(self.chat_title, self.bot_name,
                                         [label for _b, _m, label in channel.REQUIRED_RIGHTS])
        missing = [label for _b, field, label in channel.REQUIRED_RIGHTS if not getattr(rights, field)]
        if missing:
            raise channel.missing_rights(self.chat_title, self.bot_name, missing)

    async def _pinned_message(self) -> types.Message | None:
        """The pinned message, adopted as our manifest; ConfigError if it is anything else."""
        full = await self._rpc(functions.channels.GetFullChannelRequest(self._channel), "reading the channel")
        pinned_id = full.full_chat.pinned_msg_id
        if not pinned_id:
            return None
        msg = await self._message(pinned_id)
        doc = _document(msg)
        if msg is None or doc is None or not channel.is_manifest_name(_file_name(doc)):
            raise channel.foreign_pin(self.chat_title, pinned_id, self._manifest_id)
        self._manifest_id, self._manifest_pinned = pinned_id, True
        return msg

    async def _refuse_unpinned_storage(self) -> None:
        """No pin: fine for an empty channel, but a tgsnap manifest left unpinned must not be shadowed.

        A writer's first claim sends its manifest and pins it a round trip later, so a process opening
        the channel at that moment sees an unpinned manifest that is about to be pinned: look again for
        `PIN_SETTLE_SECONDS` before calling the pin lost."""
        unpinned = None
        for msg in await self._scan(0):
            doc = _document(msg)
            if doc is not None and channel.is_manifest_name(_file_name(doc)) and msg.id != self._manifest_id:
                unpinned = msg.id
                break
        if unpinned is None:
            return
        deadline = time.monotonic() + PIN_SETTLE_SECONDS
        while time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            if await self._pinned_message() is not None:
                return
        raise channel.lost_pin(self.chat_title, unpinned)

    # -- the Backend interface ---------------------------------------------------------------------

    async def put(self, name: str, data: bytes) -> str:
        return await self.put_labeled(name, data, "")

    async def put_labeled(self, name: str, data: bytes, label: str) -> str:
        """`put`, with a short `label` kept in the message caption (read back by `discover_labeled`)."""
        fname = channel.file_name(name)
        sent = await self._send_document(fname, data, label, what=f"storing {name}")
        if sent.message_id > self._checked:
            self._own.add(sent.message_id)
        return str(sent.message_id)

    def session_string(self) -> str:
        """The logged-in session as a Telethon StringSession (a secret: store it like the token). Put it in
        TGSNAP_MTPROTO_SESSION to skip the bot login on later starts (Telegram limits how often a bot logs in)."""
        assert self.client is not None, "open() first"
        return StringSession.save(self.client.session)

    @property
    def tip(self) -> int:
        """The highest message id this process knows in the channel: every document at or below it is
        complete. (A multi-channel ref records the tips of all its channels.)"""
        return self._top

    async def get(self, ref: str) -> bytes:
        try:
            mid = int(ref)
        except ValueError:
            raise DocumentNotFound(ref) from None
        if mid <= 0:
            raise DocumentNotFound(ref)
        msg = await self._message(mid)
        doc = _document(msg)
        if doc is None or msg is None or channel.is_manifest_name(_file_name(doc)):
            raise DocumentNotFound(ref)
        return await self._download(mid, doc, f"document {ref}")

    async def publish_manifest(self, data: bytes) -> None:
        async with self._manifest_lock:
            if self._manifest_id is None:
                await self._pinned_message()  # another process may have initialised the channel meanwhile
            if self._manifest_id is None:
                sent = await self._send_document(channel.MANIFEST_NAME, data, what="sending the manifest")
                self._manifest_id, self._manifest_pinned = sent.message_id, False
            else:
                await self._edit_manifest(data)
            if not self._manifest_pinned:
                await self._rpc(functions.messages.UpdatePinnedMessageRequest(self._peer, self._manifest_id,
                                                                              silent=True),
                                "pinning the manifest", budgeted=True)
                self._manifest_pinned = True
            else:
                await self._check_still_pinned()

    async def _check_still_pinned(self) -> None:
        """A publication counts only if readers will find it: the pin must still be our manifest."""
        full = await self._rpc(functions.channels.GetFullChannelRequest(self._channel), "reading the channel")
        pinned_id = full.full_chat.pinned_msg_id
        assert self._manifest_id is not None
        if not pinned_id:
            raise BackendError(str(channel.lost_pin(self.chat_title, self._manifest_id)), retryable=False)
        if pinned_id != self._manifest_id:
            raise channel.foreign_pin(self.chat_title, pinned_id, self._manifest_id)

    async def _edit_manifest(self, data: bytes) -> None:
        mid = self._manifest_id
        assert mid is not None
        handle = await self._upload(data, channel.MANIFEST_NAME)

        async def edit() -> None:
            assert self.client is not None
            request = functions.messages.EditMessageRequest(self._peer, mid, media=self._media(handle,
                                                                                             channel.MANIFEST_NAME))
            try:
                await self._invoke(request)
            except errors.MessageNotModifiedError:
                return  # an earlier attempt landed and only its answer was lost
            except errors.MessageIdInvalidError:
                raise BackendError(
                    f"the manifest message {mid} in {self.chat_title} was deleted: restore the channel or start "
                    "from a new one (tgsnap will not guess a replacement)", retryable=False) from None

        await self._call(edit, "publishing the manifest", budgeted=True, edit_of=mid)

    # -- manifest slots ----------------------------------------------------------------------------
    # A slot is a manifest message, sent and pinned; older slots stay pinned, and the channel's
    # pinned_msg_id (channels.getFullChannel) names the most recent: the newest slot. Slot refs are
    # message ids; the claim order is the channel's one order of message ids.

    #: above this many unexamined ids in the gap, check the pin instead of reading them all.
    GAP_READ_LIMIT = 1000

    @staticmethod
    def _slot_id(ref: str) -> int:
        if not isinstance(ref, str) or not ref.isdigit() or int(ref) <= 0:
            raise DocumentNotFound(ref)
        return int(ref)

    async def _pinned_id(self) -> int | None:
        full = await self._rpc(functions.channels.GetFullChannelRequest(self._channel), "reading the channel")
        return full.full_chat.pinned_msg_id or None

    async def newest_slot(self) -> Slot | None:
        msg = await self._pinned_message()
        if msg is None:
            if self._manifest_id is not None:
                raise BackendError(str(channel.lost_pin(self.chat_title, self._manifest_id)), retryable=False)
            return None
        doc = _document(msg)
        assert doc is not None
        return Slot(str(msg.id), await self._download(msg.id, doc, f"manifest {msg.id}"))

    async def create_slot(self, data: bytes, *, after: str | None) -> str:
        async with self._manifest_lock:
            pinned = await self._pinned_id()
            if pinned != (self._slot_id(after) if after is not None else None):
                raise SlotRace(f"a newer manifest (message {pinned}) is pinned in {self.chat_title}: another "
                               "writer claimed first", newer=str(pinned) if pinned else None)
            sent = await self._send_document(channel.MANIFEST_NAME, data, what="sending a claim manifest")
            mid = sent.message_id
            # the pin keeps the other pins (updatePinnedMessage without unpin)
            await self._rpc(functions.messages.UpdatePinnedMessageRequest(self._peer, mid, silent=True),
                            "pinning the claim manifest", budgeted=True)
            self._manifest_id, self._manifest_pinned = mid, True
            self._checked, self._own = mid, set()
            return str(mid)

    async def replace_slot(self, ref: str, data: bytes) -> None:
        mid = self._slot_id(ref)
        async with self._manifest_lock:
            self._manifest_id = mid
            try:
                await self._edit_manifest(data)
            except BackendError as e:
                if "was deleted" in str(e):
                    raise DocumentNotFound(ref) from None
                raise

    async def newer_slot(self, ref: str, *, stored: str | None = None) -> str | None:
        mine = self._slot_id(ref)
        top = int(stored) if stored is not None and stored.isdigit() else 0
        if top and self._checked >= mine:
            # The gap check: a rival claim is a manifest message, and message ids are one total order. A
            # claim made before our document got its id sits between the last id we examined and it. Every
            # id above our slot is examined once (ours skipped); the watermark moves only over examined ids.
            gap = [i for i in range(self._checked + 1, top) if i not in self._own]
            if len(gap) <= self.GAP_READ_LIMIT:
                rival = None
                for i in range(0, len(gap), 100):
                    for msg in await self._messages(gap[i:i + 100]):
                        doc = _document(msg) if isinstance(msg, types.Message) else None
                        if doc is not None and channel.is_manifest_name(_file_name(doc)):
                            rival = msg.id if rival is None else max(rival, msg.id)
                if rival is not None:
                    return str(rival)
                self._checked = top
                self._own = {i for i in self._own if i > top}
                return None
        # After an edit (no new id to bound a gap), or a gap too wide to read: the pin names the newest. A
        # claimer pins before it reads our slot, so a claim not yet pinned now will see what we stored.
        pinned = await self._pinned_id()
        if pinned is None:
            raise DocumentNotFound(ref)
        return None if pinned == mine else str(pinned)

    async def read_slot(self, ref: str) -> bytes:
        mid = self._slot_id(ref)
        msg = await self._message(mid)
        doc = _document(msg)
        if msg is None or doc is None or not channel.is_manifest_name(_file_name(doc)):
            raise DocumentNotFound(ref)
        return await self._download(mid, doc, f"manifest slot {mid}")


    async def delete(self, refs: list[str]) -> None:
        """Delete superseded documents within Telegram's rules (bots: only messages younger than 48 h, in
        channels over MTProto too). Youngest first; ids known to be older are left alone; a batch refused
        whole (MESSAGE_DELETE_FORBIDDEN for one of its messages) is retried one message at a time."""
        ids = {int(r) for r in refs if r.isdigit()} - {self._manifest_id or 0}
        now = time.time()
        old = {i for i in ids if now - self._dates.get(i, now) >= DELETE_WINDOW_S - DELETE_MARGIN_S}
        if old:
            log.info("%s: %d superseded documents are older than 48 h and stay in the channel (bots cannot "
                     "delete them)", self.chat_title, len(old))
        todo = sorted(ids - old, reverse=True)
        for i in range(0, len(todo), 100):
            batch = todo[i:i + 100]
            if not await self._delete_batch(batch) and len(batch) > 1:
                for mid in batch:
                    await self._delete_batch([mid])

    async def _delete_batch(self, batch: list[int]) -> bool:
        async def remove() -> bool:
            try:
                await self._invoke(functions.channels.DeleteMessagesRequest(self._channel, batch))
                return True
            except errors.MessageDeleteForbiddenError:
                if len(batch) == 1:
                    log.info("%s: message %d stays in the channel: MESSAGE_DELETE_FORBIDDEN", self.chat_title,
                             batch[0])
                return False

        return await self._call(remove, "deleting superseded documents")

    async def discover(self, after: str | None) -> list[str]:
        return [ref for ref, _name in await self.discover_named(after)]

    async def discover_named(self, after: str | None) -> list[tuple[str, str | None]]:
        return [(ref, name) for ref, name, _label in await self.discover_labeled(after)]

    async def discover_labeled(self, after: str | None) -> list[tuple[str, str | None, str | None]]:
        """(ref, file name, label) of the documents after `after`; label None for foreign documents."""
        start = int(after) if after is not None and after.isdigit() else 0
        found = []
        for msg in await self._scan(start):
            doc = _document(msg)
            name = _file_name(doc) if doc is not None else None
            if doc is not None and msg.id != self._manifest_id and not channel.is_manifest_name(name):
                tag, _sp, label = (msg.message or "").partition(" ")
                found.append((str(msg.id), name, label if _TAG.fullmatch(tag) else None))
        return found

    def order_key(self, ref: str) -> tuple:
        return (int(ref),)

    async def close(self) -> None:
        await self._drop_client()
        if self.session_slot is not None:
            self.session_slot.release()

    # -- documents ---------------------------------------------------------------------------------

    async def _send_document(self, fname: str, data: bytes, label: str = "", *, what: str) -> _Sent:
        for _ in range(3):
            handle = await self._upload(data, fname)
            random_id = secrets.randbits(63)
            floor = self._top
            caption = f"{_tag(random_id)} {label}" if label else _tag(random_id)
            request = functions.messages.SendMediaRequest(
                self._peer, self._media(handle, fname), message=caption, silent=True, random_id=random_id)

            async def send(request=request):
                try:
                    return await self._invoke(request)
                except errors.RandomIdDuplicateError:
                    return _DUPLICATE
                except (errors.FilePartMissingError, errors.FilePart0MissingError, errors.FilePartsInvalidError):
                    return _PARTS_LOST

            updates = await self._call(send, what, budgeted=True)
            if updates is _DUPLICATE:
                # our first copy was stored but its answer was lost (Telethon re-sent it after reconnecting):
                # find that copy by its tag rather than post the document twice
                found = await self._find_tagged(_tag(random_id), floor)
                if found is not None:
                    return _Sent(found)
                continue
            if updates is _PARTS_LOST:
                continue  # the server lost the uploaded parts (e.g. it restarted): upload again
            mid = self._message_id_of(updates, random_id)
            self._top = max(self._top, mid)
            return _Sent(mid)
        raise BackendError(f"{what}: Telegram kept losing the upload", retryable=True)

    @staticmethod
    def _media(handle, fname: str) -> types.InputMediaUploadedDocument:
        return types.InputMediaUploadedDocument(
            file=handle, mime_type=MIME, attributes=[types.DocumentAttributeFilename(fname)], force_file=True)

    @staticmethod
    def _message_id_of(updates: object, random_id: int) -> int:
        found = None
        for update in getattr(updates, "updates", []):
            if isinstance(update, types.UpdateMessageID) and update.random_id == random_id:
                return update.id
            if isinstance(update, types.UpdateNewChannelMessage) and found is None:
                found = update.message.id
        if found is None:
            raise BackendError("Telegram's answer to a send names no message", retryable=True)
        return found

    async def _find_tagged(self, tag: str, floor: int) -> int | None:
        for msg in await self._scan(floor):
            if isinstance(msg, types.Message) and (msg.message or "").partition(" ")[0] == tag:
                return msg.id
        return None

    async def _upload(self, data: bytes, fname: str):
        for attempt in (1, 2):
            generation = self._logins_done
            assert self.pool is not None
            try:
                return await transfer.upload(self.pool, data, fname)
            except BackendError:
                raise
            except Exception as e:
                err = _classify(e)
                if err is None:
                    raise
                if attempt == 1 and isinstance(err, BackendError) and err.telegram_error in SESSION_DEAD:
                    await self._relogin(err.telegram_error, generation)
                    continue
                raise err from e
        raise AssertionError("unreachable")

    async def _download(self, mid: int, doc: types.Document, what: str) -> bytes:
        assert self.client is not None and self.pool is not None
        if doc.dc_id != self.client.session.dc_id:
            return await self._download_elsewhere(mid, doc, doc.dc_id, what)

        async def refresh() -> types.InputDocumentFileLocation:
            fresh = _document(await self._message(mid))
            if fresh is None:
                raise DocumentNotFound(str(mid))
            return types.InputDocumentFileLocation(fresh.id, fresh.access_hash, fresh.file_reference, "")

        location = types.InputDocumentFileLocation(doc.id, doc.access_hash, doc.file_reference, "")
        # A one-piece document (a manifest, a delta) gains nothing from the pool: it is read on the client's
        # own connection, already open, while the pool opens in the background for the large parts that
        # usually follow (a restore: manifest first, then the snapshot's parts).
        via: transfer.Invoker = self.pool
        if doc.size <= transfer.DOWNLOAD_PIECE:
            via = transfer.Direct(self.client)
            self.pool.warm()
        # each piece has its own timeout inside the transfer; the whole may take as long as the file needs
        try:
            return await self._call(
                lambda: transfer.download(via, location, doc.size, refresh=refresh, what=what),
                f"reading {what}", attempt_timeout=0)
        except transfer.FileMigrated as moved:
            log.info("%s: %s; reading it from there", self.chat_title, moved)
            return await self._download_elsewhere(mid, doc, moved.dc, what)

    async def _download_elsewhere(self, mid: int, doc: types.Document, dc: int, what: str) -> bytes:
        """A file kept on another DC than ours (a media DC, or FILE_MIGRATE_X): Telethon borrows a sender there
        (auth.exportAuthorization → importAuthorization on that DC) and reads it one piece at a time."""
        async def fetch() -> bytes:
            fresh = _document(await self._message(mid)) or doc  # a fresh file reference
            assert self.client is not None
            return await self.client.download_file(
                types.InputDocumentFileLocation(fresh.id, fresh.access_hash, fresh.file_reference, ""), bytes,
                file_size=fresh.size, dc_id=dc)

        return await self._call(fetch, f"reading {what} from DC {dc}",
                                attempt_timeout=self.policy.timeout_for(doc.size))

    # -- messages ----------------------------------------------------------------------------------

    async def _message(self, mid: int) -> types.Message | None:
        """One message by id. Look-ups made at the same moment (a restore fetching many documents at once)
        go out together, up to 100 ids per `channels.getMessages`: Telegram limits look-ups too."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        self._lookups.setdefault(mid, []).append(fut)
        if not self._lookup_scheduled:
            self._lookup_scheduled = True
            loop.call_soon(lambda: self._lookup_tasks.add(loop.create_task(self._run_lookups())))
        msg = await fut
        return msg if isinstance(msg, types.Message) else None

    async def _run_lookups(self) -> None:
        self._lookup_scheduled = False
        task = asyncio.current_task()
        try:
            while self._lookups:
                ids = sorted(self._lookups)[:100]
                waiting = {i: self._lookups.pop(i) for i in ids}
                try:
                    found = await self._messages(ids)
                except BaseException as e:  # every waiter of this batch gets the error
                    for futs in waiting.values():
                        for f in futs:
                            if not f.done():
                                f.set_exception(e)
                    if isinstance(e, asyncio.CancelledError):
                        raise
                    continue
                for i, msg in zip(ids, found, strict=True):
                    for f in waiting[i]:
                        if not f.done():
                            f.set_result(msg)
        finally:
            self._lookup_tasks.discard(task)

    async def _messages(self, ids: list[int]) -> list[Any]:  # Telethon's messages (untyped) or None
        answer = await self._rpc(
            functions.channels.GetMessagesRequest(self._channel, [types.InputMessageID(i) for i in ids]),
            "reading messages")
        by_id = {m.id: m for m in answer.messages if not isinstance(m, types.MessageEmpty)}
        for m in by_id.values():
            if isinstance(m, types.Message) and m.date is not None:
                self._dates[m.id] = m.date.timestamp()
        if by_id:
            self._top = max(self._top, max(by_id))
        return [by_id.get(i) for i in ids]

    async def _scan(self, after: int) -> list[types.Message]:
        """Every message with id > after, read by id until `discover_gap` empty ids past what we know."""
        found: list[types.Message] = []
        last_seen = after
        start = after + 1
        # one batch more than a whole gap takes, at once (3 for the default 200): a scan whose last document is
        # within the first batch — the usual case, the manifest itself — is then one round trip, not one per
        # batch; the extra ids read on a longer scan are harmless
        window = max(1, -(-self.discover_gap // 100)) + 1
        while True:
            batches = [list(range(start + k * 100, start + (k + 1) * 100)) for k in range(window)]
            for answer in await asyncio.gather(*(self._messages(ids) for ids in batches)):
                for msg in answer:
                    if msg is not None:
                        last_seen = max(last_seen, msg.id)
                        if isinstance(msg, types.Message):
                            found.append(msg)
            start += 100 * window
            if start - 1 - max(last_seen, self._top) >= self.discover_gap:
                return found

    # -- calls -------------------------------------------------------------------------------------

    async def _invoke(self, request):
        """Send one request on the client's connection, without Telethon's own retry loop (it sleeps on
        server errors and flood waits; here the rate budget and `telegram_retry` decide)."""
        assert self.client is not None
        return await compat.invoke(self.client, request)

    async def _rpc(self, request, what: str, *, budgeted: bool = False):
        return await self._call(lambda: self._invoke(request), what, budgeted=budgeted)

    async def _call(self, op, what: str, *, budgeted: bool = False, attempt_timeout: float | None = None,
                    relogin: bool = True, edit_of: int | None = None):
        if self.client is not None and not self.client.is_connected():
            try:
                await asyncio.wait_for(self.client.connect(), self.policy.timeout)
            except (OSError, TimeoutError) as e:
                raise BackendError(f"{what}: cannot reach Telegram over MTProto: {e}", retryable=True) from None
        budget = self.budget if budgeted else None
        generation = self._logins_done
        try:
            return await call(op, what=what, classify=_classify, policy=self.policy, budget=budget,
                              attempt_timeout=attempt_timeout, edit_of=edit_of)
        except BackendError as e:
            if not relogin or e.telegram_error not in SESSION_DEAD:
                raise
            await self._relogin(e.telegram_error, generation)
        return await call(op, what=what, classify=_classify, policy=self.policy, budget=budget,
                          attempt_timeout=attempt_timeout, edit_of=edit_of)


def _fresh_key_at(session: str) -> StringSession:
    """A session on the same DC as `session` but with no auth key: connecting makes a new key (DH)."""
    fresh = StringSession()
    if session:
        old = StringSession(session)
        fresh.set_dc(old.dc_id, old.server_address, old.port)
    return fresh
