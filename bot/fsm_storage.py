"""An aiogram FSM storage kept in a tgsnap `Store`: a drop-in for MemoryStorage or RedisStorage.

    store = await Store.open(backend, schema=StoreStorage.SCHEMA + my_schema)
    dp = Dispatcher(storage=StoreStorage(store))

State and data of every `StorageKey` live in one row of `aiogram_fsm`, so they are flushed, snapshotted
and restored with the rest of the store. Every write is one statement (an UPSERT or a DELETE), never a
transaction, so FSM writes can interleave with any other task's writes. A key whose state is None and
whose data is empty has no row, as in RedisStorage, so the table holds only live conversations.

Durability: FSM writes are store writes, so with tgsnap's poller or webhook (bot/polling.py,
bot/webhook.py) an update that changed state or data is confirmed to Telegram only once that change is
durable; after a crash Telegram delivers it again and it arrives in the state last made durable.
StoreStorage's methods never suspend, so writes between two suspending awaits of a handler land in one
capture (docs/integration.md).

Key mapping: `thread_id=None` is stored as 0 and `business_connection_id=None` as '' (a primary key
cannot hold NULL). Telegram never issues thread id 0 or an empty connection id, and aiogram's own
DefaultKeyBuilder (hence RedisStorage) already treats 0 and '' as absent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from copy import copy
from typing import Any

from aiogram.exceptions import DataNotDictLikeError
from aiogram.fsm.state import State
from aiogram.fsm.storage.base import BaseStorage, StateType, StorageKey

from core import Store

TABLE = "aiogram_fsm"

_KEY = "bot_id, chat_id, user_id, thread_id, business_connection_id, destiny"
_WHERE = ("bot_id = ? AND chat_id = ? AND user_id = ? AND thread_id = ? AND business_connection_id = ? "
          "AND destiny = ?")

SCHEMA = [
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        bot_id INTEGER NOT NULL,
        chat_id INTEGER NOT NULL,
        user_id INTEGER NOT NULL,
        thread_id INTEGER NOT NULL,
        business_connection_id TEXT NOT NULL,
        destiny TEXT NOT NULL,
        state TEXT,
        data TEXT NOT NULL DEFAULT '{{}}',
        PRIMARY KEY ({_KEY})
    )""",
]

_SET_STATE = (f"INSERT INTO {TABLE} ({_KEY}, state) VALUES (?, ?, ?, ?, ?, ?, ?) "
              f"ON CONFLICT ({_KEY}) DO UPDATE SET state = excluded.state")
_SET_DATA = (f"INSERT INTO {TABLE} ({_KEY}, data) VALUES (?, ?, ?, ?, ?, ?, ?) "
             f"ON CONFLICT ({_KEY}) DO UPDATE SET data = excluded.data")
_CLEAR_STATE = f"UPDATE {TABLE} SET state = NULL WHERE {_WHERE}"
_CLEAR_DATA = f"UPDATE {TABLE} SET data = '{{}}' WHERE {_WHERE}"
_DROP_IF_EMPTY = f"DELETE FROM {TABLE} WHERE {_WHERE} AND state IS NULL AND data = '{{}}'"
_GET_STATE = f"SELECT state FROM {TABLE} WHERE {_WHERE}"
_GET_DATA = f"SELECT data FROM {TABLE} WHERE {_WHERE}"


def key_params(key: StorageKey) -> tuple[int, int, int, int, str, str]:
    return (key.bot_id, key.chat_id, key.user_id, key.thread_id or 0, key.business_connection_id or "",
            key.destiny)


class StoreStorage(BaseStorage):
    """FSM state and data in a tgsnap store. `close()` leaves the store open: whoever opened it closes it."""

    SCHEMA = SCHEMA

    def __init__(self, store: Store, *, json_dumps: Callable[..., str] = json.dumps,
                 json_loads: Callable[..., Any] = json.loads):
        self.store = store
        self.json_dumps = json_dumps
        self.json_loads = json_loads

    async def set_state(self, key: StorageKey, state: StateType = None) -> None:
        value = state.state if isinstance(state, State) else state
        params = key_params(key)
        if value is None:
            self.store.execute(_CLEAR_STATE, params)
            self.store.execute(_DROP_IF_EMPTY, params)
        else:
            self.store.execute(_SET_STATE, (*params, value))

    async def get_state(self, key: StorageKey) -> str | None:
        row = self.store.execute(_GET_STATE, key_params(key)).fetchone()
        return None if row is None else row[0]

    async def set_data(self, key: StorageKey, data: Mapping[str, Any]) -> None:
        if not isinstance(data, dict):
            msg = f"Data must be a dict or dict-like object, got {type(data).__name__}"
            raise DataNotDictLikeError(msg)
        self._write_data(key, data)

    async def get_data(self, key: StorageKey) -> dict[str, Any]:
        return self._read_data(key)

    async def get_value(self, storage_key: StorageKey, dict_key: str, default: Any | None = None) -> Any | None:
        return copy(self._read_data(storage_key).get(dict_key, default))

    async def update_data(self, key: StorageKey, data: Mapping[str, Any]) -> dict[str, Any]:
        # Read and write with no await in between, so concurrent updates of one key cannot lose each other.
        current = self._read_data(key)
        current.update(data)
        self._write_data(key, current)
        return current.copy()

    async def close(self) -> None:
        pass

    def _read_data(self, key: StorageKey) -> dict[str, Any]:
        row = self.store.execute(_GET_DATA, key_params(key)).fetchone()
        return {} if row is None else self.json_loads(row[0])

    def _write_data(self, key: StorageKey, data: Mapping[str, Any]) -> None:
        params = key_params(key)
        if data:
            # Serialise first: data that JSON cannot hold fails here, before anything is written.
            self.store.execute(_SET_DATA, (*params, self.json_dumps(data)))
        else:
            self.store.execute(_CLEAR_DATA, params)
            self.store.execute(_DROP_IF_EMPTY, params)
