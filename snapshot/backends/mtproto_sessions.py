"""MTProto sessions kept on the host: one login per host and process slot, never one key in two places.

Telegram punishes both ways of getting sessions wrong:
- a bot that logs in (`auth.importBotAuthorization`) on every start soon draws FLOOD_WAIT of 1000–3000 s
  on its logins, and a restart loop that gives up and retries makes the wait longer;
- one auth key used from two places at once (two hosts, or two processes on a copy of one session)
  draws 406 AUTH_KEY_DUPLICATED, and that key is dead for good.

So a session is **saved once per host** in a directory (`TGSNAP_MTPROTO_SESSION_DIR`, default
`$XDG_STATE_HOME/tgsnap/sessions`, i.e. `~/.local/state/tgsnap/sessions`), and **each process takes
its own slot**: `mtproto-<bot id>-<host>-<n>.session`, held under an exclusive `flock` on its `.lock` file for
as long as the process runs. A second process on the same host (a deploy overlap, an operator's tool
beside the bot) finds slot 0 locked and takes slot 1: its own key, logged in once, then reused by every
later process that gets slot 1. A crashed process's lock dies with it; a frozen one keeps its slot and
the newcomer takes another — never the frozen one's key.

A session file records the machine it was made on (`/etc/machine-id`, else the host name), and its name
carries a short hash of it: a file that reaches another host (a copied volume, a directory shared over the
network) is not used there, and two hosts sharing one directory never take each other's slots (they would
otherwise overwrite each other's sessions and log in on every start). Files are created 0600 in a 0700
directory: a session is a secret like the token.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path

from snapshot.errors import ConfigError

#: at most this many processes of one bot on one host hold a slot at once.
MAX_SLOTS = 32


def default_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("TGSNAP_MTPROTO_SESSION_DIR"):
        return Path(env["TGSNAP_MTPROTO_SESSION_DIR"])
    state = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "tgsnap" / "sessions"


def this_host() -> str:
    """An identity of this machine that survives reboots and differs between hosts."""
    try:
        text = Path("/etc/machine-id").read_text().strip()
        if text:
            return "machine-id:" + text
    except OSError:
        pass
    return "host:" + socket.gethostname()


class SessionSlot:
    """One process's session slot; `load`/`save`/`discard` its session, `release` on close."""

    def __init__(self, directory: Path, stem: str, index: int, fd: int) -> None:
        self.directory = directory
        self.index = index
        self.path = directory / f"{stem}-{index}.session"
        self._fd: int | None = fd

    def __repr__(self) -> str:
        return f"SessionSlot({self.path})"

    def load(self) -> str | None:
        """The saved session string, or None (none saved, unreadable, or made on another host)."""
        try:
            record = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("host") != this_host():
            return None
        session = record.get("session")
        return session if isinstance(session, str) and session else None

    def save(self, session: str) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"host": this_host(), "session": session}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def discard(self) -> None:
        """Forget a session Telegram refused (AUTH_KEY_DUPLICATED & co.): it must never be used again."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def claim_slot(directory: Path, bot: str) -> SessionSlot:
    """The lowest slot of `bot` no live process on this host holds, locked for this process."""
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise ConfigError(f"cannot create the MTProto session directory {directory}: {e}; set "
                          "TGSNAP_MTPROTO_SESSION_DIR to a writable directory on this host") from None
    stem = f"mtproto-{bot}-{hashlib.sha256(this_host().encode()).hexdigest()[:8]}"
    for index in range(MAX_SLOTS):
        lock = directory / f"{stem}-{index}.lock"
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise ConfigError(f"cannot use the MTProto session directory {directory}: {e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return SessionSlot(directory, stem, index, fd)
    raise ConfigError(f"{MAX_SLOTS} processes of bot {bot} already hold MTProto sessions in {directory}: "
                      "stop some, or give each a storage bot of its own (TGSNAP_STORAGE_BOT_TOKEN)")
