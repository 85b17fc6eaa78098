"""What every operator tool shares: the storage flags, opening the backend, progress, and exit codes.

Every tool reads the same storage configuration as the bot (TGSNAP_* variables, a `.env` file) and lets
the same flags override it, so `tgsnap verify --storage-dir ./data` and `TGSNAP_STORAGE_DIR=./data
tgsnap verify` mean one thing. Errors are mapped to documented exit codes in one place (`run`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path

from snapshot import reading
from snapshot.backend import Backend
from snapshot.errors import (
    BackendError,
    ChainError,
    ConfigError,
    CorruptDocument,
    DocumentNotFound,
    EncryptionError,
    NoStorage,
    RestoreError,
    StorageBusy,
    TgsnapError,
)

# Exit codes shared by every tool and the bot (snapshot/exitcodes.py; documented in docs/configuration.md);
# the tools import them from here.
from snapshot.exitcodes import (  # noqa: F401
    EXIT_BACKEND,
    EXIT_BUSY,
    EXIT_CODES,
    EXIT_CONFIG,
    EXIT_EMPTY,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
)
from snapshot.restore_plan import RestorePlan
from snapshot.restored import Restored
from snapshot.settings import (
    STORAGE_OPTIONS,
    StorageSettings,
    add_options,
    deprecation_warnings,
    load_dotenv_file,
    mode_from_flags,
    option_values,
    parse_key,
    unknown_variables,
)
from tools.progress import ProgressPrinter, close_all  # noqa: F401 - ProgressPrinter: the tools import it from here


def _storage_epilog() -> str:
    """The storage variables and their flags, from the one table the bot reads too (snapshot.settings)."""
    lines = ["storage (the same settings and flags as the bot; flags override environment variables and .env):"]
    for option in STORAGE_OPTIONS:
        lines.append(f"  {option.env:<26} {option.flag}")
    lines.append(f"  {'TGSNAP_DATA_DIR':<26} --data-dir (the bot's local mode; ./data when nothing else is set)")
    lines.append(f"  {'(a key in a file)':<26} --key-file")
    lines += ["", "exit codes: " + ", ".join(f"{code} {short}" for code, short, *_rest in EXIT_CODES)]
    return "\n".join(lines) + "\n"


STORAGE_EPILOG = _storage_epilog()


#: the name a tool goes by in help and messages when `tgsnap` runs it as a subcommand ("tgsnap verify").
_INVOKED_AS: ContextVar[str | None] = ContextVar("tgsnap_invoked_as", default=None)


def prog_name(default: str) -> str:
    """`default` (a tool's own name), or the `tgsnap SUBCOMMAND` name it is being run under."""
    return _INVOKED_AS.get() or default


@contextmanager
def invoked_as(prog: str) -> Iterator[None]:
    token = _INVOKED_AS.set(prog)
    try:
        yield
    finally:
        _INVOKED_AS.reset(token)


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keep the hand-written examples in descriptions and epilogs exactly as written."""


def make_parser(prog: str, description: str, examples: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog_name(prog),
        description=description,
        epilog=f"examples:\n{examples}\n{STORAGE_EPILOG}",
        formatter_class=Formatter,
    )
    add_storage_args(parser)
    return parser


def add_storage_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("storage")
    add_options(group, STORAGE_OPTIONS)
    group.add_argument("--key-file", type=Path, metavar="FILE",
                       help="file holding the 32-byte encryption key (hex or base64); wins over --encryption-key")
    group.add_argument("--data-dir", type=Path, metavar="DIR",
                       help="the bot's local-mode data directory: its storage lives in the emulator's channel "
                            "there, which is started from its saved world for this command (default: ./data, "
                            "when nothing else names the storage and ./data/emulator exists) [TGSNAP_DATA_DIR]")


def seq_number(text: str) -> int:
    """An argparse type for a delta sequence number: 0 (the state before the first delta) or more."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a sequence number (a whole number, 0 or more)") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n} is not a sequence number: deltas are numbered from 1, and 0 is "
                                         "the empty state before the first one")
    return n


def parse_time(text: str) -> float:
    """Unix seconds from a number or an ISO 8601 timestamp (naive means UTC): `--at-time`."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--at-time {text!r} is neither unix seconds nor an ISO 8601 timestamp "
                          "(e.g. 2026-11-26T17:30:00)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def add_point_args(parser: argparse.ArgumentParser) -> None:
    """`--at-seq` / `--at-time`: which point of the stored history a reading command restores."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--at-seq", type=seq_number, metavar="SEQ",
                       help="the state right after delta SEQ (0: before the first delta)")
    group.add_argument("--at-time", metavar="TIME",
                       help="the state as of TIME: the last delta captured at or before it "
                            "(ISO 8601, UTC unless an offset is given, or unix seconds)")


async def read_point(args: argparse.Namespace, doing: str, *, dry_run: bool = False,
                     settings: StorageSettings | None = None) -> tuple[StorageSettings, RestorePlan, Restored | None]:
    """The state the command line asks for (`--at-seq` / `--at-time`, else the latest), restored from the
    storage it names (or `settings`, already read) beside a live writer (snapshot/reading.py); with
    `dry_run`, only the plan. NoStorage when the storage is empty ("nothing to `doing`")."""
    at_time = parse_time(args.at_time) if args.at_time is not None else None
    if settings is None:
        settings = settings_from_args(args)
    backend = await open_backend(settings)
    try:
        p, restored = await reading.restore_point(backend, settings.encryption_key, args.at_seq, at_time,
                                                  progress=ProgressPrinter(quiet=args.quiet), dry_run=dry_run)
    finally:
        await backend.close()
    if p.manifest is None and not p.chain:
        if restored is not None:
            restored.conn.close()
        raise NoStorage(f"storage is empty ({settings.describe()}): nothing to {doing}")
    return settings, p, restored


def write_restored(prog: str, restored: Restored, target: str, write: Callable[[sqlite3.Connection], int],
                   report: Callable[[int], str]) -> int:
    """The tail of a command that writes a restored state out: `write(conn)` (rows written), then the
    `report(rows)` line on stderr; a write that fails is one line and EXIT_FAILED. Closes the state."""
    close_all()  # progress bars off the screen before the output and the report
    try:
        rows = write(restored.conn)
    except (OSError, sqlite3.Error) as exc:
        fail(f"{prog_name(prog)}: cannot write {target}: {exc}")
        return EXIT_FAILED
    finally:
        restored.conn.close()
    sys.stderr.write(report(rows) + "\n")
    return EXIT_OK


def known_variables() -> set[str]:
    """Every TGSNAP_* variable tgsnap reads: the storage settings, the bot's options, and the rest."""
    try:
        from bot.config import OPTIONS
    except ImportError:  # a build without the bot
        return set()
    return {o.env for o in OPTIONS}


#: what a command started for its run (a local-mode emulator): stopped when `run` ends.
_CLEANUPS: list[Callable[[], None]] = []


def _names_no_storage(args: argparse.Namespace) -> bool:
    """Neither flags nor the environment say where the storage is (then the bot's local mode is meant)."""
    if args.storage_dir is not None or args.storage_chat is not None or args.storage_mode is not None:
        return False
    return not any(os.environ.get(v, "").strip() for v in ("TGSNAP_STORAGE_DIR", "TGSNAP_STORAGE_CHAT",
                                                           "TGSNAP_STORAGE_MODE", "TGSNAP_BOT_TOKEN"))


def settings_from_args(args: argparse.Namespace) -> StorageSettings:
    """StorageSettings from the environment with this command line's overrides; ConfigError if incomplete."""
    key: bytes | None = None
    if args.key_file is not None:
        try:
            key = parse_key(args.key_file.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read key file {args.key_file}: {exc.strerror}") from None
    elif args.encryption_key is not None:
        key = parse_key(args.encryption_key)
    load_dotenv_file()
    for warning in deprecation_warnings(args) + unknown_variables(os.environ, known_variables()):
        fail(f"{prog_name('tgsnap')}: warning: {warning}")
    mode = mode_from_flags(args)
    data_dir = getattr(args, "data_dir", None)
    if data_dir is None and _names_no_storage(args):
        named = os.environ.get("TGSNAP_DATA_DIR", "").strip()
        if named:
            data_dir = Path(named)
        elif (Path("data") / "emulator").is_dir():
            data_dir = Path("data")  # the bot's default data directory, where local mode left a world
    if data_dir is not None:
        from tools.localworld import local_world_settings

        return local_world_settings(data_dir, mode=mode, key=key, cleanups=_CLEANUPS)
    # the remaining flags (tokens, api id and hash, session) as the bot reads them: flag over variable
    given = {o.dest: v for o in STORAGE_OPTIONS
             if o.env not in ("TGSNAP_STORAGE_MODE", "TGSNAP_ENCRYPTION_KEY")
             and (v := option_values(args, {}, [o]).get(o.env)) is not None}
    field_of = {"storage_dir": "local_dir"}
    overrides: dict[str, object] = {field_of.get(k, k): v for k, v in given.items()}
    if "local_dir" in overrides:
        overrides["local_dir"] = Path(str(overrides["local_dir"]))
    if "api_id" in overrides:
        try:
            overrides["api_id"] = int(str(overrides["api_id"]))
        except ValueError:
            raise ConfigError("TGSNAP_API_ID (--api-id) must be a number") from None
    return StorageSettings.from_env(mode=mode, encryption_key=key, **overrides)


async def open_backend(settings: StorageSettings, *, writes: bool = False) -> Backend:
    """The backend these settings describe, through the project's factory.

    Operator tools read or rewrite existing storage, so a local directory that does not exist is a typo,
    not a wish to start afresh: refuse it (NoStorage) rather than create an empty store and report it
    empty. Tools that only read (`writes=False`, the default) open it without creating anything in it.
    """
    if settings.mode == "local" and settings.local_dir is not None:
        where = settings.local_dir
        if where.exists() and not where.is_dir():
            raise ConfigError(f"storage directory {where} is not a directory (--storage-dir / "
                              "TGSNAP_STORAGE_DIR names a file)")
        if not where.exists():
            raise NoStorage(f"storage directory {where} does not exist: check --storage-dir or "
                            "TGSNAP_STORAGE_DIR")
    from snapshot.open import open_backend as factory

    return await factory(settings, create=writes)


def fail(message: str) -> None:
    sys.stderr.write(message.rstrip() + "\n")


def run(prog: str, body: Callable[[], Awaitable[int]]) -> int:
    """Run an async tool body and turn deliberate errors into one stderr line and an exit code."""
    prog = prog_name(prog)

    async def bounded() -> int:
        try:
            return await body()
        finally:
            close_all()  # progress bars off the screen before the result or the error is printed
            while _CLEANUPS:
                _CLEANUPS.pop()()

    try:
        return asyncio.run(bounded())
    except KeyboardInterrupt:
        fail(f"{prog}: interrupted")
        return EXIT_INTERRUPTED
    except ConfigError as exc:
        fail(f"{prog}: configuration error: {exc}")
        return EXIT_CONFIG
    except StorageBusy as exc:
        fail(f"{prog}: storage busy: {exc}")
        return EXIT_BUSY
    except NoStorage as exc:
        fail(f"{prog}: no storage: {exc}")
        return EXIT_EMPTY
    except EncryptionError as exc:
        fail(f"{prog}: encryption: {exc}")
        return EXIT_CONFIG
    except (CorruptDocument, ChainError, RestoreError, DocumentNotFound) as exc:
        fail(f"{prog}: {type(exc).__name__}: {exc}")
        return EXIT_FAILED
    except BackendError as exc:
        fail(f"{prog}: storage error: {exc}")
        return EXIT_BACKEND
    except TgsnapError as exc:
        fail(f"{prog}: {type(exc).__name__}: {exc}")
        return EXIT_FAILED
