"""The one bench run inside the test suite: a 20 000-user smoke run. It checks the report's shape and
that the figures are sane, never how fast anything was."""

from __future__ import annotations

import json

from tools.bench.__main__ import main
from tools.bench.population import users

EXPECTED = {"delta", "snapshot", "restore", "restore_emulator", "writes", "rpo", "memory", "upload", "handler",
            "e2e", "stall"}


def test_population_is_deterministic_and_shaped_like_the_articles_users():
    a, b = list(users(3000, seed=5)), list(users(3000, seed=5))
    assert a == b and a != list(users(3000, seed=6))
    ids = [u[0] for u in a]
    assert len(set(ids)) == len(ids)
    assert all(9 <= len(str(i)) <= 10 for i in ids)
    assert any(any("а" <= ch <= "я" for ch in u[1].lower()) for u in a)  # Cyrillic names
    assert any(u[1].isascii() for u in a)  # and Latin ones
    clicks = sorted(u[2] for u in a)
    assert clicks[len(clicks) // 2] <= 3 and clicks[-1] > 100  # heavy tail: small median, huge max


def test_bench_smoke_run(tmp_path, capsys):
    out = tmp_path / "bench.json"
    plots = tmp_path / "plots"
    assert main(["--quick", "--seed", "3", "--json-out", str(out), "--quiet", "--plot", str(plots)]) == 0  # CI's run
    report = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == report
    assert report["users"] == 20000 and report["seed"] == 3
    assert set(report["measures"]) == EXPECTED
    art = report["article"]
    assert art["json_bytes"] > 20000 * 20 and art["dump_seconds"] > 0 and art["restore_seconds"] > 0
    m = report["measures"]
    assert m["delta"]["dirty_rows"] == 200
    assert 0 < m["delta"]["delta_bytes"] < art["json_bytes"]
    assert m["delta"]["ratio_vs_article_json"] == round(m["delta"]["delta_bytes"] / art["json_bytes"], 4)
    assert 0 < m["snapshot"]["snapshot_bytes"] < m["snapshot"]["image_bytes"]
    assert m["snapshot"]["build_cpu_seconds"] >= 0
    assert m["restore"]["restore_seconds"] > 0 and m["restore"]["stored_bytes"] > 0
    emu = m["restore_emulator"]
    assert "skipped" in emu or (emu["restore_seconds"] > 0 and emu["stored_bytes"] == m["restore"]["stored_bytes"])
    assert m["writes"]["untracked_per_second"] > 0 and m["writes"]["store_execute_per_second"] > 0
    assert m["rpo"]["by_mode"]["mtproto"]["rpo_seconds_excluding_upload"] > 0
    assert m["memory"]["rows"] == 20000 and m["memory"]["holder"].startswith("core.Store")
    up = m["upload"]  # a 4 MiB payload: the shape, never the speed-up, is checked here
    assert "skipped" in up or (up["payload_mib"] == 4.0 and up["sequential_seconds"] > 0
                               and up["parallel_seconds"] > 0 and up["connections"] >= 1)
    h = m["handler"]  # the PostgreSQL baseline is part of the CI run: never skipped here
    assert "skipped" not in h, h.get("skipped")
    for system in ("tgsnap", "postgres_loopback", "postgres_2ms", "article"):
        for kind in ("click", "rating", "mix"):
            fig = h[system][kind]
            assert fig["n"] > 0 and 0 < fig["p50_us"] <= fig["p99_us"]
    assert h["tgsnap"]["mix"]["n"] == h["postgres_2ms"]["mix"]["n"] == h["replies"]
    assert set(h["ratios"]) == {f"{k}_p99_vs_{b}" for k in ("click", "rating", "mix")
                                for b in ("postgres_loopback", "postgres_2ms", "article")}
    assert h["postgres"]["version"] and h["postgres"]["driver"].startswith("asyncpg")
    assert {p.name for p in plots.iterdir()} == {"handler_latency.png", "size_vs_users.png", "time_vs_users.png",
                                                 "stall.png", "e2e.png"}
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in plots.iterdir())
    assert len(h["tgsnap"]["mix"]["percentiles_us"]) == 99
    e2e = m["e2e"]  # end to end through loadgen and the emulator; the PostgreSQL bots are never skipped here
    assert "skipped" not in e2e, e2e.get("skipped")
    for system in ("tgsnap", "postgres_loopback", "postgres_2ms"):
        lat = e2e[system]["latency"]
        assert lat["sent"] > 0 and lat["answered"] == lat["sent"] and lat["clicks"] > 0
        assert 0 < lat["p50_ms"] <= lat["p99_ms"]
        assert e2e[system]["throughput_steps"] and e2e[system]["max_sustained_clicks_per_second"] >= 0
        assert not e2e[system]["problems"], e2e[system]["problems"]  # every reply was the right text
    assert set(e2e["ratios"]) == {f"{k}_vs_{b}" for k in ("p99", "clicks_per_second")
                                  for b in ("postgres_loopback", "postgres_2ms")}
    assert e2e["ratios"]["p99_vs_postgres_2ms"] > 0
    st = m["stall"]
    assert st["snapshot_seconds"] > 0 and st["snapshot_bytes"] > 0 and st["longest_stall_ms"] >= 0
    assert st["click_latency"]["during_snapshot"]["n"] >= 0 and st["ticker_lateness"]["before"]["n"] > 0
    skipped = {name for name in ("restore_emulator", "upload") if "skipped" in m[name]}
    for name in EXPECTED - {"rpo"} - skipped:
        verdicts = [v for v in m[name].values() if isinstance(v, dict) and "meets_target" in v] or [m[name]]
        assert all(isinstance(v["meets_target"], bool) and v["target"] for v in verdicts)


def test_only_selects_measures(capsys):
    assert main(["--users", "1000", "--only", "rpo", "--rpo-seconds", "0", "--quiet"]) == 0
    assert set(json.loads(capsys.readouterr().out)["measures"]) == {"rpo"}
