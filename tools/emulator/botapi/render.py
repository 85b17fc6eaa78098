"""World records → Bot API JSON objects, as one bot sees them (file_ids are per bot)."""

from __future__ import annotations

import mimetypes
import re
from typing import Any

from ..records import Chat, FileRecord, Message, Update, User
from ..world import World

# Telegram fills these for every chat; aiogram 3.31's ChatFullInfo requires them.
_ACCEPTED_GIFT_TYPES = {
    "unlimited_gifts": False,
    "limited_gifts": False,
    "unique_gifts": False,
    "premium_subscription": False,
    "gifts_from_channels": False,
}


def _clean(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if v is not None}


def file_path_of(rec: FileRecord) -> str:
    """The `file_path` getFile hands out; the download route parses the record id back out of it."""
    ext = mimetypes.guess_extension(rec.mime_type) if "." not in rec.name else "." + rec.name.rsplit(".", 1)[1]
    safe_ext = "".join(c for c in (ext or "") if c.isalnum() or c == ".")[:10]
    return f"documents/file_{rec.id}{safe_ext}"


class Renderer:
    def __init__(self, world: World, bot: User) -> None:
        self.world = world
        self.bot = bot

    def user(self, user: User) -> dict[str, Any]:
        return _clean(
            {
                "id": user.user_id,
                "is_bot": user.is_bot,
                "first_name": user.first_name,
                "last_name": user.last_name,
                "username": user.username,
                "language_code": user.language_code,
            }
        )

    def me(self) -> dict[str, Any]:
        return dict(
            self.user(self.bot),
            can_join_groups=True,
            can_read_all_group_messages=False,
            supports_inline_queries=False,
            can_connect_to_business=False,
            has_main_web_app=False,
        )

    def user_by_id(self, user_id: int) -> dict[str, Any]:
        user = self.world.user(user_id)
        if user is None:  # a deleted account still renders
            return {"id": user_id, "is_bot": False, "first_name": "Deleted Account"}
        return self.user(user)

    def chat(self, chat: Chat) -> dict[str, Any]:
        if chat.is_channel:
            return _clean({"id": chat.chat_id, "type": "channel", "title": chat.title, "username": chat.username})
        user = self.world.user(chat.user_id or chat.chat_id)
        out: dict[str, Any] = {"id": chat.chat_id, "type": "private"}
        if user is not None:
            out.update(
                _clean({"first_name": user.first_name, "last_name": user.last_name, "username": user.username})
            )
        return out

    def chat_full_info(self, chat: Chat) -> dict[str, Any]:
        out = dict(
            self.chat(chat),
            accent_color_id=chat.chat_id % 7 if chat.chat_id > 0 else 0,
            max_reaction_count=11,
            accepted_gift_types=dict(_ACCEPTED_GIFT_TYPES),
        )
        if chat.is_channel:
            if chat.description:
                out["description"] = chat.description
        pinned = self.world.pinned_message(chat.chat_id, actor_id=self.bot.user_id)
        if pinned is not None:
            out["pinned_message"] = self.message(pinned, depth=1)
        return out

    def document(self, rec: FileRecord) -> dict[str, Any]:
        return {
            "file_id": self.world.bot_file_id(rec, self.bot.user_id),
            "file_unique_id": rec.file_unique_id,
            "file_name": rec.name,
            "mime_type": rec.mime_type,
            "file_size": rec.size,
        }

    def file(self, rec: FileRecord) -> dict[str, Any]:
        return {
            "file_id": self.world.bot_file_id(rec, self.bot.user_id),
            "file_unique_id": rec.file_unique_id,
            "file_size": rec.size,
            "file_path": file_path_of(rec),
        }

    def message(self, msg: Message, depth: int = 0) -> dict[str, Any]:
        chat = self.world.chat_by_key(msg.chat_key)
        out: dict[str, Any] = {"message_id": msg.message_id, "date": msg.date, "chat": self.chat(chat)}
        if chat.is_channel:
            out["sender_chat"] = out["chat"]
        else:
            out["from"] = self.user_by_id(msg.sender_id)
        if msg.edit_date is not None:
            out["edit_date"] = msg.edit_date
        forward = msg.extra.get("forward")
        if forward:
            out["forward_origin"] = self._forward_origin(forward)
        if msg.reply_to_message_id is not None and depth == 0:
            replied = self.world.get_message(chat.chat_id, msg.reply_to_message_id, actor_id=self.bot.user_id)
            if replied is not None:
                out["reply_to_message"] = self.message(replied, depth=1)
        service = msg.extra.get("service")
        if service and "pinned_message_id" in service:
            pinned = self.world.get_message(chat.chat_id, service["pinned_message_id"], actor_id=self.bot.user_id)
            if pinned is not None and depth == 0:
                out["pinned_message"] = self.message(pinned, depth=1)
            elif depth == 0:  # the pinned message was deleted since: Telegram shows an InaccessibleMessage
                out["pinned_message"] = {"chat": out["chat"], "message_id": service["pinned_message_id"], "date": 0}
        if msg.text is not None:
            out["text"] = msg.text
            command = bot_command_entity(msg.text)
            if command is not None:
                out["entities"] = [command]
        if msg.document is not None:
            out["document"] = self.document(msg.document)
        if msg.caption is not None:
            out["caption"] = msg.caption
        # Telegram echoes only inline keyboards in Message.reply_markup.
        if msg.reply_markup and "inline_keyboard" in msg.reply_markup:
            out["reply_markup"] = {"inline_keyboard": msg.reply_markup["inline_keyboard"]}
        return out

    def _forward_origin(self, forward: dict[str, Any]) -> dict[str, Any]:
        from_chat_id = forward["from_chat_id"]
        if from_chat_id < 0:
            try:
                src = self.world.chat(from_chat_id)
            except Exception:  # noqa: BLE001 - source channel gone: render what we know
                src = None
            if src is not None:
                return {
                    "type": "channel",
                    "date": forward["date"],
                    "chat": self.chat(src),
                    "message_id": forward["message_id"],
                }
        return {"type": "user", "date": forward["date"], "sender_user": self.user_by_id(forward["sender_id"])}

    def update(self, update: Update) -> dict[str, Any]:
        payload = update.payload
        kind = payload["kind"]
        msg = self.world.message_from_dict(payload["message"])
        if kind == "callback_query":
            return {
                "update_id": update.update_id,
                "callback_query": {
                    "id": payload["id"],
                    "from": self.user_by_id(payload["from_id"]),
                    "message": self.message(msg),
                    "chat_instance": payload["chat_instance"],
                    "data": payload["data"],
                },
            }
        return {"update_id": update.update_id, kind: self.message(msg)}

    def chat_member(self, chat: Chat, user_id: int) -> dict[str, Any]:
        status, rights = self.world.member(chat.chat_id, user_id) if chat.is_channel else ("member", None)
        user = self.user_by_id(user_id)
        if status == "creator":
            return {"status": "creator", "user": user, "is_anonymous": False}
        if status == "administrator":
            r = rights or {}
            return {
                "status": "administrator",
                "user": user,
                "can_be_edited": False,
                "is_anonymous": bool(r.get("is_anonymous")),
                "can_manage_chat": bool(r.get("can_manage_chat")),
                "can_delete_messages": bool(r.get("can_delete_messages")),
                "can_manage_video_chats": bool(r.get("can_manage_video_chats")),
                "can_restrict_members": bool(r.get("can_restrict_members")),
                "can_promote_members": bool(r.get("can_promote_members")),
                "can_change_info": bool(r.get("can_change_info")),
                "can_invite_users": bool(r.get("can_invite_users")),
                "can_post_stories": bool(r.get("can_post_stories")),
                "can_edit_stories": bool(r.get("can_edit_stories")),
                "can_delete_stories": bool(r.get("can_delete_stories")),
                "can_send_welcome_messages": False,
                "can_post_messages": bool(r.get("can_post_messages")),
                "can_edit_messages": bool(r.get("can_edit_messages")),
            }
        if status == "kicked":
            return {"status": "kicked", "user": user, "until_date": 0}
        if status in ("left",):
            return {"status": "left", "user": user}
        return {"status": "member", "user": user}


_COMMAND = re.compile(r"/[A-Za-z0-9_]{1,32}(@[A-Za-z0-9_]{1,32})?")


def bot_command_entity(text: str) -> dict[str, Any] | None:
    """Telegram marks a leading /command (with an optional @botname) as a `bot_command` entity; offsets and
    lengths count UTF-16 code units (Bot API, MessageEntity). python-telegram-bot's CommandHandler
    matches only messages with that entity, so a message without it is not a command there."""
    match = _COMMAND.match(text)
    if match is None:
        return None
    return {"type": "bot_command", "offset": 0, "length": len(match.group(0).encode("utf-16-le")) // 2}
