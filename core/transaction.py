"""The handle given by `async with store.transaction() as tx`: statements that commit or roll back together."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.store import Store


class Transaction:
    """Runs statements inside the store's open `BEGIN IMMEDIATE ... COMMIT`.

    No capture happens while it is open, so its writes reach storage all in one delta or not at all.
    """

    def __init__(self, store: Store):
        self._store = store
        self.open = True
        #: the body ran COMMIT/ROLLBACK itself: the store must not assume its own ROLLBACK undid it all.
        self.left_transaction = False

    def execute(self, sql: str, params: Iterable[Any] | dict[str, Any] = ()) -> sqlite3.Cursor:
        self._check()
        return self._store._run_tracked(self._store._conn.execute, sql, params)

    def executemany(self, sql: str, seq_of_params: Iterable[Any]) -> sqlite3.Cursor:
        self._check()
        return self._store._run_tracked(self._store._conn.executemany, sql, seq_of_params)

    def _check(self) -> None:
        if not self.open:
            raise RuntimeError("this transaction is already committed or rolled back")
