"""Resident memory of a process holding N users, measured in a fresh interpreter so earlier measures'
garbage and allocator fragmentation do not count.

`python -m tools.bench.memory N SEED` prints one JSON object: RSS before, after loading, and the delta.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path


def rss_bytes() -> int:
    """Current resident set size (Linux /proc; falls back to the peak from getrusage elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _load(n: int, seed: int) -> tuple[str, object]:
    """Hold N users the way the bot does: in a tracked Store when core/ provides one."""
    from tools.bench import population

    try:
        from tools.bench.store import tracked_store
    except ImportError:
        tracked_store = None
    if tracked_store is not None:
        holder = tracked_store(n, seed)
        if holder is not None:
            return "core.Store (tracking on)", holder
    return "bare in-memory sqlite3", population.memory_db(n, seed)


def child(n: int, seed: int) -> dict[str, object]:
    import tools.bench.population  # noqa: F401  (import cost is not the data's cost)

    gc.collect()
    before = rss_bytes()
    what, holder = _load(n, seed)
    gc.collect()
    after = rss_bytes()
    del holder
    return {"holder": what, "rss_before_bytes": before, "rss_after_bytes": after,
            "rss_delta_bytes": after - before}


def measure_in_subprocess(n: int, seed: int, timeout: float = 900.0) -> dict[str, object]:
    root = Path(__file__).resolve().parents[2]  # the checkout, so an uninstalled tree works too
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-m", "tools.bench.memory", str(n), str(seed)], cwd=root, env=env,
                         capture_output=True, text=True, timeout=timeout, check=True)
    return json.loads(out.stdout)


if __name__ == "__main__":
    print(json.dumps(child(int(sys.argv[1]), int(sys.argv[2]))))
