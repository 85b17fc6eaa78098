"""Issue 8's writer scenarios with real processes (tests/adversary/writer.py) over the directory backend
and both Telegram backends (the emulator of tests/telegram). Each asserts on what writers acknowledged
(what `flush()` returned for) against what a fresh restore yields.

- Two writers released at one instant on empty storage / after a clean shutdown / after a lease ran out:
  exactly one serves, the other is refused (StorageBusy) or fenced (FencedError), and every row either
  acknowledged survives.
- A writer frozen (SIGSTOP) inside an upload for longer than its lease, a newcomer takes over, the old one
  resumes (SIGCONT): it acknowledges nothing more, says it was fenced, and its late upload is not applied.
- A fenced writer's late delta lands after its successor took a snapshot and closed: never applied.
"""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests.adversary.conftest import ROUNDS, TELEGRAM
from tests.adversary.procs import Place, eventually

BEFORE = ["empty", "clean", "expired"]
MODES = ["local", "botapi", "mtproto"] if TELEGRAM else ["local"]
#: the default run: every scenario on the directory, the frozen writer on MTProto too (see conftest.py).
PAIRS = [(m, b) for m in MODES for b in BEFORE]
FROZEN_MODES = MODES if TELEGRAM else ["local", "mtproto"]
#: the backend call a frozen writer stops inside: a delta upload where deltas are documents, the manifest
#: slot update that carries the delta on the Bot API (deltas ride inside the manifest there).
FREEZE = {"local": "put:delta", "mtproto": "put:delta", "botapi": "replace_slot"}


def survives(rows: dict[str, set[int]], name: str, acked: int) -> bool:
    return set(range(acked + 1)) <= rows.get(name, set())


@pytest.mark.parametrize(("place", "before"), PAIRS, indirect=["place"])
@pytest.mark.parametrize("round_", range(ROUNDS))
async def test_two_writers_released_at_one_instant(place: Place, before, round_, tmp_path):
    try:
        z_acked = -1
        if before == "clean":
            z = await place.spawn("Z", "--steps", "3")
            assert await z.exit_code() == 0
            z_acked = z.acked
        elif before == "expired":
            z = await place.spawn("Z", "--lease", "1.5")
            await z.until(lambda w: len(w.acks) >= 2)
            await z.kill()
            z_acked = z.acked
            await asyncio.sleep(2.0)  # its lease runs out
        go = tmp_path / f"go-{round_}"
        a = await place.spawn("A", "--go", str(go), "--lease", "10")
        b = await place.spawn("B", "--go", str(go), "--lease", "10")
        for w in (a, b):
            await w.until(lambda w: "READY" in w.lines)
        go.touch()
        # Let them run: a rival claim must stop the other within a few of its acknowledgements.
        await eventually(lambda: (a.ended or len(a.acks) >= 8) and (b.ended or len(b.acks) >= 8))
        codes = {w.name: await w.stop() for w in (a, b)}
        rows = await place.rows()
    finally:
        await place.cleanup()
    for w in (a, b):
        assert survives(rows, w.name, w.acked), (w.name, w.acked, sorted(rows.get(w.name, ()))[-3:], w.lines[-4:])
    assert survives(rows, "Z", z_acked)
    # exactly one of them serves: the other is refused at open (4) or fenced (3), and says so
    assert sorted(codes.values()) in ([0, 3], [0, 4]), (codes, a.lines[-3:], b.lines[-3:])
    loser = a if codes["A"] else b
    assert loser.said("BUSY") or loser.said("FENCED")


@pytest.mark.parametrize("place", FROZEN_MODES, indirect=True)
async def test_writer_frozen_in_upload_past_its_lease_is_fenced_when_resumed(place: Place, tmp_path):
    try:
        a = await place.spawn("A", "--lease", "2", "--freeze", FREEZE[place.mode], "--freeze-nth", "3")
        # B starts now (imports take seconds) and claims when told to
        b = await place.spawn("B", "--wait", "30", "--lease", "30", "--go", str(tmp_path / "go"))
        await a.until(lambda w: w.said("FROZEN") is not None)
        acked_a = a.acked
        await asyncio.sleep(2.5)  # frozen past its lease
        (tmp_path / "go").touch()
        await b.until(lambda w: len(w.acks) >= 3)
        a.proc.send_signal(signal.SIGCONT)
        code_a = await a.exit_code()
        seen = len(b.acks)
        await b.until(lambda w: len(w.acks) >= seen + 2)  # the successor is undisturbed
        assert await b.stop() == 0
        rows = await place.rows()
    finally:
        await place.cleanup()
    assert code_a == 3 and a.said("FENCED"), a.lines[-4:]
    assert a.acked == acked_a, "acknowledged after it was frozen past its lease"
    restored_a = b.opened()["max"].get("A", -1)
    assert restored_a >= acked_a
    # A's rows are exactly what B restored: the late upload is not applied, B's rows all are
    assert rows.get("A", set()) == set(range(restored_a + 1)), sorted(rows.get("A", ()))[-3:]
    assert rows["B"] == set(range(b.acked + 1)) or survives(rows, "B", b.acked)


@pytest.mark.parametrize("place", MODES, indirect=True)
async def test_late_delta_after_successor_snapshot_and_close_is_never_applied(place: Place, tmp_path):
    try:
        a = await place.spawn("A", "--lease", "2", "--freeze", FREEZE[place.mode], "--freeze-nth", "2")
        b = await place.spawn("B", "--wait", "30", "--snapshot-close", "--go", str(tmp_path / "go-b"))
        c = await place.spawn("C", "--steps", "1", "--go", str(tmp_path / "go-c"))
        await a.until(lambda w: w.said("FROZEN") is not None)
        acked_a = a.acked
        await asyncio.sleep(2.5)
        (tmp_path / "go-b").touch()
        assert await b.exit_code() == 0 and b.said("SNAPSHOT"), b.lines[-4:]
        restored_a = b.opened()["max"].get("A", -1)
        a.proc.send_signal(signal.SIGCONT)
        await a.exit_code()
        first = await place.rows()
        (tmp_path / "go-c").touch()
        assert await c.exit_code() == 0
        second = await place.rows()
    finally:
        await place.cleanup()
    assert a.acked == acked_a and restored_a >= acked_a
    # every later restore: exactly the successor's state, not the late delta on top of its snapshot
    assert first.get("A", set()) == set(range(restored_a + 1)), sorted(first.get("A", ()))[-3:]
    assert c.opened()["max"].get("A", -1) == restored_a
    assert second.get("A", set()) == set(range(restored_a + 1)) and survives(second, "C", c.acked)
