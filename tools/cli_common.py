"""What every operator tool shares: the storage flags, opening the backend, progress, and exit codes.

Every tool reads the same storage configuration as the bot (TGSNAP_* variables, a `.env` file) and lets
the same flags override it, so `tgsnap-verify --storage-dir ./data` and `TGSNAP_STORAGE_DIR=./data
tgsnap-verify` mean one thing. Errors are mapped to documented exit codes in one place (`run`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from snapshot.backend import Backend
from snapshot.errors import (
    BackendError,
    ChainError,
    ConfigError,
    CorruptDocument,
    DocumentNotFound,
    EncryptionError,
    RestoreError,
    StorageBusy,
    TgsnapError,
)
from snapshot.settings import MODES, StorageSettings, load_dotenv_file, parse_key, unknown_variables
from tools.progress import ProgressPrinter, close_all  # noqa: F401 - ProgressPrinter: the tools import it from here

# Exit codes shared by every tool (documented in docs/operations.md).
EXIT_OK = 0
EXIT_FAILED = 1  # verification failed / data at fault (named in the message)
EXIT_CONFIG = 2  # bad flags or configuration
EXIT_BUSY = 3  # a live writer holds the storage lease
EXIT_BACKEND = 4  # storage unreachable or refused the operation
EXIT_EMPTY = 5  # the storage is empty: nothing to read (a typo'd location looks like this too)
EXIT_INTERRUPTED = 130

STORAGE_EPILOG = """\
storage (same as the bot; flags override environment variables and .env):
  TGSNAP_STORAGE_MODE      local | botapi | mtproto            (--mode)
  TGSNAP_STORAGE_DIR       local-directory backend             (--storage-dir)
  TGSNAP_STORAGE_CHAT      storage channel id or @username     (--storage-chat)
  TGSNAP_ENCRYPTION_KEY    32-byte key, hex or base64          (--key-file, --key)
  TGSNAP_DATA_DIR          the bot's local-mode data directory (--data-dir; ./data when nothing else is set)
  TGSNAP_BOT_TOKEN, TGSNAP_STORAGE_BOT_TOKEN, TGSNAP_API_ID, TGSNAP_API_HASH,
  TGSNAP_MTPROTO_SESSION, TGSNAP_BOT_API_URL                   (environment only: secrets stay off argv)

exit codes: 0 ok, 1 data at fault, 2 bad configuration, 3 storage busy (live writer),
            4 storage unreachable, 5 no storage there (missing or empty), 130 interrupted
"""


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
    group.add_argument("--mode", choices=MODES, help="storage backend (default: inferred from the environment)")
    group.add_argument("--storage-dir", type=Path, metavar="DIR", help="directory of the local backend")
    group.add_argument("--storage-chat", metavar="CHAT", help="storage channel: -100… id or @username")
    group.add_argument("--bot-api-url", metavar="URL", help="Bot API base URL (e.g. the emulator's)")
    group.add_argument("--key-file", type=Path, metavar="FILE",
                       help="file holding the 32-byte encryption key (hex or base64)")
    group.add_argument("--key", metavar="KEY",
                       help="encryption key, hex or base64 (visible in `ps`: prefer --key-file or the env)")
    group.add_argument("--data-dir", type=Path, metavar="DIR",
                       help="the bot's local-mode data directory: its storage lives in the emulator's channel "
                            "there, which is started from its saved world for this command (default: ./data, "
                            "when nothing else names the storage and ./data/emulator exists)")


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
    if args.storage_dir is not None or args.storage_chat is not None or args.mode is not None:
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
    elif args.key is not None:
        key = parse_key(args.key)
    load_dotenv_file()
    for warning in unknown_variables(os.environ, known_variables()):
        fail(f"{prog_name('tgsnap')}: warning: {warning}")
    mode = args.mode
    if mode is None and args.storage_dir is not None and args.storage_chat is None:
        mode = "local"  # an explicit directory on the command line beats an inferred Telegram mode
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
    return StorageSettings.from_env(
        mode=mode,
        local_dir=args.storage_dir,
        storage_chat=args.storage_chat,
        bot_api_url=args.bot_api_url,
        encryption_key=key,
    )


class NoStorage(TgsnapError):
    """There is no storage where the configuration points: the directory does not exist, or the storage
    holds nothing (exit 5). Told apart from success so that a typo in --storage-dir, or a script run
    against the wrong channel, does not pass for healthy storage that happens to be empty."""


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
