"""What every storage backend must do, as a reusable test class.

Use it from any backend's tests (Telegram ones included):

    class TestMyBackend(BackendContract):
        @pytest.fixture
        def backend_factory(self, tmp_path):
            # each call returns a *new* backend object on the *same* storage (a reopen after a crash)
            return lambda: MyBackend(...)

`large_size` may be overridden for backends that cannot hold big documents in a test.
"""

from __future__ import annotations

import asyncio
import inspect
import os

import pytest

from snapshot.backend import Backend, SlotRace
from snapshot.errors import DocumentNotFound


async def _make(factory) -> Backend:
    b = factory()
    if inspect.isawaitable(b):
        b = await b
    return b


class BackendContract:
    large_size = 5 * 1024 * 1024 + 7
    #: True when `create_slot` itself refuses a caller that did not see the newest slot (directory,
    #: memory); False when only the check after it decides (Telegram: a message cannot be refused).
    refuses_stale_creation = True
    #: False for backends still on one entry point (SingleEntryPoint): slots are not ordered there.
    ordered_slots = True

    @pytest.fixture
    async def backend(self, backend_factory):
        b = await _make(backend_factory)
        yield b
        await b.close()

    async def test_put_get_round_trip(self, backend: Backend):
        for data in (b"x", b"\x00" * 100, os.urandom(4096)):
            ref = await backend.put("delta-000000000001", data)
            assert isinstance(ref, str) and ref
            assert await backend.get(ref) == data

    async def test_large_document(self, backend: Backend):
        size = min(self.large_size, backend.info.max_document_size)
        data = os.urandom(size)
        ref = await backend.put("snapshot-000000000001-0000-0000", data)
        assert await backend.get(ref) == data

    async def test_refs_sort_in_storage_order(self, backend: Backend):
        refs = [await backend.put(f"delta-{i:012d}", bytes([i])) for i in range(1, 21)]
        assert len(set(refs)) == 20
        assert sorted(refs, key=backend.order_key) == refs
        assert [backend.order_key(r) for r in refs] == sorted(backend.order_key(r) for r in refs)

    async def test_discover_lists_later_documents_in_order(self, backend: Backend):
        refs = [await backend.put(f"delta-{i:012d}", bytes([i])) for i in range(1, 11)]
        if not backend.info.can_discover:
            assert await backend.discover(None) == []
            return
        everything = await backend.discover(None)
        assert [r for r in everything if r in refs] == refs
        assert await backend.discover(refs[3]) == refs[4:]
        assert await backend.discover(refs[-1]) == []
        named = await backend.discover_named(refs[7])
        assert [r for r, _n in named] == refs[8:]
        for (_r, name), i in zip(named, (9, 10), strict=True):
            assert name in (None, f"delta-{i:012d}")

    async def test_discover_after_a_deleted_ref(self, backend: Backend):
        refs = [await backend.put(f"delta-{i:012d}", b"d") for i in range(1, 5)]
        await backend.delete([refs[1]])
        # a backend that cannot discover says so by listing nothing, never a partial or stale list
        expected = refs[2:] if backend.info.can_discover else []
        assert await backend.discover(refs[1]) == expected

    async def test_missing_document(self, backend: Backend):
        ref = await backend.put("delta-000000000001", b"gone soon")
        await backend.delete([ref])
        with pytest.raises(DocumentNotFound) as e:
            await backend.get(ref)
        assert e.value.ref == ref
        assert not e.value.retryable

    async def test_delete_is_idempotent_and_selective(self, backend: Backend):
        a = await backend.put("delta-000000000001", b"a")
        b = await backend.put("delta-000000000002", b"b")
        await backend.delete([a])
        await backend.delete([a])
        await backend.delete([])
        assert await backend.get(b) == b"b"
        if backend.info.can_discover:
            assert a not in await backend.discover(None)

    async def test_manifest_starts_empty_and_is_replaced(self, backend: Backend):
        assert await backend.read_manifest() is None
        await backend.publish_manifest(b"first")
        assert await backend.read_manifest() == b"first"
        await backend.publish_manifest(b"second" * 1000)
        assert await backend.read_manifest() == b"second" * 1000

    async def test_manifest_publication_is_atomic(self, backend: Backend):
        versions = [bytes([i]) * (200_000 + i) for i in range(6)]
        await backend.publish_manifest(versions[0])
        seen: list[bytes | None] = []

        async def reader():
            for _ in range(30):
                seen.append(await backend.read_manifest())
                await asyncio.sleep(0)

        async def writer():
            for v in versions[1:]:
                await backend.publish_manifest(v)

        await asyncio.gather(reader(), writer(), reader())
        assert all(s in versions for s in seen)
        assert await backend.read_manifest() == versions[-1]

    async def test_state_survives_reopen(self, backend: Backend, backend_factory):
        ref = await backend.put("delta-000000000001", b"durable")
        await backend.publish_manifest(b"manifest")
        again = await _make(backend_factory)
        try:
            assert await again.get(ref) == b"durable"
            assert await again.read_manifest() == b"manifest"
            later = await again.put("delta-000000000002", b"later")
            assert again.order_key(later) > again.order_key(ref)
            if again.info.can_discover:
                assert await again.discover(ref) == [later]
        finally:
            await again.close()

    async def test_many_concurrent_puts(self, backend: Backend):
        payloads = [os.urandom(100 + i) for i in range(40)]
        refs = await asyncio.gather(*(backend.put(f"delta-{i:012d}", p) for i, p in enumerate(payloads)))
        assert len(set(refs)) == len(refs)
        assert len({backend.order_key(r) for r in refs}) == len(refs)
        got = await asyncio.gather(*(backend.get(r) for r in refs))
        assert got == payloads
        if backend.info.can_discover:
            assert sorted(refs, key=backend.order_key) == [r for r in await backend.discover(None) if r in refs]

    async def test_info_is_sane(self, backend: Backend):
        info = backend.info
        assert info.name
        assert info.max_document_size >= 1024 * 1024
        assert info.manifest_min_interval >= 0

    # -- manifest slots ------------------------------------------------------------------------------

    async def test_slots_start_empty_and_the_first_is_the_newest(self, backend: Backend):
        assert await backend.newest_slot() is None
        ref = await backend.create_slot(b"claim one", after=None)
        newest = await backend.newest_slot()
        assert newest is not None and (newest.ref, newest.data) == (ref, b"claim one")
        assert await backend.newer_slot(ref) is None
        assert await backend.read_slot(ref) == b"claim one"
        await backend.replace_slot(ref, b"full one" * 1000)
        assert await backend.read_slot(ref) == b"full one" * 1000
        assert await backend.read_manifest() == b"full one" * 1000
        if backend.info.can_discover:
            assert ref not in await backend.discover(None)  # slots are not documents

    async def test_a_newer_slot_is_seen_by_the_older_ones_check(self, backend: Backend, backend_factory):
        if not self.ordered_slots:
            pytest.skip("this backend keeps one entry point: no slot order yet")
        first = await backend.create_slot(b"one", after=None)
        other = await _make(backend_factory)  # another process
        try:
            second = await other.create_slot(b"two", after=first)
            assert second != first
            assert await backend.newer_slot(first) == second
            assert await other.newer_slot(second) is None
            # the older slot's owner may still store into its own slot (a fenced writer's late
            # publication): the newest stays the newest
            await backend.replace_slot(first, b"one, late")
            assert (await other.newest_slot()).data == b"two"
            assert await other.read_slot(first) == b"one, late"
        finally:
            await other.close()

    async def test_stale_creation(self, backend: Backend):
        first = await backend.create_slot(b"one", after=None)
        if self.refuses_stale_creation:
            with pytest.raises(SlotRace):
                await backend.create_slot(b"blind", after=None)
            if self.ordered_slots:
                second = await backend.create_slot(b"two", after=first)
                with pytest.raises(SlotRace):
                    await backend.create_slot(b"stale", after=first)
                assert (await backend.newest_slot()).ref == second
        else:
            ref = await backend.create_slot(b"blind", after=None)
            assert await backend.newer_slot(ref) is None and await backend.newer_slot(first) == ref

    async def test_unknown_slots(self, backend: Backend):
        await backend.create_slot(b"one", after=None)
        for bad in ("no-such-slot", "999999"):
            with pytest.raises(DocumentNotFound):
                await backend.read_slot(bad)

    async def test_slots_survive_reopen(self, backend: Backend, backend_factory):
        ref = await backend.create_slot(b"claim", after=None)
        await backend.replace_slot(ref, b"full")
        again = await _make(backend_factory)
        try:
            newest = await again.newest_slot()
            assert (newest.ref, newest.data) == (ref, b"full")
            assert await again.newer_slot(ref) is None
        finally:
            await again.close()
