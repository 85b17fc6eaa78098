"""Every error tgsnap raises on purpose. Each names what is wrong and, where it can, what to do.

Errors carry structured fields (`retryable`, `ref`, the holder of a lease, the rival of a fenced
claim) so callers never parse messages. Every error survives `copy.copy` and `pickle` with its message
and fields intact: `__reduce__` rebuilds the object from its `args` and `__dict__` without calling
`__init__` again (which would re-wrap the message or lose keyword-only fields).
"""

from __future__ import annotations

from typing import TypedDict, TypeVar

E = TypeVar("E", bound=BaseException)


def copy_error(exc: E) -> E:
    """A fresh copy of `exc` (no traceback), with every field it carries: its args and its `__dict__`
    (`retryable`, `retry_after`, `ref`, structured fields) and its cause. Works for any exception, not
    only tgsnap's: rebuilding through the constructor (`type(exc)(*exc.args)`) is wrong for any class
    whose constructor takes other arguments than it stores in `args`; this never calls `__init__`.

    One exception object raised in many tasks would collect everyone's tracebacks, so waiters each get a
    copy.
    """
    try:
        new = type(exc).__new__(type(exc), *exc.args)
        new.args = exc.args
        new.__dict__.update(exc.__dict__)
    except Exception:
        return exc
    new.__cause__ = exc.__cause__
    new.__context__ = exc.__context__
    new.__suppress_context__ = exc.__suppress_context__
    return new


def _rebuild(cls, args, state):
    obj = cls.__new__(cls)
    obj.args = args
    obj.__dict__.update(state)
    return obj


class TgsnapError(Exception):
    """Base of every deliberate tgsnap error."""

    def __reduce__(self):
        return _rebuild, (type(self), self.args, dict(self.__dict__))


class ConfigError(TgsnapError):
    """Bad configuration (missing key, impossible part size, table without a primary key, ...)."""


class NoStorage(TgsnapError):
    """There is no storage where the configuration points: the directory does not exist, or the storage
    holds nothing (exit 5). Told apart from success so that a typo in --storage-dir, or a script run
    against the wrong channel, does not pass for healthy storage that happens to be empty, and so that a
    bot pointed at a mistyped directory does not start empty."""


class TelegramAnswer(TypedDict, total=False):
    """What Telegram said, as `BackendError`'s keyword arguments (backends build it once per error)."""

    telegram_error: str | None
    telegram_code: int | None


class BackendError(TgsnapError):
    """A storage operation failed. `retryable` says whether trying again later may succeed."""

    def __init__(self, message: str, *, retryable: bool = True, retry_after: float | None = None,
                 telegram_error: str | None = None, telegram_code: int | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        #: Telegram's own name for the failure when Telegram answered (MTProto `FILE_PART_3_MISSING`, Bot API
        #: description `Bad Request: invalid file_id`) and its numeric class (400, 406, 420, 429, ...):
        #: callers branch on these, never on the message text.
        self.telegram_error = telegram_error
        self.telegram_code = telegram_code


class DocumentNotFound(BackendError):
    """The backend has no document under that ref."""

    def __init__(self, ref: str):
        super().__init__(f"document {ref!r} not found in storage", retryable=False)
        self.ref = ref


class OversizeRow(BackendError):
    """One row (or a change set's schema part) encodes over the backend's document limit: no split of the
    cut can ship it as deltas. Not retryable as a delta; a snapshot at that cut can hold it (parts are
    split at any byte). Fields: `table`, `limit`."""

    def __init__(self, message: str, *, table: str | None = None, limit: int | None = None):
        super().__init__(message, retryable=False)
        self.table = table
        self.limit = limit


class CorruptDocument(TgsnapError):
    """A document failed verification (magic, version, checksum, truncation, wrong kind, chain link)."""

    def __init__(self, ref: str | None, reason: str):
        where = f"document {ref!r}" if ref is not None else "document"
        super().__init__(f"{where}: {reason}")
        self.ref = ref
        self.reason = reason


class EncryptionError(TgsnapError):
    """Encrypted data and no key, a wrong key, or a key where the data is not encrypted."""


class ChainError(TgsnapError):
    """The delta chain has a gap, a fork or a link that does not match; names the seq and ref at fault."""


class RestoreError(TgsnapError):
    """Restore could not rebuild a verified state (digest mismatch, missing part, ...)."""


class MissingManifest(ConfigError):
    """Storage holds documents but no manifest: writers refuse to start a new, empty storage over them."""


class StorageBusy(TgsnapError):
    """Another writer holds the storage (a live lease, or a claim that won the race); names the holder.

    Fields (None when unknown): `writer_id`, `host`, `pid`, `expires_at` (unix time the holder's lease
    runs out), `epoch` (the holder's epoch).
    """

    def __init__(self, message: str, *, writer_id: str | None = None, host: str | None = None,
                 pid: int | None = None, expires_at: float | None = None, epoch: int | None = None):
        super().__init__(message)
        self.writer_id = writer_id
        self.host = host
        self.pid = pid
        self.expires_at = expires_at
        self.epoch = epoch


class FencedError(TgsnapError):
    """This writer's claim was superseded: it acknowledges nothing more and deletes nothing.

    Fields (None when unknown): `rival_claim` (hex claim id of the newer claim), `rival_epoch`,
    `rival_writer` (its writer id), `claim` (hex id of this writer's own claim).
    """

    def __init__(self, message: str, *, rival_claim: str | None = None, rival_epoch: int | None = None,
                 rival_writer: str | None = None, claim: str | None = None):
        super().__init__(message)
        self.rival_claim = rival_claim
        self.rival_epoch = rival_epoch
        self.rival_writer = rival_writer
        self.claim = claim
