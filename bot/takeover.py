"""Opening the store after a crash without waiting out the dead process's lease, only on proof.

A writer that dies without handing over (SIGKILL, OOM, power cut) leaves its lease in the manifest
until it expires (`ReplicaConfig.lease_seconds`); a newcomer meanwhile gets `StorageBusy`. When the
holder is *provably* this bot's own crashed predecessor, the restarted bot takes the storage over at
once by continuing under the dead writer's identity (the replica lets a writer with the holder's id in
and claims a new epoch as always).

Hostname + pid is no proof: containers sharing a hostname have separate PID namespaces, so the holder's
pid may not exist *here* while the holder runs fine next door. The lease therefore also names the
holder's boot id, PID namespace and process start time (snapshot/proc_identity.py); the bot takes over
at once only when boot id and PID namespace are its own and that pid is gone or has another start time
(reused). In every other case (another host, another namespace, a lease from an older tgsnap that lacks
those fields) it waits for the lease to run out: a live holder renews it, so a second live bot ends in
StorageBusy naming the holder after one lease period, and a holder frozen past its lease is fenced by
the claim protocol when it resumes, not trusted to be dead.

How long to wait is the bot's `TGSNAP_TAKEOVER_WAIT` (`--takeover-wait`), at least one lease period.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
from collections.abc import Iterable

from core import Migration, Store, StoreConfig
from snapshot import proc_identity
from snapshot.backend import Backend
from snapshot.cipher import Cipher
from snapshot.errors import StorageBusy
from snapshot.manifest import Lease
from snapshot.replica import Progress
from snapshot.restore import current_lease

log = logging.getLogger(__name__)

#: how the advice in a StorageBusy names the setting that makes the bot wait longer.
WAIT_SETTING = "TGSNAP_TAKEOVER_WAIT (--takeover-wait SECONDS)"
#: beyond one lease period: a renewal delayed by a slow round trip still lands before the bot gives up.
MARGIN = 5.0


async def open_store(backend: Backend, schema: Iterable[str], config: StoreConfig,
                     progress: Progress | None = None, migrations: Iterable[Migration] | None = None) -> Store:
    schema = list(schema)
    quick = dataclasses.replace(config, replica=dataclasses.replace(config.replica, takeover_wait=0.0))
    try:
        return await Store.open(backend, schema=schema, config=quick, progress=progress, migrations=migrations)
    except StorageBusy as busy:
        found = await dead_local_holder(backend, config)
        if found is None:
            wait = max(config.replica.takeover_wait, config.replica.lease_seconds + MARGIN)
            log.warning("%s; waiting up to %.0f s for that lease to expire", busy, wait)
            patient = dataclasses.replace(config.replica, takeover_wait=wait)
            try:
                return await Store.open(backend, schema=schema, config=dataclasses.replace(config, replica=patient),
                                        progress=progress, migrations=migrations)
            except StorageBusy as still:
                raise StorageBusy(f"{still} (the bot waited {wait:.0f} s: stop the other writer, or set "
                                  f"{WAIT_SETTING} longer than its lease)", writer_id=still.writer_id,
                                  host=still.host, pid=still.pid, expires_at=still.expires_at,
                                  epoch=still.epoch) from None
        holder, why = found
    log.warning("the last writer, %s, died on this host without handing over (%s); taking over its storage",
                holder.describe(), why)
    return await Store.open(backend, schema=schema, config=dataclasses.replace(config, writer_id=holder.writer_id),
                            progress=progress, migrations=migrations)


async def dead_local_holder(backend: Backend, config: StoreConfig) -> tuple[Lease, str] | None:
    """The live lease's holder and the proof it is gone, if it was a process of this host, boot and PID
    namespace that no longer runs; else None. The holder is the lease of the newest slot: while a claim
    is in progress (or its claimer died restoring) that is the claimer's, not the last full manifest's."""
    key = config.replica.encryption_key
    lease = await current_lease(backend, Cipher(key) if key is not None else None, config.replica.allow_plaintext)
    if lease is None or lease.host != socket.gethostname():
        return None
    why = proc_identity.holder_gone(lease.pid, lease.boot_id, lease.pid_ns, lease.start_time)
    return None if why is None else (lease, why)

