"""What a load run measured, as data (for --json) and as a few readable lines."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class Report:
    users: int
    target_rate: float
    duration: float
    #: messages users sent during the timed phase (clicks and rating requests) and those answered in time.
    sent: int = 0
    answered: int = 0
    clicks: int = 0
    ratings: int = 0
    timeouts: int = 0
    achieved_rate: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    #: None without --verify; else the verdict and the first problems found.
    verified: bool | None = None
    problems: list[str] = field(default_factory=list)

    def set_latencies(self, seconds: list[float]) -> None:
        values = sorted(s * 1000 for s in seconds)
        self.latency_ms = {f"p{q}": round(percentile(values, q), 2) for q in (50, 90, 99)}
        self.latency_ms["max"] = round(values[-1], 2) if values else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        lat = self.latency_ms
        lines = [
            f"users {self.users}, target {self.target_rate:g} msg/s for {self.duration:g} s",
            f"sent {self.sent} ({self.clicks} clicks, {self.ratings} ratings), answered {self.answered}, "
            f"timed out {self.timeouts}",
            f"achieved {self.achieved_rate:.1f} msg/s",
            f"latency ms: p50 {lat.get('p50', 0):.1f}  p90 {lat.get('p90', 0):.1f}  p99 {lat.get('p99', 0):.1f}  "
            f"max {lat.get('max', 0):.1f}",
        ]
        if self.verified is not None:
            lines.append("verify: OK, every click count matches what was sent" if self.verified
                         else f"verify: FAILED ({len(self.problems)} problem(s))")
            lines += [f"  {p}" for p in self.problems[:20]]
        return "\n".join(lines)
