"""The bot's local-mode storage, reached by the operator commands: `tgsnap status --data-dir ./data`.

In local mode (`python -m bot` with no token) the bot keeps its store in the storage channel of a
Telegram emulator whose world lives under `<data dir>/emulator`. A command pointed at that data
directory starts the emulator from the saved world on 127.0.0.1, in a thread of its own (so the command's
code stays what it is for real Telegram), reads the storage through it exactly as the bot would, and
stops it when the command ends.

It refuses while the bot runs on that directory (the bot's lock is held): one world must not be served by
two emulators. Stop the bot, or point the command at the bot's own emulator with the `--storage-mode`,
`--storage-chat` and `--bot-api-url` flags (values printed by the bot when it starts) and its token in
TGSNAP_BOT_TOKEN.
"""

from __future__ import annotations

import asyncio
import fcntl
import threading
from collections.abc import Callable
from pathlib import Path

from snapshot.errors import ConfigError
from snapshot.settings import StorageSettings

#: the storage mode local mode uses unless TGSNAP_STORAGE_MODE says otherwise (bot/config.py).
DEFAULT_MODE = "mtproto"


class _World(threading.Thread):
    def __init__(self, world_dir: Path):
        super().__init__(name="tgsnap-local-emulator", daemon=True)
        self.world_dir = world_dir
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.info: dict[str, object] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._halt: asyncio.Event | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the caller by start()
            self.error = exc
            self.ready.set()

    async def _main(self) -> None:
        from tools.emulator.app import Emulator

        self._loop = asyncio.get_running_loop()
        self._halt = asyncio.Event()
        emulator = Emulator(self.world_dir)
        await emulator.start()
        try:
            demo = emulator.demo()
            self.info = {"bot_token": demo.bot_token, "storage_chat": str(demo.storage_chat_id),
                         "bot_api_url": emulator.bot_api_url, "mtproto_session": demo.session_string}
            self.ready.set()
            await self._halt.wait()
        finally:
            await emulator.close()

    def stop(self) -> None:
        if self._loop is not None and self._halt is not None:
            self._loop.call_soon_threadsafe(self._halt.set)
        self.join(timeout=30)


def local_world_settings(data_dir: Path, *, mode: str | None, key: bytes | None,
                         cleanups: list[Callable[[], None]]) -> StorageSettings:
    """Storage settings for the local-mode storage under `data_dir`, its emulator started (stopped by
    `cleanups`). NoStorage when there is no saved world; ConfigError while the bot runs on it."""
    from tools.cli_common import NoStorage

    world = data_dir / "emulator"
    if not world.is_dir():
        raise NoStorage(f"{data_dir} holds no local-mode world ({world} does not exist): the bot has not run in "
                        "local mode there; check --data-dir / TGSNAP_DATA_DIR")
    lock = open(data_dir / ".lock", "a")  # the bot's single-instance lock (bot/local.py)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise ConfigError(f"the bot is running in local mode on {data_dir}: stop it first, or reach its emulator "
                          "with --storage-mode, --storage-chat and --bot-api-url (printed when it started) and "
                          "TGSNAP_BOT_TOKEN") from None
    thread = _World(world)
    thread.start()
    thread.ready.wait(timeout=60)
    if thread.error is not None or not thread.info:
        lock.close()
        raise ConfigError(f"cannot start the emulator from {world}: {thread.error or 'it did not start'}")

    def stop() -> None:
        thread.stop()
        lock.close()

    cleanups.append(stop)
    import os

    from snapshot.settings import parse_key

    chosen = mode or os.environ.get("TGSNAP_STORAGE_MODE", "").strip() or DEFAULT_MODE
    env_key = os.environ.get("TGSNAP_ENCRYPTION_KEY", "").strip()
    if key is None and env_key:
        key = parse_key(env_key)
    return StorageSettings(mode=chosen, encryption_key=key, **thread.info).validate()  # type: ignore[arg-type]
