"""Every use of Telethon's private internals, in one place, checked once at start-up.

Telethon's public client moves one file part at a time and sleeps inside its own retry loop on flood
waits and server errors; tgsnap needs neither. So, like the well-known "FastTelethon" approach, it talks
to the layer below: `client._sender.send(...)` (one request, no retry loop), and extra `MTProtoSender`s
built as Telethon builds its own exported senders (`client._connection`, `client._init_request`,
`client._log`, `client._proxy`, `client._local_addr`, ...). None of that is public API: a 1.x release may
rename any of it. `check()` runs when a backend opens and turns a missing piece into a `ConfigError` that
names the Telethon version (a clear exit with code 2), instead of an `AttributeError` deep in a transfer
that the retry loop would take for a transient failure and repeat forever.

Also here: `rpc_name(exc)`, Telegram's own error name (`ACCESS_TOKEN_INVALID`, `FILE_PART_3_MISSING`)
for a Telethon RPC error. Telethon's specific error classes keep the class-level `message` of their base
class ('BAD_REQUEST' for every 400), so the name is recovered from Telethon's own error table.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import telethon
from telethon import TelegramClient, errors
from telethon.network import MTProtoSender
from telethon.tl import functions
from telethon.tl.alltlobjects import LAYER

from snapshot.errors import ConfigError

#: the Telethon releases this module was written and tested against.
TESTED = "1.45"

#: private attributes of a connected TelegramClient that tgsnap reads.
CLIENT_ATTRS = ("_sender", "_connection", "_init_request", "_log", "_proxy", "_local_addr",
                "_connection_retries", "_retry_delay", "_timeout")
#: keyword arguments of MTProtoSender(...) that tgsnap passes.
SENDER_KWARGS = ("loggers", "retries", "delay", "auto_reconnect", "connect_timeout")
#: fields of client._init_request (an InitConnectionRequest) copied into each extra connection.
INIT_FIELDS = ("api_id", "device_model", "system_version", "app_version", "system_lang_code", "lang_pack",
               "lang_code", "proxy", "params")

_checked: set[int] = set()


def _unsupported(what: str) -> ConfigError:
    return ConfigError(
        f"Telethon {telethon.__version__} lacks {what}, which tgsnap's MTProto storage uses (tested with "
        f"Telethon {TESTED}.x): install a tested release, e.g. pip install 'telethon=={TESTED}.*'")


def check(client: TelegramClient) -> None:
    """Raise ConfigError naming the Telethon version if anything tgsnap uses below the public API is gone."""
    if id(client) in _checked:
        return
    for name in CLIENT_ATTRS:
        if not hasattr(client, name):
            raise _unsupported(f"TelegramClient.{name}")
    params = inspect.signature(MTProtoSender.__init__).parameters
    for name in SENDER_KWARGS:
        if name not in params:
            raise _unsupported(f"the MTProtoSender argument {name!r}")
    if not hasattr(client._sender, "send") or not callable(client._connection):
        raise _unsupported("TelegramClient._sender.send / TelegramClient._connection")
    init = client._init_request
    missing = [f for f in INIT_FIELDS if not hasattr(init, f)]
    if missing:
        raise _unsupported(f"InitConnectionRequest fields {', '.join(missing)}")
    _checked.add(id(client))


async def invoke(client: TelegramClient, request: Any) -> Any:
    """One request on the client's own connection, without Telethon's retry loop (it would sleep on
    flood waits and server errors; tgsnap's budget and retry policy decide that)."""
    return await client._sender.send(functions.InvokeWithoutUpdatesRequest(request))


def new_sender(client: TelegramClient, auth_key: Any) -> MTProtoSender:
    """A sender on `auth_key` (None: a fresh key made by DH, as for another DC), configured like the client's."""
    return MTProtoSender(auth_key, loggers=client._log, retries=client._connection_retries,
                         delay=client._retry_delay, auto_reconnect=True, connect_timeout=client._timeout)


def connection(client: TelegramClient, address: str, port: int, dc_id: int) -> Any:
    """A transport connection object of the client's kind (what `MTProtoSender.connect` takes)."""
    return client._connection(address, port, dc_id, loggers=client._log, proxy=client._proxy,
                              local_addr=client._local_addr)


def init_connection(client: TelegramClient, query: Any) -> Any:
    """`invokeWithLayer(invokeWithoutUpdates(initConnection(query)))` with the client's own app/device fields
    (the first request on a new connection must say its layer and who it is).

    A copy, not the client's `_init_request` mutated in place: Telethon reuses that object on reconnects."""
    init = client._init_request
    hello = functions.InitConnectionRequest(**{f: getattr(init, f) for f in INIT_FIELDS}, query=query)
    return functions.InvokeWithLayerRequest(LAYER, functions.InvokeWithoutUpdatesRequest(hello))


def session_dc(client: TelegramClient) -> tuple[int, str, int]:
    """(dc id, address, port) of the client's home DC, from its session (public attributes)."""
    s = client.session
    return s.dc_id, s.server_address, s.port


# -- Telegram's error names ----------------------------------------------------------------------------

_NAMES: dict[type, str] = {cls: name for name, cls in errors.rpc_errors_dict.items()}
_PATTERNS: dict[type, str] = {cls: pattern for pattern, cls in errors.rpc_errors_re}


def rpc_name(exc: errors.RPCError) -> str:
    """Telegram's UPPER_SNAKE error name for `exc` (with the number of FLOOD_WAIT_X & co. filled in)."""
    cls = type(exc)
    if cls in _NAMES:
        return _NAMES[cls]
    if cls in _PATTERNS:
        value = next((getattr(exc, a) for a in ("seconds", "new_dc", "which", "capture")
                      if isinstance(getattr(exc, a, None), int)), None)
        return re.sub(r"\(\\d\+\)", str(value) if value is not None else "X", _PATTERNS[cls])
    # base classes built from an unknown name carry the server's text on the instance
    return str(exc.message or cls.__name__)


def rpc_code(exc: errors.RPCError) -> int:
    """Telegram's numeric error class (400, 401, 406, 420, 500, ...); -500 & co. folded to positive."""
    return abs(int(exc.code or 0))
