"""snapshot.verify as a library: one call, a structured report, each document read once, no writes."""

from __future__ import annotations

import collections

from snapshot.backends.local import LocalDirBackend
from snapshot.backends.memory import MemoryBackend, flip_byte
from snapshot.replica import Replica, ReplicaConfig
from snapshot.verify import REPORT_FORMAT, verify
from tests.tools.chain import _changes, build


class CountingBackend(LocalDirBackend):
    """Counts reads and refuses every write: verify must never call one."""

    def __init__(self, path):
        super().__init__(path, fsync=False)
        self.gets: collections.Counter[str] = collections.Counter()

    async def get(self, ref):
        self.gets[ref] += 1
        return await super().get(ref)

    async def put(self, name, data):
        raise AssertionError("verify wrote a document")

    async def publish_manifest(self, data):
        raise AssertionError("verify published a manifest")

    async def delete(self, refs):
        raise AssertionError("verify deleted documents")

    async def create_slot(self, data, *, after):
        raise AssertionError("verify created a manifest slot")

    async def replace_slot(self, ref, data):
        raise AssertionError("verify replaced a manifest slot")


async def test_each_document_is_read_once_and_nothing_is_written(tmp_path):
    # a live writer: part of the chain is found by discovery, beyond the manifest
    chain = await build(tmp_path, 9, snapshot_at=3, release=False)
    backend = CountingBackend(tmp_path)
    report = await verify(backend)
    assert report.ok and report.last_seq == 9, [c.line() for c in report.faults]
    assert backend.gets and set(backend.gets.values()) == {1}, backend.gets
    for seq in range(4, 10):
        assert backend.gets[chain.refs[seq]] == 1


async def test_report_json_is_stable(tmp_path):
    await build(tmp_path, 4, snapshot_at=2)
    report = await verify(LocalDirBackend(tmp_path, fsync=False))
    data = report.to_json()
    assert set(data) == {"report_format", "empty", "last_seq", "ok", "notes", "checks"}
    assert data["report_format"] == REPORT_FORMAT and data["ok"] is True and data["last_seq"] == 4
    assert set(data["checks"][0]) == {"kind", "ref", "seq", "ok", "reason", "size"}
    assert [c["kind"] for c in data["checks"]] == ["manifest", "snapshot part", "snapshot", "delta", "delta",
                                                   "state"]


async def test_documents_without_a_manifest_are_a_fault_not_empty_storage(tmp_path):
    await build(tmp_path, 3)
    for slot in tmp_path.glob("MANIFEST*"):
        slot.unlink()
    report = await verify(LocalDirBackend(tmp_path, fsync=False))
    assert not report.empty and not report.ok
    assert report.faults[0].kind == "manifest" and "no manifest" in report.faults[0].reason


async def test_empty_storage_is_reported_empty(tmp_path):
    report = await verify(LocalDirBackend(tmp_path, fsync=False))
    assert report.empty and not report.ok and report.checks == []


async def test_a_corrupt_shard_frame_is_named_by_its_index():
    """A part whose envelope is intact but whose compressed body is wrong: the shard check names it."""
    from snapshot import envelope

    backend = MemoryBackend()
    replica = Replica(backend, ReplicaConfig(part_size=1400, shard_size=4096), writer_id="w")
    await replica.acquire()
    model = __import__("sqlite3").connect(":memory:")
    from snapshot.apply import apply_changes

    for seq in range(1, 4):
        cs = _changes(seq, 1000.0 + seq)
        await replica.write_delta(cs)
        apply_changes(model, cs)
    await replica.write_snapshot(model.serialize(), 3, 1003.0)
    await replica.release()
    assert (await verify(backend)).ok
    # re-envelope the first part of shard 1 around a damaged body, then fix the manifest's record of it:
    # only the decompressed shard can tell.
    from snapshot.manifest import decode_manifest, encode_manifest

    m, _ = decode_manifest(backend.storage.manifest)
    part = m.snapshot.shards[1].parts[0]
    name, data = backend.storage.docs[part.ref]
    doc = envelope.decode(data, expect=envelope.Kind.SNAPSHOT_PART)
    forged = envelope.encode(envelope.Kind.SNAPSHOT_PART, flip_byte(doc.body, len(doc.body) // 2),
                             epoch=doc.header.epoch, seq=doc.header.seq, prev=doc.header.prev_hash)
    backend.storage.docs[part.ref] = (name, forged)
    part.size, part.sha256 = len(forged), envelope.document_hash(forged).hex()
    backend.storage.manifest = encode_manifest(m)
    report = await verify(backend)
    assert [(c.kind, c.ref) for c in report.faults] == [("shard", "shard 1")], [c.line() for c in report.faults]
    assert "snapshot shard 1" in report.faults[0].reason
