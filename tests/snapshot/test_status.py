"""snapshot.status: the storage as one value, with a stable JSON form and a chain error as a field."""

from __future__ import annotations

import json

from snapshot.backends.local import LocalDirBackend
from snapshot.status import STATUS_FORMAT, estimate_restore, status
from tests.tools.chain import build

KEYS = {"status_format", "backend", "checked_at", "empty", "manifest", "lease", "snapshot", "chain", "last_seq",
        "last_captured_at", "lag_seconds", "restore_bytes", "restore_documents", "estimated_restore_seconds",
        "documents", "channel_tip", "manifest_error", "notes", "ok", "retention"}


async def test_status_of_a_released_chain_with_a_snapshot(tmp_path):
    chain = await build(tmp_path, 9, snapshot_at=4)
    now = chain.captured[9] + 30.0
    st = await status(LocalDirBackend(tmp_path, fsync=False), now=now)
    assert st.ok and not st.empty
    assert st.snapshot is not None and st.snapshot.base_seq == 4 and st.snapshot.parts >= 1
    assert abs(st.snapshot.age_seconds - (now - chain.captured[4])) < 1e-6
    assert (st.chain.deltas, st.chain.first_seq, st.chain.last_seq) == (5, 5, 9)
    assert st.chain.discovered == 0 and st.chain.listed == 5
    assert st.last_seq == 9 and abs(st.lag_seconds - 30.0) < 1e-6
    assert st.lease is not None and st.lease.released and not st.lease.live
    assert st.lease.writer_id == "bot-under-test"
    files = [p for p in (tmp_path / "docs").iterdir()]
    assert st.documents == len(files)
    assert st.restore_bytes == st.snapshot.stored_bytes + st.chain.bytes
    assert st.estimated_restore_seconds is not None and st.estimated_restore_seconds > 0
    data = st.to_json()
    assert set(data) == KEYS and data["status_format"] == STATUS_FORMAT
    json.dumps(data, allow_nan=False)
    assert set(data["chain"]) == {"deltas", "bytes", "listed", "discovered", "first_seq", "last_seq", "error",
                                  "ignored", "forks", "foreign"}
    table = st.table()
    assert "base seq 4" in table and "5 delta(s) (seq 5..9)" in table and "released at" in table


async def test_a_live_writer_and_deltas_beyond_the_manifest(tmp_path):
    chain = await build(tmp_path, 6, release=False, lease_seconds=3600)
    st = await status(LocalDirBackend(tmp_path, fsync=False), now=chain.captured[6] + 1)
    assert st.lease is not None and st.lease.live
    assert st.chain.deltas == 6 and st.chain.listed + st.chain.discovered == 6
    assert "live until" in st.table()


async def test_a_broken_chain_is_a_field_not_an_exception(tmp_path):
    chain = await build(tmp_path, 7, snapshot_at=2)
    victim = next(p for p in (tmp_path / "docs").iterdir() if p.name == chain.refs[5])
    victim.unlink()
    st = await status(LocalDirBackend(tmp_path, fsync=False))
    assert not st.ok and "seq 5" in st.chain.error
    assert st.chain.deltas == 5 and st.last_seq == 7  # the manifest's own list
    assert "chain error" in st.table()


async def test_a_corrupt_manifest_is_a_field(tmp_path):
    await build(tmp_path, 2)
    m = max(tmp_path.glob("MANIFEST*"))  # the newest slot
    m.write_bytes(m.read_bytes()[:-5])
    st = await status(LocalDirBackend(tmp_path, fsync=False))
    assert not st.ok and st.manifest_error and "manifest error" in st.table()


async def test_empty_storage(tmp_path):
    st = await status(LocalDirBackend(tmp_path, fsync=False))
    assert st.empty and not st.ok and st.estimated_restore_seconds is None and st.documents == 0
    assert set(st.to_json()) == KEYS


def test_the_estimate_grows_with_bytes_and_documents():
    assert estimate_restore("mtproto", 10**7, 10, 10**7) > estimate_restore("mtproto", 10**6, 10, 10**6)
    assert estimate_restore("botapi", 10**6, 100, 0) > estimate_restore("botapi", 10**6, 1, 0)
    assert estimate_restore("local", 10**7, 10, 10**7) < estimate_restore("mtproto", 10**7, 10, 10**7)
