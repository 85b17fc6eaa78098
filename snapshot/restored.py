"""What a restore hands back, and the progress callback type (shared by the writer and the reader)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

#: progress callback: (stage, done, total) e.g. ("download", 3, 10)
Progress = Callable[[str, int, int], None]


@dataclass
class Restored:
    """What `Replica.acquire` (and `snapshot.restore.restore`) hands back."""

    conn: sqlite3.Connection  # in-memory database holding the restored state (empty if storage was empty)
    seq: int  # last delta applied (0 if none)
    captured_at: float | None  # cut time of that delta/snapshot
    epoch: int = 0  # writer epoch: the acquiring replica's own, or the manifest's for a plain restore
    snapshot_seq: int | None = None  # base seq of the snapshot restored from (None: started empty)
    deltas_applied: int = 0
    elapsed: float = 0.0  # seconds the whole restore took
