"""Errors reach callers as copies (one object raised in many tasks would collect everyone's tracebacks);
every copy keeps its class, message and fields (`retryable`, `retry_after`, `ref`, structured fields)."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

import core.errors
import snapshot.errors
from core import StoreClosed, TransactionConflict
from snapshot.backend import SlotRace
from snapshot.errors import (
    BackendError,
    ChainError,
    ConfigError,
    CorruptDocument,
    DocumentNotFound,
    EncryptionError,
    FencedError,
    MissingManifest,
    NoStorage,
    OversizeRow,
    RestoreError,
    StorageBusy,
    TgsnapError,
    copy_error,
)

SAMPLES = [
    TgsnapError("x"), ConfigError("bad"), NoStorage("no such directory"),
    BackendError("down", retryable=False, retry_after=3.5),
    DocumentNotFound("m17"), CorruptDocument("r1", "payload checksum mismatch"), EncryptionError("key"),
    ChainError("gap"), RestoreError("digest"), MissingManifest("none"), SlotRace("lost", newer="s4"),
    OversizeRow("row too big", table="users", limit=1024),
    StorageBusy("held", writer_id="w", host="h", pid=7, expires_at=12.5, epoch=3),
    FencedError("fenced", rival_claim="ab" * 16, rival_epoch=4, rival_writer="w2", claim="cd" * 16),
    OversizeRow("a row of table 't' is over the limit", table="t", limit=20_000_000),
    StoreClosed("closed"), TransactionConflict("busy"),
    sqlite3.OperationalError("database is locked"), OSError(28, "No space left on device"),
]


def _classes(module) -> set[type]:
    return {v for v in vars(module).values()
            if isinstance(v, type) and issubclass(v, BaseException) and v.__module__ == module.__name__}


def test_every_error_class_has_a_sample():
    assert _classes(snapshot.errors) | _classes(core.errors) <= {type(e) for e in SAMPLES}


@pytest.mark.parametrize("exc", SAMPLES, ids=lambda e: type(e).__name__)
def test_copy_keeps_class_message_and_fields(exc):
    try:
        raise exc
    except BaseException as raised:
        twin = copy_error(raised)
    assert twin is not exc and type(twin) is type(exc)
    assert str(twin) == str(exc) and twin.args == exc.args and twin.__dict__ == exc.__dict__
    assert twin.__traceback__ is None
    if isinstance(exc, OSError):
        assert (twin.errno, twin.strerror) == (exc.errno, exc.strerror)


async def test_waiters_get_copies_with_fields(open_store, replica):
    store = await open_store()
    replica.snapshot_failures = [BackendError("part upload failed", retryable=False, retry_after=9.0)]
    with pytest.raises(BackendError) as e:
        await store.snapshot()
    assert (e.value.retryable, e.value.retry_after) == (False, 9.0)
    replica.gate = asyncio.Event()
    store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'a')")
    waiting = [asyncio.create_task(store.flush()) for _ in range(2)]
    await replica.entered.wait()
    fenced = FencedError("taken over", rival_claim="ab" * 16, rival_epoch=4, rival_writer="w2", claim="cd" * 16)
    store._flusher.fence(fenced)
    for task in waiting:
        with pytest.raises(FencedError) as e:
            await task
        assert e.value is not fenced and e.value.__dict__ == fenced.__dict__
    with pytest.raises(FencedError) as e:
        await store.flush()
    assert e.value.rival_writer == "w2"
    replica.gate.set()


async def test_a_failing_image_at_the_cut_loses_no_marks_and_satisfies_no_waiter(open_store, replica, monkeypatch):
    import core.flusher
    from tests.core.fakes import rows

    store = await open_store()
    await store.flush()
    real = core.flusher.image_mod.capture
    failures = []

    def failing(conn):
        if not failures:
            failures.append(1)
            raise sqlite3.OperationalError("unable to serialize")
        return real(conn)

    monkeypatch.setattr(core.flusher.image_mod, "capture", failing)
    store._flusher._sync_image = True  # the in-cut image (the fallback when the copy off the loop fails)
    store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'a')")
    replica.snapshot_gate = asyncio.Event()  # the image (which would hold the row anyway) is not stored yet
    snap = asyncio.create_task(store.snapshot())
    await asyncio.wait_for(store.flush(), 3)
    assert failures and not replica.snapshots
    assert [r for cs in replica.deltas for r in cs.tables.get("users", ()) and cs.tables["users"].upserts] == [
        (1, "a", 0)]
    replica.snapshot_gate.set()
    await asyncio.wait_for(snap, 3)
    assert rows(replica.state(), "users") == [(1, "a", 0)]
