"""Issue 8's storage scenarios on the directory backend, with real writer processes:

- a copy of the storage directory continued elsewhere, its deltas copied back: named a fork by verify and
  never preferred, the storage's own acknowledged rows kept;
- the manifest deleted from a directory that holds documents: writers refuse (nothing swept), verify
  fails non-zero.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from tests.adversary.procs import ROOT, Place


def verify(dir) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.verify", "--storage-dir", str(dir), "--verbose", "--quiet"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def copy_back_deltas(src, dst) -> int:
    """Copy the delta documents of `src` that `dst` does not hold byte for byte into `dst`, numbered after
    `dst`'s own documents (as an operator merging two directories might): returns how many."""
    have = set(os.listdir(dst / "docs"))
    top = max((int(n[:12]) for n in have if n[:12].isdigit()), default=0)
    n = 0
    for name in sorted(os.listdir(src / "docs")):
        if "delta" not in name or not name[:12].isdigit():
            continue
        data = (src / "docs" / name).read_bytes()
        if name in have and (dst / "docs" / name).read_bytes() == data:
            continue
        top += 1
        (dst / "docs" / f"{top:012d}{name[12:]}").write_bytes(data)
        n += 1
    return n


async def test_a_copy_continued_elsewhere_is_a_fork_and_never_preferred(local: Place, tmp_path):
    copy = tmp_path / "copy"
    try:
        a = await local.spawn("A", "--steps", "3")
        assert await a.exit_code() == 0
        shutil.copytree(local.dir, copy)
        b = await local.spawn("B", "--steps", "8", dir=copy)  # the copy's chain grows longer
        assert await b.exit_code() == 0
        a2 = await local.spawn("A", "--steps", "3")  # the storage's own writer carries on
        assert await a2.exit_code() == 0
        assert copy_back_deltas(copy, local.dir) >= 8
        rows = await local.rows()
        checked = verify(local.dir)
    finally:
        await local.cleanup()
    assert rows.get("A") == set(range(a2.acked + 1)), sorted(rows.get("A", ()))[-3:]
    assert "B" not in rows, "the foreign chain was preferred over the storage's own"
    assert "fork" in checked.stdout.lower(), checked.stdout[-2000:]


async def test_a_directory_without_its_manifest_is_refused_and_fails_verify(local: Place):
    try:
        a = await local.spawn("A", "--steps", "4")
        assert await a.exit_code() == 0
        before = sorted(os.listdir(local.dir / "docs"))
        gone = [n for n in os.listdir(local.dir) if n.startswith("MANIFEST")]
        assert gone
        for n in gone:
            os.unlink(local.dir / n)
        w = await local.spawn("W", "--steps", "2")
        code = await w.exit_code()
        checked = verify(local.dir)
    finally:
        await local.cleanup()
    assert code != 0 and w.said("OPEN") is None, w.lines[-3:]
    assert w.said("REFUSED") and "manifest" in w.said("REFUSED").lower(), w.lines[-3:]
    assert sorted(os.listdir(local.dir / "docs")) == before, "a refused writer swept documents"
    assert checked.returncode == 1, (checked.returncode, checked.stdout[-500:])
