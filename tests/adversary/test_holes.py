"""Holes found while testing the claim protocol that belong to other parts of the code, each kept as a
regression test once fixed."""

from __future__ import annotations

import pytest

from core import Store, StoreConfig
from snapshot.backends.memory import MemoryBackend, MemoryStorage
from snapshot.errors import FencedError

SCHEMA = ["CREATE TABLE t(k INTEGER PRIMARY KEY, v INTEGER)"]


async def test_close_of_a_superseded_writer_does_not_return_as_if_its_writes_were_durable():
    storage = MemoryStorage()
    config = StoreConfig(flush_interval=3600.0, writer_id="bot")
    old = await Store.open(MemoryBackend(storage), schema=SCHEMA, config=config)
    new = await Store.open(MemoryBackend(storage), schema=SCHEMA, config=config)  # a restart's claim
    old.execute("INSERT INTO t VALUES (1, 1)")  # accepted: the old writer does not know yet
    try:
        with pytest.raises(FencedError):
            await old.close()  # its final flush is fenced: these writes are not durable
    finally:
        await new.close()
