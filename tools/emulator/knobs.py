"""Realism knobs shared by both fronts: latency, bandwidth, size limits, rate limits, injected faults.

Set at start from CLI flags (`Knobs.from_dict`) and changed at run time by the control API
(`Knobs.update`, `Knobs.add_fault`). Not persisted: a restart comes back with the start-up flags.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from dataclasses import dataclass, field
from typing import Any, Literal

MB = 1024 * 1024

FaultKind = Literal["server_error", "timeout", "drop_upload", "answer_lost"]
FAULT_KINDS: tuple[str, ...] = ("server_error", "timeout", "drop_upload", "answer_lost")


@dataclass(slots=True)
class FaultRule:
    """Inject `kind` into matching requests.

    - `server_error`: answer with HTTP `status` (5xx) / MTProto rpc_error `status` without applying.
    - `timeout`: hang `hang_s` seconds, then drop the connection without applying.
    - `drop_upload`: drop the connection while the request body is being received (not applied).
    - `answer_lost`: apply the request, then drop the connection instead of answering.

    Fires on the next `count` matching requests, or, with `probability`, on each with that chance
    (both given: at most `count` times, each with that chance).
    """

    kind: str
    front: str = "*"  # "botapi" | "mtproto" | "*"
    method: str = "*"  # method name (Bot API "sendDocument", MTProto "messages.SendMediaRequest") or "*"
    count: int | None = 1
    probability: float | None = None
    status: int = 500
    hang_s: float = 5.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        if self.front not in ("*", "botapi", "mtproto"):
            raise ValueError(f"unknown front {self.front!r}")
        if self.count is None and self.probability is None:
            raise ValueError("a fault rule needs a count or a probability")

    def matches(self, front: str, method: str) -> bool:
        if self.front not in ("*", front):
            return False
        return self.method == "*" or self.method.lower() == method.lower()


@dataclass(frozen=True, slots=True)
class Fault:
    """What a front must do with the current request (see `FaultRule` for the kinds)."""

    kind: str
    status: int = 500
    hang_s: float = 5.0


KNOB_HELP: dict[str, str] = {
    "latency_ms": "added before each request of both fronts",
    "bandwidth_bytes_per_s": "one transfer budget shared by both fronts (0 = uncapped)",
    "botapi_upload_limit": "sendDocument/editMessageMedia upload limit in bytes (413 beyond)",
    "botapi_download_limit": "getFile limit in bytes ('file is too big' beyond)",
    "mtproto_file_limit": "MTProto upload limit in bytes",
    "rate_limits": "Telegram-like flood control (429 / FLOOD_WAIT)",
    "channel_per_minute": "messages+edits per minute per bot in one channel",
    "channel_burst": "how many of those may come at once",
    "private_per_second": "messages per second per bot in one private chat",
    "private_burst": "how many of those may come at once",
    "global_per_second": "messages per second per bot across all chats",
    "global_burst": "how many of those may come at once",
    "clock_offset_s": "shift the world's clock (message dates, the 48 h deletion rule)",
    "flood_escalation": "each refusal within flood_memory_s of earlier ones multiplies the penalty by this",
    "flood_memory_s": "how long refusals are remembered for escalation, seconds",
    "flood_max_wait_s": "the longest penalty, seconds",
    "lookups_per_second": "getChat / channels.getFullChannel / channels.getMessages per second per bot",
    "lookup_burst": "how many of those may come at once",
    "file_parts_per_second": "upload/download parts (save*FilePart, upload.getFile, getFile) per second per bot",
    "file_part_burst": "how many of those may come at once",
    "file_dc": "two-DC mode: files live on this DC (1-5, 0 = off); upload.getFile elsewhere is FILE_MIGRATE_X",
    "file_dc_reported": "documents name file_dc as their dc_id (as Telegram does); off: only FILE_MIGRATE tells",
    "pin_service_messages": "a pin in a channel adds a service message (with a message id of its own)",
    "botapi_local_mode": "act as a self-hosted telegram-bot-api --local server: absolute file paths, 2000 MB caps",
    "botapi_flood_hold_s": "a Bot API request over the limit is held (answered late) while its wait stays within this",
    "message_edits_per_minute": "edits of one message per minute (besides the chat's budget)",
    "message_edit_burst": "how many of those may come at once",
    "login_flood_logins": "bot logins (auth.importBotAuthorization) per bot allowed in login_flood_window_s",
    "login_flood_window_s": "the window of login_flood_logins, seconds",
    "login_flood_wait_s": "FLOOD_WAIT past it; every refused login during the wait adds as much again",
    "auth_key_duplicated": "one auth key used from two client addresses at once: 406 AUTH_KEY_DUPLICATED, key dead",
}


@dataclass
class Knobs:
    """All run-time settings. Field names are the control API's JSON keys and the CLI's flags."""

    latency_ms: float = 0.0  # added before each request is handled (both fronts)
    bandwidth_bytes_per_s: int = 0  # 0 = unlimited; shared by all transfers of both fronts
    # Size limits (Telegram: Bot API upload 50 MB, getFile 20 MB, MTProto 2000 MiB).
    botapi_upload_limit: int = 50 * MB
    botapi_download_limit: int = 20 * MB
    # A self-hosted telegram-bot-api started with --local (Client.cpp local_mode_): getFile answers the file's
    # absolute path on the server's disk and no size caps but MTProto's 2000 MB apply (core.telegram.org/bots/api
    # "Using a Local Bot API Server").
    botapi_local_mode: bool = False
    mtproto_file_limit: int = 2000 * MB
    # Rate limits (Telegram: ~20 msgs/min per group/channel, ~1 msg/s per private chat, ~30 msg/s per bot).
    rate_limits: bool = True
    channel_per_minute: float = 20.0
    channel_burst: int = 5
    private_per_second: float = 1.0
    private_burst: int = 5
    global_per_second: float = 30.0
    global_burst: int = 30
    # Reads are limited too (core.telegram.org/api/errors: FLOOD_WAIT_X may answer any method; Telegram states no
    # numbers for reads): generous, so only a client that hammers them is refused.
    lookups_per_second: float = 30.0
    lookup_burst: int = 60
    file_parts_per_second: float = 400.0
    file_part_burst: int = 400
    # Telegram adds a service message to a channel on every pin (messageActionPinMessage; Bot API Message
    # .pinned_message); it takes a message id like a post.
    pin_service_messages: bool = True
    # Two DCs: files on another DC than the client's home one (core.telegram.org/api/datacenter, FILE_MIGRATE_X).
    file_dc: int = 0
    file_dc_reported: bool = True
    # Escalation (Telegram: repeated overruns draw retry_after of minutes; telegram-bot-api/TDLib resend after
    # FLOOD_WAIT, so a client that ignores it digs deeper).
    flood_escalation: float = 2.0
    flood_memory_s: float = 600.0
    flood_max_wait_s: float = 3600.0
    # telegram-bot-api waits out FLOOD_WAITs for the bot while a query's total wait is ≤ 60 s (TDLib NetQueryDelayer,
    # NetQuery::total_timeout_limit_): slowed answers, then 429.
    botapi_flood_hold_s: float = 60.0
    # One message edited over and over (~15 a minute without end is the pattern reported to draw penalties).
    message_edits_per_minute: float = 15.0
    message_edit_burst: int = 3
    # Shifts the world's clock (seconds), e.g. to test the 48 h deleteMessage rule.
    clock_offset_s: float = 0.0
    # Bot logins (Telegram publishes no number; bot projects' issue threads report FLOOD_WAIT of 1000-3000 s on
    # auth.importBotAuthorization after a handful of logins in a short time, longer when retried during it).
    login_flood_logins: int = 5
    login_flood_window_s: float = 3600.0
    login_flood_wait_s: float = 1800.0
    # One auth key in two places at once kills it (Telethon's AuthKeyDuplicatedError text: "used under two
    # different IP addresses simultaneously"; tdlib issue #701: a copied database run twice).
    auth_key_duplicated: bool = True
    faults: list[FaultRule] = field(default_factory=list)
    seed: int | None = None

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._bw_next_free = 0.0

    # --- settings -------------------------------------------------------------------------------

    @classmethod
    def settable(cls) -> dict[str, type]:
        """Names and types of the scalar knobs (what `update` accepts)."""
        out: dict[str, type] = {}
        for f in dataclasses.fields(cls):
            if f.name in ("faults", "seed"):
                continue
            out[f.name] = {"float": float, "int": int, "bool": bool}[str(f.type)]
        return out

    def update(self, values: dict[str, Any]) -> None:
        """Set scalar knobs from a JSON-ish dict; unknown names or bad values raise ValueError."""
        types = self.settable()
        parsed: dict[str, Any] = {}
        for name, raw in values.items():
            if name == "faults":
                self.faults = [FaultRule(**r) for r in raw]
                continue
            if name not in types:
                raise ValueError(f"unknown knob {name!r}; known: {', '.join(sorted(types))}")
            parsed[name] = _coerce(types[name], raw, name)
        for name, value in parsed.items():
            setattr(self, name, value)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Knobs:
        knobs = cls(seed=values.get("seed"))
        knobs.update({k: v for k, v in values.items() if k != "seed"})
        return knobs

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.settable()}
        out["faults"] = [dataclasses.asdict(r) for r in self.faults]
        return out

    # --- faults ---------------------------------------------------------------------------------

    def add_fault(self, rule: FaultRule) -> None:
        self.faults.append(rule)

    def clear_faults(self) -> None:
        self.faults.clear()

    def take_fault(self, front: str, method: str) -> Fault | None:
        """Called by a front once per request: the fault to inject into it, if any (consumes it)."""
        for rule in list(self.faults):
            if not rule.matches(front, method):
                continue
            if rule.probability is not None and self._rng.random() >= rule.probability:
                continue
            if rule.count is not None:
                rule.count -= 1
                if rule.count <= 0:
                    self.faults.remove(rule)
            return Fault(kind=rule.kind, status=rule.status, hang_s=rule.hang_s)
        return None

    # --- pacing ---------------------------------------------------------------------------------

    async def apply_latency(self) -> None:
        """Sleep the configured per-request latency."""
        if self.latency_ms > 0:
            await asyncio.sleep(self.latency_ms / 1000)

    async def throttle(self, nbytes: int) -> None:
        """Account `nbytes` against the shared bandwidth cap, sleeping as needed (no-op when uncapped)."""
        rate = self.bandwidth_bytes_per_s
        if rate <= 0 or nbytes <= 0:
            return
        now = time.monotonic()
        start = max(now, self._bw_next_free)
        self._bw_next_free = start + nbytes / rate
        delay = self._bw_next_free - now
        if delay > 0:
            await asyncio.sleep(delay)


def _coerce(kind: type, raw: Any, name: str) -> Any:
    try:
        if kind is bool:
            if isinstance(raw, str):
                low = raw.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(raw)
            return bool(raw)
        if kind is int:
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError(raw)
            return int(raw)
        return float(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"knob {name!r}: cannot read {raw!r} as {kind.__name__}") from exc
