"""World records rendered as the TL objects a layer-229 client expects."""

from __future__ import annotations

import datetime
from typing import Any

from telethon.tl import types

from ..records import Chat, FileRecord, Message, User
from .config import DC_ID

# Bot API right names (the world's vocabulary) → ChatAdminRights flags.
_RIGHTS = {
    "can_change_info": "change_info",
    "can_post_messages": "post_messages",
    "can_edit_messages": "edit_messages",
    "can_delete_messages": "delete_messages",
    "can_restrict_members": "ban_users",
    "can_invite_users": "invite_users",
    "can_pin_messages": "pin_messages",
    "can_promote_members": "add_admins",
    "is_anonymous": "anonymous",
    "can_manage_video_chats": "manage_call",
    "can_manage_chat": "other",
    "can_post_stories": "post_stories",
    "can_edit_stories": "edit_stories",
    "can_delete_stories": "delete_stories",
}


def when(ts: int | None) -> datetime.datetime | None:
    return None if ts is None else datetime.datetime.fromtimestamp(ts, tz=datetime.UTC)


def user(rec: User, *, viewer_id: int) -> types.User:
    return types.User(
        id=rec.user_id,
        is_self=rec.user_id == viewer_id,
        bot=rec.is_bot,
        access_hash=rec.access_hash,
        first_name=rec.first_name,
        last_name=rec.last_name,
        username=rec.username,
        bot_info_version=1 if rec.is_bot else None,
        bot_nochats=False if rec.is_bot else None,
        lang_code=rec.language_code,
    )


def admin_rights(rights: dict[str, bool] | None) -> types.ChatAdminRights | None:
    if rights is None:
        return None
    return types.ChatAdminRights(**{flag: True for name, flag in _RIGHTS.items() if rights.get(name)})


def channel(chat: Chat, *, status: str, rights: dict[str, bool] | None) -> types.Channel:
    return types.Channel(
        id=chat.channel_id,
        title=chat.title or "",
        photo=types.ChatPhotoEmpty(),
        date=when(chat.date),
        creator=status == "creator",
        left=status in ("left", "kicked"),
        broadcast=True,
        access_hash=chat.access_hash,
        username=chat.username,
        admin_rights=admin_rights(rights) if status in ("creator", "administrator") else None,
    )


def peer(chat: Chat, viewer_id: int) -> types.PeerChannel | types.PeerUser:
    if chat.is_channel:
        return types.PeerChannel(chat.channel_id)
    other = chat.user_id if viewer_id == chat.bot_id else chat.bot_id
    return types.PeerUser(other)


def document(rec: FileRecord, file_reference: bytes, dc_id: int = DC_ID) -> types.Document:
    return types.Document(
        id=rec.id,
        access_hash=rec.access_hash,
        file_reference=file_reference,
        date=when(rec.date),
        mime_type=rec.mime_type,
        size=rec.size,
        dc_id=dc_id,
        attributes=[types.DocumentAttributeFilename(rec.name)],
    )


def message(msg: Message, chat: Chat, *, viewer_id: int, file_reference: bytes | None,
            file_dc: int = DC_ID) -> types.Message | types.MessageService:
    service = msg.extra.get("service")
    if service and "pinned_message_id" in service:
        return types.MessageService(
            id=msg.message_id,
            peer_id=peer(chat, viewer_id),
            date=when(msg.date),
            action=types.MessageActionPinMessage(),
            out=msg.sender_id == viewer_id,
            post=chat.is_channel,
            from_id=None if chat.is_channel else types.PeerUser(msg.sender_id),
            reply_to=types.MessageReplyHeader(reply_to_msg_id=service["pinned_message_id"]),
        )
    media: Any = None
    if msg.document is not None:
        assert file_reference is not None
        media = types.MessageMediaDocument(document=document(msg.document, file_reference, file_dc))
        text = msg.caption or ""
    else:
        text = msg.text or ""
    return types.Message(
        id=msg.message_id,
        peer_id=peer(chat, viewer_id),
        date=when(msg.date),
        message=text,
        out=msg.sender_id == viewer_id,
        post=chat.is_channel,
        from_id=None if chat.is_channel else types.PeerUser(msg.sender_id),
        media=media,
        edit_date=when(msg.edit_date),
        pinned=msg.pinned,
        reply_to=types.MessageReplyHeader(reply_to_msg_id=msg.reply_to_message_id) if msg.reply_to_message_id else None,
    )


def empty_message(message_id: int, chat: Chat, viewer_id: int) -> types.MessageEmpty:
    return types.MessageEmpty(id=message_id, peer_id=peer(chat, viewer_id))
