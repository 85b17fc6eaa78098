"""The one small interface every storage backend implements (local directory, memory, Telegram).

A backend stores opaque documents (bytes, already enveloped, compressed and maybe encrypted) and
**manifest slots**: entry points, one per writer claim, in one total order ("newest" is the last
created). A writer creates its own slot when it claims the storage and from then on only ever replaces
the content of that slot; the current manifest is the newest slot. No backend offers compare-and-swap;
what the single-writer protocol (snapshot/replica.py, docs/formats.md "Claim protocol") needs from a
backend is only this, each operation linearizable:

- `create_slot` makes a slot newer than every existing one (the directory: exclusive link of
  `MANIFEST.{n+1}`; Telegram: a message sent and pinned, ordered by its message id);
- `newer_slot` answers, by a read made after the caller's last storing step took effect, whether any
  slot newer than the caller's exists.

A backend knows nothing about what the bytes mean. Refs are strings chosen by the backend (a file name,
a message id, ...). Refs returned by `put` sort in storage order when compared with `order_key`, so
restore can tell which of two documents came later.

Errors: every method may raise `BackendError` (an outage or a refusal; `retryable` says whether trying
again may help). When a storing call (`put`, `create_slot`, `replace_slot`) raises, the store may or may
not have taken effect (a lost answer): callers never assume either. Other errors are named per method.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from snapshot.errors import BackendError


@dataclass(frozen=True)
class BackendInfo:
    """What a backend can do; the replica adapts its policy to it."""

    name: str
    #: can list documents stored after a given ref (local dir, MTProto scan); if False, the manifest
    #: must be republished after every delta for deltas to be findable after a crash (Bot API).
    can_discover: bool
    #: largest document this backend accepts, in bytes.
    max_document_size: int
    #: suggested pause between manifest publications (Telegram edits cost rate budget), seconds.
    manifest_min_interval: float = 0.0
    #: documents older than this many seconds can no longer be deleted (Telegram: 48 h for bots, Bot API
    #: and MTProto alike); None: no such limit. Retention leaves those in place and reports them.
    delete_window: float | None = None


@dataclass(frozen=True)
class Slot:
    """One manifest slot: its ref (a file name, a message id) and the manifest document it holds."""

    ref: str
    data: bytes


class SlotRace(BackendError):
    """`create_slot` found a slot newer than the one the caller read: another writer claimed first.
    `newer` names it when known."""

    def __init__(self, message: str, *, newer: str | None = None):
        super().__init__(message, retryable=False)
        self.newer = newer


class Backend(ABC):
    """Store documents and manifest slots.

    Lifecycle: `await backend.open()` before use (checks configuration, connects; writes nothing),
    `await backend.close()` after. Implementations must be safe for concurrent calls from one event
    loop (snapshot parts are uploaded in parallel while deltas keep flowing).
    """

    async def open(self) -> Backend:
        """Check configuration and connect; writes nothing. Returns self. Raises ConfigError for
        configuration a human must fix, BackendError for an outage. Default: nothing to do."""
        return self

    @property
    @abstractmethod
    def info(self) -> BackendInfo: ...

    # -- documents -------------------------------------------------------------------------------------

    @abstractmethod
    async def put(self, name: str, data: bytes) -> str:
        """Store a new document; return its ref. `name` is a hint (e.g. "delta-000000000042").
        BackendError(retryable=False) for a document over `info.max_document_size`."""

    @abstractmethod
    async def get(self, ref: str) -> bytes:
        """Return the exact bytes stored under ref, or raise DocumentNotFound (also for a ref this
        backend could never have made)."""

    @abstractmethod
    async def delete(self, refs: list[str]) -> None:
        """Best-effort removal of superseded documents; missing refs are not an error. Never removes a
        manifest slot."""

    @abstractmethod
    async def discover(self, after: str | None) -> list[str]:
        """Refs of documents stored after `after` (all if None), in storage order. Slots are not
        documents and are never listed.

        Backends with `info.can_discover == False` return [].
        """

    async def discover_named(self, after: str | None) -> list[tuple[str, str | None]]:
        """Like `discover`, each ref paired with the `name` it was stored under when the backend knows it
        without downloading the document (else None). Restore uses names to skip snapshot parts."""
        return [(ref, None) for ref in await self.discover(after)]

    @abstractmethod
    def order_key(self, ref: str) -> tuple:
        """A sort key giving storage order of refs from this backend (ValueError for a foreign ref)."""

    # -- manifest slots --------------------------------------------------------------------------------

    @abstractmethod
    async def create_slot(self, data: bytes, *, after: str | None) -> str:
        """Create a new slot holding `data`, newer than every existing slot; return its ref.

        `after` is the newest slot the caller read (None: it saw none). SlotRace when a slot newer than
        `after` already exists, or is created concurrently and wins (the caller lost the claim race).
        Backends that cannot refuse at creation (Telegram) create anyway: the caller's `newer_slot`
        check that follows decides. BackendError: the slot may exist or not (a lost answer).
        """

    @abstractmethod
    async def replace_slot(self, ref: str, data: bytes) -> None:
        """Atomically replace the content of the caller's own slot `ref` (readers see the old or the
        new bytes, never a mix). DocumentNotFound if the slot is gone (deleted by hand)."""

    @abstractmethod
    async def newer_slot(self, ref: str, *, stored: str | None = None) -> str | None:
        """None if slot `ref` is still the newest slot, else the ref of a newer one (the newest when
        cheap). The answer is read after every storing call of this backend object that returned before
        it (put, replace_slot) took effect, so "None" means: no claim was created before that store.
        `stored` names the document just put when the caller checks after a put (MTProto uses it to
        read only the message-id gap before it). DocumentNotFound if `ref` itself is gone."""

    @abstractmethod
    async def newest_slot(self) -> Slot | None:
        """The newest slot and its bytes, or None when the storage has no slot (empty storage)."""

    @abstractmethod
    async def read_slot(self, ref: str) -> bytes:
        """The bytes slot `ref` holds now; DocumentNotFound if there is no such slot."""

    # -- conveniences ----------------------------------------------------------------------------------

    async def read_manifest(self) -> bytes | None:
        """The newest slot's bytes (None: empty storage). What readers start from."""
        slot = await self.newest_slot()
        return slot.data if slot is not None else None

    async def publish_manifest(self, data: bytes) -> None:
        """Single-writer convenience for tests and tools that own the storage outright: replace the
        newest slot, or create the first. No arbitration: the replica never calls it."""
        slot = await self.newest_slot()
        if slot is None:
            await self.create_slot(data, after=None)
        else:
            await self.replace_slot(slot.ref, data)

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. Default: nothing to do."""



class SingleEntryPoint:
    """Manifest slots over a backend with one mutable entry point (`_put_entry` / `_read_entry`): the
    slot API without arbitration between two creators, only "did anyone replace what I stored" —
    the weaker guarantee of a backend that has no ordered slots yet. Mix in before `Backend`."""

    SLOT_REF = "manifest"
    _last_entry: bytes | None = None

    async def _put_entry(self, data: bytes) -> None:
        raise NotImplementedError

    async def _read_entry(self) -> bytes | None:
        raise NotImplementedError

    async def create_slot(self, data: bytes, *, after: str | None) -> str:
        if after is None and await self._read_entry() is not None:
            raise SlotRace("the storage has a manifest the caller did not see", newer=self.SLOT_REF)
        await self._put_entry(data)
        self._last_entry = bytes(data)
        return self.SLOT_REF

    async def replace_slot(self, ref: str, data: bytes) -> None:
        await self._put_entry(data)
        self._last_entry = bytes(data)

    async def newer_slot(self, ref: str, *, stored: str | None = None) -> str | None:
        current = await self._read_entry()
        if current is None:
            from snapshot.errors import DocumentNotFound

            raise DocumentNotFound(ref)
        return None if current == self._last_entry else self.SLOT_REF

    async def newest_slot(self) -> Slot | None:
        data = await self._read_entry()
        return Slot(self.SLOT_REF, data) if data is not None else None

    async def read_slot(self, ref: str) -> bytes:
        data = await self._read_entry()
        if data is None:
            from snapshot.errors import DocumentNotFound

            raise DocumentNotFound(ref)
        return data
