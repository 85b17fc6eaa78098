"""Resolving Input* peers of a request to world chats, with Telegram's access rules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from telethon.tl import types

from ..records import Chat, channel_chat_id
from ..world import WorldError
from .context import RpcContext
from .rpc import RpcError

T = TypeVar("T")

# World refusals (Bot API flavoured) → the names MTProto uses for them.
_WORLD_CODES = {
    "CHAT_NOT_FOUND": "PEER_ID_INVALID",
    "MESSAGE_EMPTY": "MESSAGE_EMPTY",
    "USER_IS_BLOCKED": "USER_IS_BLOCKED",
}


def world_call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call the world, turning its refusals into rpc_error 400 answers."""
    try:
        return fn(*args, **kwargs)
    except WorldError as exc:
        raise RpcError(400, _WORLD_CODES.get(exc.code, exc.code)) from exc


def channel(ctx: RpcContext, ref: Any, *, member: bool = True) -> Chat:
    """InputChannel / InputPeerChannel → the channel, if the caller may see it.

    Bots may pass access_hash 0 (Telethon does when it resolves a bare id); any other hash must match.
    """
    if isinstance(ref, types.InputChannelFromMessage | types.InputPeerChannelFromMessage):
        raise RpcError(400, "CHANNEL_INVALID")
    if not isinstance(ref, types.InputChannel | types.InputPeerChannel):
        raise RpcError(400, "CHANNEL_INVALID")
    chat = ctx.world.channel_by_id(ref.channel_id)
    if chat is None or (ref.access_hash not in (0, chat.access_hash)):
        raise RpcError(400, "CHANNEL_INVALID")
    if member and status(ctx, chat) in ("left", "kicked"):
        raise RpcError(400, "CHANNEL_PRIVATE")
    return chat


def status(ctx: RpcContext, chat: Chat) -> str:
    return ctx.world.member(channel_chat_id(chat.channel_id), ctx.require_user())[0]


def chat_of(ctx: RpcContext, peer: Any) -> Chat:
    """InputPeer of a send/edit/pin → the chat. Private dialogs must already exist (a bot cannot start one)."""
    if isinstance(peer, types.InputPeerChannel):
        return channel(ctx, peer)
    if isinstance(peer, types.InputPeerUser):
        bot = ctx.require_user()
        user = ctx.world.user(peer.user_id)
        if user is None or peer.access_hash not in (0, user.access_hash):
            raise RpcError(400, "PEER_ID_INVALID")
        chat = ctx.world.private_chat(bot, peer.user_id)
        if chat is None:
            raise RpcError(400, "USER_IS_BLOCKED" if not user.is_bot else "PEER_ID_INVALID")
        return chat
    raise RpcError(400, "PEER_ID_INVALID")


def require_right(ctx: RpcContext, chat: Chat, *rights: str, error: str = "CHAT_ADMIN_REQUIRED") -> None:
    """In a channel the caller must be an admin holding one of `rights` (Bot API right names)."""
    if not chat.is_channel:
        return
    bot = ctx.require_user()
    if not any(ctx.world.is_admin(chat.chat_id, bot, right) for right in rights):
        if status(ctx, chat) in ("left", "kicked"):
            raise RpcError(403, "CHAT_WRITE_FORBIDDEN")
        raise RpcError(400, error)
