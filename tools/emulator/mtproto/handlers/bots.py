"""Methods Telegram refuses to bots: reading history, dialogs and search (BOT_METHOD_INVALID).

Telethon's `iter_messages` without ids is messages.getHistory, so a storage backend that tries to
scan the channel learns here, as it would from Telegram, that it must fetch by id instead.
"""

from __future__ import annotations

from telethon.tl import functions

from ..context import RpcContext
from ..rpc import RpcError, rpc


@rpc(
    functions.messages.GetHistoryRequest,
    functions.messages.GetDialogsRequest,
    functions.messages.SearchRequest,
    functions.messages.SearchGlobalRequest,
    functions.channels.GetParticipantsRequest,
    functions.contacts.GetContactsRequest,
)
async def bot_method_invalid(ctx: RpcContext, req: object) -> None:
    ctx.require_user()
    raise RpcError(400, "BOT_METHOD_INVALID")
