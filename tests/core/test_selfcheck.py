"""Self-verification: the live store restores its own storage and proves the digests equal; damage in
storage is a failure naming the restore's error; the logical digest ignores page layout, not contents."""

from __future__ import annotations

import asyncio
import sqlite3

from core import Store, StoreConfig
from core.selfcheck import SelfVerifier, self_verify
from snapshot.backends.memory import Faults, MemoryBackend, MemoryStorage, flip_byte
from snapshot.digest import state_digest
from snapshot.replica import ReplicaConfig

USERS = "CREATE TABLE users (chat_id INTEGER PRIMARY KEY, name TEXT NOT NULL, clicks INTEGER NOT NULL DEFAULT 0)"


async def open_store(storage: MemoryStorage) -> tuple[Store, MemoryBackend]:
    backend = MemoryBackend(storage, Faults())
    store = await Store.open(backend, schema=[USERS],
                             config=StoreConfig(flush_interval=0.05, replica=ReplicaConfig(snapshot_every_deltas=4)))
    return store, backend


async def test_the_live_state_equals_its_restore_while_writes_keep_coming():
    store, backend = await open_store(MemoryStorage())
    try:
        stop = asyncio.Event()

        async def clicks():
            i = 0
            while not stop.is_set():
                store.execute("INSERT INTO users (chat_id, name) VALUES (?, ?) "
                              "ON CONFLICT(chat_id) DO UPDATE SET clicks = clicks + 1", (i % 37, f"Зоя {i}"))
                i += 1
                await asyncio.sleep(0.002)

        writer = asyncio.create_task(clicks())
        await asyncio.sleep(0.3)  # several deltas and automatic snapshots
        results = [await self_verify(store, backend) for _ in range(3)]
        stop.set()
        await writer
        assert [r.ok for r in results] == [True, True, True], [r.detail for r in results]
        assert all(r.live_digest == r.restored_digest and r.seq > 0 for r in results)
        assert results[-1].seq >= results[0].seq
    finally:
        await store.abandon()


async def test_damage_in_storage_is_a_failure_with_the_reason():
    storage = MemoryStorage()
    store, backend = await open_store(storage)
    try:
        for i in range(3):
            store.execute("INSERT INTO users (chat_id, name) VALUES (?, 'x')", (i,))
            await store.flush()
        delta = next(ref for ref, (name, _d) in storage.docs.items() if name.startswith("delta-"))
        name, data = storage.docs[delta]
        storage.docs[delta] = (name, flip_byte(data))
        result = await self_verify(store, backend)
        assert result.ok is False and "restore failed" in result.detail
    finally:
        await store.abandon()


async def test_the_verifier_reports_every_run_to_its_callback():
    store, backend = await open_store(MemoryStorage())
    seen = []
    verifier = SelfVerifier(store, backend, interval=0.05, on_result=seen.append)
    try:
        store.execute("INSERT INTO users (chat_id, name) VALUES (1, 'a')")
        now = await verifier.run_now()
        assert now.ok and seen == [now]
        verifier.start()
        for _ in range(100):
            if len(seen) >= 3:
                break
            await asyncio.sleep(0.02)
        assert len(seen) >= 3 and all(r.ok for r in seen)
    finally:
        await verifier.stop()
        await store.abandon()


def test_the_digest_is_about_contents_not_layout():
    a = sqlite3.connect(":memory:")
    b = sqlite3.connect(":memory:")
    for conn, order in ((a, range(200)), (b, reversed(range(200)))):
        conn.execute(USERS)
        conn.executemany("INSERT INTO users VALUES (?, ?, ?)", [(i, f"n{i}" * 20, i) for i in order])
        conn.execute("CREATE TABLE _tgsnap_dirty (k)")  # tgsnap's own tables are not part of the state
        conn.commit()
    b.execute("DELETE FROM users WHERE chat_id > 1000")
    b.commit()
    b.execute("VACUUM")
    b.execute("INSERT INTO _tgsnap_dirty VALUES (1)")
    assert state_digest(a) == state_digest(b)
    b.execute("UPDATE users SET clicks = 2 WHERE chat_id = 1")
    assert state_digest(a) != state_digest(b)
    b.execute("UPDATE users SET clicks = 1 WHERE chat_id = 1")
    assert state_digest(a) == state_digest(b)
    for conn in (a, b):
        conn.execute("CREATE TABLE v (k INTEGER PRIMARY KEY, x)")  # no affinity: 1, 1.0 and '1' stay apart
        conn.execute("INSERT INTO v VALUES (1, 1)")
    assert state_digest(a) == state_digest(b)
    for other in ("1.0", "'1'", "X'31'"):
        b.execute(f"UPDATE v SET x = {other}")
        assert state_digest(a) != state_digest(b), other
    b.execute("PRAGMA user_version = 3")
    assert state_digest(a) != state_digest(b)


def test_text_that_is_not_utf8_is_digested_byte_for_byte():
    a = sqlite3.connect(":memory:")
    a.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    a.execute("INSERT INTO t VALUES (1, CAST(X'FF00FE' AS TEXT))")
    d1 = state_digest(a)
    a.execute("UPDATE t SET v = CAST(X'FF00FD' AS TEXT)")
    assert state_digest(a) != d1
