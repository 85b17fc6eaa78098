"""`python -m bot`: run the clicker (see `python -m bot --help`).

With a bot token configured it serves Telegram (or whatever TGSNAP_BOT_API_URL points at); without one
it starts a local emulator, sets up a demo world in it and serves that (local mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence

from bot import config
from snapshot.errors import BackendError, ConfigError, EncryptionError, NoStorage, StorageBusy, TgsnapError

# the same codes as every tool (snapshot/exitcodes.py)
from snapshot.exitcodes import EXIT_BACKEND, EXIT_BUSY, EXIT_CONFIG, EXIT_EMPTY, EXIT_FAILED, EXIT_INTERRUPTED

log = logging.getLogger("bot")


async def run(settings: config.BotSettings) -> int:
    from bot.app import serve  # aiogram takes seconds to import: not for --help or a configuration error

    # A storage directory that does not exist is created only as local mode's own default (first run);
    # anywhere else it is a typo, and serving an empty store from it would hide the real state.
    settings.create_storage_dir = settings.local_mode and "TGSNAP_STORAGE_DIR" not in settings.values
    if not settings.local_mode:
        return await serve(settings, settings.storage_settings(), freeze=True)
    from bot import local

    async with local.local_world(settings) as world:
        settings.admin_ids = settings.admin_ids | {world.user_id}
        interactive = local.interactive_terminal()
        up = asyncio.Event()
        stop = asyncio.Event()
        serving = asyncio.create_task(serve(settings, world.storage, on_ready=lambda _clicker: up.set(),
                                            stop=stop, freeze=True))
        # Print the instructions once the bot is up, so they are not buried under restore logs.
        ready = asyncio.create_task(up.wait())
        await asyncio.wait({serving, ready}, return_when=asyncio.FIRST_COMPLETED)
        chat = None
        if not serving.done():
            print(local.instructions(world, settings.data_dir, interactive), flush=True)
            if interactive:
                log_path = settings.data_dir / "bot.log"
                print(f"(log lines go to {log_path} while you chat here; warnings still show)\n", flush=True)
                local.logs_to_file(log_path)
                chat = asyncio.create_task(local.console(world, prompt=f"{world.user_name}> "))
                # Ctrl+D (end of input) stops the bot the way Ctrl+C does.
                chat.add_done_callback(lambda _task: stop.set())
        try:
            return await serving
        finally:
            ready.cancel()
            if chat is not None:
                chat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await chat


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = config.load(argv)
    except ConfigError as exc:
        sys.stderr.write(f"python -m bot: configuration error: {exc}\n")
        return EXIT_CONFIG
    for warning in settings.warnings:
        sys.stderr.write(f"python -m bot: warning: {warning}\n")
    config.configure_logging(settings.log_level)
    from aiogram.exceptions import TelegramNetworkError, TelegramUnauthorizedError
    from aiogram.utils.token import TokenValidationError

    try:
        return asyncio.run(run(settings))
    except KeyboardInterrupt:  # Ctrl+C before the bot was up: nothing to save yet
        return EXIT_INTERRUPTED
    except TelegramUnauthorizedError:
        log.error("configuration error: Telegram refused the bot token (TGSNAP_BOT_TOKEN); check it with @BotFather")
        return EXIT_CONFIG
    except TokenValidationError:  # config.load checks the shape first; aiogram's own check as a backstop
        log.error("configuration error: the bot token (TGSNAP_BOT_TOKEN) is malformed; check it with @BotFather")
        return EXIT_CONFIG
    except TelegramNetworkError as exc:
        log.error("cannot reach the Bot API: %s", exc)
        return EXIT_BACKEND
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return EXIT_CONFIG
    except EncryptionError as exc:
        # a wrong or missing key is configuration, as in the tools (exit 2), not data at fault
        log.error("configuration error: encryption: %s (check TGSNAP_ENCRYPTION_KEY / --encryption-key)", exc)
        return EXIT_CONFIG
    except NoStorage as exc:
        log.error("no storage: %s", exc)
        return EXIT_EMPTY
    except StorageBusy as exc:
        # the library names its own parameter (ReplicaConfig.takeover_wait): say what sets it for the bot
        log.error("storage busy: %s (the bot's --takeover-wait / TGSNAP_TAKEOVER_WAIT sets how long it waits)", exc)
        return EXIT_BUSY
    except BackendError as exc:
        log.error("storage unreachable: %s", exc)
        return EXIT_BACKEND
    except TgsnapError as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
