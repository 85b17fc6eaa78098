"""A single row over the backend's document limit never stalls durability: no delta can carry it
(`OversizeRow`), so the flusher ships that cut as a snapshot (parts split under the limit), releases the
cut's waiters only once the snapshot is durable, and deltas flow again after it."""

from __future__ import annotations

import asyncio
import os
import tempfile

import pytest

from core import Store, StoreConfig
from snapshot.backends.memory import Faults, MemoryBackend, MemoryStorage
from snapshot.replica import ReplicaConfig
from snapshot.restore import restore

LIMIT = 4096
SCHEMA = ["CREATE TABLE files (id INTEGER PRIMARY KEY, body BLOB NOT NULL)"]


def _config(**kw) -> StoreConfig:
    kw.setdefault("flush_interval", 3600.0)
    return StoreConfig(replica=ReplicaConfig(part_size=LIMIT, shard_size=8192, inline_delta_bytes=0),
                       retry_min=0.01, retry_max=0.05, **kw)


def _rows(conn) -> list[tuple]:
    return conn.execute("SELECT id, body FROM files ORDER BY id").fetchall()


@pytest.fixture(params=[True, False], ids=["discover", "no-discovery"])
def make(request):
    storage = MemoryStorage()
    return lambda faults=None: MemoryBackend(storage, faults, can_discover=request.param,
                                             max_document_size=LIMIT)


async def test_an_oversize_row_goes_out_as_a_snapshot_and_deltas_continue(make):
    store = await Store.open(make(), SCHEMA, config=_config())
    try:
        store.execute("INSERT INTO files VALUES (1, ?)", (b"small",))
        await store.flush(timeout=10)
        big = os.urandom(5 * LIMIT)  # incompressible: no delta document can hold it
        store.execute("INSERT INTO files VALUES (2, ?)", (big,))
        store.execute("INSERT INTO files VALUES (3, ?)", (b"beside it",))
        await store.flush(timeout=10)
        got = await restore(make())
        assert _rows(got.conn) == [(1, b"small"), (2, big), (3, b"beside it")]
        assert got.snapshot_seq == got.seq  # carried by a snapshot, not by a delta
        # durability continues with ordinary deltas
        store.execute("UPDATE files SET body = ? WHERE id = 1", (b"after",))
        await store.flush(timeout=10)
        got = await restore(make())
        assert _rows(got.conn) == [(1, b"after"), (2, big), (3, b"beside it")]
        assert got.deltas_applied == 1
    finally:
        await store.close()


async def test_waiters_are_released_only_once_the_snapshot_is_durable():
    storage = MemoryStorage()
    faults = Faults(put_match="snapshot-")
    backend = MemoryBackend(storage, faults, max_document_size=LIMIT)
    store = await Store.open(backend, SCHEMA, config=_config())
    try:
        big = os.urandom(3 * LIMIT)
        faults.put_fail = 10**6  # every snapshot part upload fails for now
        store.execute("INSERT INTO files VALUES (7, ?)", (big,))
        with pytest.raises(TimeoutError):
            await store.flush(timeout=0.5)
        got = await restore(MemoryBackend(storage))
        tables = {r[0] for r in got.conn.execute("SELECT name FROM sqlite_master")}
        assert "files" not in tables or _rows(got.conn) == []  # not acknowledged, not durable
        faults.put_fail = 0  # storage recovers: the retry ships the snapshot, the waiter returns
        await store.flush(timeout=10)
        assert _rows((await restore(MemoryBackend(storage))).conn) == [(7, big)]
    finally:
        await store.close()


async def test_a_snapshot_request_during_the_oversize_cut_is_answered(tmp_path, monkeypatch):
    # The snapshot's scratch copy (core/snapcopy.py) lives in TMPDIR: here, one the test can look into.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    storage = MemoryStorage()
    store = await Store.open(MemoryBackend(storage, max_document_size=LIMIT), SCHEMA, config=_config())
    try:
        store.execute("INSERT INTO files VALUES (1, ?)", (os.urandom(2 * LIMIT),))
        flushed = asyncio.ensure_future(store.flush(timeout=10))
        receipt = await store.snapshot(timeout=10)
        await flushed
        assert receipt.base_seq >= 0
        assert len(_rows((await restore(MemoryBackend(storage))).conn)) == 1
    finally:
        await store.close()
    # The copy started for the request was cancelled before it ran, once the cut became the snapshot:
    # its scratch file must not be left behind.
    assert list(tmp_path.glob("tgsnap-snapshot-*")) == []
