"""Where the storage lives and how to reach it: one place for the storage configuration.

Every tool and the bot read the same environment variables (a `.env` file in the working directory is
honoured); CLI flags override them. Secrets are kept out of `repr` so they never reach logs.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from snapshot.errors import ConfigError

MODES = ("local", "botapi", "mtproto")

#: environment variable -> (field, help). The table docs/configuration.md is generated from this.
ENV = {
    "TGSNAP_STORAGE_MODE": ("mode", "local | botapi | mtproto (default: mtproto when api_id/api_hash are "
                                    "set, botapi when a storage chat is set, else local)"),
    "TGSNAP_STORAGE_DIR": ("local_dir", "directory of the local-directory backend"),
    "TGSNAP_BOT_TOKEN": ("bot_token", "the bot's token from @BotFather"),
    "TGSNAP_STORAGE_BOT_TOKEN": ("storage_bot_token", "optional second bot used only for storage "
                                                      "(spreads the rate budget)"),
    "TGSNAP_STORAGE_CHAT": ("storage_chat", "storage channel: numeric id (-100…) or @username"),
    "TGSNAP_API_ID": ("api_id", "Telegram api_id for MTProto (my.telegram.org)"),
    "TGSNAP_API_HASH": ("api_hash", "Telegram api_hash for MTProto"),
    "TGSNAP_MTPROTO_SESSION": ("mtproto_session", "Telethon StringSession (optional; the emulator prints one)"),
    "TGSNAP_BOT_API_URL": ("bot_api_url", "Bot API server base URL (default: Telegram's; the emulator's "
                                          "for local runs)"),
    "TGSNAP_BOT_API_LOCAL": ("bot_api_local", "1 if TGSNAP_BOT_API_URL is a self-hosted telegram-bot-api in local "
                                              "mode (absolute file paths, documents up to 2000 MB)"),
    "TGSNAP_MTPROTO_SESSION_DIR": ("mtproto_session_dir", "where MTProto sessions are saved, one per host and "
                                                          "process slot (default ~/.local/state/tgsnap/sessions)"),
    "TGSNAP_ENCRYPTION_KEY": ("encryption_key", "32-byte key, hex (64 chars) or base64, for encryption at rest"),
}

#: TGSNAP_* variables read outside the storage settings and the bot's options: by the test suites and
#: developer tools. Anything else with the prefix is a typo (`unknown_variables`).
OTHER_VARIABLES = frozenset({
    "TGSNAP_EMULATOR_CONTROL",  # tools/emulator/cli.py: the control URL
    "TGSNAP_METRICS_ADDR",  # bot/metrics.py: where /healthz, /readyz and /metrics are served
    "TGSNAP_HYPOTHESIS_PROFILE", "TGSNAP_CRASH_CYCLES", "TGSNAP_CRASH_SEED",  # test suites
    "TGSNAP_ADVERSARY", "TGSNAP_ADVERSARY_ROUNDS",
})

_SECRET = {"bot_token", "storage_bot_token", "api_hash", "mtproto_session", "encryption_key"}


@dataclass
class StorageSettings:
    mode: str = "local"
    local_dir: Path | None = None
    bot_token: str | None = field(default=None, repr=False)
    storage_bot_token: str | None = field(default=None, repr=False)
    storage_chat: str | None = None
    api_id: int | None = None
    api_hash: str | None = field(default=None, repr=False)
    mtproto_session: str | None = field(default=None, repr=False)
    bot_api_url: str | None = None
    bot_api_local: bool = False
    mtproto_session_dir: Path | None = None
    encryption_key: bytes | None = field(default=None, repr=False)

    def describe(self) -> str:
        """A one-line, secret-free description for logs and /status."""
        where = {
            "local": f"directory {self.local_dir}",
            "botapi": f"chat {self.storage_chat} via Bot API",
            "mtproto": f"chat {self.storage_chat} via MTProto",
        }[self.mode]
        enc = ", encrypted" if self.encryption_key else ""
        return f"{self.mode}: {where}{enc}"

    def validate(self) -> StorageSettings:
        if self.mode not in MODES:
            raise ConfigError(f"storage mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.mode == "local" and self.local_dir is None:
            raise ConfigError("local storage needs a directory: set TGSNAP_STORAGE_DIR or --storage-dir")
        if self.mode in ("botapi", "mtproto"):
            if not self.storage_chat:
                raise ConfigError(f"{self.mode} storage needs the storage channel: set TGSNAP_STORAGE_CHAT "
                                  "or --storage-chat (a private channel where the bot is admin)")
            if not (self.storage_bot_token or self.bot_token):
                raise ConfigError(f"{self.mode} storage needs a bot token: set TGSNAP_BOT_TOKEN "
                                  "(or TGSNAP_STORAGE_BOT_TOKEN)")
        if self.mode == "mtproto" and not self.mtproto_session and not (self.api_id and self.api_hash):
            raise ConfigError("mtproto storage needs TGSNAP_API_ID and TGSNAP_API_HASH (from my.telegram.org) "
                              "or a TGSNAP_MTPROTO_SESSION")
        return self

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, *, dotenv: bool = True, **overrides) -> StorageSettings:
        """Read TGSNAP_* variables (and `.env` when `dotenv`), then apply non-None `overrides`."""
        if env is None:
            if dotenv:
                load_dotenv_file()
            env = dict(os.environ)
        values: dict[str, object] = {}
        for var, (name, _help) in ENV.items():
            raw = env.get(var)
            if raw is None or raw.strip() == "":
                continue
            values[name] = raw.strip()
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown storage setting(s): {', '.join(sorted(unknown))}")
        if "api_id" in values and not isinstance(values["api_id"], int):
            try:
                values["api_id"] = int(str(values["api_id"]))
            except ValueError:
                raise ConfigError("TGSNAP_API_ID must be a number") from None
        if "local_dir" in values:
            values["local_dir"] = Path(str(values["local_dir"]))
        if "mtproto_session_dir" in values:
            values["mtproto_session_dir"] = Path(str(values["mtproto_session_dir"]))
        if isinstance(values.get("bot_api_local"), str):
            text = str(values["bot_api_local"]).strip().lower()
            if text not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ConfigError(f"TGSNAP_BOT_API_LOCAL must be 1 or 0, got {values['bot_api_local']!r}")
            values["bot_api_local"] = text in ("1", "true", "yes", "on")
        if isinstance(values.get("encryption_key"), str):
            values["encryption_key"] = parse_key(str(values["encryption_key"]))
        if "mode" not in values:
            if values.get("api_id") and values.get("api_hash") or values.get("mtproto_session"):
                values["mode"] = "mtproto" if values.get("storage_chat") else "local"
            elif values.get("storage_chat"):
                values["mode"] = "botapi"
            else:
                values["mode"] = "local"
        return cls(**values).validate()  # type: ignore[arg-type]


def unknown_variables(env: Mapping[str, str], known: Iterable[str]) -> list[str]:
    """One warning per TGSNAP_* variable in `env` that nothing reads: a misspelt name (TGSNAP_TOKEN)
    otherwise changes nothing, silently (the bot would run in local mode). Names the closest known one."""
    known = set(known) | set(ENV) | OTHER_VARIABLES
    out = []
    for name in sorted(env):
        if name.startswith("TGSNAP_") and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            out.append(f"{name} is not a tgsnap setting{hint}; it is ignored")
    return out


def parse_key(text: str) -> bytes:
    """A 32-byte key from 64 hex characters or base64; the error never echoes the key."""
    text = text.strip()
    key: bytes | None = None
    if len(text) == 64:
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = None
    if key is None:
        try:
            key = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError("encryption key is neither 64 hex characters nor base64") from None
    if len(key) != 32:
        raise ConfigError(f"encryption key must be 32 bytes, got {len(key)}")
    return key


def load_dotenv_file(path: str | os.PathLike[str] = ".env") -> None:
    """Honour a `.env` file without overriding variables already set in the environment."""
    from dotenv import load_dotenv

    try:
        load_dotenv(path, override=False)
    except UnicodeDecodeError as exc:
        # python-dotenv reads the file as UTF-8 text; a binary or otherwise encoded file is a mistake
        # in configuration, not a crash.
        raise ConfigError(f"{os.fspath(path)} is not UTF-8 text (byte {exc.start}): a .env file holds "
                          "NAME=value lines") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {os.fspath(path)}: {exc.strerror}") from None
