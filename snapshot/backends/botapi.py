"""Telegram storage through the Bot API only (aiogram), for users without an api_id/api_hash.

What the Bot API allows shapes this backend:
- a bot cannot read history or fetch a message by id, so every ref carries what `get` needs:
  `"<message_id>:<file_id>"` (file_ids are persistent for the bot that stored the document);
- documents are read with getFile, which serves files up to 20 MB: that is `max_document_size`;
- there is no discovery (`can_discover=False`): the replica republishes the manifest after every delta,
  so each delta costs two budget slots (send + edit);
- deleteMessage works only on messages younger than 48 h; older superseded documents stay in the channel
  (they are inert: nothing points at them).

Every send, edit and pin takes a slot of the chat's `ChatBudget` first; a 429 pauses the whole chat.
A call that cannot get a slot within `max_wait` raises a retryable BackendError with `retry_after`.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
import uuid
from pathlib import Path

import aiohttp
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramAPIError,
    TelegramBadRequest,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.types import BufferedInputFile, InputMediaDocument, Message
from aiogram.utils.token import TokenValidationError

from snapshot.backend import Backend, BackendInfo, Slot, SlotRace
from snapshot.backends import telegram_channel as channel
from snapshot.backends.telegram_budget import BudgetConfig, ChatBudget, shared_budget
from snapshot.backends.telegram_retry import RetryPolicy, call
from snapshot.errors import BackendError, ConfigError, DocumentNotFound, TelegramAnswer

log = logging.getLogger(__name__)

#: a bot may delete a channel message only this long after it was sent (Bot API deleteMessage docs), with a
#: margin so a batch is not refused for one message that crossed the line while the call was on its way.
DELETE_WINDOW_S = 48 * 3600
DELETE_MARGIN_S = 600
#: getFile's cap is "20 MB"; stay under both readings of it.
BOTAPI_MAX_DOCUMENT = 20_000_000
#: a --local server: "Upload files up to 2000 MB", "Download files without a size limit" (Bot API docs).
LOCAL_MAX_DOCUMENT = 2000 * 1000 * 1000
_NOT_MODIFIED = "message is not modified"
#: getFile answers for a document that is not there (telegram-bot-api Client.cpp: check_remote_file_id's default).
_GONE_FILE = ("invalid file_id", "wrong file identifier", "file not found")


def _classify(exc: BaseException) -> BackendError | ConfigError | None:
    """aiogram's exceptions → what to do, with telegram-bot-api's description and code kept on the error."""
    named: TelegramAnswer = {}
    if isinstance(exc, TelegramAPIError):
        named = {"telegram_error": exc.message, "telegram_code": _code(exc)}
    if isinstance(exc, TelegramRetryAfter):
        return BackendError(f"Telegram flood control: retry after {exc.retry_after}s", retryable=True,
                            retry_after=float(exc.retry_after), **named)
    if isinstance(exc, TelegramEntityTooLarge):
        return BackendError(f"Telegram refused the document as too large: {exc.message}", retryable=False, **named)
    if isinstance(exc, TelegramNetworkError | TelegramServerError | ClientDecodeError | aiohttp.ClientError
                  | ConnectionError):
        return BackendError(f"Telegram unreachable or failing: {exc}", retryable=True, **named)
    if isinstance(exc, TelegramUnauthorizedError):
        return channel.bad_token()
    if isinstance(exc, TelegramForbiddenError | TelegramBadRequest | TelegramNotFound):
        hint = ""
        if isinstance(exc, TelegramForbiddenError) or "rights" in exc.message or "can't be edited" in exc.message:
            hint = ("; the storage bot lost its place or its administrator rights in the storage channel: "
                    "restore them (post and edit messages)")
        return BackendError(f"Telegram refused: {exc.message}{hint}", retryable=False, **named)
    if isinstance(exc, TelegramAPIError):
        return BackendError(f"Telegram error: {exc.message}", retryable=True, **named)
    return None


def _code(exc: TelegramAPIError) -> int | None:
    for cls, code in ((TelegramRetryAfter, 429), (TelegramEntityTooLarge, 413), (TelegramUnauthorizedError, 401),
                      (TelegramForbiddenError, 403), (TelegramNotFound, 404), (TelegramBadRequest, 400),
                      (TelegramServerError, 500)):
        if isinstance(exc, cls):
            return code
    return None


def encode_ref(message_id: int, file_id: str) -> str:
    return f"{message_id}:{file_id}"


def decode_ref(ref: str) -> tuple[int, str]:
    """(message_id, file_id) of a ref; DocumentNotFound for anything that is not one of ours."""
    mid, sep, file_id = ref.partition(":")
    if not sep or not file_id or not mid.isdigit():
        raise DocumentNotFound(ref)
    return int(mid), file_id


class BotApiBackend(Backend):
    """Documents and the pinned manifest in one channel, through the Bot API.

    Build with the constructor, then `await open()` (connects, checks the channel, reads nothing else);
    `snapshot.open.open_backend` does both.
    """

    def __init__(self, token: str, chat: str | int, *, api_url: str | None = None,
                 budget: ChatBudget | BudgetConfig | None = None, policy: RetryPolicy | None = None,
                 token_var: str = "TGSNAP_BOT_TOKEN", local: bool = False,
                 local_files: tuple[str, str] | None = None) -> None:
        self._chat_arg = channel.parse_chat(chat)
        self._token_var = token_var
        #: a self-hosted telegram-bot-api started with --local: getFile answers absolute paths on the server's
        #: disk (read here directly, or through `local_files` = (server dir, the same dir as mounted here)) and
        #: documents up to 2000 MB can be stored and read back.
        self.local = local
        if local and not api_url:
            raise ConfigError("a self-hosted Bot API server in local mode needs its URL: set TGSNAP_BOT_API_URL")
        try:
            if api_url:
                wrap = {}
                if local_files:
                    from aiogram.client.telegram import SimpleFilesPathWrapper

                    wrap = {"wrap_local_file": SimpleFilesPathWrapper(*(Path(p) for p in local_files))}
                session = AiohttpSession(api=TelegramAPIServer.from_base(api_url, is_local=local, **wrap))
            else:
                session = AiohttpSession()
            self.bot = Bot(token, session=session)
        except TokenValidationError:
            raise channel.bad_token(token_var) from None
        self._budget_arg = budget
        self.policy = policy or RetryPolicy(max_wait=(budget.max_wait if isinstance(budget, BudgetConfig)
                                                      else budget.config.max_wait if budget else 60.0))
        self.budget: ChatBudget | None = budget if isinstance(budget, ChatBudget) else None
        self.chat_id: int | None = None
        self.chat_title = str(self._chat_arg)
        self.bot_name = "the bot"
        self._manifest_id: int | None = None
        self._manifest_pinned = False
        self._deleted: set[int] = set()  # message ids Telegram really deleted (get() of them: DocumentNotFound)
        self._sent_at: dict[int, float] = {}  # message id → when this process stored it (the 48 h rule)

    def __repr__(self) -> str:
        return f"BotApiBackend(chat={self.chat_title!r})"

    @property
    def info(self) -> BackendInfo:
        return BackendInfo(name=f"botapi:{self.chat_title}", can_discover=False,
                           max_document_size=self._max_document, manifest_min_interval=0.0,
                           delete_window=48 * 3600.0)

    @property
    def _max_document(self) -> int:
        return LOCAL_MAX_DOCUMENT if self.local else BOTAPI_MAX_DOCUMENT

    # -- opening and checks ------------------------------------------------------------------------

    async def open(self) -> BotApiBackend:
        """Check the token, the chat, the bot's rights and the pinned message. Writes nothing."""
        try:
            me = await self._call(self.bot.get_me, "getMe")
        except ConfigError:
            raise channel.bad_token(self._token_var) from None
        self.bot_name = f"@{me.username}" if me.username else f"bot {me.id}"
        chat = await self._get_chat()
        self.chat_id = chat.id
        self.chat_title = f"{chat.title!r} ({chat.id})" if chat.title else str(chat.id)
        if chat.type != "channel":
            raise channel.not_a_channel(self._chat_arg, chat.type)
        member = await self._call(lambda: self.bot.get_chat_member(chat.id, me.id), "getChatMember")
        self._check_rights(member)
        if self.budget is None:
            config = self._budget_arg if isinstance(self._budget_arg, BudgetConfig) else None
            self.budget = shared_budget(me.id, chat.id, config)
        if chat.pinned_message is not None:
            self._adopt_pinned(chat.pinned_message)
        return self

    async def _get_chat(self):  # -> ChatFullInfo
        try:
            return await self._call(lambda: self.bot.get_chat(self.chat_id or self._chat_arg), "getChat")
        except BackendError as e:
            if not e.retryable and "chat not found" in str(e).lower():
                raise channel.chat_not_found(self._chat_arg, self.bot_name) from None
            raise

    def _check_rights(self, member) -> None:
        status = member.status
        if status == "creator":
            return
        if status != "administrator":
            raise channel.missing_rights(self.chat_title, self.bot_name,
                                         [label for _b, _m, label in channel.REQUIRED_RIGHTS])
        missing = [label for field, _m, label in channel.REQUIRED_RIGHTS if getattr(member, field, None) is False]
        if missing:
            raise channel.missing_rights(self.chat_title, self.bot_name, missing)

    def _adopt_pinned(self, msg: Message) -> None:
        """Take the pinned message as our manifest, or refuse the channel if it is anything else."""
        if msg.document is None or not channel.is_manifest_name(msg.document.file_name):
            raise channel.foreign_pin(self.chat_title, msg.message_id, self._manifest_id)
        self._manifest_id = msg.message_id
        self._manifest_pinned = True

    # -- the Backend interface ---------------------------------------------------------------------

    async def put(self, name: str, data: bytes) -> str:
        self._check_size(name, data)
        doc = BufferedInputFile(data, filename=channel.file_name(name))
        timeout = self.policy.timeout_for(len(data))
        msg = await self._call(
            lambda: self.bot.send_document(self._cid, doc, disable_notification=True,
                                           disable_content_type_detection=True, request_timeout=int(timeout)),
            f"storing {name}", budgeted=True, attempt_timeout=timeout)
        if msg.document is None:
            raise BackendError(f"storing {name}: Telegram's answer carries no document", retryable=True)
        self._sent_at[msg.message_id] = msg.date.timestamp()
        return encode_ref(msg.message_id, msg.document.file_id)

    async def get(self, ref: str) -> bytes:
        mid, file_id = decode_ref(ref)
        if mid in self._deleted:
            raise DocumentNotFound(ref)
        return await self._download(file_id, ref)

    async def publish_manifest(self, data: bytes) -> None:
        self._check_size(channel.MANIFEST_NAME, data)
        if self._manifest_id is None:
            chat = await self._get_chat()  # another process may have initialised the channel meanwhile
            if chat.pinned_message is not None:
                self._adopt_pinned(chat.pinned_message)
        doc = BufferedInputFile(data, filename=channel.MANIFEST_NAME)
        timeout = self.policy.timeout_for(len(data))
        if self._manifest_id is None:
            msg = await self._call(lambda: self.bot.send_document(self._cid, doc, disable_notification=True,
                                                                  disable_content_type_detection=True,
                                                                  request_timeout=int(timeout)),
                                   "sending the manifest", budgeted=True, attempt_timeout=timeout)
            self._manifest_id, self._manifest_pinned = msg.message_id, False
        else:
            await self._edit_manifest(doc, timeout)
        if not self._manifest_pinned:
            mid = self._manifest_id
            await self._call(lambda: self.bot.pin_chat_message(self._cid, mid, disable_notification=True),
                             "pinning the manifest", budgeted=True)
            self._manifest_pinned = True
        else:
            await self._check_still_pinned()

    async def _check_still_pinned(self) -> None:
        """A publication counts only if readers will find it: the pin must still be our manifest."""
        pinned = (await self._get_chat()).pinned_message
        if pinned is None:
            assert self._manifest_id is not None
            raise BackendError(str(channel.lost_pin(self.chat_title, self._manifest_id)), retryable=False)
        if pinned.message_id != self._manifest_id:
            raise channel.foreign_pin(self.chat_title, pinned.message_id, self._manifest_id)

    async def _edit_manifest(self, doc: BufferedInputFile, limit: float) -> None:
        mid = self._manifest_id
        assert mid is not None

        async def edit() -> None:
            try:
                await self.bot.edit_message_media(InputMediaDocument(media=doc), chat_id=self._cid, message_id=mid,
                                                  request_timeout=int(limit))
            except TelegramBadRequest as e:
                if _NOT_MODIFIED in e.message:
                    return  # an earlier attempt landed and only its answer was lost
                if "message to edit not found" in e.message:
                    raise BackendError(
                        f"the manifest message {mid} in {self.chat_title} was deleted: restore the channel or "
                        "start from a new one (tgsnap will not guess a replacement)", retryable=False) from None
                raise

        await self._call(edit, "publishing the manifest", budgeted=True, attempt_timeout=limit, edit_of=mid)

    # -- manifest slots ----------------------------------------------------------------------------
    # A slot is a manifest message, sent and pinned; older slots stay pinned. getChat's pinned_message is
    # the most recent pinned message (by sending date; message ids grow with it), so it is the newest
    # slot: the claim order is the channel's message order. A slot ref is the message id.

    async def _pinned_slot(self) -> Message | None:
        pinned = (await self._get_chat()).pinned_message
        if pinned is None:
            return None
        if pinned.document is None or not channel.is_manifest_name(pinned.document.file_name):
            raise channel.foreign_pin(self.chat_title, pinned.message_id, self._manifest_id)
        return pinned

    @staticmethod
    def _slot_id(ref: str) -> int:
        if not isinstance(ref, str) or not ref.isdigit():
            raise DocumentNotFound(ref)
        return int(ref)

    async def newest_slot(self) -> Slot | None:
        pinned = await self._pinned_slot()
        if pinned is None:
            if self._manifest_id is not None:
                raise BackendError(str(channel.lost_pin(self.chat_title, self._manifest_id)), retryable=False)
            return None
        assert pinned.document is not None
        data = await self._download(pinned.document.file_id, f"manifest {pinned.message_id}")
        return Slot(str(pinned.message_id), data)

    async def create_slot(self, data: bytes, *, after: str | None) -> str:
        self._check_size(channel.MANIFEST_NAME, data)
        pinned = await self._pinned_slot()
        if (pinned.message_id if pinned else None) != (self._slot_id(after) if after is not None else None):
            # cheap early refusal; the caller's newer_slot check after creating is what decides
            raise SlotRace(f"a newer manifest (message {pinned.message_id if pinned else '-'}) is pinned in "
                           f"{self.chat_title}: another writer claimed first",
                           newer=str(pinned.message_id) if pinned else None)
        doc = BufferedInputFile(data, filename=channel.MANIFEST_NAME)
        timeout = self.policy.timeout_for(len(data))
        # A lost answer here leaves an unpinned manifest message: not a slot, inert.
        msg = await self._call(lambda: self.bot.send_document(self._cid, doc, disable_notification=True,
                                                              disable_content_type_detection=True,
                                                              request_timeout=int(timeout)),
                               "sending a claim manifest", budgeted=True, attempt_timeout=timeout)
        mid = msg.message_id
        # pinChatMessage keeps the other pins (only unpin* removes them)
        await self._call(lambda: self.bot.pin_chat_message(self._cid, mid, disable_notification=True),
                         "pinning the claim manifest", budgeted=True)
        self._manifest_id, self._manifest_pinned = mid, True
        return str(mid)

    async def replace_slot(self, ref: str, data: bytes) -> None:
        self._check_size(channel.MANIFEST_NAME, data)
        mid = self._slot_id(ref)
        doc = BufferedInputFile(data, filename=channel.MANIFEST_NAME)
        self._manifest_id = mid  # our own slot: what lost-pin messages name, what delete never touches
        try:
            await self._edit_manifest(doc, self.policy.timeout_for(len(data)))
        except BackendError as e:
            if "was deleted" in str(e):
                raise DocumentNotFound(ref) from None
            raise

    async def newer_slot(self, ref: str, *, stored: str | None = None) -> str | None:
        mid = self._slot_id(ref)
        pinned = await self._pinned_slot()
        if pinned is None:
            raise DocumentNotFound(ref)  # our pin is gone: a reader cannot find what we stored
        return None if pinned.message_id == mid else str(pinned.message_id)

    async def read_slot(self, ref: str) -> bytes:
        """The Bot API cannot fetch a message by id: edit the slot's caption (a fresh value, so the edit
        is never "not modified"); the answer carries the message as it is now, document included."""
        mid = self._slot_id(ref)
        caption = f"tgsnap manifest (read {uuid.uuid4().hex[:8]})"

        async def touch() -> Message | bool:  # True only for inline messages: refused below
            try:
                return await self.bot.edit_message_caption(chat_id=self._cid, message_id=mid, caption=caption)
            except TelegramBadRequest as e:
                if "message to edit not found" in e.message or "there is no caption" in e.message:
                    raise DocumentNotFound(ref) from None
                raise

        msg = await self._call(touch, f"reading manifest slot {ref}", budgeted=True)
        if not isinstance(msg, Message) or msg.document is None or not channel.is_manifest_name(
                msg.document.file_name):
            raise DocumentNotFound(ref)
        return await self._download(msg.document.file_id, f"manifest {mid}")

    async def read_manifest(self) -> bytes | None:
        chat = await self._get_chat()
        pinned = chat.pinned_message
        if pinned is None:
            if self._manifest_id is not None:
                raise BackendError(str(channel.lost_pin(self.chat_title, self._manifest_id)), retryable=False)
            return None
        self._adopt_pinned(pinned)
        assert pinned.document is not None
        return await self._download(pinned.document.file_id, f"manifest {pinned.message_id}")

    async def delete(self, refs: list[str]) -> None:
        """Delete superseded documents within the Bot API's rules, forgetting only what is really gone.

        A bot may delete a channel message only while it is younger than 48 h, so the youngest (highest ids)
        go first and ids this process knows to be older are not tried; `deleteMessages` fails a whole batch
        when one message cannot be deleted, so a failed batch is retried one message at a time."""
        ids = set()
        for ref in refs:
            try:
                mid = decode_ref(ref)[0]
            except DocumentNotFound:
                continue
            if mid != self._manifest_id:  # never the entry point, whatever the caller passes
                ids.add(mid)
        now = time.time()
        old = {mid for mid in ids if now - self._sent_at.get(mid, now) >= DELETE_WINDOW_S - DELETE_MARGIN_S}
        if old:
            log.info("%s: %d superseded documents are older than 48 h and stay in the channel (the Bot API "
                     "cannot delete them)", self.chat_title, len(old))
        todo = sorted(ids - old, reverse=True)  # youngest first: they are the ones still inside the window
        for i in range(0, len(todo), 100):
            batch = todo[i:i + 100]
            if await self._delete_batch(batch):
                self._forget(batch)
                continue
            for mid in batch:  # the batch failed whole: find out which ones can go
                if await self._delete_batch([mid]):
                    self._forget([mid])

    async def _delete_batch(self, batch: list[int]) -> bool:
        """True if Telegram deleted every message of `batch` (or they were gone already)."""
        async def remove() -> bool:
            try:
                await (self.bot.delete_messages(self._cid, batch) if len(batch) > 1
                       else self.bot.delete_message(self._cid, batch[0]))
                return True
            except TelegramBadRequest as e:
                if "message to delete not found" in e.message:
                    return True  # gone already: nothing left to delete
                if len(batch) == 1:
                    log.info("delete in %s: message %d stays: %s", self.chat_title, batch[0], e.message)
                return False

        return await self._call(remove, "deleting superseded documents")

    def _forget(self, mids: list[int]) -> None:
        self._deleted.update(mids)
        for mid in mids:
            self._sent_at.pop(mid, None)

    async def discover(self, after: str | None) -> list[str]:
        return []

    def order_key(self, ref: str) -> tuple:
        return (decode_ref(ref)[0],)

    async def close(self) -> None:
        await self.bot.session.close()

    # -- helpers -----------------------------------------------------------------------------------

    @property
    def _cid(self) -> int | str:
        return self.chat_id if self.chat_id is not None else self._chat_arg

    def _check_size(self, name: str, data: bytes) -> None:
        if not data:
            raise BackendError(f"{name}: Telegram does not store empty documents", retryable=False)
        if len(data) > self._max_document:
            raise BackendError(
                f"{name}: {len(data)} bytes is over the Bot API's limit of {self._max_document} bytes; "
                "use smaller snapshot parts, a local-mode Bot API server or MTProto storage", retryable=False)

    async def _download(self, file_id: str, what: str) -> bytes:
        async def fetch() -> bytes:
            try:
                f = await asyncio.wait_for(self.bot.get_file(file_id), self.policy.timeout)
            except TelegramBadRequest as e:
                # telegram-bot-api's texts (Client.cpp): an unknown or foreign file_id is "invalid file_id";
                # older servers and some paths say "wrong file identifier"
                if any(text in e.message.lower() for text in _GONE_FILE):
                    raise DocumentNotFound(what) from None
                if "file is too big" in e.message:
                    raise BackendError(f"{what} is over the Bot API's 20 MB getFile limit", retryable=False) from None
                raise
            if not f.file_path:
                raise BackendError(f"{what}: getFile returned no file path", retryable=True)
            timeout = self.policy.timeout_for(f.file_size or self._max_document)
            buf = await asyncio.wait_for(self.bot.download_file(f.file_path, io.BytesIO(), timeout=int(timeout)),
                                         timeout)
            assert isinstance(buf, io.BytesIO)
            data = buf.getvalue()
            if f.file_size is not None and len(data) != f.file_size:
                raise BackendError(f"{what}: download cut short ({len(data)} of {f.file_size} bytes)",
                                   retryable=True)
            return data

        # getFile is bounded by the policy's timeout, the download by one scaled to the file's size
        return await self._call(fetch, f"reading {what}", attempt_timeout=0)

    async def _call(self, op, what: str, *, budgeted: bool = False, attempt_timeout: float | None = None,
                    edit_of: int | None = None):
        budget = self.budget if budgeted else None
        return await call(op, what=what, classify=_classify, policy=self.policy, budget=budget,
                          attempt_timeout=attempt_timeout, edit_of=edit_of)
