"""Every use of Telethon's private internals, in one place, checked once at start-up.

Telethon's public client moves one file part at a time and sleeps inside its own retry loop on flood
waits and server errors; tgsnap needs neither. So, like the well-known "FastTelethon" approach, it talks
to the layer below: `client._sender.send(...)` (one request, no retry loop), and extra `MTProtoSender`s
built as Telethon builds its own exported senders (`client._connection`, `client._init_request`,
`client._log`, `client._proxy`, `client._local_addr`, ...). None of that is public API: a 1.x release may
rename any of it. `check()` runs when a backend opens and turns a missing piece into a `ConfigError` that
names the Telethon version (a clear exit with code 2), instead of an `AttributeError` deep in a transfer
that the retry loop would take for a transient failure and repeat forever.

The extra connections are leaner than Telethon's own (`new_sender(..., gzip=False)`, `connection(...,
lean=True)`): they never try to gzip a request (Telethon zlib-compresses every request over 512 bytes at
level 9 and keeps the result only if smaller; a 512 KiB part of a zstd snapshot never is, and the attempt
cost ~29 ms per part), and their TCP framing neither slices nor concatenates the payload to check or add
its CRC32. Both are optional in the protocol: gzip_packed is a wrapper a sender *may* use
(core.telegram.org/mtproto/service_messages#packed-object), and the full transport's CRC32 is the same
number computed piecewise (core.telegram.org/mtproto/mtproto-transports#full).

Also here: `rpc_name(exc)`, Telegram's own error name (`ACCESS_TOKEN_INVALID`, `FILE_PART_3_MISSING`)
for a Telethon RPC error. Telethon's specific error classes keep the class-level `message` of their base
class ('BAD_REQUEST' for every 400), so the name is recovered from Telethon's own error table.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import struct
from typing import Any
from zlib import crc32

import telethon
from telethon import TelegramClient, errors
from telethon.network import ConnectionTcpFull, MTProtoSender
from telethon.network.connection.connection import Connection
from telethon.network.connection.tcpfull import FullPacketCodec
from telethon.network.mtprotostate import MTProtoState
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
#: private methods of MTProtoState that the gzip-free message writer calls (as Telethon's own writer does).
STATE_METHODS = ("write_data_as_message", "_get_new_msg_id", "_get_seq_no")
#: private parts of a Telethon connection that the lean full-transport framing replaces or uses.
CONNECTION_ATTRS = ("_send", "_recv", "packet_codec")

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
    for name in STATE_METHODS:
        if not callable(getattr(MTProtoState, name, None)):
            raise _unsupported(f"MTProtoState.{name}")
    for name in CONNECTION_ATTRS:
        if not hasattr(Connection, name):
            raise _unsupported(f"Connection.{name}")
    if ConnectionTcpFull.packet_codec is not FullPacketCodec or not hasattr(FullPacketCodec(None), "_send_counter"):
        raise _unsupported("ConnectionTcpFull's FullPacketCodec with a _send_counter")
    init = client._init_request
    missing = [f for f in INIT_FIELDS if not hasattr(init, f)]
    if missing:
        raise _unsupported(f"InitConnectionRequest fields {', '.join(missing)}")
    _checked.add(id(client))


async def invoke(client: TelegramClient, request: Any) -> Any:
    """One request on the client's own connection, without Telethon's retry loop (it would sleep on
    flood waits and server errors; tgsnap's budget and retry policy decide that)."""
    return await client._sender.send(functions.InvokeWithoutUpdatesRequest(request))


def new_sender(client: TelegramClient, auth_key: Any, *, gzip: bool = True) -> MTProtoSender:
    """A sender on `auth_key` (None: a fresh key made by DH, as for another DC), configured like the client's.

    `gzip=False`: the sender never wraps a request in gzip_packed (see the module's docstring)."""
    sender = MTProtoSender(auth_key, loggers=client._log, retries=client._connection_retries,
                           delay=client._retry_delay, auto_reconnect=True, connect_timeout=client._timeout)
    if not gzip:
        _without_gzip(sender._state)
    return sender


def _without_gzip(state: MTProtoState) -> None:
    """Telethon 1.45's `MTProtoState.write_data_as_message` minus its `GzipPacked.gzip_if_smaller`.

    The sender keeps one state object for its whole life (MessagePacker holds it; reconnects reset it in
    place), so replacing the method on the instance covers every message it sends."""
    original = state.write_data_as_message

    def write_data_as_message(buffer: Any, data: bytes, content_related: bool, *,
                              after_id: int | None = None) -> int:
        if after_id is not None:  # invokeAfterMsg (ordered sends), which the transfer pool never makes
            return original(buffer, data, content_related, after_id=after_id)
        msg_id = state._get_new_msg_id()
        seq_no = state._get_seq_no(content_related)
        buffer.write(struct.pack("<qii", msg_id, seq_no, len(data)))
        buffer.write(data)
        return msg_id

    state.write_data_as_message = write_data_as_message


class _LeanFullCodec(FullPacketCodec):
    """Telethon's full transport (length, seqno, payload, CRC32) without copying the payload: the body and
    its CRC are read apart and the CRC is computed piecewise, instead of `body[:-4]` and `head + body`."""

    async def read_packet(self, reader: Any) -> bytes:
        try:
            head = await reader.readexactly(8)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                return exc.partial  # as Telethon: a 4-byte transport error code (-404, -429) on its own
            raise
        packet_len, seq = struct.unpack("<ii", head)
        if packet_len < 0 and seq < 0:  # -429 & co. in place of a header (Telethon issue #4042)
            raise errors.InvalidBufferError(await reader.readexactly(4))
        if packet_len < 12:
            raise errors.InvalidBufferError(head)
        body = await reader.readexactly(packet_len - 12)
        (checksum,) = struct.unpack("<I", await reader.readexactly(4))
        valid = crc32(body, crc32(head))
        if checksum != valid:
            raise errors.InvalidChecksumError(checksum, valid)
        return body

    def frame(self, data: bytes) -> tuple[bytes, bytes]:
        """(header, trailer) around `data`: the same bytes as `encode_packet`, without joining them."""
        head = struct.pack("<ii", len(data) + 12, self._send_counter)
        self._send_counter += 1
        return head, struct.pack("<I", crc32(data, crc32(head)))


class LeanConnectionTcpFull(ConnectionTcpFull):
    """ConnectionTcpFull with `_LeanFullCodec`; a large payload goes to the socket as it is."""

    packet_codec = _LeanFullCodec

    def _send(self, data: bytes) -> None:
        head, tail = self._codec.frame(data)
        if len(data) < 65536:
            self._writer.write(head + data + tail)
        else:  # three writes rather than two copies of a 512 KiB part
            self._writer.write(head)
            self._writer.write(data)
            self._writer.write(tail)


def connection(client: TelegramClient, address: str, port: int, dc_id: int, *, lean: bool = False) -> Any:
    """A transport connection object of the client's kind (what `MTProtoSender.connect` takes).

    `lean=True`: the lean framing when the client uses Telethon's default full transport (any other kind —
    obfuscated, intermediate, abridged — is kept as the client has it)."""
    kind = client._connection
    if lean and kind is ConnectionTcpFull:
        kind = LeanConnectionTcpFull
    return kind(address, port, dc_id, loggers=client._log, proxy=client._proxy, local_addr=client._local_addr)


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
