"""A point-in-time report on the store, for logs, /status commands and dashboards."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class StoreStats:
    #: application rows per table.
    rows: dict[str, int] = field(default_factory=dict)
    #: keys changed since the last capture (waiting for the next delta), including those of a failed one.
    dirty_rows: int = 0
    #: rows captured into the delta being uploaded right now.
    in_flight_rows: int = 0
    #: unix time the last delta (or, before any, the restored state) became durable; None if never.
    last_flush_at: float | None = None
    #: seconds since the oldest write that is not yet durable; 0.0 when everything is durable.
    lag: float = 0.0
    #: bytes stored by this writer since it opened the store.
    bytes_shipped: int = 0
    deltas_since_snapshot: int = 0
    #: seconds since the current snapshot's cut; None if storage has no snapshot yet.
    snapshot_age: float | None = None
    snapshot_size: int | None = None
    #: last delta sequence number durable in storage.
    last_seq: int = 0
    epoch: int = 0
    backend: str = ""
    fenced: bool = False
    closed: bool = False
    #: a snapshot is being written in the background right now.
    snapshot_in_progress: bool = False
    #: the last storage error, cleared by the next successful upload.
    last_error: str | None = None
