"""RPC plumbing: the handler registry, Telegram-style errors and result serialisation."""

from __future__ import annotations

import math
import struct
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from telethon.tl import functions, types
from telethon.tl.core import GzipPacked
from telethon.tl.tlobject import TLObject, TLRequest

if TYPE_CHECKING:
    from .context import RpcContext

RPC_RESULT = 0xF35C6D01
RPC_ERROR = 0x2144CA19
VECTOR = 0x1CB5C415
BOOL_TRUE = 0x997275B5
BOOL_FALSE = 0xBC799737

Handler = Callable[["RpcContext", Any], Awaitable[Any]]

# Requests that only wrap another request; the innermost one is what gets answered.
WRAPPERS: tuple[type[TLRequest], ...] = (
    functions.InvokeWithLayerRequest,
    functions.InitConnectionRequest,
    functions.InvokeWithoutUpdatesRequest,
    functions.InvokeAfterMsgRequest,
    functions.InvokeAfterMsgsRequest,
    functions.InvokeWithTakeoutRequest,
)

# Methods an auth key may call before it is bound to a user.
UNAUTHORIZED_OK: set[type[TLRequest]] = set()

_HANDLERS: dict[type[TLRequest], Handler] = {}


class RpcError(Exception):
    """An rpc_error answer: Telegram's numeric class (400, 401, 420, ...) and its UPPER_SNAKE name."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message


def flood_wait(seconds: float) -> RpcError:
    return RpcError(420, f"FLOOD_WAIT_{max(1, math.ceil(seconds))}")


def rpc(*request_types: type[TLRequest], unauthorized: bool = False) -> Callable[[Handler], Handler]:
    """Register `fn` as the handler of the given Telethon request classes."""

    def register(fn: Handler) -> Handler:
        for t in request_types:
            _HANDLERS[t] = fn
            if unauthorized:
                UNAUTHORIZED_OK.add(t)
        return fn

    return register


def handler_for(request: TLRequest) -> Handler | None:
    return _HANDLERS.get(type(request))


def method_name(request: TLObject) -> str:
    """'messages.SendMediaRequest' — the name fault rules and log lines use."""
    module = type(request).__module__.rsplit(".", 1)[-1]
    name = type(request).__name__
    return name if module == "functions" else f"{module}.{name}"


def unwrap(request: TLRequest) -> tuple[TLRequest, list[TLRequest]]:
    """Strip invokeWithLayer/initConnection/... and return (inner request, the wrappers seen)."""
    seen = []
    while isinstance(request, WRAPPERS):
        seen.append(request)
        request = request.query
    return request, seen


#: an answer is a bytes object, or chunks whose concatenation is the answer (kept apart so that a file's
#: bytes are copied once, into the buffer they are encrypted from, rather than at every layer of wrapping).
Body = bytes | tuple[bytes, ...]


def body_size(body: Body) -> int:
    return len(body) if isinstance(body, bytes) else sum(map(len, body))


def serialize_result(value: Any) -> Body:
    """TL bytes of a handler's result: a TLObject, a bool, raw bytes, or a list of TLObjects.

    An upload.File comes back as chunks around its `bytes`, which are not copied."""
    if isinstance(value, types.upload.File) and len(value.bytes) >= 254:
        return file_chunks(value)
    if isinstance(value, bytes):
        return value
    if isinstance(value, bool):
        return struct.pack("<I", BOOL_TRUE if value else BOOL_FALSE)
    if isinstance(value, TLObject):
        return bytes(value)
    if isinstance(value, list):
        return struct.pack("<Ii", VECTOR, len(value)) + b"".join(bytes(x) for x in value)
    raise TypeError(f"cannot serialise a handler result of type {type(value).__name__}")


def file_chunks(value: types.upload.File) -> tuple[bytes, bytes, bytes]:
    """upload.File serialised as (everything before the data, the data itself, the TL padding after it):
    joined, the same bytes as `bytes(value)` (TL `bytes` of 254 bytes or more: 0xfe, a 3-byte length, the
    data, zero padding to a multiple of 4; core.telegram.org/mtproto/serialize#base-types)."""
    data = value.bytes
    n = len(data)
    if not 254 <= n < 1 << 24:
        raise ValueError(f"file_chunks serialises 254 bytes to 16 MiB of data, not {n}")
    # the constructor, storage type and mtime as Telethon writes them, cut off before the empty bytes (4 bytes)
    head = bytes(types.upload.File(type=value.type, mtime=value.mtime, bytes=b""))[:-4]
    return head + bytes((254, n & 0xFF, (n >> 8) & 0xFF, n >> 16)), data, bytes(-n % 4)


def rpc_result(req_msg_id: int, payload: Body, *, compress: bool) -> Body:
    """rpc_result wrapper; large, compressible answers go out as gzip_packed like Telegram does.

    Chunks stay chunks (file data, never compressed here)."""
    head = struct.pack("<Iq", RPC_RESULT, req_msg_id)
    if not isinstance(payload, bytes):
        return (head, *payload)
    if compress and len(payload) > 512:
        packed = bytes(GzipPacked(payload))
        if len(packed) < len(payload):
            payload = packed
    return head + payload


def rpc_error_result(req_msg_id: int, error: RpcError) -> bytes:
    return struct.pack("<IqIi", RPC_RESULT, req_msg_id, RPC_ERROR, error.code) + TLObject.serialize_bytes(error.message)
