"""help.*, auth.*, users.*, updates.*, contacts.*: what a client needs to connect and know itself."""

from __future__ import annotations

import os
import struct

from telethon.tl import functions, types

from ...records import User
from .. import render
from ..config import DC_ID, build_config
from ..context import RpcContext
from ..peers import channel as resolve_channel
from ..rpc import RpcError, flood_wait, rpc


@rpc(functions.help.GetConfigRequest, unauthorized=True)
async def get_config(ctx: RpcContext, req: functions.help.GetConfigRequest) -> types.Config:
    host, port = ctx.connection.local[:2]
    return build_config(host, port, now=ctx.world.now())


@rpc(functions.help.GetNearestDcRequest, unauthorized=True)
async def get_nearest_dc(ctx: RpcContext, req: functions.help.GetNearestDcRequest) -> types.NearestDc:
    return types.NearestDc(country="ZZ", this_dc=DC_ID, nearest_dc=DC_ID)


@rpc(functions.auth.ImportBotAuthorizationRequest, unauthorized=True)
async def import_bot_authorization(
    ctx: RpcContext, req: functions.auth.ImportBotAuthorizationRequest
) -> types.auth.Authorization:
    bot = ctx.world.bot_by_token(req.bot_auth_token)
    if bot is None:
        raise RpcError(400, "ACCESS_TOKEN_INVALID")
    wait = ctx.front.logins.attempt(bot.user_id, ctx.world.knobs)
    if wait is not None:
        raise flood_wait(wait)
    ctx.front.keys.bind(ctx.session.key, bot.user_id)
    return types.auth.Authorization(user=render.user(bot, viewer_id=bot.user_id))


# Exported authorizations let a second auth key (made by DH for another "DC") log in as the same
# account; they are single-use tokens kept in memory.
@rpc(functions.auth.ExportAuthorizationRequest)
async def export_authorization(
    ctx: RpcContext, req: functions.auth.ExportAuthorizationRequest
) -> types.auth.ExportedAuthorization:
    token_id = struct.unpack("<q", os.urandom(8))[0]
    token = os.urandom(32)
    ctx.front.exported_authorizations[token_id] = (token, ctx.require_user(), req.dc_id)
    return types.auth.ExportedAuthorization(id=token_id, bytes=token)


@rpc(functions.auth.ImportAuthorizationRequest, unauthorized=True)
async def import_authorization(
    ctx: RpcContext, req: functions.auth.ImportAuthorizationRequest
) -> types.auth.Authorization:
    entry = ctx.front.exported_authorizations.pop(req.id, None)
    if entry is None or entry[0] != req.bytes:
        raise RpcError(400, "AUTH_BYTES_INVALID")
    user = ctx.world.user(entry[1])
    ctx.front.keys.bind(ctx.session.key, entry[1], dc=entry[2])
    return types.auth.Authorization(user=render.user(user, viewer_id=user.user_id))


@rpc(functions.auth.LogOutRequest)
async def log_out(ctx: RpcContext, req: functions.auth.LogOutRequest) -> types.auth.LoggedOut:
    ctx.front.keys.forget(ctx.session.key)
    return types.auth.LoggedOut()


@rpc(functions.users.GetUsersRequest)
async def get_users(ctx: RpcContext, req: functions.users.GetUsersRequest) -> list[types.TypeUser]:
    me = ctx.require_user()
    out: list[types.TypeUser] = []
    for ref in req.id:
        if isinstance(ref, types.InputUserSelf):
            uid, access_hash = me, None
        elif isinstance(ref, types.InputUser):
            uid, access_hash = ref.user_id, ref.access_hash
        else:
            continue
        rec = ctx.world.user(uid)
        if rec is None or access_hash not in (None, 0, rec.access_hash):
            continue  # Telegram leaves out users it cannot show
        out.append(render.user(rec, viewer_id=me))
    return out


@rpc(functions.users.GetFullUserRequest)
async def get_full_user(ctx: RpcContext, req: functions.users.GetFullUserRequest) -> types.users.UserFull:
    me = ctx.require_user()
    uid = me if isinstance(req.id, types.InputUserSelf) else getattr(req.id, "user_id", None)
    rec = ctx.world.user(uid) if uid is not None else None
    if rec is None:
        raise RpcError(400, "USER_ID_INVALID")
    full = types.UserFull(
        id=rec.user_id,
        settings=types.PeerSettings(),
        notify_settings=types.PeerNotifySettings(),
        common_chats_count=0,
    )
    return types.users.UserFull(full_user=full, chats=[], users=[render.user(rec, viewer_id=me)])


@rpc(functions.updates.GetStateRequest)
async def get_state(ctx: RpcContext, req: functions.updates.GetStateRequest) -> types.updates.State:
    ctx.require_user()
    return types.updates.State(pts=1, qts=0, date=render.when(ctx.world.now()), seq=0, unread_count=0)


@rpc(functions.updates.GetDifferenceRequest)
async def get_difference(ctx: RpcContext, req: functions.updates.GetDifferenceRequest) -> types.updates.DifferenceEmpty:
    # Updates are the Bot API front's business; MTProto clients here run with receive_updates=False.
    return types.updates.DifferenceEmpty(date=render.when(ctx.world.now()), seq=0)


@rpc(functions.updates.GetChannelDifferenceRequest)
async def get_channel_difference(
    ctx: RpcContext, req: functions.updates.GetChannelDifferenceRequest
) -> types.updates.ChannelDifferenceEmpty:
    chat = resolve_channel(ctx, req.channel)
    return types.updates.ChannelDifferenceEmpty(pts=chat.pts, final=True, timeout=30)


@rpc(functions.contacts.ResolveUsernameRequest)
async def resolve_username(
    ctx: RpcContext, req: functions.contacts.ResolveUsernameRequest
) -> types.contacts.ResolvedPeer:
    me = ctx.require_user()
    found = ctx.world.resolve_username(req.username)
    if found is None:
        raise RpcError(400, "USERNAME_NOT_OCCUPIED")
    if isinstance(found, User):
        return types.contacts.ResolvedPeer(
            peer=types.PeerUser(found.user_id), chats=[], users=[render.user(found, viewer_id=me)]
        )
    status, rights = ctx.world.member(found.chat_id, me)
    return types.contacts.ResolvedPeer(
        peer=types.PeerChannel(found.channel_id),
        chats=[render.channel(found, status=status, rights=rights)],
        users=[],
    )


# A ping wrapped in invokeWithoutUpdates & co. is an ordinary RPC; its pong comes in an rpc_result.
@rpc(functions.PingRequest, functions.PingDelayDisconnectRequest, unauthorized=True)
async def ping(ctx: RpcContext, req: functions.PingRequest) -> types.Pong:
    if isinstance(req, functions.PingDelayDisconnectRequest):
        ctx.connection.arm_ping_timer(req.disconnect_delay)
    return types.Pong(msg_id=ctx.msg_id, ping_id=req.ping_id)
