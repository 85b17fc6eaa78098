"""bot/takeover.py takes a crashed predecessor's storage over at once only on proof that it is gone
(same boot, same PID namespace, and its pid missing or started at another time); a lease that names
this host but proves nothing is waited out, and the refusal names a setting that exists."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from bot import takeover
from core import StoreConfig
from snapshot import proc_identity
from snapshot.backends.memory import MemoryBackend, MemoryStorage
from snapshot.errors import StorageBusy
from snapshot.manifest import decode_manifest
from snapshot.replica import Replica, ReplicaConfig

SCHEMA = ["CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT)"]


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_identity_is_read_from_proc():
    me = proc_identity.identity()
    if me["boot_id"] is None:
        pytest.skip("no /proc here")
    assert me["pid_ns"].startswith("pid:[") and isinstance(me["start_time"], int)
    assert proc_identity.start_time(os.getpid()) == me["start_time"]


def test_only_a_missing_or_reused_pid_in_our_boot_and_namespace_is_proof():
    me = proc_identity.identity()
    if me["boot_id"] is None:
        pytest.skip("no /proc here")
    boot, ns, started = me["boot_id"], me["pid_ns"], me["start_time"]
    gone = dead_pid()
    assert "no longer exists" in proc_identity.holder_gone(gone, boot, ns, started)
    assert "another process" in proc_identity.holder_gone(os.getpid(), boot, ns, started + 1)
    assert proc_identity.holder_gone(os.getpid(), boot, ns, started) is None  # alive: ourselves
    assert proc_identity.holder_gone(gone, boot, "pid:[1]", started) is None  # another namespace
    assert proc_identity.holder_gone(gone, "another-boot", ns, started) is None  # another machine / reboot
    assert proc_identity.holder_gone(gone, None, None, None) is None  # an older lease: no proof


def test_no_proof_when_proc_belongs_to_another_pid_namespace():
    """Inside `unshare --pid` without a /proc of its own, pids looked up in /proc are another namespace's."""
    import shutil
    import sys

    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1)")
    code = "from snapshot import proc_identity as p; print(p.proc_is_ours())"
    inside = subprocess.run(["unshare", "--pid", "--fork", sys.executable, "-c", code], capture_output=True,
                            text=True, timeout=30)
    assert inside.stdout.strip() == "False", inside.stderr
    assert proc_identity.proc_is_ours()


async def held(storage: MemoryStorage, *, pid: int, **ident) -> Replica:
    """A writer holding a live lease whose identity fields are `ident` over our own."""
    old = Replica(MemoryBackend(storage), ReplicaConfig(lease_seconds=30), writer_id="old-bot")
    old.pid = pid
    real = proc_identity.identity
    proc_identity.identity = lambda: {**real(), **ident}
    try:
        await old.acquire()
    finally:
        proc_identity.identity = real
    return old


def config(**kw) -> StoreConfig:
    return StoreConfig(writer_id="new-bot", replica=ReplicaConfig(lease_seconds=0.4, **kw))


async def test_a_provably_dead_predecessor_is_taken_over_at_once():
    storage = MemoryStorage()
    await held(storage, pid=dead_pid())
    t0 = time.monotonic()
    store = await takeover.open_store(MemoryBackend(storage), SCHEMA, config())
    try:
        assert time.monotonic() - t0 < 5  # not the 30 s lease
        m, _h = decode_manifest(storage.manifest) if storage.manifest else (None, None)
        assert m is None or m.lease.writer_id == "old-bot"  # continues under the dead writer's identity
    finally:
        await store.close()


async def test_a_lease_of_another_pid_namespace_is_waited_out_and_the_advice_names_a_real_setting(monkeypatch):
    monkeypatch.setattr(takeover, "MARGIN", 0.2)
    storage = MemoryStorage()
    await held(storage, pid=dead_pid(), pid_ns="pid:[4026599999]")
    t0 = time.monotonic()
    with pytest.raises(StorageBusy) as busy:
        await takeover.open_store(MemoryBackend(storage), SCHEMA, config())
    assert time.monotonic() - t0 >= 0.5  # waited one lease period (0.4 s) + margin, did not take over
    assert "TGSNAP_TAKEOVER_WAIT" in str(busy.value) and "--takeover-wait" in str(busy.value)
    from bot.config import OPTIONS

    assert "TGSNAP_TAKEOVER_WAIT" in {o.env for o in OPTIONS}


async def test_the_takeover_wait_setting_reaches_the_store():
    from bot.config import load
    from snapshot.settings import StorageSettings

    s = load(["--takeover-wait", "120"], environ={}, dotenv=False)
    assert s.store_config(StorageSettings()).replica.takeover_wait == 120


async def test_an_old_lease_without_identity_fields_is_no_proof(monkeypatch):
    monkeypatch.setattr(takeover, "MARGIN", 0.2)
    storage = MemoryStorage()
    await held(storage, pid=dead_pid(), boot_id=None, pid_ns=None, start_time=None)
    with pytest.raises(StorageBusy):
        await takeover.open_store(MemoryBackend(storage), SCHEMA, config())
