"""The bot's configuration: the shared storage settings plus the bot's own, from the environment and flags.

Precedence: command-line flag > environment variable > `.env` file in the working directory > default.
Every variable has a flag named after it (`TGSNAP_ADMIN_IDS` -> `--admin-ids`); `python -m bot --help`
lists them all and docs/configuration.md is generated from the same table (`python -m bot.config`).

With no bot token configured the bot runs in local mode: it starts the emulator and takes the token,
storage channel and Bot API URL from it (see `bot.local`), so storage settings are resolved in two steps:
`load()` keeps the raw values, `storage_settings()` completes them.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from core import StoreConfig
from snapshot import settings as settings_module
from snapshot.errors import ConfigError
from snapshot.exitcodes import EXIT_CODES
from snapshot.replica import ReplicaConfig
from snapshot.settings import MODES, Option, StorageSettings, check_token, load_dotenv_file, parse_key

__all__ = ["OPTIONS", "Option", "BotSettings", "load", "parser", "markdown_table"]

DEFAULT_DATA_DIR = Path("data")
#: local mode keeps the store here unless TGSNAP_STORAGE_MODE says otherwise: the emulator's storage channel.
LOCAL_STORAGE_MODE = "mtproto"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


#: storage settings, shared with every tool (snapshot/settings.py owns them and their flags).
STORAGE_OPTIONS = list(settings_module.STORAGE_OPTIONS)

#: the bot's own settings.
BOT_OPTIONS = [
    Option("TGSNAP_ADMIN_IDS", "Telegram user ids (comma-separated) allowed /status, /flush and /snapshot",
           default="none; the demo user in local mode", metavar="IDS"),
    Option("TGSNAP_FLUSH_INTERVAL", "seconds between delta flushes: the most a crash can lose",
           default=f"{StoreConfig().flush_interval:g}", metavar="SECONDS"),
    Option("TGSNAP_TAKEOVER_WAIT", "seconds a starting bot waits for another live writer's lease before it "
                                   "gives up (never less than one lease period and 5 s)",
           default=f"{ReplicaConfig().lease_seconds + 5:g}", metavar="SECONDS"),
    Option("TGSNAP_DATA_DIR", "where local mode keeps the emulator's world; parent of the default storage "
                              "directory", default=f"`./{DEFAULT_DATA_DIR}`", metavar="DIR"),
    Option("TGSNAP_LOG_LEVEL", " | ".join(LOG_LEVELS), default="INFO", metavar="LEVEL"),
    Option("TGSNAP_PORT", "local mode: the emulator's HTTP port (Bot API and control API)",
           default="the previous run's, else any free one", metavar="PORT"),
    Option("TGSNAP_MTPROTO_PORT", "local mode: the emulator's MTProto port",
           default="the previous run's, else any free one", metavar="PORT"),
    Option("TGSNAP_WEBHOOK_URL", "public URL Telegram posts updates to (webhook mode instead of long polling); "
                                 "its path is the one served", default="none: long polling", metavar="URL"),
    Option("TGSNAP_WEBHOOK_SECRET", "the X-Telegram-Bot-Api-Secret-Token to require (1-256 of A-Z a-z 0-9 _ -)",
           secret=True, default="derived from the bot token", metavar="SECRET"),
    Option("TGSNAP_WEBHOOK_HOST", "address the webhook server listens on", default="0.0.0.0", metavar="HOST"),
    Option("TGSNAP_WEBHOOK_PORT", "port the webhook server listens on", default="$PORT, else 8080", metavar="PORT"),
    Option("TGSNAP_WEBHOOK_MAX_CONNECTIONS", "setWebhook max_connections: requests Telegram sends at once (1-100)",
           default="40", metavar="N"),
]

#: the health and metrics endpoint and the self-verification schedule (bot/metrics.py, core/selfcheck.py).
METRICS_OPTIONS = [
    Option("TGSNAP_METRICS_ADDR", "HOST:PORT serving /healthz, /readyz and Prometheus /metrics",
           default="none: not served", metavar="HOST:PORT"),
    Option("TGSNAP_SELF_VERIFY_INTERVAL", "seconds between background restores of the storage compared with "
                                          "the live state (0 = never)", default="0", metavar="SECONDS"),
]

#: retention with point-in-time reach (snapshot/retention.py; `tgsnap prune` lets history go).
RETENTION_OPTIONS = [
    Option("TGSNAP_KEEP_SNAPSHOTS", "older snapshots (with the deltas between them) each snapshot switch keeps, so "
                                    "export and restore reach back past the current snapshot", default="0",
           metavar="N"),
    Option("TGSNAP_KEEP_FOR", "also keep every older snapshot needed to reach any moment of this window "
                              "(seconds, or 45m, 48h, 7d)", default="0", metavar="DURATION"),
]

OPTIONS = STORAGE_OPTIONS + BOT_OPTIONS + METRICS_OPTIONS + RETENTION_OPTIONS


@dataclass
class BotSettings:
    #: raw TGSNAP_* values after flags were applied; storage settings are built from these.
    values: dict[str, str] = field(default_factory=dict, repr=False)
    #: may a local storage directory that does not exist be created? Only local mode's own default one
    #: (`python -m bot` sets this; a mistyped --storage-dir must not start an empty bot).
    create_storage_dir: bool = True
    #: what the configuration looks wrong about without being unusable (a misspelt variable): printed at start.
    warnings: list[str] = field(default_factory=list)
    admin_ids: frozenset[int] = frozenset()
    flush_interval: float = StoreConfig().flush_interval
    takeover_wait: float = 0.0  # bot/takeover.py waits at least a lease period + 5 s anyway
    data_dir: Path = DEFAULT_DATA_DIR
    log_level: str = "INFO"
    #: local mode's emulator ports (0: the previous run's, else any free one).
    local_port: int = 0
    local_mtproto_port: int = 0
    #: webhook mode when set (see bot/webhook.py).
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_host: str = "0.0.0.0"  # noqa: S104 - a server behind the platform's router
    webhook_port: int = 8080
    webhook_max_connections: int = 40
    keep_snapshots: int = 0
    keep_for: float = 0.0

    @property
    def local_mode(self) -> bool:
        """No bot token: run against a local emulator that `bot.local` starts."""
        return not self.values.get("TGSNAP_BOT_TOKEN")

    @property
    def default_storage_dir(self) -> Path:
        return self.data_dir / "storage"

    @property
    def metrics_addr(self) -> tuple[str, int] | None:
        """Where /healthz, /readyz and /metrics are served (None: not at all); ConfigError if malformed."""
        from bot.metrics import parse_addr

        text = self.values.get("TGSNAP_METRICS_ADDR")
        return parse_addr(text) if text else None

    @property
    def self_verify_interval(self) -> float:
        text = self.values.get("TGSNAP_SELF_VERIFY_INTERVAL", "0")
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not value >= 0:
            raise ConfigError(f"TGSNAP_SELF_VERIFY_INTERVAL must be a number of seconds (0 = never), got {text!r}")
        return value

    def storage_settings(self, **overrides: object) -> StorageSettings:
        """Storage settings from the values, `overrides` winning (local mode passes the emulator's)."""
        env = dict(self.values)
        env.setdefault("TGSNAP_STORAGE_DIR", str(self.default_storage_dir))
        return StorageSettings.from_env(env=env, dotenv=False, **overrides)

    def store_config(self, storage: StorageSettings) -> StoreConfig:
        return StoreConfig(flush_interval=self.flush_interval,
                           replica=ReplicaConfig(encryption_key=storage.encryption_key,
                                                 takeover_wait=self.takeover_wait,
                                                 keep_snapshots=self.keep_snapshots, keep_for=self.keep_for))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bot",
        description="The clicker bot from the article, with its state kept in Telegram by tgsnap.",
        epilog=_EPILOG + "\nexit codes (the same as every tgsnap command): "
        + ", ".join(f"{code} {short}" for code, short, *_rest in EXIT_CODES) + "\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for title, options in (("storage", STORAGE_OPTIONS), ("bot", BOT_OPTIONS),
                           ("health and metrics", METRICS_OPTIONS), ("retention", RETENTION_OPTIONS)):
        settings_module.add_options(p.add_argument_group(title), options)
    return p


_EPILOG = """\
Every flag mirrors the environment variable in brackets; a .env file in the working directory is read
too. Flags win over variables, variables over .env.

Local mode: with no bot token, the bot starts a local Telegram emulator on 127.0.0.1 (its world under
--data-dir), creates the bot, a storage channel and a demo user there, and prints how to talk to it.

examples:
  python -m bot                                    # local mode, state under ./data
  TGSNAP_BOT_TOKEN=123:abc TGSNAP_STORAGE_CHAT=-1001234567890 TGSNAP_ADMIN_IDS=42 python -m bot
  mkdir -p ./state && python -m bot --storage-mode local --storage-dir ./state --flush-interval 2
                                                   # (a --storage-dir that does not exist is refused: exit 5)
"""


def load(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None,
         *, dotenv: bool = True) -> BotSettings:
    """Settings from flags (`argv`), the environment (`environ`, default os.environ) and `.env`."""
    args = parser().parse_args(argv)
    if environ is None:
        if dotenv:
            load_dotenv_file()
        environ = os.environ
    values = settings_module.option_values(args, environ, OPTIONS)
    mode = settings_module.mode_from_flags(args)
    if mode is not None:
        values["TGSNAP_STORAGE_MODE"] = mode
    settings = BotSettings(values=values)
    settings.warnings = settings_module.deprecation_warnings(args)
    settings.warnings += settings_module.unknown_variables(environ, (o.env for o in OPTIONS))
    if settings.local_mode and any("TGSNAP_" in w for w in settings.warnings):
        # The commonest typo (TGSNAP_TOKEN) would otherwise start a demo bot instead of the real one.
        settings.warnings.append("no TGSNAP_BOT_TOKEN is set, so the bot runs in local mode (the emulator)")
    if "TGSNAP_ADMIN_IDS" in values:
        settings.admin_ids = parse_admin_ids(values["TGSNAP_ADMIN_IDS"])
    if "TGSNAP_FLUSH_INTERVAL" in values:
        settings.flush_interval = _positive_float("TGSNAP_FLUSH_INTERVAL", values["TGSNAP_FLUSH_INTERVAL"])
    if "TGSNAP_TAKEOVER_WAIT" in values:
        settings.takeover_wait = _positive_float("TGSNAP_TAKEOVER_WAIT", values["TGSNAP_TAKEOVER_WAIT"])
    if "TGSNAP_DATA_DIR" in values:
        settings.data_dir = Path(values["TGSNAP_DATA_DIR"])
    if "TGSNAP_LOG_LEVEL" in values:
        level = values["TGSNAP_LOG_LEVEL"].upper()
        if level not in LOG_LEVELS:
            raise ConfigError(f"TGSNAP_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
        settings.log_level = level
    _load_webhook(settings, values, environ)
    for env, attr in (("TGSNAP_PORT", "local_port"), ("TGSNAP_MTPROTO_PORT", "local_mtproto_port")):
        if env in values:
            setattr(settings, attr, _port(env, values[env]))
    if "TGSNAP_KEEP_SNAPSHOTS" in values:
        text = values["TGSNAP_KEEP_SNAPSHOTS"]
        if not text.isdigit():
            raise ConfigError(f"TGSNAP_KEEP_SNAPSHOTS must be a whole number >= 0, got {text!r}")
        settings.keep_snapshots = int(text)
    if "TGSNAP_KEEP_FOR" in values:
        from snapshot.retention import parse_duration

        try:
            settings.keep_for = parse_duration(values["TGSNAP_KEEP_FOR"])
        except ConfigError as e:
            raise ConfigError(f"TGSNAP_KEEP_FOR: {e}") from None
    mode = values.get("TGSNAP_STORAGE_MODE")
    if mode is not None and mode not in MODES:
        raise ConfigError(f"TGSNAP_STORAGE_MODE must be one of {', '.join(MODES)}, got {mode!r}")
    if "TGSNAP_ENCRYPTION_KEY" in values:
        parse_key(values["TGSNAP_ENCRYPTION_KEY"])  # fail at start, not at the first flush
    for env in ("TGSNAP_BOT_TOKEN", "TGSNAP_STORAGE_BOT_TOKEN"):
        if env in values:
            check_token(env, values[env], several=env == "TGSNAP_STORAGE_BOT_TOKEN")
    return settings


def _load_webhook(settings: BotSettings, values: dict[str, str], environ: Mapping[str, str]) -> None:
    url = values.get("TGSNAP_WEBHOOK_URL")
    webhook_only = [k for k in ("TGSNAP_WEBHOOK_SECRET", "TGSNAP_WEBHOOK_MAX_CONNECTIONS") if k in values]
    if url is None:
        if webhook_only:
            raise ConfigError(f"{webhook_only[0]} is set but TGSNAP_WEBHOOK_URL is not (webhook mode needs the URL)")
        return
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"TGSNAP_WEBHOOK_URL must be an https:// URL Telegram can reach, got {url!r}")
    settings.webhook_url = url
    secret = values.get("TGSNAP_WEBHOOK_SECRET")
    if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
        raise ConfigError("TGSNAP_WEBHOOK_SECRET must be 1-256 characters of A-Z, a-z, 0-9, _ and - "
                          "(Telegram refuses others)")
    settings.webhook_secret = secret
    settings.webhook_host = values.get("TGSNAP_WEBHOOK_HOST", settings.webhook_host)
    port = values.get("TGSNAP_WEBHOOK_PORT") or environ.get("PORT", "").strip() or "8080"
    settings.webhook_port = _port("TGSNAP_WEBHOOK_PORT", port)
    connections = values.get("TGSNAP_WEBHOOK_MAX_CONNECTIONS", "40")
    if not connections.isdigit() or not 1 <= int(connections) <= 100:
        raise ConfigError(f"TGSNAP_WEBHOOK_MAX_CONNECTIONS must be 1-100 (Telegram's range), got {connections!r}")
    settings.webhook_max_connections = int(connections)


def _port(name: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigError(f"{name} must be a TCP port (1-65535), got {text!r}")
    return int(text)


def parse_admin_ids(text: str) -> frozenset[int]:
    try:
        return frozenset(int(part) for part in text.replace(",", " ").split())
    except ValueError:
        raise ConfigError(f"TGSNAP_ADMIN_IDS must be numeric user ids separated by commas, got {text!r}") from None


def _positive_float(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {text!r}")
    return value


def configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level != "DEBUG":
        # aiogram logs every update at INFO, the emulator every request, Telethon every connection.
        for noisy in ("aiogram.event", "tools.emulator.access", "telethon"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def markdown_table() -> str:
    """The table docs/configuration.md embeds; a test keeps the two equal."""
    return settings_module.markdown_table(OPTIONS)


if __name__ == "__main__":
    print(markdown_table())
