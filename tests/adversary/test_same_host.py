"""Same-host takeover (bot/takeover.py) when the holder's pid means nothing here: containers sharing a
hostname have separate PID namespaces, so "host matches and that pid does not run here" is no proof that
the holder died. A live writer whose lease names this host and a pid that does not exist in our
namespace must not be taken over while it lives (the newcomer waits for the lease; the live holder
renews it, so it never lapses).

Two ways to get such a writer: a real one in its own PID namespace (`unshare --pid`, root only), its pid
there set far above this host's pid_max so it cannot exist here; and a writer that makes its lease name a
dead pid and another namespace (works anywhere).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess

import pytest

from tests.adversary.procs import Place

LEASE = "2"


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    assert not os.path.exists(f"/proc/{p.pid}")
    return p.pid


def can_unshare() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True).returncode == 0


async def holder_is_never_taken_over(place: Place, a) -> None:
    try:
        await a.until(lambda w: len(w.acks) >= 2)
        b = await place.spawn("B", "--bot-takeover", "--lease", LEASE)
        await b.until(lambda w: "READY" in w.lines)
        seen = len(a.acks)
        await asyncio.sleep(2 * float(LEASE))  # well past the holder's lease: it renewed, B waits
        assert b.said("OPEN") is None, ("took over a live writer", b.lines[-3:])
        assert len(a.acks) > seen and a.said("FENCED") is None, a.lines[-3:]
        await b.kill()
        await a.kill()  # SIGKILL: unshare and a namespace's init ignore SIGTERM; acknowledged rows are durable
        rows = await place.rows()
    finally:
        await place.cleanup()
    assert set(range(a.acked + 1)) <= rows["A"] and "B" not in rows


async def test_a_live_writer_in_another_pid_namespace_is_not_taken_over(local: Place):
    if not can_unshare():
        pytest.skip("needs root and unshare(1) to make a PID namespace")
    # the shell is pid 1 of the new namespace; the writer it forks gets pid 99991 there
    wrap = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "sh", "-c",
            "echo 99990 > /proc/sys/kernel/ns_last_pid; \"$@\"", "sh"]
    a = await local.spawn("A", "--lease", LEASE, wrap=wrap)
    await holder_is_never_taken_over(local, a)


async def test_a_live_writer_whose_lease_names_a_dead_pid_of_this_host_is_not_taken_over(local: Place):
    a = await local.spawn("A", "--lease", LEASE, "--pretend-pid", str(dead_pid()),
                          "--pretend-pidns", "pid:[4026599999]")
    await holder_is_never_taken_over(local, a)
