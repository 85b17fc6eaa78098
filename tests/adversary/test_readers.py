"""Readers beside a live writer (issue 8: 9 of 73 verify runs and 7 of 73 exports reported a healthy
storage as damaged when a snapshot switch deleted what they were reading). A writer process snapshots
every few deltas on the directory backend while verify and export read in a loop: no false report.
A document missing under an unchanged manifest is still reported.

`TGSNAP_ADVERSARY=full` reads 200 times each instead of 15.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from snapshot.backends.local import LocalDirBackend
from snapshot.reading import restore_settled
from tests.adversary.conftest import FULL
from tests.adversary.procs import ROOT, Place
from tools.verify import verify_settled

RUNS = 200 if FULL else 15


async def test_verify_and_export_beside_a_writer_that_snapshots_report_no_damage(local: Place, tmp_path):
    w = await local.spawn("A", "--snapshot-every", "2", "--rows", "400", "--pause", "0.0")
    false_verify, false_export, switches = [], [], set()
    try:
        await w.until(lambda w: len(w.acks) >= 4)
        b = LocalDirBackend(local.dir)
        runs, t0 = 0, time.monotonic()
        # enough runs, across enough snapshot switches (bounded: a slow machine ends with what it has)
        while (runs < RUNS or len(switches) < 6) and time.monotonic() - t0 < 40:
            runs += 1
            report = await verify_settled(b)
            if report.faults:
                false_verify.append([c.line() for c in report.faults])
            try:
                got = await restore_settled(b)
            except Exception as exc:  # any failure here is a false report of damage
                false_export.append(repr(exc))
            else:
                switches.add(got.snapshot_seq)
                rows = [i for (i,) in got.conn.execute("SELECT i FROM w WHERE writer = 'A' ORDER BY i")]
                got.conn.close()
                if rows != list(range(len(rows))):
                    false_export.append(f"rows not a prefix: {rows[-3:]}")
        # the CLIs themselves, too
        for tool in (["tools.verify"], ["tools.export", "--to", str(tmp_path / "x.jsonl"), "--force"]):
            done = subprocess.run(  # noqa: ASYNC221 - the writer runs in its own process meanwhile
[sys.executable, "-m", *tool, "--storage-dir", str(local.dir), "--quiet"],
                                  capture_output=True, text=True, cwd=ROOT, timeout=60)
            if done.returncode != 0:
                (false_verify if tool[0] == "tools.verify" else false_export).append(done.stdout + done.stderr)
        assert w.proc.returncode is None, w.lines[-3:]  # the writer was live throughout
    finally:
        await local.cleanup()
    assert len(switches) >= 6, "the writer did not switch snapshots while we read: the test proves nothing"
    assert false_verify == [] and false_export == [], (len(false_verify), len(false_export),
                                                       (false_verify + false_export)[:2])


async def test_a_listed_document_missing_under_an_unchanged_manifest_is_still_reported(local: Place):
    try:
        w = await local.spawn("A", "--steps", "3")
        assert await w.exit_code() == 0
    finally:
        await local.cleanup()
    docs = sorted(os.listdir(local.dir / "docs"))
    victim = next(n for n in docs if "delta" in n)
    os.unlink(local.dir / "docs" / victim)
    report = await verify_settled(LocalDirBackend(local.dir))
    assert any(victim in (c.ref or "") for c in report.faults), [c.line() for c in report.checks]
    try:
        await restore_settled(LocalDirBackend(local.dir))
    except Exception as exc:
        assert victim in str(exc)
    else:
        raise AssertionError("restore applied a chain with a listed delta missing")
