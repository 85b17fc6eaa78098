"""The parallel transfer pool's scheduling and reassembly, against a fake sender (no network).

What is checked: the in-flight budgets (TDLib's, see snapshot/backends/mtproto_transfer.py) are never
exceeded, requests spread over every connection, parts and pieces are exactly Telegram's (512 KiB parts,
1 MiB-aligned 1 MiB pieces), and a download reassembles exactly the bytes of the file whatever order the
answers come back in.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from telethon.tl import functions, types

from snapshot.backends import mtproto_transfer as transfer

MiB = 1024 * 1024


class FakePool(transfer.SenderPool):
    """A SenderPool whose connections answer from memory after a random delay, recording concurrency."""

    def __init__(self, size: int, data: bytes = b"", *, in_flight: int = transfer.IN_FLIGHT, seed: int = 0) -> None:
        super().__init__(None, size, in_flight=in_flight)  # type: ignore[arg-type]
        self.data = data
        self.rng = random.Random(seed)
        self.now = 0
        self.peak = 0
        self.peak_per_slot = [0] * size
        self.used: set[int] = set()
        self.parts: dict[int, bytes] = {}
        self.requests: list[Any] = []

    async def _invoke_on(self, slot: int, request: Any) -> Any:
        self.now += 1
        self.peak = max(self.peak, self.now)
        self.peak_per_slot[slot] = max(self.peak_per_slot[slot], self._busy[slot])
        self.used.add(slot)
        self.requests.append(request)
        try:
            await asyncio.sleep(self.rng.random() / 1000)
            if isinstance(request, functions.upload.GetFileRequest):
                return types.upload.File(type=types.storage.FilePartial(), mtime=0,
                                         bytes=self.data[request.offset:request.offset + request.limit])
            self.parts[request.file_part] = request.bytes
            return True
        finally:
            self.now -= 1


async def test_upload_keeps_to_the_budget_and_uses_every_connection() -> None:
    pool = FakePool(6)
    data = random.Random(1).randbytes(30 * MiB + 7)
    handle = await transfer.upload(pool, data, "big.bin")
    assert isinstance(handle, types.InputFileBig) and handle.parts == 61
    assert pool.peak == transfer.UPLOAD_IN_FLIGHT
    assert pool.used == set(range(6))
    assert max(pool.peak_per_slot) <= -(-transfer.UPLOAD_IN_FLIGHT // 6)
    assert all(isinstance(r, functions.upload.SaveBigFilePartRequest) and r.file_total_parts == 61
               for r in pool.requests)
    assert b"".join(pool.parts[i] for i in range(61)) == data
    assert {len(p) for i, p in pool.parts.items() if i < 60} == {transfer.UPLOAD_PART}


async def test_downloads_at_once_share_the_pool_budget() -> None:
    data = random.Random(2).randbytes(9 * MiB + 123)
    pool = FakePool(6, data)
    loc = types.InputDocumentFileLocation(1, 2, b"ref", "")

    async def refresh() -> types.InputDocumentFileLocation:
        raise AssertionError("no reference expires here")

    got = await asyncio.gather(*(transfer.download(pool, loc, len(data), refresh=refresh, what=f"d{i}")
                                 for i in range(4)))
    assert all(g == data for g in got)
    assert pool.peak == transfer.IN_FLIGHT  # 4 x 10 pieces wanted at once, 16 let through
    assert max(pool.peak_per_slot) <= -(-transfer.IN_FLIGHT // 6)
    for r in pool.requests:  # Telegram's getFile rules: 1 MiB pieces at 1 MiB-aligned offsets
        assert r.limit == MiB and r.offset % MiB == 0 and not r.precise


@settings(max_examples=40, deadline=None)
@given(size=st.integers(1, 5 * MiB), connections=st.integers(1, 8), seed=st.integers(0, 1000))
def test_download_reassembles_exactly(size: int, connections: int, seed: int) -> None:
    data = random.Random(seed).randbytes(size)
    pool = FakePool(connections, data, seed=seed)
    loc = types.InputDocumentFileLocation(1, 2, b"ref", "")

    async def refresh() -> types.InputDocumentFileLocation:
        raise AssertionError("no reference expires here")

    got = asyncio.run(transfer.download(pool, loc, size, refresh=refresh, what="doc"))
    assert type(got) is bytes and got == data
    assert pool.peak <= min(transfer.IN_FLIGHT, -(-size // MiB))
