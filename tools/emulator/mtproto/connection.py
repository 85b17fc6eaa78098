"""One client TCP connection: framing, decryption, service messages, RPC dispatch and the outbox.

Reading, answering and writing run as three loops so a slow RPC never delays a pong, and pacing
(latency, bandwidth) delays work without serialising it: each request waits until its own
arrival time + latency, then the per-connection worker runs it in arrival order.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import struct
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from telethon.errors import TypeNotFoundError
from telethon.extensions import BinaryReader
from telethon.tl import functions, types
from telethon.tl.alltlobjects import LAYER
from telethon.tl.tlobject import TLRequest

from .context import RpcContext
from .crypto import CryptoError, decrypt_client_message, encrypt_server_chunks, peek_key_id
from .msgid import msg_id_time
from .rpc import (
    UNAUTHORIZED_OK,
    Body,
    RpcError,
    body_size,
    handler_for,
    method_name,
    rpc_error_result,
    rpc_result,
    serialize_result,
    unwrap,
)
from .session import Outgoing, Session, random_long
from .transport import Transport, TransportError, detect_transport

if TYPE_CHECKING:
    from .server import MTProtoFront

log = logging.getLogger("tools.emulator.mtproto")

MSG_CONTAINER = 0x73F1F8DC
GZIP_PACKED = 0x3072CFA1
MSGS_ACK = 0x62D6B459
PING = 0x7ABE77EC
PING_DELAY_DISCONNECT = 0xF3427B8C
GET_FUTURE_SALTS = 0xB921BD04
DESTROY_SESSION = 0xE7512126
DESTROY_AUTH_KEY = 0xD1435160
HTTP_WAIT = 0x9299359F
# Client→server informational messages that need no answer.
IGNORED = {0x7D861A08, 0x04DEB57D, 0x8CC0D131, 0x276D3EC6, 0x809DB6DF, 0xDA69FB52, HTTP_WAIT}

CONTAINER_MAX_BYTES = 1_000_000
CONTAINER_MAX_MESSAGES = 100
MSG_TOO_OLD = 300
MSG_TOO_NEW = 30


class _Drop(Exception):
    """Close the connection now (a fault rule, a protocol violation, or a timed-out ping)."""


@dataclass(slots=True)
class _Call:
    ready_at: float
    session: Session
    msg_id: int
    body: bytes


@dataclass(slots=True)
class _Raw:
    """An unencrypted payload (transport error, handshake answer) queued in order with the rest."""

    payload: bytes
    close_after: bool = False


class Connection:
    def __init__(self, front: MTProtoFront, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.front = front
        self._reader = reader
        self._writer = writer
        self.transport: Transport | None = None
        self.peer = writer.get_extra_info("peername")
        self.local = writer.get_extra_info("sockname")
        self._outbox: deque[tuple[Session, Outgoing] | _Raw] = deque()
        self._outbox_ready = asyncio.Event()
        self._calls: asyncio.Queue[_Call] = asyncio.Queue()
        self._ping_timer: asyncio.TimerHandle | None = None
        self._closed = False
        self.handshake_state: object | None = None  # owned by the key-exchange module

    # --- lifecycle -------------------------------------------------------------------------------

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task[None]] = []
        try:
            self.transport = await detect_transport(self._reader)
            tasks = [loop.create_task(self._write_loop()), loop.create_task(self._work_loop())]
            while not self._closed:
                packet = await self.transport.read_packet()
                await self.front.knobs.throttle(len(packet))
                await self._on_packet(packet)
        except (asyncio.IncompleteReadError, ConnectionError, _Drop):
            pass
        except TransportError as exc:
            log.info("mtproto: closing %s: %s", self.peer, exc)
        except Exception:
            log.warning("mtproto: closing %s after a malformed message", self.peer, exc_info=True)
        finally:
            self._closed = True
            self.front.key_places.gone(self)
            if self._ping_timer is not None:
                self._ping_timer.cancel()
            for task in tasks:
                task.cancel()
            for task in tasks:
                try:
                    await task
                except (asyncio.CancelledError, ConnectionError, _Drop):
                    pass
                except Exception:
                    log.exception("mtproto: connection task failed")
            self._writer.close()

    def drop(self) -> None:
        """Cut the TCP connection abruptly, like a network failure (unsent answers are lost)."""
        self._closed = True
        self._writer.transport.abort()

    def close(self) -> None:
        """Close after what is already written has gone out."""
        self._closed = True
        self._writer.close()

    # --- receiving -------------------------------------------------------------------------------

    async def _on_packet(self, packet: bytes) -> None:
        if len(packet) == 4:
            return  # a transport-level error code from the client; nothing to answer
        key_id = peek_key_id(packet)
        if key_id == 0:
            await self.front.on_plain_packet(self, packet)
            return
        key = self.front.keys.get(key_id)
        if key is None:
            log.info("mtproto: unknown auth key id %#x from %s", key_id, self.peer)
            self.send_raw(struct.pack("<i", -404), close_after=True)
            return
        try:
            msg = decrypt_client_message(key, packet)
        except CryptoError as exc:
            log.warning("mtproto: dropping %s: %s", self.peer, exc)
            raise _Drop from exc
        session = self.front.sessions.get(key, msg.session_id)

        if msg.msg_id % 4:
            self._bad_msg(session, msg.msg_id, msg.seq_no, 18)
            return
        drift = msg_id_time(msg.msg_id) - time.time()
        if drift < -MSG_TOO_OLD or drift > MSG_TOO_NEW:
            self._bad_msg(session, msg.msg_id, msg.seq_no, 16 if drift < 0 else 17)
            return
        if msg.salt != session.salt:
            self._push(
                session,
                bytes(types.BadServerSalt(msg.msg_id, msg.seq_no, 48, session.salt)),
                content_related=False,
                response=True,
            )
            return
        if not session.remember(msg.msg_id):
            log.debug("mtproto: ignoring replayed msg_id %d", msg.msg_id)
            return
        if not session.created:
            session.created = True
            self._push(
                session,
                bytes(types.NewSessionCreated(msg.msg_id, random_long(), session.salt)),
                content_related=True,
                response=False,
            )
        self._dispatch(session, msg.msg_id, msg.seq_no, msg.body, top=True)

    def _dispatch(self, session: Session, msg_id: int, seq_no: int, body: bytes, *, top: bool) -> None:
        if len(body) < 4:
            self._bad_msg(session, msg_id, seq_no, 64)
            return
        (cid,) = struct.unpack_from("<I", body)
        if cid == MSG_CONTAINER and top:
            for inner_id, inner_seq, inner_body in _container_items(body):
                if session.remember(inner_id):
                    self._dispatch(session, inner_id, inner_seq, inner_body, top=False)
        elif cid == GZIP_PACKED:
            with BinaryReader(body[4:]) as reader:
                data = gzip.decompress(reader.tgread_bytes())
            self._dispatch(session, msg_id, seq_no, data, top=top)
        elif cid == MSGS_ACK or cid in IGNORED:
            pass
        elif cid in (PING, PING_DELAY_DISCONNECT):
            (ping_id,) = struct.unpack_from("<q", body, 4)
            self._push(session, bytes(types.Pong(msg_id, ping_id)), content_related=True, response=True)
            if cid == PING_DELAY_DISCONNECT:
                (delay,) = struct.unpack_from("<i", body, 12)
                self.arm_ping_timer(delay)
        elif cid == GET_FUTURE_SALTS:
            now = int(time.time())
            salts = [types.FutureSalt(_dt(now - 60), _dt(now + 86_400), session.salt)]
            self._push(session, bytes(types.FutureSalts(msg_id, now, salts)), content_related=True, response=True)
        elif cid == DESTROY_AUTH_KEY:
            log.info("mtproto: auth key %#x destroyed by its client", session.key.key_id)
            self.front.keys.forget(session.key)
            self._push(session, bytes(types.DestroyAuthKeyOk()), content_related=False, response=True)
        elif cid == DESTROY_SESSION:
            (target,) = struct.unpack_from("<q", body, 4)
            gone = target != session.session_id and self.front.sessions.drop(session.key, target)
            answer = types.DestroySessionOk(target) if gone else types.DestroySessionNone(target)
            self._push(session, bytes(answer), content_related=True, response=True)
        else:
            if seq_no % 2 == 0:
                self._bad_msg(session, msg_id, seq_no, 34)  # a request must carry an odd seqno
                return
            ready_at = asyncio.get_running_loop().time() + self.front.knobs.latency_ms / 1000
            self._calls.put_nowait(_Call(ready_at, session, msg_id, body))

    def _bad_msg(self, session: Session, msg_id: int, seq_no: int, code: int) -> None:
        log.info("mtproto: bad_msg_notification %d for msg_id %d", code, msg_id)
        self._push(session, bytes(types.BadMsgNotification(msg_id, seq_no, code)), content_related=False, response=True)

    def arm_ping_timer(self, delay: int) -> None:
        if self._ping_timer is not None:
            self._ping_timer.cancel()
        self._ping_timer = asyncio.get_running_loop().call_later(max(delay, 1), self.drop)

    # --- answering -------------------------------------------------------------------------------

    async def _work_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            call = await self._calls.get()
            wait = call.ready_at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                await self._run(call)
            except Exception:  # a bug must cost one answer, never the connection's liveness
                log.exception("mtproto: request %d failed", call.msg_id)
                self._answer_error(call, RpcError(500, "INTERNAL_SERVER_ERROR"))

    async def _run(self, call: _Call) -> None:
        try:
            request = BinaryReader(call.body).tgread_object()
        except TypeNotFoundError as exc:
            log.warning("mtproto: unknown constructor %#010x (not in layer of Telethon)", exc.invalid_constructor_id)
            self._answer_error(call, RpcError(400, "INPUT_METHOD_INVALID"))
            return
        except Exception:
            log.warning("mtproto: cannot parse a request", exc_info=True)
            self._answer_error(call, RpcError(400, "INPUT_REQUEST_INVALID"))
            return
        if not isinstance(request, TLRequest):
            self._answer_error(call, RpcError(400, "INPUT_METHOD_INVALID"))
            return
        inner, wrappers = unwrap(request)
        for wrapper in wrappers:
            if isinstance(wrapper, functions.InvokeWithLayerRequest):
                if wrapper.layer != LAYER:
                    # every object the emulator sends is built from Telethon's layer-LAYER schema: a client of
                    # another layer would mis-read them, so it is refused clearly (Telegram's own error name)
                    log.warning("mtproto: a client speaks layer %d; the emulator serves layer %d only",
                                wrapper.layer, LAYER)
                    self._answer_error(call, RpcError(400, "CONNECTION_LAYER_INVALID"))
                    return
                call.session.layer = wrapper.layer
            elif isinstance(wrapper, functions.InitConnectionRequest):
                call.session.client_info = {
                    "device": wrapper.device_model,
                    "system": wrapper.system_version,
                    "app": wrapper.app_version,
                }
        name = method_name(inner)
        handler = handler_for(inner)
        if handler is None:
            log.warning("mtproto: %s is not supported by the emulator", name)
            self._answer_error(call, RpcError(400, "METHOD_NOT_SUPPORTED_BY_EMULATOR"))
            return
        key = call.session.key
        if self.front.knobs.auth_key_duplicated and not self.front.key_places.use(key.key_id, self, self.peer[0]):
            log.warning("mtproto: auth key %#x used from two addresses at once: AUTH_KEY_DUPLICATED", key.key_id)
            self.front.keys.kill(key, "AUTH_KEY_DUPLICATED")
        dead = self.front.keys.dead(key)
        if dead:
            self._answer_error(call, RpcError(406, dead))
            return
        user_id = self.front.keys.user_of(key)
        if user_id is None and type(inner) not in UNAUTHORIZED_OK:
            self._answer_error(call, RpcError(401, "AUTH_KEY_UNREGISTERED"))
            return

        fault = self.front.knobs.take_fault("mtproto", name)
        if fault is not None:
            log.info("mtproto: injecting fault %s into %s", fault.kind, name)
            if fault.kind == "server_error":
                self._answer_error(call, RpcError(fault.status, "INTERNAL"))
                return
            if fault.kind == "timeout":
                await asyncio.sleep(fault.hang_s)
                self.drop()
                return
            if fault.kind == "drop_upload":
                self.drop()
                return

        ctx = RpcContext(self.front, self, call.session, call.msg_id, user_id)
        try:
            result = await handler(ctx, inner)
        except RpcError as exc:
            log.debug("mtproto: %s -> %d %s", name, exc.code, exc.message)
            self._answer_error(call, exc)
            return
        except Exception:
            log.exception("mtproto: %s failed", name)
            self._answer_error(call, RpcError(500, "INTERNAL_SERVER_ERROR"))
            return
        if fault is not None and fault.kind == "answer_lost":
            self.drop()
            return
        try:
            body = serialize_result(result)
        except Exception:
            log.exception("mtproto: cannot serialise the answer to %s", name)
            self._answer_error(call, RpcError(500, "INTERNAL_SERVER_ERROR"))
            return
        compress = not isinstance(result, types.upload.File)
        self._push(call.session, rpc_result(call.msg_id, body, compress=compress), content_related=True, response=True)

    def _answer_error(self, call: _Call, error: RpcError) -> None:
        self._push(call.session, rpc_error_result(call.msg_id, error), content_related=True, response=True)

    # --- sending ---------------------------------------------------------------------------------

    def _push(self, session: Session, body: Body, *, content_related: bool, response: bool) -> None:
        if self._closed:
            return
        self._outbox.append((session, session.outgoing(body, content_related=content_related, response=response)))
        self._outbox_ready.set()

    def send_raw(self, payload: bytes, *, close_after: bool = False) -> None:
        """Queue an unencrypted transport payload (handshake answers, -404)."""
        self._outbox.append(_Raw(payload, close_after))
        self._outbox_ready.set()

    async def _write_loop(self) -> None:
        assert self.transport is not None
        while True:
            if not self._outbox:
                self._outbox_ready.clear()
                await self._outbox_ready.wait()
                continue
            item = self._outbox.popleft()
            if isinstance(item, _Raw):
                await self._write(self.transport.frame_chunks((item.payload,)))
                if item.close_after:
                    self.close()
                    return
                continue
            session, first = item
            batch = [first]
            size = body_size(first.body)
            while self._outbox and len(batch) < CONTAINER_MAX_MESSAGES:
                nxt = self._outbox[0]
                if isinstance(nxt, _Raw) or nxt[0] is not session:
                    break
                more = body_size(nxt[1].body)
                if size + more > CONTAINER_MAX_BYTES:
                    break
                self._outbox.popleft()
                batch.append(nxt[1])
                size += more
            if len(batch) == 1:
                out, chunks = first, _chunks(first.body)
            else:
                out = session.outgoing(b"", content_related=False, response=False)
                chunks = _container(batch)
            head, cipher = encrypt_server_chunks(
                session.key, session.salt, session.session_id, out.msg_id, out.seq_no, chunks
            )
            await self._write(self.transport.frame_chunks((head, cipher)))

    async def _write(self, pieces: list[bytes]) -> None:
        await self.front.knobs.throttle(sum(map(len, pieces)))
        # small pieces (headers, CRC, short answers) go out joined; a large ciphertext is written as it is,
        # between them, rather than copied into one frame
        small: list[bytes] = []
        for piece in pieces:
            if len(piece) < 65536:
                small.append(piece)
                continue
            if small:
                self._writer.write(b"".join(small))
                small = []
            self._writer.write(piece)
        if small:
            self._writer.write(b"".join(small))
        await self._writer.drain()


def _chunks(body: Body) -> tuple[bytes, ...]:
    return (body,) if isinstance(body, bytes) else body


def _container(messages: list[Outgoing]) -> list[bytes]:
    """msg_container of `messages`, as chunks (a message's own chunks are not joined here)."""
    parts = [struct.pack("<Ii", MSG_CONTAINER, len(messages))]
    for m in messages:
        parts.append(struct.pack("<qii", m.msg_id, m.seq_no, body_size(m.body)))
        parts.extend(_chunks(m.body))
    return parts


def _container_items(body: bytes) -> list[tuple[int, int, bytes]]:
    (count,) = struct.unpack_from("<i", body, 4)
    pos = 8
    items = []
    for _ in range(count):
        msg_id, seq_no, length = struct.unpack_from("<qii", body, pos)
        pos += 16
        items.append((msg_id, seq_no, body[pos : pos + length]))
        pos += length
    return items


def _dt(ts: int):  # noqa: ANN202 - Telethon's datetime fields accept naive UTC datetimes
    import datetime

    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC)
