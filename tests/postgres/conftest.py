"""A real PostgreSQL server for the session, started from the installed binaries on 127.0.0.1.

initdb + pg_ctl in a temporary directory, password authentication over TCP (so a wrong password is a
real refusal), fsync off (the tests prove tgsnap's logic, not the disk's; a killed server keeps its commits, the
OS still has them). PostgreSQL refuses to run as
root, so as root the server runs as `nobody` (su). No binaries: the tests FAIL with how to install them
(`.ci/run` installs Debian's `postgresql` package when missing), they never skip.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

PASSWORD = "s3cr3t-Pässword"


def find_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    cands = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return cands[-1] if cands else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if r.returncode:
            log = (self.base / "log").read_text(errors="replace")[-2000:] if (self.base / "log").exists() else ""
            raise RuntimeError(f"{argv[0]} {argv[1] if len(argv) > 1 else ''} failed ({r.returncode}): "
                               f"{r.stdout}{r.stderr}\n{log}")

    def start(self) -> None:
        opts = (f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c full_page_writes=off -c max_connections=40")
        self._run(self.pg_ctl, "-D", str(self.base / "data"), "-o", opts, "-l", str(self.base / "log"), "-w",
                  "-t", "30", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(self.pg_ctl, "-D", str(self.base / "data"), "-m", mode, "-w", "stop")

    def url(self, password: str = PASSWORD, db: str = "postgres") -> str:
        from urllib.parse import quote

        return f"postgresql://postgres:{quote(password)}@127.0.0.1:{self.port}/{db}"


def _sh(a: str) -> str:
    return "'" + a.replace("'", "'\\''") + "'"


@pytest.fixture(scope="session")
def pg_server():
    initdb, pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or under "
                    "/usr/lib/postgresql/*/bin: install them (Debian: apt-get install -y postgresql; .ci/run does)")
    as_user = "nobody" if os.geteuid() == 0 else None
    base = Path(tempfile.mkdtemp(prefix="tgsnap-pg-", dir="/tmp"))  # short: the socket path has a length limit
    pwfile = base / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if as_user:
        shutil.chown(base, user=as_user)
        shutil.chown(pwfile, user=as_user)
    srv = Server(base, free_port(), pg_ctl, as_user)
    srv._run(initdb, "-D", str(base / "data"), "-U", "postgres", "-E", "UTF8", "--no-locale",
             "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "--no-sync")
    srv.start()
    try:
        yield srv
    finally:
        try:
            srv.stop("immediate")
        except Exception:
            pass
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server) -> str:
    return pg_server.url()


@pytest.fixture
def schema() -> str:
    return "t_" + uuid.uuid4().hex[:10]


def query(url: str, sql: str, params=()) -> list[tuple]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        cur = c.execute(sql, params)
        return cur.fetchall() if cur.description else []


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
