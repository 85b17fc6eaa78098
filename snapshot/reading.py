"""Reading storage beside a live writer: retry on the newer manifest instead of reporting damage.

A writer that switches to a new snapshot publishes the manifest first and then deletes what it
superseded; a reader (verify, export, another host's restore) that planned on the old manifest can then
find a listed document gone. That is no damage: the manifest moved on. `settled` runs a read against the
current manifest and, when it reports a missing or changed document, looks again: if the manifest
changed meanwhile, it re-runs the read on the newer one (a bounded number of times); if the manifest is
the same, the fault is real and is reported as it is. Deletions come only after the publication that
supersedes a document, so under an unchanged manifest a missing listed document is real damage.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from snapshot.backend import Backend
from snapshot.cipher import Cipher, as_cipher
from snapshot.errors import ChainError, CorruptDocument, DocumentNotFound, RestoreError, TgsnapError
from snapshot.manifest import Manifest
from snapshot.restore import execute, plan, read_current_manifest
from snapshot.restore_plan import RestorePlan
from snapshot.restored import Progress, Restored

T = TypeVar("T")

#: reads of one storage before giving up on a manifest that keeps changing under the reader (a writer
#: switching snapshots faster than a reader can read one is reported, not retried forever).
ATTEMPTS = 5
#: what a document deleted or replaced under a reader looks like.
VANISHED = (ChainError, RestoreError, CorruptDocument, DocumentNotFound)

Current = tuple[Manifest | None, bytes]


async def current(backend: Backend, cipher: Cipher | None = None, allow_plaintext: bool = False) -> Current:
    return await read_current_manifest(backend, cipher, allow_plaintext)


async def _token(backend: Backend, cipher: Cipher | None, allow_plaintext: bool) -> bytes | None:
    try:
        return (await current(backend, cipher, allow_plaintext))[1]
    except TgsnapError:
        return None  # an unreadable manifest is reported by the read itself


async def settled(backend: Backend, read: Callable[[Current | None], Awaitable[T]], *,
                  failed: Callable[[T], bool] = lambda _r: False, key: bytes | Cipher | None = None,
                  allow_plaintext: bool = False, attempts: int = ATTEMPTS,
                  moved: Callable[[T, int], None] | None = None) -> T:
    """`read(current manifest)` (None: it could not be read; the read meets the error itself), re-run on
    the newer manifest while it fails (raises one of VANISHED, or returns a result `failed` accepts) and
    the manifest changed since that attempt began. The last
    outcome stands when the manifest did not change, or after `attempts` tries; `moved(result, n)` is
    told about a failed result kept after n changes of the manifest."""
    cipher = as_cipher(key)
    for n in range(1, attempts + 1):
        try:
            at: Current | None = await current(backend, cipher, allow_plaintext)
        except TgsnapError:
            at = None  # unreadable: the read itself reports (or raises) what is wrong with it
        token = at[1] if at is not None else None
        try:
            result = await read(at)
        except VANISHED:
            if n == attempts or await _token(backend, cipher, allow_plaintext) == token:
                raise
            continue
        if not failed(result):
            return result
        if n == attempts or await _token(backend, cipher, allow_plaintext) == token:
            if moved is not None and n > 1:
                moved(result, n - 1)
            return result
    raise AssertionError("unreachable")


async def restore_point(backend: Backend, key: bytes | Cipher | None = None, to_seq: int | None = None,
                        to_time: float | None = None, *, progress: Progress | None = None, dry_run: bool = False,
                        parallelism: int = 8, allow_plaintext: bool = False, attempts: int = ATTEMPTS
                        ) -> tuple[RestorePlan, Restored | None]:
    """The plan for a point (the latest, `to_seq` or `to_time`) and, unless `dry_run`, the state it
    restores, safe beside a live writer: planned on one manifest, re-planned on the newer one if a
    switch deleted what the plan needed."""
    cipher = as_cipher(key)

    async def once(at: Current | None) -> tuple[RestorePlan, Restored | None]:
        p = await plan(backend, cipher, to_seq, to_time, progress=progress, parallelism=parallelism,
                       allow_plaintext=allow_plaintext, manifest=at)
        if dry_run:
            return p, None
        return p, await execute(p, backend, cipher, progress=progress, parallelism=parallelism,
                                allow_plaintext=allow_plaintext)

    return await settled(backend, once, key=cipher, allow_plaintext=allow_plaintext, attempts=attempts)


async def restore_settled(backend: Backend, key: bytes | Cipher | None = None, to_seq: int | None = None,
                          to_time: float | None = None, progress: Progress | None = None, *,
                          parallelism: int = 8, allow_plaintext: bool = False,
                          attempts: int = ATTEMPTS) -> Restored:
    """`snapshot.restore.restore`, safe beside a live writer (`restore_point`)."""
    _plan, restored = await restore_point(backend, key, to_seq, to_time, progress=progress,
                                          parallelism=parallelism, allow_plaintext=allow_plaintext,
                                          attempts=attempts)
    assert restored is not None  # not a dry run
    return restored
