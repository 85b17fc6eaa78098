"""Flood control and knobs, with a fake clock (no sleeping)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tools.emulator.__main__ import build_parser, knobs_from_args, parse_fault
from tools.emulator.app import check_loopback, redact
from tools.emulator.knobs import FaultRule, Knobs
from tools.emulator.limiter import RateLimiter

CHANNEL = -1001234567890


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_channel_budget_is_about_twenty_per_minute_with_a_small_burst():
    clock = Clock()
    limiter = RateLimiter(Knobs(), clock)
    allowed = [limiter.check(CHANNEL, 1) is None for _ in range(5)]
    assert allowed == [True] * 5
    wait = limiter.check(CHANNEL, 1)
    assert wait == pytest.approx(3.0)
    clock.t += 3.0  # honoured: no escalation
    assert limiter.check(CHANNEL, 1) is None
    assert limiter.check(CHANNEL, 2) is None  # another bot has its own budget
    assert limiter.check(CHANNEL - 1, 1) is None  # and another channel too


@given(st.lists(st.floats(min_value=0.0, max_value=10.0), min_size=1, max_size=200))
def test_no_window_of_a_minute_exceeds_burst_plus_rate(gaps):
    """Whatever the request timing, accepted posts in any 60 s window ≤ burst + 20."""
    clock = Clock()
    knobs = Knobs()
    limiter = RateLimiter(knobs, clock)
    accepted = []
    for gap in gaps:
        clock.t += gap
        if limiter.check(CHANNEL, 1) is None:
            accepted.append(clock.t)
    for i, start in enumerate(accepted):
        in_window = [t for t in accepted[i:] if t < start + 60]
        assert len(in_window) <= knobs.channel_burst + knobs.channel_per_minute + 1e-9


def test_penalties_escalate_for_a_client_that_stays_at_the_limit():
    # Telegram: repeated overruns draw retry_after of minutes; a client that honours retry_after and slows down
    # sees one short wait
    clock = Clock()
    limiter = RateLimiter(Knobs(), clock)
    for _ in range(5):
        assert limiter.check(CHANNEL, 1) is None
    waits = []
    for _ in range(8):  # comes back the moment each penalty ends, with a burst again
        wait = limiter.check(CHANNEL, 1)
        while wait is None:
            wait = limiter.check(CHANNEL, 1)
        waits.append(wait)
        clock.t += 1
        assert limiter.check(CHANNEL, 1) == pytest.approx(wait - 1)  # inside the penalty: refused, not longer
        clock.t += wait - 1
    assert waits[0] == pytest.approx(3.0)
    assert all(later > earlier for earlier, later in zip(waits, waits[1:], strict=False))
    assert waits[-1] >= 200  # minutes, as reported of Telegram
    assert limiter.check(CHANNEL - 1, 1) is None  # other chats are not punished


def test_an_honest_client_sees_one_short_wait():
    clock = Clock()
    limiter = RateLimiter(Knobs(), clock)
    for _ in range(5):
        assert limiter.check(CHANNEL, 1) is None
    assert limiter.check(CHANNEL, 1) == pytest.approx(3.0)
    for _ in range(30):  # waits retry_after, then one request per 3.5 s: below 20 a minute
        clock.t += 3.5
        assert limiter.check(CHANNEL, 1) is None


def test_edits_of_one_message_have_their_own_bucket():
    clock = Clock()
    limiter = RateLimiter(Knobs(channel_per_minute=600, channel_burst=100), clock)
    accepted = 0
    for _ in range(60):
        clock.t += 1
        if limiter.check(CHANNEL, 1, message_id=7) is None:
            accepted += 1
    assert accepted <= Knobs().message_edit_burst + Knobs().message_edits_per_minute


def test_private_chats_and_the_global_budget():
    clock = Clock()
    limiter = RateLimiter(Knobs(private_burst=2, global_burst=3, global_per_second=30), clock)
    assert limiter.check(42, 1) is None and limiter.check(42, 1) is None
    assert limiter.check(42, 1) == pytest.approx(1.0)
    assert limiter.check(43, 1) is None
    assert limiter.check(44, 1) == pytest.approx(1 / 30)  # the bot's global bucket is empty


def test_rate_limits_can_be_switched_off():
    limiter = RateLimiter(Knobs(rate_limits=False), Clock())
    assert all(limiter.check(CHANNEL, 1) is None for _ in range(100))


def test_knobs_update_validates_names_and_types():
    knobs = Knobs()
    knobs.update({"latency_ms": "50", "rate_limits": "false", "botapi_upload_limit": 1024})
    assert (knobs.latency_ms, knobs.rate_limits, knobs.botapi_upload_limit) == (50.0, False, 1024)
    with pytest.raises(ValueError, match="unknown knob"):
        knobs.update({"latency": 1})
    with pytest.raises(ValueError, match="cannot read"):
        knobs.update({"channel_burst": "many"})
    assert knobs.to_dict()["latency_ms"] == 50.0


def test_faults_fire_for_their_count_and_match_front_and_method():
    knobs = Knobs()
    knobs.add_fault(FaultRule("server_error", front="botapi", method="sendDocument", count=2, status=502))
    assert knobs.take_fault("mtproto", "sendDocument") is None
    assert knobs.take_fault("botapi", "sendMessage") is None
    assert knobs.take_fault("botapi", "senddocument").status == 502
    assert knobs.take_fault("botapi", "sendDocument").kind == "server_error"
    assert knobs.take_fault("botapi", "sendDocument") is None
    assert knobs.faults == []


def test_probabilistic_faults_are_seeded():
    def run(seed: int) -> list[bool]:
        knobs = Knobs(seed=seed)
        knobs.add_fault(FaultRule("answer_lost", count=None, probability=0.5))
        return [knobs.take_fault("botapi", "x") is not None for _ in range(50)]

    assert run(7) == run(7)
    assert 5 < sum(run(7)) < 45
    with pytest.raises(ValueError):
        FaultRule("explode")


def test_cli_flags_become_knobs():
    args = build_parser().parse_args([
        "--data", "d", "--latency-ms", "20", "--no-rate-limits", "--botapi-download-limit", "100",
        "--fault", "timeout,method=getFile,count=2,hang_s=0.5", "--fault", "server_error,probability=0.1",
    ])
    knobs = knobs_from_args(args)
    assert knobs.latency_ms == 20 and knobs.rate_limits is False and knobs.botapi_download_limit == 100
    assert [(f.kind, f.method, f.count) for f in knobs.faults] == [("timeout", "getFile", 2),
                                                                   ("server_error", "*", None)]
    with pytest.raises(ValueError):
        parse_fault("timeout,bogus=1")


def test_loopback_only_and_tokens_redacted():
    check_loopback("127.0.0.1")
    check_loopback("::1")
    check_loopback("localhost")
    for host in ("0.0.0.0", "192.168.1.5", "example.org"):
        with pytest.raises(ValueError, match="loopback"):
            check_loopback(host)
    assert redact("/bot123:ABCdef/sendMessage") == "/bot<redacted>/sendMessage"
    assert redact("/file/bot123:ABC/documents/file_1.json") == "/file/bot<redacted>/documents/file_1.json"
    assert redact("/control/bots") == "/control/bots"


def test_every_knob_has_a_row_in_the_fidelity_tables():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "emulator.md").read_text()
    missing = [name for name in Knobs.settable() if f"`{name}`" not in doc]
    assert missing == [], f"docs/emulator.md lacks rows for {missing}"
    from tools.emulator.knobs import KNOB_HELP

    assert set(Knobs.settable()) <= set(KNOB_HELP)  # and --help explains each
