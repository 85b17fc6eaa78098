"""Where the storage lives and how to reach it: one place for the storage configuration.

Every tool and the bot read the same environment variables (a `.env` file in the working directory is
honoured); CLI flags override them. Secrets are kept out of `repr` so they never reach logs.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import difflib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

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

PREFIX = "TGSNAP_"


@dataclass(frozen=True)
class Option:
    """One setting: its environment variable, the flag that mirrors it (`TGSNAP_STORAGE_DIR` ->
    `--storage-dir`: one vocabulary for the bot and every tool), and what it means.

    `deprecated` are older spellings of the flag still accepted, with a warning on stderr, so that a
    deploy written against them keeps working (the tools once said `--mode` and `--key`)."""

    env: str
    help: str
    secret: bool = False
    default: str = ""
    metavar: str = "VALUE"
    deprecated: tuple[str, ...] = ()
    choices: tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.env.removeprefix(PREFIX).lower().replace("_", "-")

    @property
    def dest(self) -> str:
        return self.env.removeprefix(PREFIX).lower()

    @property
    def aliases(self) -> tuple[str, ...]:
        return self.deprecated


_METAVARS = {"TGSNAP_STORAGE_MODE": "MODE", "TGSNAP_STORAGE_DIR": "DIR", "TGSNAP_BOT_TOKEN": "TOKEN",
             "TGSNAP_STORAGE_BOT_TOKEN": "TOKEN", "TGSNAP_STORAGE_CHAT": "CHAT", "TGSNAP_API_ID": "ID",
             "TGSNAP_API_HASH": "HASH", "TGSNAP_MTPROTO_SESSION": "SESSION", "TGSNAP_BOT_API_URL": "URL",
             "TGSNAP_ENCRYPTION_KEY": "KEY"}
#: the older spellings the operator tools used before the bot's and theirs became one.
DEPRECATED_FLAGS = {"TGSNAP_STORAGE_MODE": ("--mode",), "TGSNAP_ENCRYPTION_KEY": ("--key",)}
_DEFAULTS = {
    "TGSNAP_STORAGE_MODE": "`mtproto` in the bot's local mode",
    "TGSNAP_STORAGE_DIR": "`./data/storage` in the bot",
    "TGSNAP_BOT_TOKEN": "none: the bot's local mode",
    "TGSNAP_STORAGE_CHAT": "the emulator's channel in local mode",
}
_ENV_SECRETS = {var for var, (name, _help) in ENV.items() if name in _SECRET}

#: the storage settings as options: the same flags in the bot and in every tool.
STORAGE_OPTIONS = [
    Option(var, help_, secret=var in _ENV_SECRETS, default=_DEFAULTS.get(var, ""),
           metavar=_METAVARS.get(var, "VALUE"), deprecated=DEPRECATED_FLAGS.get(var, ()))
    for var, (_name, help_) in ENV.items()
]


class _DeprecatedFlag(argparse.Action):
    """An older spelling of a flag: stores into the same place and says which spelling to use."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, canonical: str, **kwargs: Any) -> None:
        self.canonical = canonical
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        # Recorded, not printed: `tgsnap` parses a command line twice (tools/cli.py), and the warning is
        # said once, by whoever reads the settings (`deprecation_warnings`).
        seen = getattr(namespace, "_deprecated_flags", [])
        seen.append(f"{option_string} is deprecated and will be removed; use {self.canonical}")
        namespace._deprecated_flags = seen
        setattr(namespace, self.dest, values)


def add_options(group: Any, options: Iterable[Option]) -> None:
    """Add each option's flag (and its deprecated spellings, hidden from --help) to an argparse parser
    or argument group. Values stay strings: `option_values` merges them with the environment."""
    for option in options:
        extra = " (visible in `ps`: prefer the environment)" if option.secret else ""
        default = f" (default: {option.default.replace('`', '')})" if option.default else ""
        help_ = f"{option.help}{default}{extra} [{option.env}]".replace("%", "%%")
        group.add_argument(option.flag, dest=option.dest, metavar=option.metavar, choices=option.choices,
                           help=help_)
        for old in option.deprecated:
            group.add_argument(old, dest=option.dest, metavar=option.metavar, choices=option.choices,
                               action=_DeprecatedFlag, canonical=option.flag, help=argparse.SUPPRESS)


def deprecation_warnings(args: argparse.Namespace) -> list[str]:
    """The deprecated flag spellings this command line used, one warning each."""
    return list(dict.fromkeys(getattr(args, "_deprecated_flags", [])))


def mode_from_flags(args: argparse.Namespace) -> str | None:
    """The storage mode this command line asks for: --storage-mode, else `local` when --storage-dir is
    given without --storage-chat (an explicit directory beats a Telegram mode inferred from the
    environment or .env), else None (inferred as `StorageSettings.from_env` says). The same rule for the
    bot and every tool."""
    if getattr(args, "storage_mode", None):
        return str(args.storage_mode)
    if getattr(args, "storage_dir", None) is not None and getattr(args, "storage_chat", None) is None:
        return "local"
    return None


def option_values(args: argparse.Namespace, environ: Mapping[str, str], options: Iterable[Option]) -> dict[str, str]:
    """TGSNAP_* name -> value: the flag when given, else the (non-blank) environment variable."""
    values: dict[str, str] = {}
    for option in options:
        raw = environ.get(option.env, "")
        if raw.strip():
            values[option.env] = raw.strip()
        given = getattr(args, option.dest, None)
        if given is not None and str(given).strip():
            values[option.env] = str(given).strip()
    return values


def markdown_table(options: Iterable[Option]) -> str:
    """A reference table of `options` (docs/configuration.md embeds it; a test keeps the two equal)."""
    rows = ["| variable | flag | meaning | default |", "| --- | --- | --- | --- |"]
    for option in options:
        flags = f"`{option.flag}`"
        if option.deprecated:
            flags += " (deprecated: " + ", ".join(f"`{f}`" for f in option.deprecated) + ")"
        secret = " Secret: never logged." if option.secret else ""
        meaning = option.help.replace("|", "&#124;")
        rows.append(f"| `{option.env}` | {flags} | {meaning}.{secret} | {option.default or '-'} |")
    return "\n".join(rows)


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
            if self.storage_bot_token:
                check_token("TGSNAP_STORAGE_BOT_TOKEN", self.storage_bot_token, several=True)
            elif self.bot_token:
                check_token("TGSNAP_BOT_TOKEN", self.bot_token)
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
        return cls(**values).validate()  # type: ignore[arg-type]  # values are parsed per field above, validate() judges them


def check_token(name: str, text: str, *, several: bool = False) -> None:
    """A token has the shape @BotFather gives (`123456789:AA...`): aiogram refuses anything else with a
    traceback (TokenValidationError), so say it here in one line. The token itself is never echoed."""
    for token in (text.split(",") if several else [text]):
        left, sep, right = token.strip().partition(":")
        if not (sep and left.isdigit() and right) or any(c.isspace() for c in right):
            raise ConfigError(f"{name} is not a bot token (the shape @BotFather gives is 123456789:AA...; "
                              "the value is not shown)")


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
