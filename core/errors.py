"""Errors raised by the live store itself (storage errors come from `snapshot.errors`)."""

from __future__ import annotations

from snapshot.errors import TgsnapError


class StoreClosed(TgsnapError):
    """A write reached a store that is closing or closed; reads still work."""


class TransactionConflict(TgsnapError):
    """A write outside `store.transaction()` while another task holds one open.

    One SQLite connection has one transaction; a write from elsewhere would silently join it (and be
    committed or rolled back with it), so it is refused instead.
    """
