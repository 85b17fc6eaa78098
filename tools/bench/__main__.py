"""`python -m tools.bench`: measure tgsnap against the article's JSON backup on the same data; print JSON."""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import sys
import time
from pathlib import Path

from tools.bench.measures import MEASURES, Context

EXAMPLES = """\
examples:
  # the reference run (1 M users, every measure; a few minutes on 2 cores)
  python -m tools.bench --json-out bench-1m.json

  # a quick run while developing
  python -m tools.bench --users 20000

  # just two measures, reproducible with another population
  python -m tools.bench --users 200000 --seed 7 --only delta snapshot

  # the CI run: small, every measure, the PostgreSQL baseline included
  python -m tools.bench --quick

  # the clicker's replies on tgsnap vs PostgreSQL (loopback and behind 2 ms) vs the article's method
  python -m tools.bench --only handler

  # parallel vs sequential MTProto upload of 200 MiB through the emulator (50 ms RTT)
  python -m tools.bench --users 1000 --repeats 1 --only upload

  # the clicker bot end to end through loadgen and the emulator, on tgsnap and on PostgreSQL
  python -m tools.bench --only e2e

  # 10 M users: sizes, restore (local and over MTProto), memory, the event loop during a snapshot
  python -m tools.bench --users 10000000 --only delta snapshot restore restore_emulator memory stall
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tgsnap bench",
        description=(
            "Measure tgsnap side by side with the article's method (SELECT * -> json.dumps backup,\n"
            "json.loads -> executemany restore) on one synthetic clicker population, and print the\n"
            "results as JSON with ratios against the project's targets. Timings are wall-clock on this\n"
            "machine; the ratios are what to compare across machines. Progress goes to stderr."
        ),
        epilog=EXAMPLES + "\nmeasures: " + ", ".join(f"{m.name} ({m.summary})"
                                             # the targets' order, not import order (it depends on who imported first)
                                             for m in sorted(MEASURES.values(), key=lambda m: _brief_order(m.name))),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--users", type=int, default=None, metavar="N",
                        help="population size (default 1000000; 20000 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="a small run for CI: 20000 users, one repeat, a 4 MiB upload, 300 handler replies, "
                             "a few seconds of e2e load per bot")
    parser.add_argument("--postgres", metavar="URL", default=None,
                        help="PostgreSQL for the handler and e2e baselines (its public.users is replaced); default: "
                             "start a throw-away server from the installed binaries")
    parser.add_argument("--plot", type=Path, metavar="DIR", default=None,
                        help="also write PNG charts (matplotlib) of this run and any --plot-with reports to DIR")
    parser.add_argument("--plot-with", type=Path, nargs="+", metavar="FILE", default=[],
                        help="earlier --json-out reports to chart beside this run (sizes against users)")
    parser.add_argument("--rpo-seconds", type=float, metavar="S", default=None,
                        help="how long the rpo measure runs per Telegram mode (default 60; 0 = computed only, "
                             "the --quick default)")
    parser.add_argument("--handler-replies", type=int, metavar="N", default=None,
                        help="replies per system in the handler measure (default 5000; 300 up to 50000 users)")
    parser.add_argument("--seed", type=int, default=1, metavar="S", help="population seed (default 1)")
    parser.add_argument("--json-out", type=Path, metavar="FILE", help="also write the JSON to FILE")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=sorted(MEASURES),
                        help="run only these measures (the article baseline always runs)")
    parser.add_argument("--repeats", type=int, metavar="R",
                        help="timed runs per figure, best kept (default 3 up to 200000 users, else 2)")
    parser.add_argument("--upload-mib", type=int, default=200, metavar="M",
                        help="payload of the upload measure in MiB (default 200)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quick:
        args.users = args.users or 20_000
        args.repeats = args.repeats or 1
        args.upload_mib = min(args.upload_mib, 4)
    args.users = args.users or 1_000_000
    try:  # read before a long run, not after it
        others = [json.loads(p.read_text()) for p in args.plot_with]
    except (OSError, ValueError) as e:
        parser.error(f"--plot-with: {e}")
    if args.users < 100:
        parser.error("--users must be at least 100 (1 %% dirty must be at least one row)")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.upload_mib < 1:
        parser.error("--upload-mib must be at least 1")
    ctx = Context(users=args.users, seed=args.seed, log=(lambda _m: None) if args.quiet else _log,
                  runs=args.repeats, upload_mib=args.upload_mib)
    ctx.rpo_seconds = args.rpo_seconds if args.rpo_seconds is not None else (0.0 if args.quick else 60.0)
    ctx.postgres_url = args.postgres
    ctx.handler_ops = args.handler_replies
    started = time.time()
    results: dict[str, object] = {}
    try:
        for name in sorted(args.only or MEASURES, key=_brief_order):
            ctx.log(f"measuring {name} ...")
            results[name] = MEASURES[name].run(ctx)
    finally:
        ctx.close()
    report = {
        "bench": "tgsnap vs the article's JSON backup",
        "users": args.users,
        "seed": args.seed,
        "repeats": ctx.repeats,
        "machine": {
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "platform": platform.platform(),
            "cpus": _cpus(),
        },
        "started_at": started,
        "elapsed_seconds": round(time.time() - started, 3),
        "article": ctx.article_summary(),
        "measures": results,
    }
    text = json.dumps(report, indent=2, ensure_ascii=False)
    print(text)
    if args.json_out is not None:
        args.json_out.write_text(text + "\n")
    if args.plot is not None:
        from tools.bench.plot import plot

        for path in plot([report, *others], args.plot):
            ctx.log(f"wrote {path}")
    return 0


def _brief_order(name: str) -> int:
    # the targets table
    order = ["delta", "snapshot", "restore", "restore_emulator", "writes", "rpo", "memory", "upload", "handler",
             "e2e", "stall"]
    return order.index(name) if name in order else len(order)


def _cpus() -> int | None:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _log(message: str) -> None:
    sys.stderr.write(f"bench: {message}\n")
    sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
