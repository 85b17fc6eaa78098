"""The load generator: its population and statistics, and a real run against the clicker with --verify."""

from __future__ import annotations

import collections

from hypothesis import given
from hypothesis import strategies as st

from tools.loadgen.load import Load, LoadConfig
from tools.loadgen.population import HOSTILE_NAMES, Zipf, names
from tools.loadgen.report import Report, percentile


def test_zipf_is_skewed_and_covers_the_population():
    zipf = Zipf(20, s=1.1, seed=1)
    counts = collections.Counter(zipf.draw() for _ in range(20_000))
    assert set(counts) <= set(range(20))
    ranked = [n for _, n in counts.most_common()]
    assert ranked[0] > 5 * ranked[-1]  # the heaviest user clicks far more than the lightest
    assert len(counts) == 20


def test_names_include_every_hostile_kind_and_are_reproducible():
    population = names(100, seed=3)
    assert population == names(100, seed=3)
    assert set(HOSTILE_NAMES) <= set(population)


@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=200), st.sampled_from([50, 90, 99]))
def test_percentile_is_an_observed_value_with_enough_below_it(values, q):
    ordered = sorted(values)
    p = percentile(ordered, q)
    assert p in ordered
    assert sum(v <= p for v in ordered) >= q / 100 * len(ordered)


def test_report_reads_well():
    report = Report(users=2, target_rate=5, duration=1, sent=5, answered=5, clicks=4, ratings=1, verified=True)
    report.set_latencies([0.001, 0.002, 0.010])
    assert report.latency_ms["p50"] == 2.0 and report.latency_ms["max"] == 10.0
    assert "verify: OK" in report.text()
    assert report.to_dict()["achieved_rate"] == 0.0


async def test_a_verified_run_against_the_clicker(world):
    load = Load(world.control, world.demo.bot_username,
                LoadConfig(users=12, rate=40, duration=2.0, rating_share=0.1, verify=True, wait=5))
    await load.register()
    report = await load.run()
    assert report.problems == []
    assert report.verified is True
    assert report.sent == 80 and report.answered == 80
    assert report.clicks + report.ratings == 80
    assert report.latency_ms["p50"] > 0
    counted = world.clicker.store.execute("SELECT sum(clicks) FROM users").fetchone()[0]
    assert counted == report.clicks


async def test_verify_catches_a_count_that_does_not_match(world):
    load = Load(world.control, world.demo.bot_username, LoadConfig(users=3, rate=20, duration=0.5, verify=True))
    await load.register()
    # A click the load generator does not know about: every later count of that user is off by one.
    await world.say(load.users[0].user_id, "Клик")
    load.users[0].queue.put_nowait("Клик")
    report = await load.run()
    assert report.verified is False
    assert any("user 0 " in p for p in report.problems)
