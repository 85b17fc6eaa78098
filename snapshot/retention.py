"""Retention: which older snapshots (and the deltas between them) stay, so restore and export reach back
past the current snapshot, and `prune`, which lets go of the rest.

A *point* is an older snapshot plus the deltas after it up to the next point's base; the manifest lists
the retained ones, oldest first, in `history` (docs/formats.md §5). The policy keeps a suffix of them
(never one in the middle: a point's deltas lead to the next point's base, so the chain of points stays
whole):

- `keep_snapshots` N: the N newest older points;
- `keep_for` T seconds: every point needed to reach any moment of the last T seconds (a point is needed
  while the next one was captured less than T ago).

Both 0 (the default) keep nothing beyond the current snapshot: the storage then holds only what the
latest state needs, as before retention existed.

What may go is computed here, as data (`PrunePlan`), from the same function the writer uses at a
snapshot switch, so `prune --dry-run` lists exactly what `prune` deletes. It never lists a document the
manifest or a retained point needs. On Telegram storage (a backend with a `delete_window`, 48 h) a
document that may be older than the window cannot be deleted any more: it is left in place and
reported, never attempted. `prune` runs as a writer (it takes the lease like `compact`), publishes the
manifest without the dropped points (store, then check), and only then deletes; a fenced writer
deletes nothing.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import time
from dataclasses import dataclass, field

from snapshot.backend import Backend, BackendInfo
from snapshot.cipher import as_cipher
from snapshot.errors import ConfigError
from snapshot.formatting import when
from snapshot.manifest import DeltaEntry, HistoryPoint, SnapshotEntry
from snapshot.naming import DELTA_NAME, PART_NAME

#: a document whose cut is this much younger than the delete window is surely deletable (stored at or
#: after its `captured_at`, so its age is at most now - captured_at); anything older may not be.
DELETE_MARGIN = 3600.0


def check_policy(keep_snapshots: int, keep_for: float) -> None:
    if isinstance(keep_snapshots, bool) or not isinstance(keep_snapshots, int) or keep_snapshots < 0:
        raise ConfigError(f"keep_snapshots must be a whole number >= 0, not {keep_snapshots!r}")
    if not isinstance(keep_for, int | float) or not math.isfinite(keep_for) or keep_for < 0:
        raise ConfigError(f"keep_for must be a finite number of seconds >= 0, not {keep_for!r}")


def select_points(history: list[HistoryPoint], current: SnapshotEntry | None, keep_snapshots: int,
                  keep_for: float, now: float) -> tuple[list[HistoryPoint], list[HistoryPoint]]:
    """(kept, dropped) of `history` (oldest first) under the policy; kept is a suffix."""
    n = len(history)
    first = n - min(keep_snapshots, n)
    if keep_for > 0:
        horizon = now - keep_for
        for i in range(n):
            nxt = history[i + 1].captured_at if i + 1 < n else (current.captured_at if current else None)
            if nxt is None or nxt > horizon:
                first = min(first, i)
                break
    return history[first:], history[:first]


def documents_to_delete(dropped: list[HistoryPoint], keep: set[str], window: float | None, now: float
                        ) -> tuple[list[str], list[str]]:
    """(deletable, too_old): the stored documents of `dropped` points that nothing in `keep` needs,
    split by the backend's delete window (`BackendInfo.delete_window`; too_old ones are left in place)."""
    deletable: list[str] = []
    too_old: list[str] = []
    seen: set[str] = set()

    def judge(ref: str | None, captured_at: float) -> None:
        if ref is None or ref in keep or ref in seen:
            return
        seen.add(ref)
        if window is not None and now - captured_at >= window - DELETE_MARGIN:
            too_old.append(ref)
        else:
            deletable.append(ref)

    for h in dropped:
        if h.snapshot is not None:
            for p in h.snapshot.parts:
                judge(p.ref, h.snapshot.captured_at)
        for d in h.deltas:
            judge(d.document, d.captured_at)
    return deletable, too_old


def needed(snapshot: SnapshotEntry | None, deltas: list[DeltaEntry], history: list[HistoryPoint]) -> set[str]:
    """Every stored document the current state or a retained point needs."""
    refs = {p.ref for p in snapshot.parts} if snapshot else set()
    refs |= {d.document for d in deltas if d.document is not None}
    for h in history:
        refs |= set(h.documents())
    return refs


@dataclass
class PrunePlan:
    """What a prune would let go of, as data: print it for `--dry-run`, `prune` carries it out."""

    keep_snapshots: int
    keep_for: float
    now: float
    kept: list[HistoryPoint]
    dropped: list[HistoryPoint]
    #: stored documents of dropped points, and unlisted leftovers found by name, that prune deletes.
    delete: list[str]
    #: documents that may be past the backend's delete window (Telegram: 48 h): left, reported.
    too_old: list[str]
    #: of `delete`: the unlisted leftovers (duplicates of lost acknowledgements, never-switched parts).
    garbage: list[str] = field(default_factory=list)
    empty: bool = False

    @property
    def nothing_to_do(self) -> bool:
        return not self.dropped and not self.delete

    def as_dict(self) -> dict[str, object]:
        def point(h: HistoryPoint) -> dict[str, object]:
            return {"base_seq": h.base_seq, "captured_at": h.captured_at, "deltas": len(h.deltas),
                    "documents": len(h.documents())}

        return {"empty": self.empty, "keep_snapshots": self.keep_snapshots, "keep_for": self.keep_for,
                "kept": [point(h) for h in self.kept], "dropped": [point(h) for h in self.dropped],
                "delete": list(self.delete), "garbage": list(self.garbage), "too_old": list(self.too_old),
                "nothing_to_do": self.nothing_to_do}

    def __str__(self) -> str:
        if self.empty:
            return "storage is empty: nothing to prune"
        policy = f"keep {self.keep_snapshots} older snapshot(s)" + (
            f" and every point of the last {self.keep_for:g} s" if self.keep_for else "")
        lines = [f"prune plan ({policy}):"]
        for h in self.kept:
            lines.append(f"  keep point: seq {h.base_seq} (captured {when(h.captured_at)}), "
                         f"{len(h.deltas)} delta(s) after it")
        for h in self.dropped:
            lines.append(f"  drop point: seq {h.base_seq} (captured {when(h.captured_at)}), "
                         f"{len(h.deltas)} delta(s) after it")
        for ref in self.delete:
            lines.append(f"  delete {ref}" + ("  (unlisted leftover)" if ref in self.garbage else ""))
        for ref in self.too_old:
            lines.append(f"  leave  {ref}  (may be older than the backend's delete window: it cannot be "
                         "deleted any more)")
        if self.nothing_to_do:
            lines.append("  nothing to prune")
        return "\n".join(lines)


def compute(info: BackendInfo, snapshot: SnapshotEntry | None, deltas: list[DeltaEntry],
            history: list[HistoryPoint], leftovers: list[str], keep_snapshots: int, keep_for: float,
            now: float) -> PrunePlan:
    """The prune plan for a storage whose current state is `snapshot` + `deltas` with retained
    `history`; `leftovers` are unlisted documents judged garbage by name (discovering backends)."""
    check_policy(keep_snapshots, keep_for)
    kept, dropped = select_points(history, snapshot, keep_snapshots, keep_for, now)
    keep = needed(snapshot, deltas, kept)
    delete, too_old = documents_to_delete(dropped, keep, info.delete_window, now)
    garbage = [r for r in leftovers if r not in keep and r not in delete and r not in too_old]
    return PrunePlan(keep_snapshots=keep_snapshots, keep_for=keep_for, now=now, kept=kept, dropped=dropped,
                     delete=delete + garbage, too_old=too_old, garbage=garbage)


async def garbage(backend: Backend, snap: SnapshotEntry, claim: bytes | None = None, *,
                  keep: set[str] | None = None) -> list[str]:
    """Refs a discovering backend holds that no restore from `snap` on can need, judged by their names:
    deltas with seq <= its base, parts of snapshots with a lower base, and parts at its base other than
    its own that are untagged or tagged with `claim` (attempts of this claim that never switched; a
    successor's snapshot at the same base carries another tag and stays). Documents without a known
    name are never judged garbage, nor any in `keep` (what retained points need)."""
    keep = {p.ref for p in snap.parts} | (keep or set())
    tag = claim.hex()[:8] if claim else None
    out = []
    for ref, name in await backend.discover_named(None):
        if name is None or ref in keep:
            continue
        m = DELTA_NAME.match(name)
        if m and int(m.group(1)) <= snap.base_seq:
            out.append(ref)
            continue
        m = PART_NAME.match(name)
        if m and (int(m.group(1)) < snap.base_seq
                  or int(m.group(1)) == snap.base_seq and m.group(2) in (None, tag)):
            out.append(ref)
    return out


async def leftovers(backend: Backend, snapshot: SnapshotEntry | None, claim: bytes | None, keep: set[str]
                    ) -> list[str]:
    """Unlisted documents a discovering backend holds that no restore needs (by name), sparing `keep`."""
    if not backend.info.can_discover or snapshot is None:
        return []
    return await garbage(backend, snapshot, claim, keep=keep)


async def make_plan(backend: Backend, key: bytes | None, *, keep_snapshots: int = 0, keep_for: float = 0.0,
                    now: float | None = None) -> PrunePlan:
    """Read only: what `prune` would do now."""
    from snapshot.restore import plan

    check_policy(keep_snapshots, keep_for)
    r = await plan(backend, as_cipher(key))
    now = time.time() if now is None else now
    if r.manifest is None:
        return PrunePlan(keep_snapshots, keep_for, now, [], [], [], [], empty=True)
    m = r.manifest
    history = list(m.history)
    kept, _dropped = select_points(history, r.snapshot, keep_snapshots, keep_for, now)
    # A prune's own claim is new: parts at the current base tagged with the old claim are not its garbage.
    left = await leftovers(backend, r.snapshot, None, needed(r.snapshot, r.chain, kept))
    return compute(backend.info, r.snapshot, r.chain, history, left, keep_snapshots, keep_for, now)


async def prune(backend: Backend, key: bytes | None = None, *, keep_snapshots: int = 0, keep_for: float = 0.0,
                wait: float = 0.0, config=None, now: float | None = None) -> PrunePlan:
    """Take the writer lease (StorageBusy while a live writer holds it, after `wait`), drop the points
    the policy lets go from the manifest, delete what only they needed, release. Returns what it did."""
    from snapshot.replica import Replica, ReplicaConfig

    check_policy(keep_snapshots, keep_for)
    cfg = dataclasses.replace(config or ReplicaConfig(), encryption_key=key, takeover_wait=wait,
                              keep_snapshots=keep_snapshots, keep_for=keep_for)
    replica = Replica(backend, cfg, writer_id=f"tgsnap-prune@{socket.gethostname()}:{os.getpid()}")
    restored = await replica.acquire()
    restored.conn.close()
    try:
        return await replica.prune(now=now)
    finally:
        await replica.release()


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


def parse_duration(text: str) -> float:
    """Seconds from '90', '90s', '45m', '48h', '7d', '2w' (ConfigError otherwise)."""
    t = text.strip().lower()
    unit = _UNITS.get(t[-1:], None)
    number = t[:-1] if unit is not None else t
    try:
        value = float(number) * (unit or 1.0)
    except ValueError:
        raise ConfigError(f"{text!r} is not a duration: write seconds, or a number with s, m, h, d or w "
                          "(e.g. 48h, 7d)") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{text!r} is not a duration >= 0")
    return value
