"""`python -m tools.bench.plot DIR REPORT.json...` (or `python -m tools.bench --plot DIR`): PNG charts.

- `handler_latency.png`: the distribution (percentiles 1..99) of the clicker's reply storage time on
  tgsnap, PostgreSQL on loopback, PostgreSQL behind 2 ms and the article's method, log scale, one panel
  per report (population size);
- `size_vs_users.png`: the article's JSON, tgsnap's snapshot and a 1 %-dirty delta, in bytes, against users;
- `time_vs_users.png`: snapshot build and restore (tgsnap, local) against the article's dump and restore;
- `stall.png`: longest event-loop stall and click p99 during a snapshot against users.

Charts need several reports of different sizes to show a trend (e.g. `--users 100000`, `1000000`,
`10000000` runs saved with `--json-out`); a chart without data is skipped. Needs matplotlib.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SYSTEMS = [("tgsnap", "tgsnap (in-memory SQLite)"), ("postgres_loopback", "PostgreSQL, 127.0.0.1"),
           ("postgres_2ms", "PostgreSQL, 2 ms RTT"), ("article", "the article's method")]


def _get(d: dict, *path, default=None):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return default
        d = d[p]
    return d


def plot(reports: list[dict[str, Any]], outdir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    reports = sorted(reports, key=lambda r: r["users"])
    written: list[Path] = []

    with_handler = [r for r in reports if _get(r, "measures", "handler", "tgsnap", "mix", "percentiles_us")]
    if with_handler:
        fig, axes = plt.subplots(1, len(with_handler), figsize=(6 * len(with_handler), 4.5), squeeze=False)
        for ax, r in zip(axes[0], with_handler, strict=True):
            h = r["measures"]["handler"]
            for key, label in SYSTEMS:
                pct = _get(h, key, "mix", "percentiles_us")
                if pct:
                    ax.plot(range(1, 100), pct, label=f"{label} (p99 {h[key]['mix']['p99_us'] / 1000:.2f} ms)")
            ax.set_yscale("log")
            ax.set_xlabel("percentile of replies")
            ax.set_ylabel("storage time per reply, µs (log)")
            ax.set_title(f"clicker replies (9 clicks : 1 rating), {r['users']:,} users")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(_save(fig, outdir / "handler_latency.png"))

    def series(*path) -> tuple[list[int], list[float]]:
        xs, ys = [], []
        for r in reports:
            v = _get(r, *path)
            if isinstance(v, (int, float)):
                xs.append(r["users"])
                ys.append(v)
        return xs, ys

    lines = [("article's JSON", ("article", "json_bytes")),
             ("tgsnap snapshot (zstd parts)", ("measures", "snapshot", "snapshot_bytes")),
             ("tgsnap delta, 1 % dirty", ("measures", "delta", "delta_bytes"))]
    if _line_chart(plt, series, lines, "bytes", "bytes shipped against users", outdir / "size_vs_users.png"):
        written.append(outdir / "size_vs_users.png")
    lines = [("article: dump", ("article", "dump_seconds")), ("article: restore", ("article", "restore_seconds")),
             ("tgsnap: snapshot build (CPU)", ("measures", "snapshot", "build_cpu_seconds")),
             ("tgsnap: restore, local", ("measures", "restore", "restore_seconds")),
             ("tgsnap: restore over MTProto (emulator process)", ("measures", "restore_emulator", "restore_seconds"))]
    if _line_chart(plt, series, lines, "seconds", "time against users", outdir / "time_vs_users.png"):
        written.append(outdir / "time_vs_users.png")
    lines = [("longest stall", ("measures", "stall", "longest_stall_ms")),
             ("click p99 during the snapshot", ("measures", "stall", "click_latency", "during_snapshot", "p99_ms"))]
    if _line_chart(plt, series, lines, "ms", "event loop while a snapshot is taken", outdir / "stall.png"):
        written.append(outdir / "stall.png")
    with_e2e = [r for r in reports if _get(r, "measures", "e2e", "ratios")]
    if with_e2e:  # the largest run's: end-to-end reply latency and the highest sustained clicks/s per system
        r = with_e2e[-1]
        e = r["measures"]["e2e"]
        systems = [("tgsnap", "tgsnap"), ("postgres_loopback", "PostgreSQL\n127.0.0.1"),
                   ("postgres_2ms", "PostgreSQL\n2 ms RTT")]
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
        xs = range(len(systems))
        for offset, key, label in ((-0.2, "p50_ms", "p50"), (0.2, "p99_ms", "p99")):
            left.bar([x + offset for x in xs], [e[k]["latency"][key] or 0 for k, _ in systems], width=0.4, label=label)
        left.set_xticks(list(xs), [lbl for _, lbl in systems])
        left.set_ylabel("ms")
        left.set_title(f"reply latency at {e['plan']['latency_rate']:g} msg/s")
        left.legend()
        right.bar(list(xs), [e[k]["max_sustained_clicks_per_second"] for k, _ in systems], color="tab:green")
        right.set_xticks(list(xs), [lbl for _, lbl in systems])
        right.set_ylabel("clicks per second")
        right.set_title("highest sustained clicks/s")
        fig.suptitle(f"the clicker end to end (loadgen + emulator), {r['users']:,} users")
        written.append(_save(fig, outdir / "e2e.png"))
    return written


def _line_chart(plt, series, lines, unit: str, title: str, path: Path) -> bool:
    data = [(label, *series(*p)) for label, p in lines]
    data = [d for d in data if d[1]]
    if not data:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, xs, ys in data:
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("users (log)")
    ax.set_ylabel(f"{unit} (log)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    return True


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or args[0] in ("-h", "--help"):
        sys.stderr.write(__doc__)
        return 2
    reports = [json.loads(Path(a).read_text()) for a in args[1:]]
    for p in plot(reports, Path(args[0])):
        sys.stderr.write(f"wrote {p}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
