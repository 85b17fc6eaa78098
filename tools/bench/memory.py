"""Resident memory of a process holding N users, measured in a fresh interpreter so earlier measures'
garbage and allocator fragmentation do not count.

`python -m tools.bench.memory N SEED [DIR]` prints one JSON object: RSS before, after, and the delta.
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


def child(n: int, seed: int, storage_dir: str | None) -> dict[str, object]:
    """RSS before and after taking N users in: a Store restored from `storage_dir` (as the bot starts),
    or, without one, a bare in-memory SQLite database filled directly."""
    import core  # noqa: F401
    from tools.bench import population, store  # noqa: F401  (import cost is not the data's cost)

    gc.collect()
    before = rss_bytes()
    if storage_dir:
        holder, loop = store.store_from_dir(Path(storage_dir))
        what = "core.Store restored from a snapshot (tracking on)"
        rows = holder.execute("SELECT count(*) FROM users").fetchone()[0]
    else:
        holder, loop = population.memory_db(n, seed), None
        what = "bare in-memory sqlite3"
        rows = holder.execute("SELECT count(*) FROM users").fetchone()[0]
    gc.collect()
    after = rss_bytes()
    if loop is not None:
        loop.run_until_complete(holder.close())
        loop.close()
    return {"holder": what, "rows": rows, "rss_before_bytes": before, "rss_after_bytes": after,
            "rss_delta_bytes": after - before}


def measure_in_subprocess(n: int, seed: int, storage_dir: Path | None = None,
                          timeout: float = 900.0) -> dict[str, object]:
    root = Path(__file__).resolve().parents[2]  # the checkout, so an uninstalled tree works too
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    argv = [sys.executable, "-m", "tools.bench.memory", str(n), str(seed), str(storage_dir or "")]
    out = subprocess.run(argv, cwd=root, env=env,
                         capture_output=True, text=True, timeout=timeout, check=True)
    return json.loads(out.stdout)


if __name__ == "__main__":
    print(json.dumps(child(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)))
