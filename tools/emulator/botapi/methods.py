"""The Bot API methods the emulator implements, each checking what Telegram checks, in Telegram's words."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ..records import Chat, FileRecord, Message, Update, User
from ..world import World, WorldError
from .errors import BotApiError, bad_request, forbidden, from_world, too_many_requests
from .render import Renderer
from .request import Params
from .webhook import WebhookError, Webhooks

MAX_TEXT = 4096
MAX_CAPTION = 1024
DELETE_WINDOW_S = 48 * 3600
NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly the same as a"
    " current content and reply markup of the message"
)
CONFLICT = "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"
WEBHOOK_CONFLICT = ("Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the "
                    "webhook first")

Handler = Callable[[User, Params], Awaitable[Any]]


class BotApiMethods:
    """`call(bot, method, params)` returns the `result` JSON or raises BotApiError."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._polls: dict[int, asyncio.Future[None]] = {}
        self.webhooks = Webhooks(world, self._render_update)
        self._update_json: dict[int, dict[int, Any]] = {}
        self._table: dict[str, Handler] = {}
        for attr in dir(self):
            if attr.startswith("m_"):
                self._table[attr[2:].replace("_", "").lower()] = getattr(self, attr)

    @property
    def names(self) -> list[str]:
        return sorted(self._table)

    async def call(self, bot: User, method: str, params: Params) -> Any:
        handler = self._table.get(method.lower())
        if handler is None:
            raise BotApiError(404, "Not Found")
        try:
            return await handler(bot, params)
        except WorldError as exc:
            raise from_world(exc) from None

    def stop_polls(self) -> None:
        """Release every long poll (emulator shutting down)."""
        for fut in self._polls.values():
            if not fut.done():
                fut.set_result(None)
        self._polls.clear()

    # --- helpers --------------------------------------------------------------------------------

    def _chat(self, bot: User, p: Params, name: str = "chat_id") -> Chat:
        raw = p.raw(name)
        if raw in (None, ""):
            raise bad_request(f"parameter \"{name}\" is required" if name != "chat_id" else "chat_id is empty")
        if isinstance(raw, str) and raw.startswith("@"):
            found = self.world.resolve_username(raw)
            if not isinstance(found, Chat):
                raise bad_request("chat not found")
            chat = found
        else:
            chat_id = p.int(name)
            assert chat_id is not None
            if chat_id > 0:
                peer = self.world.user(chat_id)
                if peer is None:
                    raise bad_request("chat not found")
                if peer.is_bot:
                    raise forbidden("bot can't send messages to bots")
                private = self.world.private_chat(bot.user_id, chat_id)
                if private is None:
                    raise forbidden("bot can't initiate conversation with a user")
                return private
            try:
                chat = self.world.chat(chat_id)
            except WorldError:
                raise bad_request("chat not found") from None
        if chat.is_channel and not chat.username:
            # A private channel does not exist for a bot outside it; a public one does (posting is then 403).
            status, _ = self.world.member(chat.chat_id, bot.user_id)
            if status in ("left", "kicked"):
                raise bad_request("chat not found")
        return chat

    def _require_right(self, bot: User, chat: Chat, right: str, error: BotApiError) -> None:
        if chat.is_channel and not self.world.is_admin(chat.chat_id, bot.user_id, right):
            raise error

    def _can_post(self, bot: User, chat: Chat) -> None:
        if not chat.is_channel:
            return
        status, _ = self.world.member(chat.chat_id, bot.user_id)
        if status in ("left", "kicked"):
            raise forbidden("bot is not a member of the channel chat")
        need = bad_request("need administrator rights in the channel chat")
        self._require_right(bot, chat, "can_post_messages", need)

    def _read(self, bot: User, kind: str) -> None:
        wait = self.world.limiter.check_read(bot.user_id, kind)
        if wait is not None:
            raise too_many_requests(wait)

    async def _spend(self, bot: User, chat: Chat, edit_of: int | None = None) -> None:
        """Take a slot of Telegram's flood control, as telegram-bot-api does: TDLib's NetQueryDelayer waits out a
        FLOOD_WAIT and resends while the query's total wait stays within `total_timeout_limit_` (60 s by default,
        td/telegram/net/NetQuery.h), so the bot sees a slow answer; only past that a 429 "retry after N"."""
        held = 0.0
        while True:
            wait = self.world.limiter.check(chat.chat_id, bot.user_id, message_id=edit_of)
            if wait is None:
                return
            if held + wait > self.world.knobs.botapi_flood_hold_s:
                raise too_many_requests(wait)
            self.world.limiter.held += 1
            held += wait
            await asyncio.sleep(wait)

    def _message(self, bot: User, chat: Chat, message_id: int | None, missing: str) -> Message:
        if message_id is None:
            raise bad_request("message identifier is not specified")
        msg = self.world.get_message(chat.chat_id, message_id, actor_id=bot.user_id)
        if msg is None:
            raise bad_request(missing)
        return msg

    def _reply_markup(self, p: Params) -> dict[str, Any] | None:
        markup = p.json("reply_markup")
        if markup is None:
            return None
        keys = ("inline_keyboard", "keyboard", "remove_keyboard", "force_reply")
        if not isinstance(markup, dict) or not any(k in markup for k in keys):
            raise bad_request("can't parse reply keyboard markup JSON object")
        for row in markup.get("inline_keyboard") or markup.get("keyboard") or []:
            if not isinstance(row, list):
                raise bad_request("can't parse reply keyboard markup JSON object")
            for button in row:
                text = button if isinstance(button, str) else (button or {}).get("text")
                if not text:
                    raise bad_request("can't parse reply keyboard markup JSON object")
        return markup

    def _reply_to(self, bot: User, chat: Chat, p: Params) -> int | None:
        params = p.json("reply_parameters") or {}
        target = params.get("message_id") if isinstance(params, dict) else None
        if target is None:
            target = p.int("reply_to_message_id")
        if target is None:
            return None
        if self.world.get_message(chat.chat_id, int(target), actor_id=bot.user_id) is None:
            allow = params.get("allow_sending_without_reply") if isinstance(params, dict) else None
            if allow or p.bool("allow_sending_without_reply"):
                return None
            raise bad_request("message to be replied not found")
        return int(target)

    @staticmethod
    def _check_text(text: str | None) -> str:
        if text is None or not text.strip():
            raise bad_request("message text is empty")
        if len(text) > MAX_TEXT:
            raise bad_request("message is too long")
        return text

    @staticmethod
    def _check_caption(caption: str | None) -> str | None:
        if caption is not None and len(caption) > MAX_CAPTION:
            raise bad_request("message caption is too long")
        return caption or None

    def _document(self, bot: User, p: Params, ref: Any) -> Callable[[], FileRecord]:
        """Validate a document reference now; the returned callable stores it (after flood control passed)."""
        upload = p.file(ref)
        if upload is not None:
            if upload.writer.size == 0:
                raise bad_request("file must be non-empty")
            return lambda: upload.writer.finish(upload.filename, upload.mime_type)
        if isinstance(ref, str) and ref:
            if ref.startswith(("http://", "https://")):
                raise bad_request("failed to get HTTP URL content")
            rec = self.world.file_by_bot_file_id(ref, bot.user_id)
            if rec is None:
                raise bad_request("wrong file identifier/HTTP URL specified")
            return lambda: rec
        raise bad_request("there is no document in the request")

    def _render(self, bot: User) -> Renderer:
        return Renderer(self.world, bot)

    # --- identity and updates -------------------------------------------------------------------

    async def m_getMe(self, bot: User, p: Params) -> Any:
        return self._render(bot).me()

    async def m_logOut(self, bot: User, p: Params) -> Any:
        return True

    async def m_close(self, bot: User, p: Params) -> Any:
        return True

    async def m_getUpdates(self, bot: User, p: Params) -> Any:
        if self.webhooks.active(bot.user_id):
            raise BotApiError(409, WEBHOOK_CONFLICT)
        offset = p.int("offset", 0) or 0
        limit = p.int("limit", 100) or 100
        wait_s = max(0.0, min(p.float("timeout", 0.0), 50.0))
        allowed = p.json("allowed_updates")
        if allowed is not None:
            self.world.set_allowed_updates(bot.user_id, list(allowed))
        previous = self._polls.pop(bot.user_id, None)
        if previous is not None and not previous.done():
            previous.set_exception(BotApiError(409, CONFLICT))
            previous.exception()  # mark retrieved: the displaced poll may already be gone
        loop = asyncio.get_running_loop()
        mine: asyncio.Future[None] = loop.create_future()
        self._polls[bot.user_id] = mine
        try:
            updates = self.world.get_updates(bot.user_id, offset, limit)
            deadline = loop.time() + wait_s
            while not updates and loop.time() < deadline:
                signal = asyncio.ensure_future(self.world.updates_signal(bot.user_id).wait())
                done, _ = await asyncio.wait({signal, mine}, timeout=deadline - loop.time(),
                                             return_when=asyncio.FIRST_COMPLETED)
                signal.cancel()
                if mine.done():
                    mine.result()  # raises the 409 when another poll displaced this one
                    break  # released by shutdown
                updates = self.world.get_updates(bot.user_id, max(offset, 0), limit)
        finally:
            if self._polls.get(bot.user_id) is mine:
                del self._polls[bot.user_id]
        return self._rendered(bot, updates)

    def _rendered(self, bot: User, updates: list[Update]) -> list[Any]:
        """The updates' JSON, each rendered once: telegram-bot-api stores an update's JSON in its queue when
        the update is created (Client::add_update_impl), so a redelivered update is the same text."""
        cache = self._update_json.setdefault(bot.user_id, {})
        if updates:
            first = updates[0].update_id
            for stale in [k for k in cache if k < first]:
                del cache[stale]
        render = None
        out = []
        for u in updates:
            data = cache.get(u.update_id)
            if data is None:
                render = render or self._render(bot)
                data = cache[u.update_id] = render.update(u)
            out.append(data)
        return out

    # --- webhooks (see webhook.py) ---------------------------------------------------------------

    def _render_update(self, bot_id: int, update: Update) -> Any:
        bot = self.world.user(bot_id)
        assert bot is not None
        return self._rendered(bot, [update])[0]

    async def m_deleteWebhook(self, bot: User, p: Params) -> Any:
        self.webhooks.delete(bot.user_id)
        if p.bool("drop_pending_updates"):
            self._drop_pending(bot)
        return True

    def _drop_pending(self, bot: User) -> None:
        pending = self.world.get_updates(bot.user_id, 0, 100)
        while pending:
            pending = self.world.get_updates(bot.user_id, pending[-1].update_id + 1, 100)

    async def m_setWebhook(self, bot: User, p: Params) -> Any:
        url = p.str("url") or ""
        allowed = p.json("allowed_updates")
        if allowed is not None:
            self.world.set_allowed_updates(bot.user_id, list(allowed))
        if p.bool("drop_pending_updates"):
            self._drop_pending(bot)
        if not url:  # Client.cpp: setWebhook with an empty url removes the webhook
            self.webhooks.delete(bot.user_id)
            return True
        try:
            self.webhooks.set(bot.user_id, url, p.str("secret_token") or "", p.int("max_connections"))
        except WebhookError as exc:
            raise bad_request(str(exc).removeprefix("Bad Request: ")) from None
        # A long poll running now ends (Client.cpp: abort_long_poll when a webhook is set).
        poll = self._polls.pop(bot.user_id, None)
        if poll is not None and not poll.done():
            poll.set_exception(BotApiError(409, WEBHOOK_CONFLICT))
            poll.exception()
        return True

    async def m_getWebhookInfo(self, bot: User, p: Params) -> Any:
        return self.webhooks.info(bot.user_id)

    # --- sending --------------------------------------------------------------------------------

    async def m_sendMessage(self, bot: User, p: Params) -> Any:
        chat = self._chat(bot, p)
        text = self._check_text(p.str("text"))
        markup = self._reply_markup(p)
        reply_to = self._reply_to(bot, chat, p)
        self._can_post(bot, chat)
        await self._spend(bot, chat)
        msg = self.world.send_message(chat.chat_id, bot.user_id, text=text, reply_markup=markup,
                                      reply_to_message_id=reply_to)
        return self._render(bot).message(msg)

    async def m_sendDocument(self, bot: User, p: Params) -> Any:
        chat = self._chat(bot, p)
        caption = self._check_caption(p.str("caption"))
        markup = self._reply_markup(p)
        reply_to = self._reply_to(bot, chat, p)
        self._can_post(bot, chat)
        store = self._document(bot, p, p.raw("document") if p.raw("document") is not None else p.files.get("document"))
        await self._spend(bot, chat)
        msg = self.world.send_message(chat.chat_id, bot.user_id, document=store(), caption=caption,
                                      reply_markup=markup, reply_to_message_id=reply_to)
        return self._render(bot).message(msg)

    async def m_sendChatAction(self, bot: User, p: Params) -> Any:
        self._chat(bot, p)
        return True

    async def m_forwardMessage(self, bot: User, p: Params) -> Any:
        chat, src = self._chat(bot, p), self._chat(bot, p, "from_chat_id")
        original = self._message(bot, src, p.int("message_id"), "message to forward not found")
        self._can_post(bot, chat)
        await self._spend(bot, chat)
        forward = original.extra.get("forward") or {
            "from_chat_id": src.chat_id, "message_id": original.message_id,
            "date": original.date, "sender_id": original.sender_id,
        }
        msg = self.world.send_message(chat.chat_id, bot.user_id, text=original.text, document=original.document,
                                      caption=original.caption, extra={"forward": forward})
        return self._render(bot).message(msg)

    async def m_copyMessage(self, bot: User, p: Params) -> Any:
        chat, src = self._chat(bot, p), self._chat(bot, p, "from_chat_id")
        original = self._message(bot, src, p.int("message_id"), "message to copy not found")
        caption = self._check_caption(p.str("caption")) if p.has("caption") else original.caption
        markup = self._reply_markup(p)
        self._can_post(bot, chat)
        await self._spend(bot, chat)
        msg = self.world.send_message(chat.chat_id, bot.user_id, text=original.text, document=original.document,
                                      caption=caption if original.document else None, reply_markup=markup)
        return {"message_id": msg.message_id}

    async def m_answerCallbackQuery(self, bot: User, p: Params) -> Any:
        query_id = p.str("callback_query_id", required=True)
        assert query_id is not None
        answer = {"text": p.str("text"), "show_alert": p.bool("show_alert"), "url": p.str("url")}
        self.world.answer_callback_query(query_id, bot.user_id, answer)
        return True

    # --- editing --------------------------------------------------------------------------------

    def _editable(self, bot: User, p: Params) -> tuple[Chat, Message]:
        if p.has("inline_message_id"):
            raise bad_request("inline messages are not supported by the emulator")
        chat = self._chat(bot, p)
        msg = self._message(bot, chat, p.int("message_id"), "message to edit not found")
        if chat.is_channel:
            own = msg.sender_id == bot.user_id
            right = "can_post_messages" if own else "can_edit_messages"
            if not self.world.is_admin(chat.chat_id, bot.user_id, right):
                raise bad_request("message can't be edited")
        elif msg.sender_id != bot.user_id:
            raise bad_request("message can't be edited")
        return chat, msg

    async def m_editMessageText(self, bot: User, p: Params) -> Any:
        chat, msg = self._editable(bot, p)
        text = self._check_text(p.str("text"))
        markup = self._reply_markup(p)
        if msg.text is None:
            raise bad_request("there is no text in the message to edit")
        if text == msg.text and markup == msg.reply_markup:
            raise bad_request(NOT_MODIFIED)
        await self._spend(bot, chat, edit_of=msg.message_id)
        edited = self.world.edit_message(chat.chat_id, msg.message_id, text=text, reply_markup=markup,
                                         actor_id=bot.user_id)
        return self._render(bot).message(edited)

    async def m_editMessageCaption(self, bot: User, p: Params) -> Any:
        chat, msg = self._editable(bot, p)
        caption = self._check_caption(p.str("caption"))
        markup = self._reply_markup(p)
        if msg.document is None:
            raise bad_request("there is no caption in the message to edit")
        if caption == msg.caption and markup == msg.reply_markup:
            raise bad_request(NOT_MODIFIED)
        await self._spend(bot, chat, edit_of=msg.message_id)
        edited = self.world.edit_message(chat.chat_id, msg.message_id, caption=caption, reply_markup=markup,
                                         actor_id=bot.user_id)
        return self._render(bot).message(edited)

    async def m_editMessageReplyMarkup(self, bot: User, p: Params) -> Any:
        chat, msg = self._editable(bot, p)
        markup = self._reply_markup(p)
        if markup == msg.reply_markup:
            raise bad_request(NOT_MODIFIED)
        await self._spend(bot, chat, edit_of=msg.message_id)
        edited = self.world.edit_message(chat.chat_id, msg.message_id, reply_markup=markup, actor_id=bot.user_id)
        return self._render(bot).message(edited)

    async def m_editMessageMedia(self, bot: User, p: Params) -> Any:
        chat, msg = self._editable(bot, p)
        media = p.json("media")
        if not isinstance(media, dict) or "media" not in media:
            raise bad_request("can't parse InputMedia JSON object")
        if media.get("type") != "document":
            raise bad_request(f"the emulator supports only document media, not {media.get('type')!r}")
        caption = self._check_caption(media.get("caption"))
        markup = self._reply_markup(p)
        ref = media["media"]
        if (isinstance(ref, str) and not ref.startswith("attach://") and msg.document is not None
                and self.world.file_by_bot_file_id(ref, bot.user_id) == msg.document
                and caption == msg.caption and markup == msg.reply_markup):
            raise bad_request(NOT_MODIFIED)
        store = self._document(bot, p, ref)
        await self._spend(bot, chat, edit_of=msg.message_id)
        edited = self.world.edit_message(chat.chat_id, msg.message_id, text=None, document=store(), caption=caption,
                                         reply_markup=markup, actor_id=bot.user_id)
        return self._render(bot).message(edited)

    # --- files ----------------------------------------------------------------------------------

    async def m_getFile(self, bot: User, p: Params) -> Any:
        self._read(bot, "part")
        file_id = p.str("file_id")
        if not file_id:
            raise bad_request("file_id not specified")
        rec = self.world.file_by_bot_file_id(file_id, bot.user_id)
        if rec is None:
            # telegram-bot-api Client.cpp: check_remote_file_id fails with the default text "invalid file_id"
            raise bad_request("invalid file_id")
        if self.world.knobs.botapi_local_mode:  # --local: the path on the server's disk, no 20 MB cap
            return dict(self._render(bot).file(rec), file_path=str(self.world.file_path(rec.id).resolve()))
        if rec.size > self.world.knobs.botapi_download_limit:
            raise bad_request("file is too big")
        return self._render(bot).file(rec)

    # --- pins, deletion -------------------------------------------------------------------------

    async def m_pinChatMessage(self, bot: User, p: Params) -> Any:
        chat = self._chat(bot, p)
        self._require_right(bot, chat, "can_edit_messages",
                            bad_request("not enough rights to manage pinned messages in the chat"))
        msg = self._message(bot, chat, p.int("message_id"), "message to pin not found")
        self.world.pin_message(chat.chat_id, msg.message_id, actor_id=bot.user_id)
        self.world.pin_service_message(chat.chat_id, msg.message_id, bot.user_id)
        return True

    async def m_unpinChatMessage(self, bot: User, p: Params) -> Any:
        chat = self._chat(bot, p)
        self._require_right(bot, chat, "can_edit_messages",
                            bad_request("not enough rights to manage pinned messages in the chat"))
        message_id = p.int("message_id")
        if message_id is not None:
            self._message(bot, chat, message_id, "message to unpin not found")
        self.world.unpin_message(chat.chat_id, message_id, actor_id=bot.user_id)
        return True

    async def m_unpinAllChatMessages(self, bot: User, p: Params) -> Any:
        chat = self._chat(bot, p)
        self._require_right(bot, chat, "can_edit_messages",
                            bad_request("not enough rights to manage pinned messages in the chat"))
        self.world.unpin_all(chat.chat_id, actor_id=bot.user_id)
        return True

    def _check_deletable(self, bot: User, chat: Chat, msg: Message) -> None:
        if self.world.now() - msg.date >= DELETE_WINDOW_S:
            raise bad_request("message can't be deleted")
        if chat.is_channel:
            own = msg.sender_id == bot.user_id
            if not (self.world.is_admin(chat.chat_id, bot.user_id, "can_delete_messages")
                    or (own and self.world.is_admin(chat.chat_id, bot.user_id, "can_post_messages"))):
                raise bad_request("message can't be deleted")

    async def m_deleteMessage(self, bot: User, p: Params) -> Any:
        chat = self._chat(bot, p)
        msg = self._message(bot, chat, p.int("message_id"), "message to delete not found")
        self._check_deletable(bot, chat, msg)
        self.world.delete_messages(chat.chat_id, [msg.message_id], actor_id=bot.user_id)
        return True

    async def m_deleteMessages(self, bot: User, p: Params) -> Any:
        # telegram-bot-api (Client.cpp process_delete_messages_query): unknown ids are skipped, then tdlib's
        # deleteMessages runs on the rest and fails whole ("message can't be deleted") if one of them cannot be
        # deleted: nothing is deleted then.
        chat = self._chat(bot, p)
        ids = p.json("message_ids")
        if not isinstance(ids, list) or not ids:
            raise bad_request("message identifiers are not specified")
        if len(ids) > 100:
            raise bad_request("too many message identifiers specified")
        found = []
        for mid in ids:
            msg = self.world.get_message(chat.chat_id, int(mid), actor_id=bot.user_id)
            if msg is not None:
                found.append(msg)
        if not found:
            raise bad_request("message to delete not found")
        for msg in found:
            self._check_deletable(bot, chat, msg)
        self.world.delete_messages(chat.chat_id, [m.message_id for m in found], actor_id=bot.user_id)
        return True

    # --- chat info ------------------------------------------------------------------------------

    async def m_getChat(self, bot: User, p: Params) -> Any:
        self._read(bot, "lookup")
        return self._render(bot).chat_full_info(self._chat(bot, p))

    async def m_getChatMember(self, bot: User, p: Params) -> Any:
        chat = self._chat(bot, p)
        user_id = p.int("user_id", required=True)
        assert user_id is not None
        if self.world.user(user_id) is None:
            raise bad_request("user not found")
        if not chat.is_channel and user_id not in (chat.user_id, bot.user_id):
            raise bad_request("user not found")
        return self._render(bot).chat_member(chat, user_id)

    async def m_getChatAdministrators(self, bot: User, p: Params) -> Any:
        chat = self._chat(bot, p)
        render = self._render(bot)
        if not chat.is_channel:
            return []
        return [render.chat_member(chat, uid) for uid, status, _ in self.world.members(chat.chat_id)
                if status in ("creator", "administrator")]

    async def m_getChatMemberCount(self, bot: User, p: Params) -> Any:
        chat = self._chat(bot, p)
        return len(self.world.members(chat.chat_id)) if chat.is_channel else 2

    # --- commands -------------------------------------------------------------------------------

    async def m_setMyCommands(self, bot: User, p: Params) -> Any:
        commands = p.json("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise bad_request("can't parse commands JSON object")
        for cmd in commands:
            name = (cmd or {}).get("command", "")
            if not (1 <= len(name) <= 32) or not all(c.islower() or c.isdigit() or c == "_" for c in name):
                raise bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len((cmd or {}).get("description", "")) <= 256:
                raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        self.world.set_bot_commands(bot.user_id, [{"command": c["command"], "description": c["description"]}
                                                  for c in commands])
        return True

    async def m_getMyCommands(self, bot: User, p: Params) -> Any:
        return self.world.bot_commands(bot.user_id)

    async def m_deleteMyCommands(self, bot: User, p: Params) -> Any:
        self.world.set_bot_commands(bot.user_id, [])
        return True

