"""TCP transports: framing of MTProto packets on the wire.

Telethon's default is ConnectionTcpFull (length + seqno + payload + CRC32, no tag).
Intermediate (0xeeeeeeee tag) and Abridged (0xef tag) are cheap to recognise, so they are
accepted too; the obfuscated transports are not.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from zlib import crc32

MAX_PACKET = 4 * 1024 * 1024  # larger than any legal request (512 KiB part + envelope)


class TransportError(Exception):
    """The peer broke the framing; the connection must be closed."""


class Transport:
    name = "abstract"

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    async def read_packet(self) -> bytes:
        raise NotImplementedError

    def frame(self, payload: bytes) -> bytes:
        return b"".join(self.frame_chunks((payload,)))

    def frame_chunks(self, chunks: Sequence[bytes]) -> list[bytes]:
        """The framing of the concatenated `chunks`, as pieces to write in order (the chunks themselves
        among them, not copied)."""
        raise NotImplementedError

    def error_packet(self, code: int) -> bytes:
        """A transport-level error such as -404 (unknown auth key) or -429 (flood)."""
        return self.frame(struct.pack("<i", -abs(code)))

    async def _read_exactly(self, n: int) -> bytes:
        if n < 0 or n > MAX_PACKET:
            raise TransportError(f"refusing a {n}-byte packet")
        return await self._reader.readexactly(n)


class FullTransport(Transport):
    name = "full"

    def __init__(self, reader: asyncio.StreamReader, first4: bytes) -> None:
        super().__init__(reader)
        self._pending_head = first4
        self._recv_seq = 0
        self._send_seq = 0

    async def read_packet(self) -> bytes:
        if self._pending_head is not None:
            head, self._pending_head = self._pending_head + await self._reader.readexactly(4), None
        else:
            head = await self._reader.readexactly(8)
        length, seq = struct.unpack("<ii", head)
        if length < 12:
            raise TransportError(f"full transport length {length} too small")
        if length - 8 > MAX_PACKET:
            raise TransportError(f"refusing a {length - 8}-byte packet")
        # body and CRC read apart, the CRC computed piecewise: no slicing or concatenating a 512 KiB part
        body = await self._read_exactly(length - 12)
        (checksum,) = struct.unpack("<I", await self._reader.readexactly(4))
        if crc32(body, crc32(head)) != checksum:
            raise TransportError("full transport CRC32 mismatch")
        if seq != self._recv_seq:
            raise TransportError(f"full transport seqno {seq}, expected {self._recv_seq}")
        self._recv_seq += 1
        return body

    def frame_chunks(self, chunks: Sequence[bytes]) -> list[bytes]:
        head = struct.pack("<ii", sum(map(len, chunks)) + 12, self._send_seq)
        self._send_seq += 1
        crc = crc32(head)
        for chunk in chunks:
            crc = crc32(chunk, crc)
        return [head, *chunks, struct.pack("<I", crc)]


class IntermediateTransport(Transport):
    name = "intermediate"

    async def read_packet(self) -> bytes:
        (length,) = struct.unpack("<i", await self._reader.readexactly(4))
        return await self._read_exactly(length)

    def frame_chunks(self, chunks: Sequence[bytes]) -> list[bytes]:
        return [struct.pack("<i", sum(map(len, chunks))), *chunks]


class AbridgedTransport(Transport):
    name = "abridged"

    async def read_packet(self) -> bytes:
        first = (await self._reader.readexactly(1))[0]
        if first >= 0x7F:
            length = int.from_bytes(await self._reader.readexactly(3), "little")
        else:
            length = first
        return await self._read_exactly(length * 4)

    def frame_chunks(self, chunks: Sequence[bytes]) -> list[bytes]:
        words = sum(map(len, chunks)) // 4
        head = bytes([words]) if words < 0x7F else b"\x7f" + words.to_bytes(3, "little")
        return [head, *chunks]


async def detect_transport(reader: asyncio.StreamReader) -> Transport:
    """Look at the first bytes a client sends and pick the matching framing."""
    first = await reader.readexactly(1)
    if first == b"\xef":
        return AbridgedTransport(reader)
    first4 = first + await reader.readexactly(3)
    if first4 == b"\xee\xee\xee\xee":
        return IntermediateTransport(reader)
    if first4 == b"\xdd\xdd\xdd\xdd":
        raise TransportError("padded intermediate transport is not supported")
    return FullTransport(reader, first4)
