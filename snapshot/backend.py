"""The one small interface every storage backend implements (local directory, memory, Telegram).

A backend stores opaque documents (bytes, already enveloped, compressed and maybe encrypted) and one
mutable entry point, the manifest. It knows nothing about what the bytes mean.

Refs are strings chosen by the backend (a file name, a message id, ...). Refs returned by `put` sort
in storage order when compared with `order_key`, so restore can tell which of two documents came later.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


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


class Backend(ABC):
    """Store documents and publish the manifest. Every method may raise `BackendError`.

    Implementations must be safe for concurrent calls from one event loop (snapshot parts are uploaded
    in parallel while deltas keep flowing).
    """

    @property
    @abstractmethod
    def info(self) -> BackendInfo: ...

    @abstractmethod
    async def put(self, name: str, data: bytes) -> str:
        """Store a new document; return its ref. `name` is a hint (e.g. "delta-000000000042")."""

    @abstractmethod
    async def get(self, ref: str) -> bytes:
        """Return the exact bytes stored under ref, or raise DocumentNotFound."""

    @abstractmethod
    async def publish_manifest(self, data: bytes) -> None:
        """Atomically make `data` the current manifest (readers see the old or the new one, never a mix)."""

    @abstractmethod
    async def read_manifest(self) -> bytes | None:
        """The current manifest's bytes, or None for empty storage."""

    @abstractmethod
    async def delete(self, refs: list[str]) -> None:
        """Best-effort removal of superseded documents; missing refs are not an error."""

    @abstractmethod
    async def discover(self, after: str | None) -> list[str]:
        """Refs of documents stored after `after` (all if None), in storage order.

        Backends with `info.can_discover == False` return [].
        """

    async def discover_named(self, after: str | None) -> list[tuple[str, str | None]]:
        """Like `discover`, each ref paired with the `name` it was stored under when the backend knows it
        without downloading the document (else None). Restore uses names to skip snapshot parts."""
        return [(ref, None) for ref in await self.discover(after)]

    @abstractmethod
    def order_key(self, ref: str) -> tuple:
        """A sort key giving storage order of refs from this backend."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. Default: nothing to do."""
