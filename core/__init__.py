"""core — the live store: in-memory SQLite, dirty-row tracking, change capture, the flush loop.

    from core import Store, StoreConfig
    store = await Store.open(backend, schema=["CREATE TABLE users (chat_id INTEGER PRIMARY KEY, name TEXT)"])

See docs/architecture.md.
"""

from core.config import StoreConfig
from core.errors import StoreClosed, TransactionConflict
from core.migrations import Migration
from core.stats import StoreStats
from core.store import Store
from core.transaction import Transaction
from snapshot.errors import ConfigError, FencedError

__all__ = [
    "ConfigError",
    "FencedError",
    "Migration",
    "Store",
    "StoreClosed",
    "StoreConfig",
    "StoreStats",
    "Transaction",
    "TransactionConflict",
]
