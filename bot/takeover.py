"""Opening the store after a crash without waiting out the dead process's lease.

A writer that dies without handing over (SIGKILL, OOM, power cut) leaves its lease in the manifest
until it expires (`ReplicaConfig.lease_seconds`); a newcomer meanwhile gets `StorageBusy`. When the
holder ran on this very host and its process no longer exists, it is this bot's own crashed
predecessor: the restarted bot takes the storage over at once by continuing under the dead writer's
identity (the replica lets a writer with the holder's id in, and bumps the epoch as always).

A holder on another host may be a crashed predecessor too (a container restarted elsewhere): the bot
then waits for its lease to run out, which a live holder never lets happen (it renews), so a second
live bot still ends in StorageBusy naming the holder, after one lease period.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from collections.abc import Iterable

from core import Migration, Store, StoreConfig
from snapshot.backend import Backend
from snapshot.cipher import Cipher
from snapshot.errors import StorageBusy
from snapshot.manifest import Lease
from snapshot.replica import Progress
from snapshot.restore import read_current_manifest

log = logging.getLogger(__name__)


async def open_store(backend: Backend, schema: Iterable[str], config: StoreConfig,
                     progress: Progress | None = None, migrations: Iterable[Migration] | None = None) -> Store:
    schema = list(schema)
    try:
        return await Store.open(backend, schema=schema, config=config, progress=progress, migrations=migrations)
    except StorageBusy as busy:
        holder = await dead_local_holder(backend, config)
        if holder is None:
            wait = config.replica.lease_seconds + 5.0
            log.warning("%s; waiting up to %.0f s for that lease to expire", busy, wait)
            patient = dataclasses.replace(config.replica, takeover_wait=max(config.replica.takeover_wait, wait))
            return await Store.open(backend, schema=schema, config=dataclasses.replace(config, replica=patient),
                                    progress=progress, migrations=migrations)
    log.warning("the last writer, %s, died on this host without handing over; taking over its storage",
                holder.describe())
    return await Store.open(backend, schema=schema, config=dataclasses.replace(config, writer_id=holder.writer_id),
                            progress=progress, migrations=migrations)


async def dead_local_holder(backend: Backend, config: StoreConfig) -> Lease | None:
    """The live lease's holder if it is a process of this host that no longer runs, else None."""
    key = config.replica.encryption_key
    manifest, _hash = await read_current_manifest(backend, Cipher(key) if key is not None else None,
                                                  config.replica.allow_plaintext)
    lease = manifest.lease if manifest is not None else None
    if lease is None or lease.host != socket.gethostname() or lease.pid == os.getpid():
        return None
    return None if process_exists(lease.pid) else lease


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True
