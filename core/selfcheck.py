"""Self-verification: a live writer restores its own storage in the background and proves it equals itself.

A backup that has never been restored is a hope. `self_verify(store, backend, key)` takes a cut of the
live state at an instant where every committed write is durable (inside `store.transaction()`, with no
dirty and no in-flight rows, so the live state *is* the state after delta `last_seq`), copies its image
(a memcpy; the only work done while writes wait), then, with writes flowing again, restores the storage
to exactly that seq into scratch memory through the same reader an operator's restore uses (every
document verified) and compares logical digests (`snapshot.digest.state_digest`: equal contents, any page
layout). The digests run in a thread; the restore's CPU is that of an ordinary restore, bounded by
running one verification at a time.

`SelfVerifier` runs it on a schedule and on demand (`run_now()`), and hands each `SelfCheck` to a
callback (the bot's metrics: `tgsnap_last_verified_restore_timestamp_seconds` and a /readyz condition).
A cut that cannot be taken (writes kept arriving), or storage that moved on under the restore (a
snapshot switch deleted the chain it was reading), is retried, then reported as inconclusive — never as
a failure, which is kept for a restore that fails or a digest that differs.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from core.store import Store
from snapshot import image as image_mod
from snapshot.backend import Backend
from snapshot.cipher import Cipher
from snapshot.digest import state_digest
from snapshot.errors import BackendError, TgsnapError
from snapshot.restore import restore

log = logging.getLogger("tgsnap.selfcheck")


@dataclass
class SelfCheck:
    #: True: the restore equals the live state; False: it failed or differs; None: inconclusive.
    ok: bool | None
    seq: int
    at: float
    elapsed: float = 0.0
    live_digest: str = ""
    restored_digest: str = ""
    detail: str = ""


def _digest_of_image(image: bytes) -> str:
    conn = sqlite3.connect(":memory:")
    try:
        if image:
            conn.deserialize(image)
        return state_digest(conn)
    finally:
        conn.close()


async def _cut(store: Store, attempts: int) -> tuple[int, bytes] | None:
    """(seq, image) of the live state at an instant where it equals the durable state after `seq`."""
    for _ in range(attempts):
        await store.flush()
        async with store.transaction():
            s = store.stats()
            if s.dirty_rows == 0 and s.in_flight_rows == 0 and not s.fenced:
                # no capture happens while the transaction is open, and nothing is pending: live == seq
                return s.last_seq, image_mod.capture(store._conn)
        await asyncio.sleep(0)
    return None


async def self_verify(store: Store, backend: Backend, key: bytes | Cipher | None = None, *,
                      attempts: int = 5) -> SelfCheck:
    """One verification of `store`'s storage against its live state (see the module docstring)."""
    t0 = time.monotonic()
    now = time.time()
    cut = await _cut(store, attempts)
    if cut is None:
        return SelfCheck(None, store.stats().last_seq, now, time.monotonic() - t0,
                         detail=f"no quiet instant in {attempts} attempts (writes kept arriving)")
    seq, image = cut
    live = await asyncio.to_thread(_digest_of_image, image)
    del image
    last_error: str = ""
    for _ in range(attempts):
        try:
            restored = await restore(backend, key, to_seq=seq)
        except BackendError as exc:
            if not exc.retryable:
                return SelfCheck(False, seq, now, time.monotonic() - t0, live, detail=f"restore failed: {exc}")
            last_error = f"storage unreachable: {exc}"
            await asyncio.sleep(0.5)
            continue
        except TgsnapError as exc:
            if store.stats().last_seq != seq or "compacted away" in str(exc):
                last_error = f"storage moved on during the restore ({exc})"
                continue  # a snapshot switch may have removed the chain this restore was reading
            return SelfCheck(False, seq, now, time.monotonic() - t0, live,
                             detail=f"restore failed: {type(exc).__name__}: {exc}")
        try:
            got = await asyncio.to_thread(state_digest, restored.conn)
        finally:
            restored.conn.close()
        if got == live:
            return SelfCheck(True, seq, now, time.monotonic() - t0, live, got)
        return SelfCheck(False, seq, now, time.monotonic() - t0, live, got,
                         detail=f"the state restored at seq {seq} differs from the live state at that seq "
                                f"(digest {got[:16]}… vs {live[:16]}…)")
    return SelfCheck(None, seq, now, time.monotonic() - t0, live, detail=last_error or "inconclusive")


class SelfVerifier:
    """`self_verify` every `interval` seconds (first after `interval`) and whenever `run_now()` asks."""

    def __init__(self, store: Store, backend: Backend, key: bytes | Cipher | None = None, *,
                 interval: float = 3600.0, on_result: Callable[[SelfCheck], None] | None = None):
        self.store = store
        self.backend = backend
        self.key = key
        self.interval = interval
        self.on_result = on_result
        self.last: SelfCheck | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def run_now(self) -> SelfCheck:
        async with self._lock:  # one at a time: bounded CPU and memory
            result = await self_verify(self.store, self.backend, self.key)
        self.last = result
        level = logging.INFO if result.ok else logging.WARNING if result.ok is None else logging.ERROR
        log.log(level, "tgsnap: self-verification at seq %d: %s (%.1f s)%s", result.seq,
                {True: "restore equals the live state", False: "FAILED", None: "inconclusive"}[result.ok],
                result.elapsed, f": {result.detail}" if result.detail else "")
        if self.on_result is not None:
            self.on_result(result)
        return result

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="tgsnap-self-verify")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.run_now()
            except TgsnapError as exc:  # the store closed or was fenced under us: stop quietly
                log.info("tgsnap: self-verification stopped (%s)", exc)
                return

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
