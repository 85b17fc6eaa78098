"""The MTProto front's layers on their own: crypto, framing, message ids, upload assembly, getFile rules,
and the session protocol driven by a raw client built from Telethon's own MTProtoState."""

from __future__ import annotations

import asyncio
import collections
import gzip
import hashlib
import logging
import os
import struct
import tempfile
import time
from zlib import crc32

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from telethon.crypto import AuthKey as TelethonAuthKey
from telethon.extensions import BinaryReader
from telethon.network.mtprotostate import MTProtoState
from telethon.sessions import StringSession
from telethon.tl import functions, types
from telethon.tl.core import GzipPacked, MessageContainer

from tools.emulator.mtproto import serve_mtproto, session_string
from tools.emulator.mtproto.crypto import (
    AuthKey,
    CryptoError,
    decrypt_client_message,
    encrypt_server_chunks,
    encrypt_server_message,
)
from tools.emulator.mtproto.handlers.upload import check_range
from tools.emulator.mtproto.msgid import MsgIdClock
from tools.emulator.mtproto.rpc import RpcError
from tools.emulator.mtproto.transport import (
    AbridgedTransport,
    FullTransport,
    IntermediateTransport,
    TransportError,
    detect_transport,
)
from tools.emulator.mtproto.uploads import UploadStore
from tools.emulator.world import World

pytestmark = pytest.mark.timeout(60)

LOGGERS = collections.defaultdict(lambda: logging.getLogger("raw-client"))
MiB = 1024 * 1024


def telethon_state(key: bytes) -> MTProtoState:
    return MTProtoState(TelethonAuthKey(key), loggers=LOGGERS)


# --- crypto -----------------------------------------------------------------------------------------


@given(
    body=st.binary(min_size=0, max_size=2000).map(lambda b: b[: len(b) - len(b) % 4]),
    salt=st.integers(-(2**63), 2**63 - 1),
)
@settings(max_examples=40)
def test_client_packets_decrypt_on_the_server(body: bytes, salt: int) -> None:
    key = os.urandom(256)
    client = telethon_state(key)
    client.salt = salt
    header = struct.pack("<qii", 4 << 32, 1, len(body))
    packet = client.encrypt_message_data(header + body)
    plain = decrypt_client_message(AuthKey(key), packet)
    assert (plain.salt, plain.session_id, plain.msg_id, plain.seq_no, plain.body) == (salt, client.id, 4 << 32, 1, body)


@given(ping_id=st.integers(-(2**63), 2**63 - 1))
@settings(max_examples=30)
def test_server_packets_decrypt_in_telethon(ping_id: int) -> None:
    key = os.urandom(256)
    client = telethon_state(key)
    msg_id = MsgIdClock().next(response=True)
    packet = encrypt_server_message(AuthKey(key), 77, client.id, msg_id, 1, bytes(types.Pong(5, ping_id)))
    message = client.decrypt_message_data(packet)
    assert message.msg_id == msg_id and message.obj.ping_id == ping_id


def test_tampered_or_foreign_packets_are_refused() -> None:
    key = os.urandom(256)
    packet = telethon_state(key).encrypt_message_data(struct.pack("<qii", 4 << 32, 1, 4) + b"abcd")
    flipped = packet[:40] + bytes([packet[40] ^ 1]) + packet[41:]
    with pytest.raises(CryptoError):
        decrypt_client_message(AuthKey(key), flipped)
    with pytest.raises(CryptoError):
        decrypt_client_message(AuthKey(os.urandom(256)), packet)
    assert "key=" not in repr(AuthKey(key)) and key.hex() not in repr(AuthKey(key))


# --- transport --------------------------------------------------------------------------------------


def reader_with(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


def full_frame(payload: bytes, seq: int) -> bytes:
    head = struct.pack("<ii", len(payload) + 12, seq) + payload
    return head + struct.pack("<I", crc32(head))


@given(
    payloads=st.lists(
        st.binary(min_size=4, max_size=600).map(lambda b: b[: len(b) - len(b) % 4]), min_size=1, max_size=5
    )
)
@settings(max_examples=30)
def test_full_transport_reads_what_telethon_frames(payloads: list[bytes]) -> None:
    async def scenario() -> list[bytes]:
        wire = b"".join(full_frame(p, i) for i, p in enumerate(payloads))
        transport = await detect_transport(reader_with(wire))
        assert isinstance(transport, FullTransport)
        return [await transport.read_packet() for _ in payloads]

    assert asyncio.run(scenario()) == payloads


async def test_full_transport_checks_crc_and_seqno() -> None:
    bad_crc = bytearray(full_frame(b"abcd", 0))
    bad_crc[-1] ^= 0xFF
    transport = await detect_transport(reader_with(bytes(bad_crc)))
    with pytest.raises(TransportError, match="CRC"):
        await transport.read_packet()
    transport = await detect_transport(reader_with(full_frame(b"abcd", 5)))
    with pytest.raises(TransportError, match="seqno"):
        await transport.read_packet()


async def test_server_frames_carry_their_own_counter() -> None:
    transport = FullTransport(reader_with(b""), b"\0\0\0\0")
    first, second = transport.frame(b"abcd"), transport.frame(b"efgh")
    assert struct.unpack_from("<ii", first) == (16, 0) and struct.unpack_from("<ii", second) == (16, 1)
    assert struct.unpack_from("<I", first, 12)[0] == crc32(first[:12])


@pytest.mark.parametrize("tag,cls", [(b"\xef", AbridgedTransport), (b"\xee\xee\xee\xee", IntermediateTransport)])
async def test_other_tcp_transports_are_recognised(tag: bytes, cls: type) -> None:
    payload = os.urandom(1000)
    server_side = cls(reader_with(b""))
    transport = await detect_transport(reader_with(tag + server_side.frame(payload)))
    assert isinstance(transport, cls)
    assert await transport.read_packet() == payload


@given(chunks=st.lists(st.binary(min_size=0, max_size=3000), min_size=1, max_size=4).map(
    lambda cs: cs if sum(map(len, cs)) % 4 == 0 else [*cs, b"\0" * (-sum(map(len, cs)) % 4)]))
@settings(max_examples=40)
def test_chunked_frames_and_encryption_equal_the_joined_ones(chunks: list[bytes]) -> None:
    # a large answer goes out as chunks (never joined at the transport); the wire must not tell
    joined = b"".join(chunks)
    # framing never touches the reader: None stands in for it outside an event loop
    for cls in (IntermediateTransport, AbridgedTransport):
        assert b"".join(cls(None).frame_chunks(chunks)) == cls(None).frame(joined)  # type: ignore[arg-type]
    a, b = FullTransport(None, b"\0\0\0\0"), FullTransport(None, b"\0\0\0\0")  # type: ignore[arg-type]
    assert b"".join(a.frame_chunks(chunks)) == full_frame(joined, 0) == b.frame(joined)


@given(cuts=st.lists(st.integers(0, 40), max_size=3), ping_id=st.integers(-(2**63), 2**63 - 1))
@settings(max_examples=30)
def test_chunked_server_packets_decrypt_in_telethon(cuts: list[int], ping_id: int) -> None:
    key = os.urandom(256)
    client = telethon_state(key)
    msg_id = MsgIdClock().next(response=True)
    body = bytes(types.Pong(5, ping_id))
    bounds = [0, *sorted(min(c, len(body)) for c in cuts), len(body)]
    chunks = [body[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    head, cipher = encrypt_server_chunks(AuthKey(key), 77, client.id, msg_id, 1, chunks)
    message = client.decrypt_message_data(head + cipher)
    assert isinstance(message.obj, types.Pong) and message.obj.ping_id == ping_id


@given(size=st.integers(254, 3 * 4096), mtime=st.integers(-(2**31), 2**31 - 1))
@settings(max_examples=40)
def test_file_answers_in_chunks_serialise_as_telethon_does(size: int, mtime: int) -> None:
    from tools.emulator.mtproto.rpc import file_chunks, rpc_result, serialize_result

    value = types.upload.File(type=types.storage.FilePartial(), mtime=mtime, bytes=os.urandom(size))
    chunks = serialize_result(value)
    assert isinstance(chunks, tuple) and chunks == file_chunks(value) and chunks[1] is value.bytes
    assert b"".join(chunks) == bytes(value)
    wrapped = rpc_result(9, chunks, compress=True)  # file data is never gzipped, even when asked
    assert b"".join(wrapped) == struct.pack("<Iq", 0xF35C6D01, 9) + bytes(value)


def test_one_mib_file_answer_is_one_telethon_object() -> None:
    from tools.emulator.mtproto.rpc import serialize_result

    data = os.urandom(MiB)
    value = types.upload.File(type=types.storage.FilePartial(), mtime=0, bytes=data)
    back = BinaryReader(b"".join(serialize_result(value))).tgread_object()
    assert isinstance(back, types.upload.File) and back.bytes == data


# --- message ids ------------------------------------------------------------------------------------


@given(
    steps=st.lists(st.floats(min_value=-5, max_value=5), min_size=1, max_size=50),
    response=st.lists(st.booleans(), min_size=50, max_size=50),
)
def test_server_msg_ids_are_odd_increasing_and_typed(steps: list[float], response: list[bool]) -> None:
    now = [1_700_000_000.0]
    clock = MsgIdClock(lambda: now[0])
    last = 0
    for step, is_response in zip(steps, response, strict=False):
        now[0] += step  # even a clock going backwards must not produce a smaller id
        msg_id = clock.next(response=is_response)
        assert msg_id > last
        assert msg_id % 4 == (1 if is_response else 3)
        last = msg_id


# --- upload.getFile rules ----------------------------------------------------------------------------


@given(offset=st.integers(0, 8 * MiB), limit=st.integers(0, 2 * MiB))
def test_getfile_range_rules(offset: int, limit: int) -> None:
    legal = (
        limit > 0
        and limit % 4096 == 0
        and MiB % limit == 0
        and offset % 4096 == 0
        and offset // MiB == (offset + limit - 1) // MiB
    )
    try:
        check_range(offset, limit, precise=False)
        accepted = True
    except RpcError as exc:
        assert exc.message in ("LIMIT_INVALID", "OFFSET_INVALID")
        accepted = False
    assert accepted == legal


@given(part_kb=st.sampled_from([4, 8, 16, 32, 64, 128, 256, 512]), parts=st.integers(1, 40))
def test_telethon_style_download_requests_are_always_legal(part_kb: int, parts: int) -> None:
    for offset in range(0, parts * part_kb * 1024, part_kb * 1024):
        check_range(offset, part_kb * 1024, precise=False)


# --- upload assembly ---------------------------------------------------------------------------------


@given(
    part_size=st.sampled_from([1024, 4096, 32 * 1024, 128 * 1024]),
    size=st.integers(1, 600_000),
    big=st.booleans(),
    order=st.randoms(use_true_random=False),
)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_parts_in_any_order_assemble_the_exact_file(part_size: int, size: int, big: bool, order) -> None:
    data = os.urandom(size)
    parts = [data[i : i + part_size] for i in range(0, size, part_size)]
    with tempfile.TemporaryDirectory() as tmp:
        world = World.open(tmp)
        try:
            store = UploadStore(world)
            indices = list(range(len(parts)))
            order.shuffle(indices)
            for index in indices:
                store.save_part(7, 99, index, parts[index], total_parts=len(parts) if big else None)
            if big:
                input_file = types.InputFileBig(99, len(parts), "f.bin")
            else:
                input_file = types.InputFile(99, len(parts), "f.bin", hashlib.md5(data).hexdigest())
            rec = store.finish(7, input_file, name="f.bin", mime_type="application/octet-stream", file_limit=10 * MiB)
            assert rec.size == size
            assert world.read_file(rec.id) == data
            assert len(store) == 0
        finally:
            world.close()


def test_at_most_one_part_waits_in_memory_when_part_zero_comes_last(tmp_path) -> None:
    world = World.open(tmp_path / "w")
    store = UploadStore(world)
    parts = [os.urandom(1024) for _ in range(100)]
    for index in range(99, 0, -1):
        store.save_part(1, 5, index, parts[index], total_parts=None)
        assert len(store._pending[(1, 5)].stash) <= 1
    store.save_part(1, 5, 0, parts[0], total_parts=None)
    rec = store.finish(1, types.InputFile(5, 100, "x", ""), name="x", mime_type="a/b", file_limit=MiB)
    assert world.read_file(rec.id) == b"".join(parts)
    world.close()


def test_file_limit_and_small_file_threshold(tmp_path) -> None:
    world = World.open(tmp_path / "w")
    store = UploadStore(world)
    for index in range(3):
        store.save_part(1, 6, index, b"x" * 4096, total_parts=3)
    with pytest.raises(RpcError, match="FILE_PARTS_INVALID"):
        store.finish(1, types.InputFileBig(6, 3, "x"), name="x", mime_type="a/b", file_limit=8192)
    world.close()


# --- the session protocol, driven by a raw client ---------------------------------------------------


class RawClient:
    """Telethon's MTProtoState over a bare TcpFull socket, so tests can send what Telethon never would."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: bytes) -> None:
        self.reader, self.writer = reader, writer
        self.state = telethon_state(key)
        self._seq = 0

    def send_raw(self, msg_id: int, seq_no: int, body: bytes) -> None:
        packet = self.state.encrypt_message_data(struct.pack("<qii", msg_id, seq_no, len(body)) + body)
        self.writer.write(full_frame(packet, self._seq))
        self._seq += 1

    def send(self, request: object, *, content_related: bool = True) -> int:
        msg_id = self.state._get_new_msg_id()
        self.send_raw(msg_id, self.state._get_seq_no(content_related), bytes(request))
        return msg_id

    async def receive(self, wait_s: float = 5.0):
        head = await asyncio.wait_for(self.reader.readexactly(8), wait_s)
        length, _seq = struct.unpack("<ii", head)
        body = await self.reader.readexactly(length - 8)
        message = self.state.decrypt_message_data(body[:-4])
        return message

    async def receive_all(self, count: int) -> list:
        """`count` top-level objects, containers flattened."""
        out = []
        while len(out) < count:
            message = await self.receive()
            if isinstance(message.obj, MessageContainer):
                out.extend(message.obj.messages)
            else:
                out.append(message)
        return out

    async def silent_for(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.reader.readexactly(1), seconds)
        except TimeoutError:
            return True
        return False


@pytest.fixture
async def raw(tmp_path):
    world = World.open(tmp_path / "w")
    bot = world.create_bot("raw_bot")
    front = await serve_mtproto(world, "127.0.0.1", 0)
    string = session_string(world, bot.user_id, "127.0.0.1", front.port)
    key = StringSession(string).auth_key.key
    reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
    client = RawClient(reader, writer, key)
    client.world = world
    yield client
    writer.close()
    await front.close()
    world.close()


def result_of(message) -> object:
    """Unwrap an rpc_result's body (gzip included) into a TL object."""
    rpc = message.obj
    assert type(rpc).__name__ == "RpcResult", rpc
    if rpc.error is not None:
        return rpc.error
    return BinaryReader(rpc.body).tgread_object()


async def test_first_message_gets_bad_salt_then_a_new_session(raw: RawClient) -> None:
    bad = raw.send(functions.help.GetNearestDcRequest())
    [salt_msg] = await raw.receive_all(1)
    assert isinstance(salt_msg.obj, types.BadServerSalt) and salt_msg.obj.bad_msg_id == bad
    raw.state.salt = salt_msg.obj.new_server_salt
    good = raw.send(functions.help.GetNearestDcRequest())
    messages = await raw.receive_all(2)
    assert isinstance(messages[0].obj, types.NewSessionCreated)
    assert messages[0].obj.first_msg_id == good and messages[0].obj.server_salt == raw.state.salt
    assert messages[1].obj.req_msg_id == good
    assert isinstance(result_of(messages[1]), types.NearestDc)
    assert salt_msg.msg_id < messages[0].msg_id < messages[1].msg_id
    assert messages[1].msg_id % 4 == 1 and messages[0].msg_id % 4 == 3


async def ready(raw: RawClient) -> None:
    raw.send(functions.help.GetNearestDcRequest())
    [salt] = await raw.receive_all(1)
    raw.state.salt = salt.obj.new_server_salt
    raw.send(functions.help.GetNearestDcRequest())
    await raw.receive_all(2)


async def test_bad_msg_ids_are_notified(raw: RawClient) -> None:
    await ready(raw)
    old = (int(time.time()) - 1000) << 32
    raw.send_raw(old, 1, bytes(functions.help.GetNearestDcRequest()))
    [note] = await raw.receive_all(1)
    assert isinstance(note.obj, types.BadMsgNotification) and note.obj.error_code == 16
    future = (int(time.time()) + 1000) << 32
    raw.send_raw(future, 1, bytes(functions.help.GetNearestDcRequest()))
    [note] = await raw.receive_all(1)
    assert note.obj.error_code == 17
    raw.send_raw((int(time.time()) << 32) + 2, 1, bytes(functions.help.GetNearestDcRequest()))
    [note] = await raw.receive_all(1)
    assert note.obj.error_code == 18
    raw.send_raw(raw.state._get_new_msg_id(), 2, bytes(functions.help.GetNearestDcRequest()))  # even seqno
    [note] = await raw.receive_all(1)
    assert note.obj.error_code == 34


async def test_replayed_msg_id_is_ignored(raw: RawClient) -> None:
    await ready(raw)
    msg_id = raw.state._get_new_msg_id()
    raw.send_raw(msg_id, 5, bytes(functions.help.GetNearestDcRequest()))
    await raw.receive_all(1)
    raw.send_raw(msg_id, 5, bytes(functions.help.GetNearestDcRequest()))
    assert await raw.silent_for(0.3)


async def test_container_gzip_ack_and_ping(raw: RawClient) -> None:
    await ready(raw)
    first, second = raw.state._get_new_msg_id(), raw.state._get_new_msg_id()
    ping_body = bytes(functions.PingRequest(ping_id=99))
    gzipped = bytes(GzipPacked(bytes(functions.help.GetConfigRequest())))
    ack = bytes(types.MsgsAck([first]))
    third = raw.state._get_new_msg_id()
    inner = [(first, 1, ping_body), (second, 3, gzipped), (third, 4, ack)]
    container = struct.pack("<Ii", 0x73F1F8DC, len(inner)) + b"".join(
        struct.pack("<qii", m, s, len(b)) + b for m, s, b in inner
    )
    raw.send_raw(raw.state._get_new_msg_id(), 4, container)
    answers = await raw.receive_all(2)
    pong = next(a for a in answers if isinstance(a.obj, types.Pong))
    assert pong.obj.msg_id == first and pong.obj.ping_id == 99
    config = result_of(next(a for a in answers if type(a.obj).__name__ == "RpcResult"))
    assert isinstance(config, types.Config) and config.dc_options[0].port == raw.writer.get_extra_info("peername")[1]
    assert await raw.silent_for(0.3)  # the ack itself is not answered


async def test_unknown_constructor_gets_an_rpc_error(raw: RawClient) -> None:
    await ready(raw)
    msg_id = raw.state._get_new_msg_id()
    raw.send_raw(msg_id, 7, struct.pack("<I", 0x0BADF00D) + b"\0" * 8)
    [answer] = await raw.receive_all(1)
    error = result_of(answer)
    assert error.error_code == 400 and error.error_message == "INPUT_METHOD_INVALID"


def test_gzip_packed_answers_are_real_gzip() -> None:
    from tools.emulator.mtproto.rpc import rpc_result

    payload = bytes(types.DcOption(1, "127.0.0.1", 1)) * 100
    wrapped = rpc_result(5, payload, compress=True)
    assert struct.unpack_from("<I", wrapped, 12)[0] == 0x3072CFA1
    assert gzip.decompress(BinaryReader(wrapped[16:]).tgread_bytes()) == payload


async def test_faults_from_the_knobs(raw: RawClient) -> None:
    from tools.emulator.knobs import FaultRule

    await ready(raw)
    knobs = raw.world.knobs
    knobs.add_fault(FaultRule(kind="server_error", front="mtproto", method="help.GetNearestDcRequest", status=500))
    raw.send(functions.help.GetNearestDcRequest())
    [answer] = await raw.receive_all(1)
    assert result_of(answer).error_code == 500
    knobs.add_fault(FaultRule(kind="server_error", front="botapi"))  # another front's fault is left alone
    raw.send(functions.help.GetNearestDcRequest())
    [answer] = await raw.receive_all(1)
    assert isinstance(result_of(answer), types.NearestDc)

    knobs.clear_faults()
    knobs.add_fault(FaultRule(kind="timeout", front="mtproto", hang_s=0.2))
    raw.send(functions.help.GetNearestDcRequest())
    with pytest.raises(asyncio.IncompleteReadError):  # hangs, then the connection drops unanswered
        await raw.receive(wait_s=5)


async def test_answer_lost_applies_then_drops(raw: RawClient) -> None:
    from tools.emulator.knobs import FaultRule

    await ready(raw)
    raw.world.knobs.add_fault(FaultRule(kind="answer_lost", front="mtproto", method="upload.SaveFilePartRequest"))
    raw.send(functions.upload.SaveFilePartRequest(1, 0, b"x" * 1024))
    with pytest.raises(asyncio.IncompleteReadError):
        await raw.receive(wait_s=5)


async def test_pacing_knobs_meter_every_byte(raw: RawClient) -> None:
    await ready(raw)
    metered: list[int] = []
    knobs = raw.world.knobs
    original = knobs.throttle

    async def throttle(nbytes: int) -> None:
        metered.append(nbytes)
        await original(nbytes)

    knobs.throttle = throttle  # type: ignore[method-assign]
    knobs.latency_ms = 30.0
    knobs.bandwidth_bytes_per_s = 50 * MiB
    part = os.urandom(128 * 1024)
    raw.send(functions.upload.SaveFilePartRequest(1, 0, part))
    [answer] = await raw.receive_all(1)
    assert result_of(answer) is True
    assert sum(metered) > len(part)  # the request's bytes in, the answer's bytes out
    assert len(metered) >= 2
