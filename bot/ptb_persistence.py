"""A python-telegram-bot `BasePersistence` kept in a tgsnap `Store`: user_data, chat_data, bot_data,
callback_data and conversations, flushed, snapshotted and restored with the rest of the store.

    store = await Store.open(backend, schema=StorePersistence.SCHEMA + my_schema)
    app = Application.builder().token(TOKEN).persistence(StorePersistence(store)).build()

Values are encoded as JSON with tags for what JSON cannot hold but python-telegram-bot data commonly
contains (dicts with int or tuple keys, tuples, sets, bytes), so a value comes back with the type it went
in with; anything else (a class instance) is refused with TypeError at the write, naming the type,
rather than pickled: the storage is a Telegram channel, and unpickling what is read from it would run
whatever someone with post rights there put in.

Durability: python-telegram-bot hands data to a persistence only every `update_interval` seconds
(default 60 in python-telegram-bot; 1 here) and confirms updates to Telegram itself, at once, so with
this persistence alone a crash loses up to update_interval + the store's flush interval of data. What
is written is durable like any store write; for exactly-once delivery use aiogram with tgsnap's
durable poller or webhook (docs/integration.md).
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from telegram.ext import BasePersistence, PersistenceInput
from telegram.ext._utils.types import CDCData, ConversationDict, ConversationKey

from core import Store

_TAG = "\x00tgsnap"

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS ptb_user_data (user_id INTEGER PRIMARY KEY, data TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS ptb_chat_data (chat_id INTEGER PRIMARY KEY, data TEXT NOT NULL)",
    # One row each (key 0): python-telegram-bot has one bot_data and one callback_data per bot.
    "CREATE TABLE IF NOT EXISTS ptb_bot_data (id INTEGER PRIMARY KEY CHECK (id = 0), data TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS ptb_callback_data (id INTEGER PRIMARY KEY CHECK (id = 0), data TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS ptb_conversations (
        name TEXT NOT NULL,
        conversation_key TEXT NOT NULL,
        state TEXT NOT NULL,
        PRIMARY KEY (name, conversation_key)
    )""",
]


def _enc(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        if isinstance(value, float) and not math.isfinite(value):
            raise TypeError(f"{value!r} cannot be stored (JSON has no infinities or NaN)")
        return value
    if isinstance(value, list):
        return [_enc(v) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and _TAG not in value:
            return {k: _enc(v) for k, v in value.items()}
        return {_TAG: "map", "items": [[_enc(k), _enc(v)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {_TAG: "tuple", "items": [_enc(v) for v in value]}
    if isinstance(value, set | frozenset):
        return {_TAG: "frozenset" if isinstance(value, frozenset) else "set", "items": [_enc(v) for v in value]}
    if isinstance(value, bytes):
        return {_TAG: "bytes", "b64": base64.b64encode(value).decode()}
    raise TypeError(f"StorePersistence stores JSON values, dicts, tuples, sets and bytes; got "
                    f"{type(value).__name__}")


def _dec(value: Any) -> Any:
    if isinstance(value, list):
        return [_dec(v) for v in value]
    if isinstance(value, dict):
        tag = value.get(_TAG)
        if tag is None:
            return {k: _dec(v) for k, v in value.items()}
        if tag == "map":
            return {_dec(k): _dec(v) for k, v in value["items"]}
        if tag == "tuple":
            return tuple(_dec(v) for v in value["items"])
        if tag == "set":
            return {_dec(v) for v in value["items"]}
        if tag == "frozenset":
            return frozenset(_dec(v) for v in value["items"])
        if tag == "bytes":
            return base64.b64decode(value["b64"])
        raise ValueError(f"unknown tag {tag!r} in stored python-telegram-bot data")
    return value


def dumps(value: Any) -> str:
    """`value` as tagged JSON (TypeError for what it cannot hold, before anything is written)."""
    return json.dumps(_enc(value), ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def loads(text: str) -> Any:
    return _dec(json.loads(text))


class StorePersistence(BasePersistence[dict[Any, Any], dict[Any, Any], dict[Any, Any]]):
    """python-telegram-bot persistence on a tgsnap store. `flush()` makes everything durable."""

    SCHEMA = SCHEMA

    def __init__(self, store: Store, *, store_data: PersistenceInput | None = None,
                 update_interval: float = 1.0):
        super().__init__(store_data=store_data, update_interval=update_interval)
        self.store = store

    # ---- reads (python-telegram-bot calls each once, at start) -----------------------------------

    async def get_user_data(self) -> dict[int, dict[Any, Any]]:
        return {k: loads(v) for k, v in self.store.execute("SELECT user_id, data FROM ptb_user_data")}

    async def get_chat_data(self) -> dict[int, dict[Any, Any]]:
        return {k: loads(v) for k, v in self.store.execute("SELECT chat_id, data FROM ptb_chat_data")}

    async def get_bot_data(self) -> dict[Any, Any]:
        row = self.store.execute("SELECT data FROM ptb_bot_data WHERE id = 0").fetchone()
        return {} if row is None else loads(row[0])

    async def get_callback_data(self) -> CDCData | None:
        row = self.store.execute("SELECT data FROM ptb_callback_data WHERE id = 0").fetchone()
        if row is None:
            return None
        entries, mapping = loads(row[0])
        return [tuple(e) for e in entries], mapping

    async def get_conversations(self, name: str) -> ConversationDict:
        rows = self.store.execute("SELECT conversation_key, state FROM ptb_conversations WHERE name = ?", (name,))
        return {tuple(json.loads(k)): loads(s) for k, s in rows}

    # ---- writes ----------------------------------------------------------------------------------

    async def update_conversation(self, name: str, key: ConversationKey, new_state: object | None) -> None:
        ck = json.dumps(list(key))
        if new_state is None:  # the conversation ended
            self.store.execute("DELETE FROM ptb_conversations WHERE name = ? AND conversation_key = ?", (name, ck))
            return
        self.store.execute(
            "INSERT INTO ptb_conversations VALUES (?, ?, ?) ON CONFLICT (name, conversation_key) "
            "DO UPDATE SET state = excluded.state", (name, ck, dumps(new_state)))

    async def update_user_data(self, user_id: int, data: dict[Any, Any]) -> None:
        self._upsert("ptb_user_data", "user_id", user_id, data)

    async def update_chat_data(self, chat_id: int, data: dict[Any, Any]) -> None:
        self._upsert("ptb_chat_data", "chat_id", chat_id, data)

    async def update_bot_data(self, data: dict[Any, Any]) -> None:
        self._upsert("ptb_bot_data", "id", 0, data)

    async def update_callback_data(self, data: CDCData) -> None:
        entries, mapping = data
        self._upsert("ptb_callback_data", "id", 0, (list(entries), dict(mapping)))

    async def drop_chat_data(self, chat_id: int) -> None:
        self.store.execute("DELETE FROM ptb_chat_data WHERE chat_id = ?", (chat_id,))

    async def drop_user_data(self, user_id: int) -> None:
        self.store.execute("DELETE FROM ptb_user_data WHERE user_id = ?", (user_id,))

    async def refresh_user_data(self, user_id: int, user_data: dict[Any, Any]) -> None:
        pass  # this process is the only writer: what it holds is current

    async def refresh_chat_data(self, chat_id: int, chat_data: dict[Any, Any]) -> None:
        pass

    async def refresh_bot_data(self, bot_data: dict[Any, Any]) -> None:
        pass

    async def flush(self) -> None:
        """python-telegram-bot calls this at shutdown: everything written is durable when it returns."""
        await self.store.flush()

    def _upsert(self, table: str, key: str, value: int, data: Any) -> None:
        text = dumps(data)  # fails before the write for what cannot be stored
        self.store.execute(f"INSERT INTO {table} ({key}, data) VALUES (?, ?) "  # noqa: S608 - fixed names
                           f"ON CONFLICT ({key}) DO UPDATE SET data = excluded.data", (value, text))
