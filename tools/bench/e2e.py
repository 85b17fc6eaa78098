"""The `e2e` measure: the clicker end to end through tools/loadgen and the emulator, on tgsnap and PostgreSQL.

The same population (handler.clicker_rows) is served by
- the product clicker, `python -m bot`, its store restored from a local directory seeded with the
  population (storage on the local directory: the flushes cost the bot little and the emulator
  nothing, as PostgreSQL's WAL costs it nothing);
- tools/bench/pgbot.py, the same conversation on PostgreSQL through asyncpg (the same queries and
  index), with PostgreSQL on 127.0.0.1 and behind a 2 ms round trip (tools/bench/delayproxy.py);
each bot its own account, all started together and measured one after the
other against one emulator (`python -m tools.emulator`, its own process, its world on tmpfs; per-chat
and per-bot reply limits raised, as `python -m tools.loadgen` does). The load generator runs in this
process, the delay proxy in its own (tools/bench/delayproxy.py), PostgreSQL in its own.

For each: loadgen's simulated users register (/start), then
- latency: messages at a fixed moderate rate, the clicker's mix (1 in 10 asks for the rating), the reply
  latency p50/p99 as loadgen measures it (the user's message sent to the bot's reply seen);
- throughput: the rate rises by x1.4 a step (5 s each) while it is sustained (achieved >= 90 % of the
  target, no message unanswered, p99 under a second), then two more steps bisect between the last
  sustained rate and the first that was not (x1.4 steps alone make every ratio a power of 1.4); the
  highest sustained clicks per second is reported, and the most clicks per second answered in any step
  (the capacity under overload).

Every process still shares the machine's cores, so for each system and phase the report carries the CPU
seconds each process used (`cpu`: the load generator = this process, the emulator, the bot, PostgreSQL
with its backends, the delay proxy; from /proc) and the seconds its threads were runnable but waiting
for a core (`runqueue_wait_per_wall_s`, /proc/PID/task/*/schedstat), beside the wall time, the load
average and the CPU time the hypervisor kept from this machine (`stolen_per_wall_s`, /proc/stat): a
process near 1.0 CPU-second per second is the one that saturates (each is one Python thread, or
PostgreSQL's backends); large waits with small CPU mean the machine's cores, not any process, were the
limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from tools.bench.measures import Context, measure

RATING_SHARE = 0.1  # the handler measure's mix: 9 clicks to 1 rating


class _Process:
    """A bot as a child process (`python -m MODULE ARGS`), output to a log file."""

    def __init__(self, module: str, args: list[str], env: dict[str, str], log_path: Path):
        self.module, self.args, self.env, self.log_path = module, args, env, log_path
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        from tools.loadgen.stack import ROOT

        env = {k: v for k, v in os.environ.items() if not k.startswith("TGSNAP_")}
        env.update(self.env)
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log_path, "ab") as log:  # noqa: ASYNC230 - a local file, opened once per bot
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", self.module, *self.args, cwd=ROOT, env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
        except OSError:
            return ""

    async def kill(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            await self.proc.wait()


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) pid has used, 0.0 if it is gone (/proc/PID/stat fields 14 and 15)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_waited(pid: int) -> float:
    """Seconds pid's threads spent runnable but waiting for a core (/proc/PID/task/*/schedstat, field 2):
    what a starved process loses, which its CPU seconds do not show."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


def _pids_matching(*needles: str) -> list[int]:
    """Processes whose command line holds every needle, and their descendants (PostgreSQL's backends)."""
    parents: dict[int, int] = {}
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat") as f:
                parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if all(n in cmd for n in needles):
            found.append(int(entry))
    tree = set(found)
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return sorted(tree)


def _stolen() -> float:
    """Seconds the hypervisor ran something else while this machine's CPUs wanted to run (/proc/stat,
    the `cpu` line's steal field, all CPUs): on a shared virtual machine, a share of the cores no process
    here could use."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class _CpuMeter:
    """CPU seconds per named process group between `start()` and `stop()`."""

    def __init__(self, groups: dict[str, list[int] | None]):
        self.groups = groups  # None: this process (os.times counts its threads too)

    def _read(self) -> tuple[dict[str, float], dict[str, float]]:
        cpu, waited = {}, {}
        for name, pids in self.groups.items():
            # a PostgreSQL backend that exited between readings takes its seconds with it: an undercount
            found = [os.getpid()] if pids is None else _pids_matching(*pids) if isinstance(pids, tuple) else pids
            cpu[name] = sum(_proc_cpu(p) for p in found)
            waited[name] = sum(_proc_waited(p) for p in found)
        return cpu, waited

    def start(self) -> None:
        import time

        self._t0, (self._c0, self._w0), self._s0 = time.monotonic(), self._read(), _stolen()

    def stop(self) -> dict[str, Any]:
        import time

        wall = time.monotonic() - self._t0
        c1, w1 = self._read()
        cpu = {k: round(c1[k] - self._c0[k], 2) for k in c1}
        waited = {k: round(w1[k] - self._w0[k], 2) for k in w1}
        return {"wall_s": round(wall, 2), "cpu_s": cpu,
                "cpu_per_wall_s": {k: round(v / wall, 2) for k, v in cpu.items()} if wall > 0 else {},
                # runnable but not running (waiting for a core), per second of wall time
                "runqueue_wait_per_wall_s": {k: round(v / wall, 2) for k, v in waited.items()} if wall > 0 else {},
                "load_average_1m": round(os.getloadavg()[0], 2),
                # CPU-seconds per second the host kept from this machine's cores (0 on bare metal)
                "stolen_per_wall_s": round((_stolen() - self._s0) / wall, 2) if wall > 0 else 0.0}


async def _wait_ready(control, bot: str, proc: _Process, within: float = 120.0) -> None:
    """Until the bot answers a probe user of its own (as tools/loadgen/stack.py's wait_ready)."""
    probe = await control.create_user("probe")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        if not proc.alive:
            raise RuntimeError(f"the bot exited during start-up:\n{proc.tail()}")
        said = await control.say(probe, bot, "ping", wait=1.0)
        if said.replies:
            return
        if loop.time() > deadline:
            raise TimeoutError(f"the bot did not answer within {within:g} s:\n{proc.tail()}")


def _plan(ctx: Context) -> dict[str, Any]:
    if ctx.users <= 50_000:  # --quick: the shape, in seconds
        return {"users": 20, "latency_rate": 40.0, "latency_seconds": 1.0, "rates": [80.0], "step_seconds": 0.5,
                "refine": 0}
    # latency at a rate every system sustains on a quiet machine; then steps of x1.4 until one is not
    # sustained, from 20 msg/s: on the shared 2 cores under others' load (load average 8-10) no system
    # sustained 50, and a ratio against 0 is no figure
    return {"users": 200, "latency_rate": 50.0, "latency_seconds": 15.0,
            "rates": [round(20.0 * 1.4 ** i) for i in range(14)], "step_seconds": 5.0,
            # then bisect (geometrically) between the last sustained step and the first one that was not,
            # this many times: x1.4 steps alone make every ratio of two systems a power of 1.4 (1.96, 2.74)
            "refine": 2}


async def _drive(control, bot: str, plan: dict[str, Any], seed: int, log, meter: _CpuMeter) -> dict[str, Any]:
    from tools.loadgen.load import Load, LoadConfig

    def config(rate: float, seconds: float) -> LoadConfig:
        return LoadConfig(users=plan["users"], rate=rate, duration=seconds, rating_share=RATING_SHARE, seed=seed,
                          wait=10.0)

    first = Load(control, bot, config(plan["latency_rate"], plan["latency_seconds"]))
    await first.register()

    async def run(cfg: LoadConfig):
        load = Load(control, bot, cfg)
        load.users = first.users  # registered once; counts carry on
        for u in load.users:
            u.queue = asyncio.Queue()
        return await load.run()

    meter.start()
    lat = await run(config(plan["latency_rate"], plan["latency_seconds"]))
    lat_cpu = meter.stop()
    steps: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    failed: float | None = None
    rates = list(plan["rates"])
    refine = plan.get("refine", 0)
    while rates:
        rate = rates.pop(0)
        meter.start()
        rep = await run(config(rate, plan["step_seconds"]))
        step_cpu = meter.stop()
        # answered messages per second of the whole step (the queue drained), the clicks' share of them
        clicks_per_second = rep.achieved_rate * rep.clicks / rep.sent if rep.sent else 0.0
        ok = (rep.timeouts == 0 and rep.answered == rep.sent and rep.achieved_rate >= 0.9 * rate
              and rep.latency_ms.get("p99", 1e9) <= 1000.0)
        steps.append({"target_rate": rate, "achieved_rate": round(rep.achieved_rate, 1),
                      "clicks_per_second": round(clicks_per_second, 1), "p99_ms": rep.latency_ms.get("p99"),
                      "timeouts": rep.timeouts, "sustained": ok, "cpu": step_cpu})
        log(f"e2e:   {rate:g} msg/s -> {rep.achieved_rate:.0f} msg/s, p99 {rep.latency_ms.get('p99')} ms"
            f"{'' if ok else ' (not sustained)'}; CPU s/s {step_cpu['cpu_per_wall_s']}, waiting for a core s/s "
            f"{step_cpu['runqueue_wait_per_wall_s']}, load {step_cpu['load_average_1m']}, stolen by the host "
            f"{step_cpu['stolen_per_wall_s']}")
        if ok:
            if best is None or clicks_per_second > best["clicks_per_second"]:
                best = steps[-1]
        else:
            failed = rate if failed is None else min(failed, rate)
            rates = []  # the ramp ends at the first step not sustained
        if not rates and refine > 0 and best is not None and failed is not None:
            # the next try halfway (geometrically) between the best sustained rate and the lowest failed one
            refine -= 1
            rates = [round((best["target_rate"] * failed) ** 0.5, 1)]
    return {
        "latency": {"rate": plan["latency_rate"], "seconds": plan["latency_seconds"], "sent": lat.sent,
                    "answered": lat.answered, "clicks": lat.clicks, "ratings": lat.ratings,
                    "timeouts": lat.timeouts, "p50_ms": lat.latency_ms.get("p50"), "p99_ms": lat.latency_ms.get("p99"),
                    "max_ms": lat.latency_ms.get("max"), "cpu": lat_cpu},
        "throughput_steps": steps,
        "max_sustained_clicks_per_second": best["clicks_per_second"] if best else 0.0,
        "max_sustained_messages_per_second": best["achieved_rate"] if best else 0.0,
        # the most answered under overload (the step that was not sustained included): the capacity
        "peak_clicks_per_second": max((s["clicks_per_second"] for s in steps), default=0.0),
        "problems": (lat.problems + [])[:5],
    }


async def _run(ctx: Context, pg_url: str | None, shm: str | None) -> dict[str, Any]:
    import sqlite3

    from bot.users import MIGRATIONS, SCHEMA
    from snapshot.backends.local import LocalDirBackend
    from tools.bench.handler import _port, _with_port, clicker_rows, delay_proxy, load_postgres
    from tools.bench.store import seed
    from tools.loadgen import UNLIMITED_REPLIES
    from tools.loadgen.control import Control

    plan = _plan(ctx)
    out: dict[str, Any] = {"plan": plan, "mix": {"clicks": round(1 - RATING_SHARE, 2), "ratings": RATING_SHARE}}
    # on tmpfs where there is one: the emulator's world fsyncs every message (synchronous=FULL), a disk
    # cost Telegram's servers do not put on the bot's clock; PostgreSQL runs with fsync off
    # (tools/bench/pgserver.py), so the bot's storage directory is on tmpfs too
    with tempfile.TemporaryDirectory(prefix="tgsnap-bench-e2e-", dir=shm) as tmp:
        root = Path(tmp)
        storage = root / "storage"
        db = sqlite3.connect(":memory:")
        for stmt in SCHEMA:
            db.execute(stmt)
        db.executemany("INSERT INTO users (chat_id, name, clicks, last_message_id) VALUES (?, ?, ?, ?)",
                       clicker_rows(ctx))
        db.commit()
        # SCHEMA is the current release's: mark it so, or the bot would run MIGRATIONS over it
        db.execute(f"PRAGMA user_version = {max(m.version for m in MIGRATIONS)}")
        await seed(LocalDirBackend(storage, fsync=False), db)
        db.close()
        if pg_url is not None:
            ctx.log(f"e2e: loading {ctx.users} users into PostgreSQL ...")
            await load_postgres(pg_url, clicker_rows(ctx))

        # the population's million rows stay referenced from ctx; a full collection walking them paused
        # the load generator (every simulated user at once): kept out of the collector while it runs
        gc.collect()
        gc.freeze()
        emu = await _emulator_process(root / "emulator", root / "emulator.log")
        info = emu.info
        control = Control(info["control_url"])
        await control.knobs(dict(UNLIMITED_REPLIES))
        procs: dict[str, tuple[str, Any]] = {}
        try:
            procs["tgsnap"] = (info["bot_username"], _Process("bot", [], {
                "TGSNAP_BOT_TOKEN": info["bot_token"], "TGSNAP_BOT_API_URL": info["bot_api_url"],
                "TGSNAP_STORAGE_MODE": "local", "TGSNAP_STORAGE_DIR": str(storage),
                "TGSNAP_DATA_DIR": str(root / "bot")}, root / "tgsnap.log"))  # the default flush interval
            with contextlib.ExitStack() as stack:
                if pg_url is not None:
                    far = _with_port(pg_url, stack.enter_context(delay_proxy(_port(pg_url), 0.002)))
                    pg_args = ["--api-url", info["bot_api_url"]]
                    for name, url in (("postgres_loopback", pg_url), ("postgres_2ms", far)):
                        # a bot of its own for each, both in one process started beside tgsnap's (importing
                        # aiogram takes seconds of CPU); only the one being measured receives messages
                        made = await control.request("POST", "/bots", {"username": f"{name.replace('_', '')}bot"})
                        pg_args += ["--bot", made["token"], url]
                        procs[name] = (made["username"], None)
                    pg_proc = _Process("tools.bench.pgbot", pg_args, {}, root / "pgbot.log")
                    procs = {k: (u, p or pg_proc) for k, (u, p) in procs.items()}
                ctx.log(f"e2e: starting {', '.join(procs)} ...")
                distinct = list({id(p): p for _u, p in procs.values()}.values())
                for proc in distinct:
                    await proc.start()
                await asyncio.gather(*(_wait_ready(control, u, p) for u, p in procs.values()))
                pg_port = str(_port(pg_url)) if pg_url is not None else None
                for name, (username, proc) in procs.items():
                    ctx.log(f"e2e: {name}: {plan['users']} users, {plan['latency_rate']:g} msg/s for "
                            f"{plan['latency_seconds']:g} s, then rising rates ...")
                    groups: dict[str, Any] = {"loadgen": None, "emulator": [emu.proc.pid], "bot": [proc.proc.pid]}
                    if pg_port is not None:
                        groups["postgres"] = ("postgres", "-p " + pg_port)
                        groups["delayproxy"] = ("tools.bench.delayproxy", "--to " + pg_port)
                    out[name] = await _drive(control, username, plan, ctx.seed, ctx.log, _CpuMeter(groups))
                # before the delay proxy closes under the PostgreSQL bots' pools
                await asyncio.gather(*(p.kill() for p in distinct))
        finally:
            # SIGKILL: their state is thrown away with the temp dir, and a graceful stop costs seconds
            await asyncio.gather(*(p.kill() for p in {id(p): p for _u, p in procs.values()}.values()),
                                 return_exceptions=True)
            await control.close()
            await emu.kill()
            gc.unfreeze()
    return out


def _in_fresh_process(ctx: Context, pg_url: str | None, shm: str | None) -> dict[str, Any]:
    """`_run` in a child interpreter (`python -m tools.bench.e2e`), its report back as JSON on stdout.

    The load generator must not share a process with what a full run's other measures leave behind:
    measured at 1 M users, every system sustained 30-55 % less inside a full run than alone (tgsnap 254
    against 567 msg/s), and a fresh process makes the two the same measurement."""
    import json
    import subprocess

    from tools.loadgen.stack import ROOT

    cmd = [sys.executable, "-m", "tools.bench.e2e", "--users", str(ctx.users), "--seed", str(ctx.seed)]
    if pg_url is not None:
        cmd += ["--postgres", pg_url]
    if shm is not None:
        cmd += ["--tmp", shm]
    done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the e2e run failed (exit {done.returncode}); its log is above")
    return json.loads(done.stdout)


def main(argv: list[str] | None = None) -> int:
    """The child side of `_in_fresh_process`: progress on stderr, the report on stdout."""
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m tools.bench.e2e", description=_in_fresh_process.__doc__)
    p.add_argument("--users", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--postgres", default=None, help="the PostgreSQL the bench started (omitted: none)")
    p.add_argument("--tmp", default=None, help="where the run's files go (tmpfs where there is one)")
    args = p.parse_args(argv)

    def log(message: str) -> None:
        sys.stderr.write(f"bench: {message}\n")
        sys.stderr.flush()

    ctx = Context(users=args.users, seed=args.seed, log=log)
    out = asyncio.run(_run(ctx, args.postgres, args.tmp))
    sys.stdout.write(json.dumps(out))
    return 0


class _Emulator:
    def __init__(self, proc: asyncio.subprocess.Process, info: dict[str, Any]):
        self.proc, self.info = proc, info

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def _emulator_process(data: Path, log_path: Path) -> _Emulator:
    """`python -m tools.emulator --demo --json --no-mtproto` as a child: its CPU (rendering updates,
    answering getUpdates and the load generator's /say) off the load generator's GIL."""
    import json

    from tools.loadgen.stack import ROOT

    with open(log_path, "ab") as log:  # noqa: ASYNC230 - a local file, opened once
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tools.emulator", "--data", str(data), "--json", "--demo", "--no-mtproto",
            cwd=ROOT, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=log)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 120)
    if not line:
        raise RuntimeError(f"the emulator exited before printing its info (rc {await proc.wait()})")
    return _Emulator(proc, json.loads(line))


@measure("e2e", "the clicker end to end through loadgen and the emulator: reply p50/p99 and the highest sustained "
                "clicks/s, tgsnap vs the same bot on PostgreSQL (loopback and 2 ms RTT)")
def e2e(ctx: Context) -> dict[str, Any]:
    from tools.bench import pgserver
    from tools.bench.handler import postgres_url

    try:
        url = postgres_url(ctx)
        skipped = None
    except pgserver.NoPostgres as e:
        url, skipped = None, str(e)
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    out = _in_fresh_process(ctx, url, shm)
    if skipped:
        out["skipped"] = f"PostgreSQL: {skipped}"
        return out
    tg = out["tgsnap"]
    ratios: dict[str, float | None] = {}
    for base in ("postgres_loopback", "postgres_2ms"):
        b = out[base]
        p99a, p99b = tg["latency"]["p99_ms"], b["latency"]["p99_ms"]
        ratios[f"p99_vs_{base}"] = round(p99a / p99b, 4) if p99b else None
        ca, cb = tg["max_sustained_clicks_per_second"], b["max_sustained_clicks_per_second"]
        ratios[f"clicks_per_second_vs_{base}"] = round(ca / cb, 4) if cb else None
    out["ratios"] = ratios

    def meets(key: str, op: str, bound: float) -> bool:
        v = ratios[key]
        return v is not None and (v <= bound if op == "<=" else v >= bound)

    out["latency"] = {"target": "p99 <= 0.5 x PostgreSQL behind 2 ms, <= 1 x on loopback",
                      "meets_target": meets("p99_vs_postgres_2ms", "<=", 0.5)
                      and meets("p99_vs_postgres_loopback", "<=", 1.0)}
    out["throughput"] = {"target": "clicks/s >= 2 x PostgreSQL behind 2 ms, >= 1 x on loopback",
                         "meets_target": meets("clicks_per_second_vs_postgres_2ms", ">=", 2.0)
                         and meets("clicks_per_second_vs_postgres_loopback", ">=", 1.0)}
    return out


if __name__ == "__main__":
    sys.exit(main())
