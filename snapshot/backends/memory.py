"""An in-memory backend with scriptable faults, for tests of everything above the backend.

`MemoryStorage` is the durable medium: it outlives any backend, replica or store pointed at it, so a
test simulates a crash by dropping those objects and building new ones on the same storage.
`Faults` scripts what goes wrong; every fault it injects is recorded in `Faults.log`. Two backend
objects on one `MemoryStorage` are two processes sharing a storage; `Faults.gate` freezes one of them
in the middle of a call (before or after the storage acted) until the test lets it go, and
`Faults.lose` drops the answer of a call after the storage acted.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from snapshot.backend import Backend, BackendInfo, Slot, SlotRace
from snapshot.errors import BackendError, DocumentNotFound


@dataclass
class MemoryStorage:
    """The durable medium: documents in storage order and the manifest slots (oldest first)."""

    docs: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # ref -> (name, data), insertion order
    slots: list[bytes] = field(default_factory=list)  # slot ref "s{index}"
    counter: int = 0
    manifest_publications: int = 0

    @property
    def manifest(self) -> bytes | None:
        """The newest slot's bytes (what a reader starts from)."""
        return self.slots[-1] if self.slots else None

    @manifest.setter
    def manifest(self, data: bytes | None) -> None:
        # Tests that overwrite or drop "the manifest" by hand: the newest slot, or all of them.
        if data is None:
            self.slots.clear()
        elif self.slots:
            self.slots[-1] = bytes(data)
        else:
            self.slots.append(bytes(data))

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
    #: op -> N: the next N calls of op ("put", "create_slot", "replace_slot") act, then report failure.
    lose: dict[str, int] = field(default_factory=dict)
    gates: list[Gate] = field(default_factory=list)

    def gate(self, op: str, when: str = "after", match: str | None = None) -> Gate:
        """Freeze the next call of `op` ("put", "create_slot", "replace_slot", "newer_slot",
        "newest_slot", "read_slot", "get") `before` or `after` the storage acts, until `gate.open()`.
        `match`: only puts whose name starts with it. `await gate.reached.wait()` to know it is frozen."""
        if when not in ("before", "after"):
            raise ValueError("when is 'before' or 'after'")
        g = Gate(op, when, match)
        self.gates.append(g)
        return g

    async def _at(self, op: str, when: str, name: str | None = None) -> None:
        for g in self.gates:
            if g.op == op and g.when == when and (g.match is None or (name or "").startswith(g.match)):
                self.gates.remove(g)
                self.log.append(f"{op} {name or ''}: frozen {when} acting".replace("  ", " "))
                g.reached.set()
                await g.released.wait()
                return

    def _lost(self, op: str) -> bool:
        n = self.lose.get(op, 0)
        if n > 0:
            self.lose[op] = n - 1
            return True
        return False

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
        self.lose = {}
        for g in self.gates:
            g.open()
        self.gates = []


@dataclass
class Gate:
    """A frozen call: `reached` is set once a call is held at it, `open()` lets it continue."""

    op: str
    when: str
    match: str | None = None
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def open(self) -> None:
        self.released.set()


def flip_byte(data: bytes, index: int | None = None) -> bytes:
    """`data` with one byte inverted (the middle one by default)."""
    if not data:
        return data
    i = len(data) // 2 if index is None else index % len(data)
    return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]


class MemoryBackend(Backend):
    def __init__(self, storage: MemoryStorage | None = None, faults: Faults | None = None, *,
                 can_discover: bool = True, max_document_size: int = 2**31 - 1,
                 manifest_min_interval: float = 0.0, latency: float = 0.0, delete_window: float | None = None):
        self.storage = storage if storage is not None else MemoryStorage()
        self.faults = faults if faults is not None else Faults()
        self.latency = latency
        self._info = BackendInfo(name="memory", can_discover=can_discover, max_document_size=max_document_size,
                                 manifest_min_interval=manifest_min_interval, delete_window=delete_window)

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
        await f._at("put", "before", name)
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
        ref = self._store(name, data)
        await f._at("put", "after", name)
        if f._lost("put"):
            f.log.append(f"put {name}: stored as {ref}, answer lost")
            raise BackendError(f"injected lost answer storing {name!r}")
        return ref

    async def get(self, ref: str) -> bytes:
        await self._pause()
        f = self.faults
        await f._at("get", "before", ref)
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

    # -- slots ---------------------------------------------------------------------------------------------

    @staticmethod
    def _slot_index(ref: str) -> int:
        if isinstance(ref, str) and ref.startswith("s") and ref[1:].isdigit():
            return int(ref[1:])
        raise DocumentNotFound(ref)

    async def create_slot(self, data: bytes, *, after: str | None) -> str:
        await self._pause()
        f = self.faults
        await f._at("create_slot", "before")
        if f.publish_fail > 0 or f._roll(f.p_publish_fail):
            f.publish_fail = max(0, f.publish_fail - 1)
            f.log.append("publish: failed, not published")
            raise BackendError("injected failure creating a manifest slot")
        slots = self.storage.slots
        seen = -1 if after is None else self._slot_index(after)
        if len(slots) - 1 != seen:
            # What one atomic step of the medium decides: exclusive creation of slot seen + 1.
            raise SlotRace(f"manifest slot s{seen + 1} already exists: another writer claimed first",
                           newer=f"s{len(slots) - 1}")
        slots.append(bytes(data))
        ref = f"s{len(slots) - 1}"
        self.storage.manifest_publications += 1
        await f._at("create_slot", "after")
        if f.publish_lost_ack > 0 or f._lost("create_slot"):
            f.publish_lost_ack = max(0, f.publish_lost_ack - 1)
            f.log.append("publish: published, reported failed")
            raise BackendError("injected lost answer creating a manifest slot")
        return ref

    async def replace_slot(self, ref: str, data: bytes) -> None:
        await self._pause()
        f = self.faults
        await f._at("replace_slot", "before")
        if f.publish_fail > 0 or f._roll(f.p_publish_fail):
            f.publish_fail = max(0, f.publish_fail - 1)
            f.log.append("publish: failed, not published")
            raise BackendError("injected failure publishing the manifest")
        i = self._slot_index(ref)
        if i >= len(self.storage.slots):
            raise DocumentNotFound(ref)
        self.storage.slots[i] = bytes(data)
        self.storage.manifest_publications += 1
        await f._at("replace_slot", "after")
        if f.publish_lost_ack > 0 or f._roll(f.p_publish_lost_ack) or f._lost("replace_slot"):
            f.publish_lost_ack = max(0, f.publish_lost_ack - 1)
            f.log.append("publish: published, reported failed")
            raise BackendError("injected lost acknowledgement publishing the manifest")

    async def newer_slot(self, ref: str, *, stored: str | None = None) -> str | None:
        await self._pause()
        f = self.faults
        await f._at("newer_slot", "before")
        if f.read_manifest_fail > 0:
            f.read_manifest_fail -= 1
            f.log.append("read manifest: failed")
            raise BackendError("injected failure reading the manifest slots")
        i = self._slot_index(ref)
        n = len(self.storage.slots)
        if i >= n:
            raise DocumentNotFound(ref)
        return None if i == n - 1 else f"s{n - 1}"

    async def newest_slot(self) -> Slot | None:
        await self._pause()
        f = self.faults
        await f._at("newest_slot", "before")
        if f.read_manifest_fail > 0:
            f.read_manifest_fail -= 1
            f.log.append("read manifest: failed")
            raise BackendError("injected failure reading the manifest")
        slots = self.storage.slots
        return Slot(f"s{len(slots) - 1}", slots[-1]) if slots else None

    async def read_slot(self, ref: str) -> bytes:
        await self._pause()
        f = self.faults
        await f._at("read_slot", "before")
        i = self._slot_index(ref)
        if i >= len(self.storage.slots):
            raise DocumentNotFound(ref)
        return self.storage.slots[i]

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
