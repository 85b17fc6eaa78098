"""Who this writer process is, precisely enough to prove later that it is gone.

A hostname and a pid do not name a process: containers share hostnames and each has its own PID
namespace (pid 7 in one is not pid 7 in another), and pids are reused. The lease records, beside them:

- `boot_id` (/proc/sys/kernel/random/boot_id): this kernel's boot; another value is another machine or a
  reboot;
- `pid_ns` (the /proc/self/ns/pid link, e.g. "pid:[4026531836]"): the PID namespace the pid is counted
  in; inode numbers of namespaces are unique within one boot;
- `start_time` (field 22 of /proc/self/stat, clock ticks after boot): tells a reused pid from the
  original process.

Only when all three match this process's own view can a missing pid, or one that started at another
time, be taken as proof that the holder is gone (bot/takeover.py). Anything unknown (not Linux, /proc
not mounted, a lease written by an older tgsnap) is no proof.
"""

from __future__ import annotations

import os
from typing import Any, TypedDict

#: tests only (tests/adversary/writer.py): values this process claims instead of its own.
PRETEND: dict[str, Any] = {}


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip() or None
    except OSError:
        return None


def boot_id() -> str | None:
    return _read("/proc/sys/kernel/random/boot_id")


def pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def start_time(pid: int | str = "self") -> int | None:
    """Field 22 of /proc/<pid>/stat (`self`: this process, whichever PID namespace /proc was mounted
    in), or None if there is no such process or no /proc."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    # the command name (field 2) is in parentheses and may hold spaces or ')': split after the last ')'
    rest = stat[stat.rfind(")") + 2:].split()
    try:
        return int(rest[19])  # fields 3.. follow the name: field 22 is the 20th of them
    except (IndexError, ValueError):
        return None


class Identity(TypedDict):
    """The lease fields that identify a process (`Lease.boot_id`, `pid_ns`, `start_time`)."""

    boot_id: str | None
    pid_ns: str | None
    start_time: int | None


def identity() -> Identity:
    """The lease fields that identify this process: boot_id, pid_ns, start_time."""
    return Identity(boot_id=PRETEND.get("boot_id", boot_id()), pid_ns=PRETEND.get("pid_ns", pid_namespace()),
                    start_time=PRETEND.get("start_time", start_time()))


def proc_is_ours() -> bool:
    """Whether /proc counts pids in our own PID namespace: /proc/self's pid is our pid. A process in a
    PID namespace that still sees its parent's /proc (e.g. `unshare --pid` without `--mount-proc`) would
    otherwise look a holder's pid up among another namespace's processes."""
    stat = _read("/proc/self/stat")
    try:
        return stat is not None and int(stat.split()[0]) == os.getpid()
    except ValueError:
        return False


def holder_gone(pid: int, boot: str | None, ns: str | None, started: int | None) -> str | None:
    """Why the process a lease names (pid + its boot id, PID namespace and start time) is provably
    gone, or None if it may still run. Proof needs the same boot and PID namespace as ours: then a pid
    with no /proc entry, or one that started at another time (reused), is not the holder."""
    here = identity()
    if None in (boot, ns, started) or boot != here["boot_id"] or ns != here["pid_ns"]:
        return None
    if here["pid_ns"] is None or here["boot_id"] is None or not proc_is_ours():
        return None
    now = start_time(pid)
    if now is None:
        return f"pid {pid} no longer exists in this PID namespace ({ns})"
    if now != started:
        return f"pid {pid} is another process now (started at tick {now}, the holder at {started})"
    return None
