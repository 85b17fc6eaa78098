"""messages.sendMessage, messages.sendMedia, messages.editMessage, messages.updatePinnedMessage."""

from __future__ import annotations

import logging
from typing import Any

from telethon.tl import functions, types

from ...records import Chat, FileRecord, Message
from .. import render
from ..config import DC_ID
from ..context import RpcContext
from ..peers import chat_of, require_right, world_call
from ..rpc import RpcError, flood_wait, rpc

log = logging.getLogger("tools.emulator.mtproto")


def _spend_rate_budget(ctx: RpcContext, chat: Chat, edit_of: int | None = None) -> None:
    wait = ctx.world.limiter.check(chat.chat_id, ctx.require_user(), message_id=edit_of)
    if wait is not None:
        raise flood_wait(wait)


def _chats_and_users(ctx: RpcContext, chat: Chat) -> tuple[list[Any], list[Any]]:
    me = ctx.require_user()
    users = [render.user(ctx.world.user(me), viewer_id=me)]
    if chat.is_channel:
        status, rights = ctx.world.member(chat.chat_id, me)
        return [render.channel(chat, status=status, rights=rights)], users
    other = ctx.world.user(chat.user_id)
    if other is not None:
        users.append(render.user(other, viewer_id=me))
    return [], users


def render_message(ctx: RpcContext, msg: Message, chat: Chat) -> types.Message:
    ref = ctx.front.file_refs.issue(msg.document) if msg.document is not None else None
    k = ctx.world.knobs
    file_dc = k.file_dc if k.file_dc and k.file_dc_reported else DC_ID
    return render.message(msg, chat, viewer_id=ctx.require_user(), file_reference=ref, file_dc=file_dc)


def updates_for(ctx: RpcContext, chat: Chat, updates: list[Any]) -> types.Updates:
    chats, users = _chats_and_users(ctx, chat)
    return types.Updates(updates=updates, users=users, chats=chats, date=render.when(ctx.world.now()), seq=0)


def _fresh_pts(ctx: RpcContext, chat: Chat) -> int:
    return ctx.world.chat_by_key(chat.key).pts


def _new_message_updates(ctx: RpcContext, chat: Chat, msg: Message, random_id: int | None) -> types.Updates:
    rendered = render_message(ctx, msg, chat)
    pts = _fresh_pts(ctx, chat)
    new = (
        types.UpdateNewChannelMessage(rendered, pts, 1) if chat.is_channel else types.UpdateNewMessage(rendered, pts, 1)
    )
    updates: list[Any] = [new]
    if random_id is not None:
        updates.insert(0, types.UpdateMessageID(id=msg.message_id, random_id=random_id))
    return updates_for(ctx, chat, updates)


def _check_random_id(ctx: RpcContext, chat: Chat, random_id: int) -> None:
    """Telegram refuses a second message with the same random_id (e.g. a request re-sent after
    a reconnect whose first copy was applied but whose answer was lost). Checked before the rate
    budget, recorded only once the message exists: a request refused with FLOOD_WAIT is re-sent
    by Telethon with the same random_id and must then succeed."""
    if ctx.front.random_ids.seen(chat.key, random_id):
        raise RpcError(500, "RANDOM_ID_DUPLICATE")


def _reply_to(req: Any) -> int | None:
    reply = getattr(req, "reply_to", None)
    return getattr(reply, "reply_to_msg_id", None)


def document_of(ctx: RpcContext, media: Any) -> FileRecord:
    """The stored file behind an InputMedia: a fresh upload or an existing document."""
    me = ctx.require_user()
    if isinstance(media, types.InputMediaUploadedDocument):
        name = next(
            (a.file_name for a in media.attributes if isinstance(a, types.DocumentAttributeFilename)),
            media.file.name or "file",
        )
        return ctx.front.uploads.finish(
            me,
            media.file,
            name=name,
            mime_type=media.mime_type or "application/octet-stream",
            file_limit=ctx.world.knobs.mtproto_file_limit,
        )
    if isinstance(media, types.InputMediaDocument) and isinstance(media.id, types.InputDocument):
        rec = ctx.world.file(media.id.id)
        if rec is None or rec.access_hash != media.id.access_hash:
            raise RpcError(400, "MEDIA_INVALID")
        ctx.front.file_refs.check(rec, media.id.file_reference)
        return rec
    log.warning("mtproto: media %s is not supported by the emulator", type(media).__name__)
    raise RpcError(400, "MEDIA_INVALID")


@rpc(functions.messages.SendMessageRequest)
async def send_message(ctx: RpcContext, req: functions.messages.SendMessageRequest) -> types.Updates:
    me = ctx.require_user()
    chat = chat_of(ctx, req.peer)
    require_right(ctx, chat, "can_post_messages")
    if not req.message:
        raise RpcError(400, "MESSAGE_EMPTY")
    if len(req.message) > 4096:
        raise RpcError(400, "MESSAGE_TOO_LONG")
    _check_random_id(ctx, chat, req.random_id)
    _spend_rate_budget(ctx, chat)
    msg = world_call(ctx.world.send_message, chat.chat_id, me, text=req.message, reply_to_message_id=_reply_to(req))
    ctx.front.random_ids.add(chat.key, req.random_id)
    return _new_message_updates(ctx, chat, msg, req.random_id)


@rpc(functions.messages.SendMediaRequest)
async def send_media(ctx: RpcContext, req: functions.messages.SendMediaRequest) -> types.Updates:
    me = ctx.require_user()
    chat = chat_of(ctx, req.peer)
    require_right(ctx, chat, "can_post_messages")
    if req.message and len(req.message) > 1024:
        raise RpcError(400, "MEDIA_CAPTION_TOO_LONG")
    _check_random_id(ctx, chat, req.random_id)
    _spend_rate_budget(ctx, chat)
    rec = document_of(ctx, req.media)
    msg = world_call(
        ctx.world.send_message,
        chat.chat_id,
        me,
        document=rec,
        caption=req.message or None,
        reply_to_message_id=_reply_to(req),
    )
    ctx.front.random_ids.add(chat.key, req.random_id)
    return _new_message_updates(ctx, chat, msg, req.random_id)


@rpc(functions.messages.EditMessageRequest)
async def edit_message(ctx: RpcContext, req: functions.messages.EditMessageRequest) -> types.Updates:
    me = ctx.require_user()
    chat = chat_of(ctx, req.peer)
    old = world_call(ctx.world.get_message, chat.chat_id, req.id, actor_id=me)
    if old is None:
        raise RpcError(400, "MESSAGE_ID_INVALID")
    if old.sender_id != me:
        require_right(ctx, chat, "can_edit_messages", error="MESSAGE_AUTHOR_REQUIRED")
    if not chat.is_channel and old.sender_id != me:
        raise RpcError(403, "MESSAGE_AUTHOR_REQUIRED")
    changes: dict[str, Any] = {}
    doc = old.document
    if req.media is not None:
        doc = document_of(ctx, req.media)
        changes["document"] = doc
        if old.document is None:
            changes["text"] = None  # a text message that gains a document keeps its words as caption
            changes["caption"] = old.text if req.message is None else req.message
    if req.message is not None:
        limit = 1024 if doc is not None else 4096
        if len(req.message) > limit:
            raise RpcError(400, "MEDIA_CAPTION_TOO_LONG" if doc is not None else "MESSAGE_TOO_LONG")
        if doc is None and not req.message:
            raise RpcError(400, "MESSAGE_EMPTY")
        changes["caption" if doc is not None else "text"] = req.message or None
    if not changes:
        raise RpcError(400, "MESSAGE_NOT_MODIFIED")
    # the same document again (InputMediaDocument of the current one) with the same caption changes nothing
    same_doc = "document" in changes and old.document is not None and changes["document"].id == old.document.id
    if ("document" not in changes or same_doc) and all(
        getattr(old, field) == value for field, value in changes.items() if field != "document"
    ):
        raise RpcError(400, "MESSAGE_NOT_MODIFIED")
    _spend_rate_budget(ctx, chat, edit_of=req.id)
    msg = world_call(ctx.world.edit_message, chat.chat_id, req.id, actor_id=me, **changes)
    rendered = render_message(ctx, msg, chat)
    pts = _fresh_pts(ctx, chat)
    update = (
        types.UpdateEditChannelMessage(rendered, pts, 1)
        if chat.is_channel
        else types.UpdateEditMessage(rendered, pts, 1)
    )
    return updates_for(ctx, chat, [update])


@rpc(functions.messages.UpdatePinnedMessageRequest)
async def update_pinned_message(ctx: RpcContext, req: functions.messages.UpdatePinnedMessageRequest) -> types.Updates:
    me = ctx.require_user()
    chat = chat_of(ctx, req.peer)
    require_right(ctx, chat, "can_pin_messages", "can_edit_messages")
    if req.unpin:
        ids = world_call(ctx.world.unpin_message, chat.chat_id, req.id, actor_id=me)
    else:
        if world_call(ctx.world.get_message, chat.chat_id, req.id, actor_id=me) is None:
            raise RpcError(400, "MESSAGE_ID_INVALID")
        world_call(ctx.world.pin_message, chat.chat_id, req.id, actor_id=me)
        ids = [req.id]
    service = None if req.unpin else ctx.world.pin_service_message(chat.chat_id, req.id, me)
    pts = _fresh_pts(ctx, chat)
    if chat.is_channel:
        update: Any = types.UpdatePinnedChannelMessages(
            channel_id=chat.channel_id, messages=ids, pts=pts, pts_count=0, pinned=not req.unpin
        )
    else:
        update = types.UpdatePinnedMessages(
            peer=render.peer(chat, me), messages=ids, pts=pts, pts_count=0, pinned=not req.unpin
        )
    # With the service message Telethon's pin_message returns it (without one: None, "already pinned").
    new = [types.UpdateNewChannelMessage(render_message(ctx, service, chat), pts, 1)] if service else []
    return updates_for(ctx, chat, ([update] if ids else []) + new)


@rpc(functions.messages.UploadMediaRequest)
async def upload_media(ctx: RpcContext, req: functions.messages.UploadMediaRequest) -> types.MessageMediaDocument:
    """Turn uploaded parts into a stored document without sending it (Telegram: messages.uploadMedia returns
    the MessageMedia; the document is then sent or used in an edit as an InputMediaDocument)."""
    chat = chat_of(ctx, req.peer)
    require_right(ctx, chat, "can_post_messages")
    rec = document_of(ctx, req.media)
    k = ctx.world.knobs
    file_dc = k.file_dc if k.file_dc and k.file_dc_reported else DC_ID
    return types.MessageMediaDocument(document=render.document(rec, ctx.front.file_refs.issue(rec), file_dc))
