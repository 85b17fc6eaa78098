"""Invariants across random chains: the tools agree with a plain model of the state at every seq."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.tools.chain import build_sync, restored_rows
from tools import compact, export, verify


@st.composite
def chains(draw):
    deltas = draw(st.integers(1, 9))
    snapshot_at = draw(st.one_of(st.none(), st.integers(1, deltas)))
    at = draw(st.integers(snapshot_at or 0, deltas))
    return deltas, snapshot_at, at


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chains())
def test_export_at_any_seq_equals_the_model_and_compact_preserves_the_latest(capsys, case):
    deltas, snapshot_at, at = case
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        chain = build_sync(store, deltas, snapshot_at=snapshot_at)
        out = Path(tmp) / "at.sqlite"
        assert export.main(["--storage-dir", str(store), "--at-seq", str(at), "--to", str(out), "-q"]) == 0
        conn = sqlite3.connect(out)
        if at == 0:  # before the first delta: an empty database, not even the table
            assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
        else:
            assert conn.execute("SELECT * FROM users ORDER BY chatid").fetchall() == chain.states[at]
        conn.close()
        assert verify.main(["--storage-dir", str(store), "-q"]) == 0
        assert compact.main(["--storage-dir", str(store), "-q"]) == 0
        assert verify.main(["--storage-dir", str(store), "-q"]) == 0
        assert restored_rows(store) == chain.states[deltas]
        capsys.readouterr()
