"""Every error tgsnap raises on purpose. Each names what is wrong and, where it can, what to do."""

from __future__ import annotations


class TgsnapError(Exception):
    """Base of every deliberate tgsnap error."""


class ConfigError(TgsnapError):
    """Bad configuration (missing key, impossible part size, table without a primary key, ...)."""


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
