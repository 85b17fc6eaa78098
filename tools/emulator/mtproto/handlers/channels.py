"""channels.getMessages, getChannels, getFullChannel, deleteMessages, getParticipant."""

from __future__ import annotations

from typing import Any

from telethon.tl import functions, types

from .. import render
from ..context import RpcContext
from ..peers import channel as resolve_channel
from ..peers import require_right, world_call
from ..rpc import RpcError, flood_wait, rpc
from .messages import render_message

MAX_IDS = 100
DELETE_WINDOW_S = 48 * 3600


def _lookup_budget(ctx: RpcContext) -> None:
    wait = ctx.world.limiter.check_read(ctx.require_user(), "lookup")
    if wait is not None:
        raise flood_wait(wait)


@rpc(functions.channels.GetMessagesRequest)
async def get_messages(ctx: RpcContext, req: functions.channels.GetMessagesRequest) -> types.messages.ChannelMessages:
    me = ctx.require_user()
    _lookup_budget(ctx)
    chat = resolve_channel(ctx, req.channel)
    if len(req.id) > MAX_IDS:
        raise RpcError(400, "LIMIT_INVALID")
    ids: list[int | None] = []
    for ref in req.id:
        if isinstance(ref, types.InputMessageID):
            ids.append(ref.id)
        elif isinstance(ref, types.InputMessagePinned):
            pinned = ctx.world.pinned_message(chat.chat_id)
            ids.append(pinned.message_id if pinned else None)
        elif isinstance(ref, types.InputMessageReplyTo):
            target = ctx.world.get_message(chat.chat_id, ref.id)
            ids.append(target.reply_to_message_id if target else None)
        else:
            raise RpcError(400, "MESSAGE_IDS_EMPTY")
    found = world_call(ctx.world.get_messages, chat.chat_id, [i for i in ids if i is not None])
    by_id = {m.message_id: m for m in found if m is not None}
    messages: list[Any] = []
    for i in ids:
        msg = by_id.get(i) if i is not None else None
        if msg is None:
            messages.append(render.empty_message(i or 0, chat, me))
        else:
            messages.append(render_message(ctx, msg, chat))
    status, rights = ctx.world.member(chat.chat_id, me)
    return types.messages.ChannelMessages(
        pts=chat.pts,
        count=len(messages),
        messages=messages,
        topics=[],
        chats=[render.channel(chat, status=status, rights=rights)],
        users=[render.user(ctx.world.user(me), viewer_id=me)],
    )


@rpc(functions.channels.GetChannelsRequest)
async def get_channels(ctx: RpcContext, req: functions.channels.GetChannelsRequest) -> types.messages.Chats:
    me = ctx.require_user()
    chats: list[Any] = []
    for ref in req.id:
        chat = resolve_channel(ctx, ref, member=False)
        status, rights = ctx.world.member(chat.chat_id, me)
        if status in ("left", "kicked"):
            chats.append(
                types.ChannelForbidden(
                    id=chat.channel_id, access_hash=chat.access_hash, title=chat.title or "", broadcast=True
                )
            )
        else:
            chats.append(render.channel(chat, status=status, rights=rights))
    return types.messages.Chats(chats=chats)


@rpc(functions.channels.GetFullChannelRequest)
async def get_full_channel(ctx: RpcContext, req: functions.channels.GetFullChannelRequest) -> types.messages.ChatFull:
    me = ctx.require_user()
    _lookup_budget(ctx)
    chat = resolve_channel(ctx, req.channel)
    pinned = ctx.world.pinned_message(chat.chat_id)
    members = ctx.world.members(chat.chat_id)
    full = types.ChannelFull(
        id=chat.channel_id,
        about=chat.description or "",
        read_inbox_max_id=0,
        read_outbox_max_id=0,
        unread_count=0,
        chat_photo=types.PhotoEmpty(id=0),
        notify_settings=types.PeerNotifySettings(),
        bot_info=[],
        pts=chat.pts,
        participants_count=len(members),
        admins_count=sum(1 for _uid, st, _r in members if st in ("creator", "administrator")),
        pinned_msg_id=pinned.message_id if pinned else None,
    )
    status, rights = ctx.world.member(chat.chat_id, me)
    return types.messages.ChatFull(
        full_chat=full,
        chats=[render.channel(chat, status=status, rights=rights)],
        users=[render.user(ctx.world.user(me), viewer_id=me)],
    )


@rpc(functions.channels.DeleteMessagesRequest)
async def delete_messages(
    ctx: RpcContext, req: functions.channels.DeleteMessagesRequest
) -> types.messages.AffectedMessages:
    me = ctx.require_user()
    chat = resolve_channel(ctx, req.channel)
    targets = [m for m in world_call(ctx.world.get_messages, chat.chat_id, req.id) if m is not None]
    if any(m.sender_id != me for m in targets):
        require_right(ctx, chat, "can_delete_messages", error="MESSAGE_DELETE_FORBIDDEN")
    elif targets:
        require_right(ctx, chat, "can_post_messages", "can_delete_messages", error="MESSAGE_DELETE_FORBIDDEN")
    # Bots may delete channel messages only within 48 h of sending, over MTProto as over the Bot API (tdlib's
    # can_delete_message for bots; Telegram's deleteMessage docs). One message outside it refuses the whole
    # request: nothing is deleted.
    user = ctx.world.user(me)
    if user is not None and user.is_bot and any(ctx.world.now() - m.date >= DELETE_WINDOW_S for m in targets):
        raise RpcError(400, "MESSAGE_DELETE_FORBIDDEN")
    deleted = world_call(ctx.world.delete_messages, chat.chat_id, [m.message_id for m in targets])
    pts = ctx.world.chat_by_key(chat.key).pts
    return types.messages.AffectedMessages(pts=pts, pts_count=len(deleted))


@rpc(functions.channels.GetParticipantRequest)
async def get_participant(
    ctx: RpcContext, req: functions.channels.GetParticipantRequest
) -> types.channels.ChannelParticipant:
    me = ctx.require_user()
    chat = resolve_channel(ctx, req.channel)
    if isinstance(req.participant, types.InputPeerSelf):
        uid = me
    elif isinstance(req.participant, types.InputPeerUser):
        uid = req.participant.user_id
    else:
        raise RpcError(400, "PARTICIPANT_ID_INVALID")
    status, rights = ctx.world.member(chat.chat_id, uid)
    user = ctx.world.user(uid)
    if user is None or status in ("left", "kicked"):
        raise RpcError(400, "USER_NOT_PARTICIPANT")
    date = render.when(chat.date)
    if status == "creator":
        part: Any = types.ChannelParticipantCreator(user_id=uid, admin_rights=render.admin_rights(rights))
    elif status == "administrator":
        part = types.ChannelParticipantAdmin(
            user_id=uid,
            promoted_by=uid,
            date=date,
            admin_rights=render.admin_rights(rights),
            is_self=True if uid == me else None,
            inviter_id=uid if uid == me else None,
        )
    else:
        part = types.ChannelParticipant(user_id=uid, date=date)
    status_me, rights_me = ctx.world.member(chat.chat_id, me)
    return types.channels.ChannelParticipant(
        participant=part,
        chats=[render.channel(chat, status=status_me, rights=rights_me)],
        users=[render.user(user, viewer_id=me)],
    )
