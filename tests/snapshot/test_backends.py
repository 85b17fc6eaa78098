"""The backend contract, run for the local directory and the memory backend; then the memory faults."""

from __future__ import annotations

import os
import random

import pytest

from snapshot.backends.local import LocalDirBackend
from snapshot.backends.memory import Faults, MemoryBackend, MemoryStorage
from snapshot.errors import BackendError, DocumentNotFound
from tests.snapshot.backend_contract import BackendContract


class TestLocalDir(BackendContract):
    @pytest.fixture
    def backend_factory(self, tmp_path):
        return lambda: LocalDirBackend(tmp_path / "store")


class TestMemory(BackendContract):
    @pytest.fixture
    def backend_factory(self):
        storage = MemoryStorage()
        return lambda: MemoryBackend(storage)


class TestMemoryWithoutDiscovery(BackendContract):
    @pytest.fixture
    def backend_factory(self):
        storage = MemoryStorage()
        return lambda: MemoryBackend(storage, can_discover=False)


# -- local directory specifics ---------------------------------------------------------------------------


async def test_local_leaves_no_temporary_files_and_ignores_strays(tmp_path):
    b = LocalDirBackend(tmp_path)
    (tmp_path / "docs" / ".tmp-crashed").write_bytes(b"half a document")
    ref = await b.put("delta-000000000001", b"data")
    await b.publish_manifest(b"m")
    assert await b.discover(None) == [ref]
    assert sorted(os.listdir(tmp_path)) == ["MANIFEST.000000000001", "docs"]
    assert sorted(os.listdir(tmp_path / "docs")) == [".tmp-crashed", ref]


async def test_local_refs_are_safe_and_foreign_refs_are_not_found(tmp_path):
    b = LocalDirBackend(tmp_path)
    ref = await b.put("../../etc/passwd", b"x")
    assert "/" not in ref and (tmp_path / "docs" / ref).exists()
    for bad in ("../MANIFEST", "MANIFEST", "000000000001-../x", ""):
        with pytest.raises(DocumentNotFound):
            await b.get(bad)


async def test_local_two_processes_never_share_a_ref(tmp_path):
    a, b = LocalDirBackend(tmp_path), LocalDirBackend(tmp_path)
    ra = await a.put("delta-000000000001", b"a")
    rb = await b.put("delta-000000000001", b"b")  # b's counter is stale only if it cached; it scans
    ra2 = await a.put("delta-000000000002", b"a2")  # a's cached counter collides with b's file: rescans
    assert len({ra, rb, ra2}) == 3
    assert [await a.get(r) for r in (ra, rb, ra2)] == [b"a", b"b", b"a2"]
    assert a.order_key(ra) < a.order_key(rb) < a.order_key(ra2)


# -- memory faults ---------------------------------------------------------------------------------------


async def test_fault_clean_failure_stores_nothing():
    b = MemoryBackend(faults=Faults(put_fail=1))
    with pytest.raises(BackendError):
        await b.put("delta-000000000001", b"x")
    assert b.storage.docs == {}
    assert await b.get(await b.put("delta-000000000001", b"y")) == b"y"


async def test_fault_timeout_stores_nothing():
    b = MemoryBackend(faults=Faults(put_timeout=1, timeout_delay=0.01))
    with pytest.raises(BackendError, match="timeout"):
        await b.put("delta-000000000001", b"x")
    assert b.storage.docs == {}


async def test_fault_lost_ack_stores_then_reports_failure():
    b = MemoryBackend(faults=Faults(put_lost_ack=1))
    with pytest.raises(BackendError):
        await b.put("delta-000000000001", b"x")
    [(ref, (name, data))] = b.storage.docs.items()
    assert (name, data) == ("delta-000000000001", b"x")
    assert await b.discover(None) == [ref]


async def test_fault_nth_matching_put_fails():
    b = MemoryBackend(faults=Faults(put_match="snapshot-", put_fail_at={3}))
    await b.put("delta-000000000001", b"d")  # not counted
    for i in (1, 2):
        await b.put(f"snapshot-000000000001-0000-{i:04d}", b"p")
    with pytest.raises(BackendError):
        await b.put("snapshot-000000000001-0000-0003", b"p")
    await b.put("snapshot-000000000001-0000-0004", b"p")
    assert b.faults.puts_seen == 4
    assert len(b.storage.docs) == 4


async def test_fault_corrupt_read_flips_a_byte():
    b = MemoryBackend()
    ref = await b.put("delta-000000000001", b"abcdef")
    b.faults.corrupt_refs.add(ref)
    bad = await b.get(ref)
    assert bad != b"abcdef" and len(bad) == 6
    assert sum(x != y for x, y in zip(bad, b"abcdef", strict=True)) == 1
    b.faults.corrupt_refs.clear()
    b.faults.get_corrupt = 1
    assert await b.get(ref) != b"abcdef"
    assert await b.get(ref) == b"abcdef"


async def test_fault_publish_before_and_after_effect():
    b = MemoryBackend(faults=Faults(publish_fail=1, publish_lost_ack=1))
    with pytest.raises(BackendError):
        await b.publish_manifest(b"one")
    assert await b.read_manifest() is None
    with pytest.raises(BackendError):
        await b.publish_manifest(b"two")
    assert await b.read_manifest() == b"two"
    await b.publish_manifest(b"three")
    assert await b.read_manifest() == b"three"
    assert b.faults.log == ["publish: failed, not published", "publish: published, reported failed"]


async def test_fault_random_mode_is_reproducible():
    def run(seed):
        return Faults(rng=random.Random(seed), p_put_fail=0.3, p_put_lost_ack=0.2)

    async def outcome(faults):
        b = MemoryBackend(faults=faults)
        out = []
        for i in range(50):
            try:
                await b.put(f"delta-{i:012d}", b"x")
                out.append("ok")
            except BackendError:
                out.append("err")
        return out, len(b.storage.docs)

    first, second = await outcome(run(7)), await outcome(run(7))
    assert first == second
    assert "err" in first[0] and "ok" in first[0]


async def test_memory_storage_outlives_its_backend():
    storage = MemoryStorage()
    ref = await MemoryBackend(storage).put("delta-000000000001", b"kept")
    assert await MemoryBackend(storage).get(ref) == b"kept"


async def test_memory_size_limit():
    b = MemoryBackend(max_document_size=1024 * 1024)
    with pytest.raises(BackendError) as e:
        await b.put("snapshot-x", bytes(1024 * 1024 + 1))
    assert not e.value.retryable
