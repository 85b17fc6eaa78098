"""Manifest format 2: on backends that cannot discover, deltas ride inside the manifest (one edit each)
and spill into one pack document past a bound; restore equals state and every byte is still verified."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snapshot.backends.memory import Faults, MemoryBackend, MemoryStorage
from snapshot.envelope import Kind, decode
from snapshot.errors import BackendError, CorruptDocument
from snapshot.image import capture
from snapshot.manifest import DeltaEntry, Manifest, decode_manifest, encode_manifest
from snapshot.replica import Replica, ReplicaConfig
from snapshot.restore import plan, restore
from tests.snapshot.helpers import Live, state

SMALL = dict(part_size=2048, shard_size=4096)


class Counting(MemoryBackend):
    """Counts what costs Telegram rate budget: document sends and manifest publications."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.puts = self.publishes = 0

    async def put(self, name, data):
        self.puts += 1
        return await super().put(name, data)

    async def replace_slot(self, ref, data):
        self.publishes += 1
        return await super().replace_slot(ref, data)

    async def create_slot(self, data, *, after):
        self.publishes += 1
        return await super().create_slot(data, after=after)


def manifest_json(storage: MemoryStorage) -> dict:
    doc = decode(storage.manifest, ref="manifest", expect=Kind.MANIFEST)
    return json.loads(doc.body)


async def test_small_deltas_cost_one_publication_each_and_no_document():
    storage = MemoryStorage()
    backend = Counting(storage, can_discover=False)
    r = Replica(backend, ReplicaConfig(**SMALL))
    await r.acquire()
    live = Live()
    puts, pubs = backend.puts, backend.publishes
    for i in range(6):
        live.set(i, clicks=i)
        assert await live.flush(r)
    assert backend.puts == puts and backend.publishes == pubs + 6
    raw = manifest_json(storage)
    assert raw["format"] == 3 and [d["seq"] for d in raw["deltas"]] == [1, 2, 3, 4, 5, 6]
    assert all("inline" in d and "pack" not in d for d in raw["deltas"])
    got = await restore(MemoryBackend(storage, can_discover=False))
    assert state(got.conn) == live.rows() and got.seq == 6


async def test_spill_into_one_pack_past_the_bound_then_inline_again():
    storage = MemoryStorage()
    backend = Counting(storage, can_discover=False)
    live = Live()
    r = Replica(backend, ReplicaConfig(**SMALL, inline_delta_bytes=1500))
    await r.acquire()
    puts = backend.puts
    for i in range(8):
        for k in range(i * 5, i * 5 + 5):
            live.set(k, clicks=1000 + i)
        assert await live.flush(r)
    raw = manifest_json(storage)
    packs = {d.get("pack") for d in raw["deltas"] if "pack" in d}
    inline = [d["seq"] for d in raw["deltas"] if "inline" in d]
    # Every delta is listed once, some packed (each pack one send), the newest ones still inline.
    assert [d["seq"] for d in raw["deltas"]] == list(range(1, 9))
    assert packs and backend.puts - puts == len(packs) and inline and inline[-1] == 8
    assert sum(d["size"] for d in raw["deltas"] if "inline" in d) <= 1500
    got = await restore(MemoryBackend(storage, can_discover=False))
    assert state(got.conn) == live.rows() and got.seq == 8
    # The pack holds the very delta documents: each slice's hash is what the manifest records.
    m, _ = decode_manifest(storage.manifest)
    for e in m.deltas:
        if e.pack is not None:
            _name, blob = storage.docs[e.pack]
            decode(blob[e.offset:e.offset + e.size], ref=e.ref, expect=Kind.DELTA)


async def test_snapshot_folds_inline_and_packs_away_keeping_straddling_pack():
    storage = MemoryStorage()
    backend = MemoryBackend(storage, can_discover=False)
    r = Replica(backend, ReplicaConfig(**SMALL, inline_delta_bytes=900))
    await r.acquire()
    live = Live()
    for i in range(9):
        for k in range(i * 4, i * 4 + 4):
            live.set(k, clicks=i)
        assert await live.flush(r)
    m, _ = decode_manifest(storage.manifest)
    packed = [e for e in m.deltas if e.pack is not None]
    assert packed
    # Snapshot at a seq inside a pack: the pack must stay, since later deltas in it are still listed.
    base = next(e.seq for e in packed if any(o.pack == e.pack and o.seq > e.seq for o in packed))
    at_base = await restore(MemoryBackend(storage, can_discover=False), to_seq=base)
    await r.write_snapshot(capture(at_base.conn), base, at_base.captured_at)
    m2, _ = decode_manifest(storage.manifest)
    assert all(e.seq > base for e in m2.deltas)
    for e in m2.deltas:
        if e.pack is not None:
            assert e.pack in storage.docs
    got = await restore(MemoryBackend(storage, can_discover=False))
    assert state(got.conn) == live.rows() and got.snapshot_seq == base and got.seq == 9


async def test_inline_delta_tampering_is_caught_by_hash_even_inside_a_valid_manifest():
    storage = MemoryStorage()
    r = Replica(MemoryBackend(storage, can_discover=False), ReplicaConfig(**SMALL))
    await r.acquire()
    live = Live()
    for i in range(3):
        live.set(i, clicks=i)
        assert await live.flush(r)
    m, h = decode_manifest(storage.manifest)
    victim = m.deltas[1]
    raw = bytearray(victim.inline_bytes())
    raw[-1] ^= 0x01
    victim.inline = base64.b64encode(bytes(raw)).decode()
    storage.manifest = encode_manifest(m, prev=h)  # a well-formed manifest carrying a flipped delta byte
    with pytest.raises(CorruptDocument) as e:
        await restore(MemoryBackend(storage, can_discover=False))
    assert e.value.ref == victim.ref == "manifest#delta-000000000002"


def test_format_1_written_without_inline_and_refused_fields_in_format_1():
    plain = Manifest(epoch=1, generation=1, created_at=0.0,
                     deltas=[DeltaEntry(seq=1, ref="d1", size=3, hash="ab" * 32, epoch=1, captured_at=1.0)])
    body = json.loads(plain.to_json())
    assert body["format"] == 1 and set(body["deltas"][0]) == {"seq", "ref", "size", "hash", "epoch", "captured_at"}
    inline = Manifest(epoch=1, generation=1, created_at=0.0,
                      deltas=[DeltaEntry(seq=1, ref="manifest#delta-000000000001", size=3, hash="ab" * 32, epoch=1,
                                         captured_at=1.0, inline=base64.b64encode(b"abc").decode())])
    body = json.loads(inline.to_json())
    assert body["format"] == 2
    body["format"] = 1  # a format-1 manifest cannot hold inline deltas
    with pytest.raises(CorruptDocument, match="cannot hold inline"):
        Manifest.from_json(json.dumps(body).encode())
    body["format"] = 2
    body["deltas"][0]["size"] = 4
    with pytest.raises(CorruptDocument, match="holds 3 bytes"):
        Manifest.from_json(json.dumps(body).encode())


async def test_failed_pack_publication_acknowledges_nothing_and_the_retry_restores():
    storage = MemoryStorage()
    faults = Faults()
    r = Replica(MemoryBackend(storage, faults, can_discover=False), ReplicaConfig(**SMALL, inline_delta_bytes=700))
    await r.acquire()
    live = Live()
    for i in range(3):
        for k in range(i * 4, i * 4 + 4):
            live.set(k, clicks=i)
        assert await live.flush(r)
    before = r.last_seq
    faults.publish_fail = 1
    for k in range(50, 60):
        live.set(k, clicks=7)
    assert not await live.flush(r)
    assert r.last_seq == before
    faults.publish_lost_ack = 1
    assert not await live.flush(r)  # published, reported failed: the retry supersedes it
    assert await live.flush(r)
    got = await restore(MemoryBackend(storage, can_discover=False))
    assert state(got.conn) == live.rows() and got.seq == before + 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 9), st.booleans()), min_size=1, max_size=12),
       st.sampled_from([0, 300, 900, 4000]), st.integers(0, 11))
async def test_restore_equals_state_for_any_bound(ops, bound, snap_after):
    storage = MemoryStorage()
    r = Replica(MemoryBackend(storage, can_discover=False), ReplicaConfig(**SMALL, inline_delta_bytes=bound))
    await r.acquire()
    live = Live()
    for i, (k, n, delete) in enumerate(ops):
        for j in range(n + 1):
            live.set(k + j, clicks=i)
        if delete:
            live.delete(k)
        if not await live.flush(r):
            raise BackendError("no fault was injected")
        if i == snap_after:
            await r.write_snapshot(capture(live.conn), r.last_seq, live.clock)
    got = await restore(MemoryBackend(storage, can_discover=False))
    assert state(got.conn) == live.rows() and got.seq == len(ops)
    p = await plan(MemoryBackend(storage, can_discover=False))
    assert [d.seq for d in p.chain] == list(range(p.base_seq + 1, len(ops) + 1))
