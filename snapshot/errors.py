"""Every error tgsnap raises on purpose. Each names what is wrong and, where it can, what to do."""

from __future__ import annotations


def copy_error(exc: BaseException) -> BaseException:
    """A fresh copy of `exc` (no traceback), with every field it carries: its args and its `__dict__`
    (`retryable`, `retry_after`, `ref`, structured fields subclasses add) and its cause.

    One exception object raised in many tasks would collect everyone's tracebacks, so waiters each get a
    copy. Rebuilding through the constructor (`type(exc)(*exc.args)`) is wrong for any class whose
    constructor takes other arguments than it stores in `args`; this never calls `__init__`.
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


def _rebuild(cls: type, args: tuple, state: dict) -> BaseException:
    new = cls.__new__(cls, *args)
    new.args = args
    new.__dict__.update(state)
    return new


class TgsnapError(Exception):
    """Base of every deliberate tgsnap error. Copies (`copy.copy`, pickle) keep every field."""

    def __reduce__(self):
        return _rebuild, (type(self), self.args, dict(self.__dict__))


class ConfigError(TgsnapError):
    """Bad configuration (missing key, impossible part size, table without a primary key, ...)."""


class BackendError(TgsnapError):
    """A storage operation failed. `retryable` says whether trying again later may succeed."""

    def __init__(self, message: str, *, retryable: bool = True, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class DocumentNotFound(BackendError):
    """The backend has no document under that ref."""

    def __init__(self, ref: str):
        super().__init__(f"document {ref!r} not found in storage", retryable=False)
        self.ref = ref


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


class StorageBusy(TgsnapError):
    """Another live writer holds the storage lease; names the holder and when the lease expires."""


class FencedError(TgsnapError):
    """This writer lost the storage to a newer epoch and must stop accepting writes."""
