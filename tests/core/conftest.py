from __future__ import annotations

import pytest

from core import Store, StoreConfig
from tests.core.fakes import FakeReplica

USERS = "CREATE TABLE users (chat_id INTEGER PRIMARY KEY, name TEXT NOT NULL, clicks INTEGER NOT NULL DEFAULT 0)"


@pytest.fixture
def replica() -> FakeReplica:
    return FakeReplica()


@pytest.fixture
async def open_store(replica):
    """open_store(schema=..., **config) -> Store on the fake replica; closed (abandoned) after the test."""
    stores: list[Store] = []

    async def make(schema=(USERS,), **config) -> Store:
        config.setdefault("flush_interval", 3600.0)  # tests flush explicitly unless they test the loop
        config.setdefault("retry_min", 0.01)
        config.setdefault("retry_max", 0.05)
        store = await Store.open_replica(replica, schema=list(schema), config=StoreConfig(**config))
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.abandon()
