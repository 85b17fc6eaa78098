"""A throw-away PostgreSQL server on 127.0.0.1 from the installed binaries (for the bench and the tests).

initdb + pg_ctl in a temporary directory, password authentication over TCP, fsync off (a measurement of
query latency, not of the disk; a killed server keeps its commits since the OS still has them).
PostgreSQL refuses to run as root, so as root the server runs as `nobody` (through su).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

PASSWORD = "s3cr3t-Pässword"


def find_bin(name: str) -> str | None:
    """`name` on PATH, else the newest /usr/lib/postgresql/<version>/bin/name (Debian's layout)."""
    found = shutil.which(name)
    if found:
        return found

    def version(p: str) -> int:
        v = p.split("/")[4]
        return int(v) if v.isdigit() else 0

    cands = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=version)
    return cands[-1] if cands else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NoPostgres(RuntimeError):
    pass


def _sh(a: str) -> str:
    return "'" + a.replace("'", "'\\''") + "'"


@dataclass
class Server:
    base: Path
    port: int
    pg_ctl: str
    as_user: str | None

    def _run(self, *argv: str) -> None:
        cmd = list(argv)
        if self.as_user:
            cmd = ["su", "-s", "/bin/sh", self.as_user, "-c", " ".join(_sh(a) for a in cmd)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if r.returncode:
            log_path = self.base / "log"
            log = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
            raise NoPostgres(f"{Path(argv[0]).name} {argv[-1]} failed ({r.returncode}): {r.stdout}{r.stderr}\n{log}")

    def start(self) -> None:
        opts = (f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c full_page_writes=off -c max_connections=40")
        self._run(self.pg_ctl, "-D", str(self.base / "data"), "-o", opts, "-l", str(self.base / "log"), "-w",
                  "-t", "30", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(self.pg_ctl, "-D", str(self.base / "data"), "-m", mode, "-w", "stop")

    def url(self, password: str = PASSWORD, db: str = "postgres", port: int | None = None) -> str:
        return f"postgresql://postgres:{quote(password)}@127.0.0.1:{port or self.port}/{db}"


def create() -> Server:
    """Initialise and start a new server; NoPostgres (with how to install it) when there are no binaries."""
    initdb, pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
    if not initdb or not pg_ctl:
        raise NoPostgres("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or under "
                         "/usr/lib/postgresql/*/bin: install them (Debian: apt-get install -y postgresql)")
    as_user = "nobody" if os.geteuid() == 0 else None
    base = Path(tempfile.mkdtemp(prefix="tgsnap-pg-", dir="/tmp"))  # short: a socket path has a length limit
    pwfile = base / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if as_user:
        shutil.chown(base, user=as_user)
        shutil.chown(pwfile, user=as_user)
    srv = Server(base, free_port(), pg_ctl, as_user)
    try:
        srv._run(initdb, "-D", str(base / "data"), "-U", "postgres", "-E", "UTF8", "--no-locale",
                 "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "--no-sync")
        srv.start()
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise
    return srv


def destroy(srv: Server) -> None:
    with contextlib.suppress(Exception):
        srv.stop("immediate")
    shutil.rmtree(srv.base, ignore_errors=True)


@contextlib.contextmanager
def temporary():
    srv = create()
    try:
        yield srv
    finally:
        destroy(srv)
