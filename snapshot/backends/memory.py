"""An in-memory backend with scriptable faults, for tests of everything above the backend.

`MemoryStorage` is the durable medium: it outlives any backend, replica or store pointed at it, so a
test simulates a crash by dropping those objects and building new ones on the same storage.
`Faults` scripts what goes wrong; every fault it injects is recorded in `Faults.log`.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from snapshot.backend import Backend, BackendInfo
from snapshot.errors import BackendError, DocumentNotFound


@dataclass
class MemoryStorage:
    """The durable medium: documents in storage order and the current manifest."""

    docs: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # ref -> (name, data), insertion order
    manifest: bytes | None = None
    counter: int = 0
    manifest_publications: int = 0

    def refs(self) -> list[str]:
        return list(self.docs)

    def names(self) -> dict[str, str]:
        return {ref: name for ref, (name, _d) in self.docs.items()}

    def stored_bytes(self) -> int:
        return sum(len(d) for _n, d in self.docs.values())


@dataclass
class Faults:
    """What goes wrong next. Counters count down as faults fire; sets name exact events.

    Puts are counted (1-based, in `puts_seen`) only when their name starts with `put_match` (all puts if
    None), and only those matching puts are subject to the put faults, so a test can hit snapshot parts
    ("snapshot-") while deltas flow untouched.
    """

    put_match: str | None = None
    #: the next N matching puts fail cleanly: nothing stored.
    put_fail: int = 0
    #: the next N matching puts time out after `timeout_delay` seconds: nothing stored.
    put_timeout: int = 0
    #: the next N matching puts store the document, then report failure (a lost acknowledgement).
    put_lost_ack: int = 0
    #: fail cleanly the matching puts with these 1-based numbers (e.g. {3}: the 3rd part of an upload).
    put_fail_at: set[int] = field(default_factory=set)
    timeout_delay: float = 0.0
    #: flip one byte of the data returned for these refs (every read), or for the next N reads.
    corrupt_refs: set[str] = field(default_factory=set)
    get_corrupt: int = 0
    #: the next N gets fail cleanly.
    get_fail: int = 0
    #: the next N manifest publications fail before taking effect / take effect and then report failure.
    publish_fail: int = 0
    publish_lost_ack: int = 0
    #: the next N manifest reads fail.
    read_manifest_fail: int = 0
    #: the next N deletes fail (nothing deleted).
    delete_fail: int = 0
    #: random mode for property tests: each put / publish / get fails with these probabilities, drawn
    #: from `rng` (seed it for reproducible runs).
    rng: random.Random | None = None
    p_put_fail: float = 0.0
    p_put_lost_ack: float = 0.0
    p_publish_fail: float = 0.0
    p_publish_lost_ack: float = 0.0
    p_get_fail: float = 0.0
    puts_seen: int = 0
    log: list[str] = field(default_factory=list)

    def _roll(self, p: float) -> bool:
        return p > 0 and self.rng is not None and self.rng.random() < p

    def clear(self) -> None:
        """Stop injecting anything (the log and counters of what happened stay)."""
        self.put_fail = self.put_timeout = self.put_lost_ack = 0
        self.put_fail_at = set()
        self.corrupt_refs = set()
        self.get_corrupt = self.get_fail = self.publish_fail = self.publish_lost_ack = 0
        self.read_manifest_fail = self.delete_fail = 0
        self.p_put_fail = self.p_put_lost_ack = self.p_publish_fail = self.p_publish_lost_ack = 0.0
        self.p_get_fail = 0.0


def flip_byte(data: bytes, index: int | None = None) -> bytes:
    """`data` with one byte inverted (the middle one by default)."""
    if not data:
        return data
    i = len(data) // 2 if index is None else index % len(data)
    return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]


class MemoryBackend(Backend):
    def __init__(self, storage: MemoryStorage | None = None, faults: Faults | None = None, *,
                 can_discover: bool = True, max_document_size: int = 2**31 - 1,
                 manifest_min_interval: float = 0.0, latency: float = 0.0):
        self.storage = storage if storage is not None else MemoryStorage()
        self.faults = faults if faults is not None else Faults()
        self.latency = latency
        self._info = BackendInfo(name="memory", can_discover=can_discover, max_document_size=max_document_size,
                                 manifest_min_interval=manifest_min_interval)

    @property
    def info(self) -> BackendInfo:
        return self._info

    async def _pause(self) -> None:
        # Always yield once, so concurrency bugs show up even without latency.
        await asyncio.sleep(self.latency)

    def _store(self, name: str, data: bytes) -> str:
        s = self.storage
        s.counter += 1
        ref = f"m{s.counter:012d}"
        s.docs[ref] = (name, bytes(data))
        return ref

    async def put(self, name: str, data: bytes) -> str:
        await self._pause()
        f = self.faults
        if len(data) > self._info.max_document_size:
            raise BackendError(f"document {name!r} is {len(data)} bytes, over this backend's limit of "
                               f"{self._info.max_document_size}", retryable=False)
        if f.put_match is None or name.startswith(f.put_match):
            f.puts_seen += 1
            n = f.puts_seen
            if n in f.put_fail_at or f.put_fail > 0 or f._roll(f.p_put_fail):
                if n not in f.put_fail_at and f.put_fail > 0:
                    f.put_fail -= 1
                f.log.append(f"put {name} #{n}: failed, not stored")
                raise BackendError(f"injected failure storing {name!r}")
            if f.put_timeout > 0:
                f.put_timeout -= 1
                await asyncio.sleep(f.timeout_delay)
                f.log.append(f"put {name} #{n}: timed out, not stored")
                raise BackendError(f"injected timeout storing {name!r}")
            if f.put_lost_ack > 0 or f._roll(f.p_put_lost_ack):
                f.put_lost_ack = max(0, f.put_lost_ack - 1)
                ref = self._store(name, data)
                f.log.append(f"put {name} #{n}: stored as {ref}, reported failed")
                raise BackendError(f"injected lost acknowledgement storing {name!r}")
        return self._store(name, data)

    async def get(self, ref: str) -> bytes:
        await self._pause()
        f = self.faults
        if f.get_fail > 0 or f._roll(f.p_get_fail):
            f.get_fail = max(0, f.get_fail - 1)
            f.log.append(f"get {ref}: failed")
            raise BackendError(f"injected failure reading {ref!r}")
        try:
            _name, data = self.storage.docs[ref]
        except KeyError:
            raise DocumentNotFound(ref) from None
        if ref in f.corrupt_refs or f.get_corrupt > 0:
            if ref not in f.corrupt_refs:
                f.get_corrupt -= 1
            f.log.append(f"get {ref}: corrupted")
            data = flip_byte(data)
        return data

    async def publish_manifest(self, data: bytes) -> None:
        await self._pause()
        f = self.faults
        if f.publish_fail > 0 or f._roll(f.p_publish_fail):
            f.publish_fail = max(0, f.publish_fail - 1)
            f.log.append("publish: failed, not published")
            raise BackendError("injected failure publishing the manifest")
        self.storage.manifest = bytes(data)
        self.storage.manifest_publications += 1
        if f.publish_lost_ack > 0 or f._roll(f.p_publish_lost_ack):
            f.publish_lost_ack = max(0, f.publish_lost_ack - 1)
            f.log.append("publish: published, reported failed")
            raise BackendError("injected lost acknowledgement publishing the manifest")

    async def read_manifest(self) -> bytes | None:
        await self._pause()
        f = self.faults
        if f.read_manifest_fail > 0:
            f.read_manifest_fail -= 1
            f.log.append("read manifest: failed")
            raise BackendError("injected failure reading the manifest")
        return self.storage.manifest

    async def delete(self, refs: list[str]) -> None:
        await self._pause()
        f = self.faults
        if f.delete_fail > 0:
            f.delete_fail -= 1
            f.log.append("delete: failed")
            raise BackendError("injected failure deleting documents")
        for ref in refs:
            self.storage.docs.pop(ref, None)

    async def discover(self, after: str | None) -> list[str]:
        return [ref for ref, _n in await self.discover_named(after)]

    async def discover_named(self, after: str | None) -> list[tuple[str, str | None]]:
        await self._pause()
        if not self._info.can_discover:
            return []
        floor = self.order_key(after) if after is not None else (0,)
        return [(ref, name) for ref, (name, _d) in list(self.storage.docs.items())
                if self.order_key(ref) > floor]

    def order_key(self, ref: str) -> tuple:
        if not (isinstance(ref, str) and ref.startswith("m") and ref[1:].isdigit()):
            raise ValueError(f"{ref!r} is not a memory-backend ref")
        return (int(ref[1:]),)
