"""The emulator's MTProto front: real, unmodified Telethon talks to it over TCP on 127.0.0.1.

    front = await serve_mtproto(world, "127.0.0.1", 0)
    client = TelegramClient(StringSession(session_string(world, bot_id, "127.0.0.1", front.port)),
                            api_id=1, api_hash="x" * 32, receive_updates=False)

See docs/emulator.md ("MTProto front") for what is implemented.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from telethon.crypto import AuthKey as TelethonAuthKey
from telethon.sessions import StringSession

from .config import DC_ID
from .keys import KeyRing
from .server import MTProtoFront

__all__ = ["DC_ID", "MTProtoFront", "serve_mtproto", "session_string"]


async def serve_mtproto(world: Any, host: str, port: int) -> MTProtoFront:
    """Start the MTProto front on host:port (0 = any free port; read `.port`). Stop with `await .close()`."""
    front = MTProtoFront(world)
    await front.start(host, port)
    return front


def session_string(world: Any, bot_user_id: int, host: str, port: int) -> str:
    """A Telethon StringSession already logged in as the bot, through a pre-shared auth key.

    The key is created on first use and reused afterwards (it survives emulator restarts).
    """
    bot = world.user(bot_user_id)
    if bot is None or not bot.is_bot:
        raise ValueError(f"user {bot_user_id} is not a bot of this world")
    key = KeyRing(world).preshared_for(bot_user_id)
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        address = socket.gethostbyname(host)
    session = StringSession()
    session.set_dc(DC_ID, address, port)
    session.auth_key = TelethonAuthKey(key.key)
    return session.save()
