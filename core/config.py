"""How a Store behaves: flush cadence, retry policy, and the replica's own settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from snapshot.errors import ConfigError
from snapshot.replica import ReplicaConfig


@dataclass
class StoreConfig:
    #: seconds between delta flushes while anything is dirty; this is the RPO for writes not followed
    #: by `flush()` (plus upload time).
    flush_interval: float = 4.0
    replica: ReplicaConfig = field(default_factory=ReplicaConfig)
    #: names this process in the writer lease (shown to a newcomer that finds storage busy).
    writer_id: str | None = None
    #: first pause after a failed upload; doubles per failure up to `retry_max` (a backend's
    #: `retry_after` wins when longer).
    retry_min: float = 0.5
    retry_max: float = 60.0
    #: run `PRAGMA foreign_keys=ON` after restore (off by default, as in SQLite).
    foreign_keys: bool = False

    def __post_init__(self) -> None:
        if not self.flush_interval > 0:
            raise ConfigError(f"flush_interval must be > 0 seconds, got {self.flush_interval!r}")
        if not 0 < self.retry_min <= self.retry_max:
            raise ConfigError(f"need 0 < retry_min <= retry_max, got {self.retry_min!r}, {self.retry_max!r}")
