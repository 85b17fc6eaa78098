"""Every storage example in docs/operations.md and docs/cli.md runs, and succeeds, as a reader would run
it: each code block in order, in a directory holding a fresh copy of real storage in ./data (the clicker's
own `users` table, 1300 deltas), so `export` then `sqlite3` on the file it wrote works as the page says.

What a reader's shell adds is done here too: `> FILE` writes the output to FILE (JSON is parsed), `| head`
and `| jq .KEY` need output (and the key), `sqlite3 FILE 'SQL'` runs the query on the file, and
`postgresql://bot@127.0.0.1/bot` reaches a real PostgreSQL server started for the module (the doc's
address replaced by the server's, its password set as PGPASSWORD, as the pages advise). A `follow` without
--once/--check runs until stopped: it runs as a process and is stopped with SIGINT once it has caught up.

Not run (listed by `test_what_is_not_run_is_only_what_needs_telegram_or_runs_for_long`): examples that
need Telegram storage (TGSNAP_STORAGE_CHAT=...), the developer programs (bench, emulator, loadgen: their
own tests run them) and the `tgsnap COMMAND --help` placeholder.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.users import SCHEMA
from snapshot.backends.local import LocalDirBackend
from snapshot.changes import ChangeSet, TableChanges
from snapshot.replica import Replica, ReplicaConfig
from tools import cli
from tools.bench import pgserver

ROOT = Path(__file__).resolve().parents[2]
DOCS = {"operations": ROOT / "docs" / "operations.md", "cli": ROOT / "docs" / "cli.md"}
#: a command line in a block: optional VAR=value prefixes, then one of the programs the pages use.
LINE = re.compile(r"^(?:[A-Z_]+=\S+ )*(?:tgsnap |python -m tools[. ]|sqlite3 )")
PG_URL = re.compile(r"postgresql://bot@127\.0\.0\.1(?::5432)?/bot")
STORAGE_COMMANDS = {"status", "verify", "compact", "prune", "export", "restore", "follow", "move"}
COLUMNS = ["chat_id", "name", "clicks", "last_message_id", "username", "registered_at"]
NAMES = ["Анна", "Дмитрий", "Alex", "Zoë", "Ярослав", "Mia"]


def _command(words: list[str]) -> str | None:
    """The tgsnap command a line runs (None: not a tgsnap command, e.g. sqlite3)."""
    if words[0] == "tgsnap":
        return words[1]
    if words[:2] == ["python", "-m"]:
        return "" if words[2] == "tools" else words[2].removeprefix("tools.").split(".")[0]
    return None


def _skip_reason(line: str) -> str | None:
    words = shlex.split(line)
    env = [w for w in words if re.match(r"^[A-Z_]+=", w)]
    words = words[len(env):]
    if any(e.startswith("TGSNAP_STORAGE_CHAT=") for e in env):
        return "Telegram storage"
    command = _command(words)
    if command is None:
        return None
    if command == "COMMAND" or command == "" and words[3:4] == ["COMMAND"]:
        return "placeholder"
    if command not in STORAGE_COMMANDS:
        return "developer program"
    return None


def blocks(doc: str) -> list[list[str]]:
    """The command lines of each code block of `doc`, in order (comments dropped)."""
    fence = r"```sh\n(.*?)```" if doc == "operations" else r"```\n(.*?)```"
    out = []
    for block in re.findall(fence, DOCS[doc].read_text(encoding="utf-8"), flags=re.S):
        lines = [" ".join(re.sub(r"\s#\s.*$", "", line).split()) for line in block.splitlines()]
        lines = [line for line in lines if LINE.match(line)]
        if lines:
            out.append(lines)
    return out


def runnable() -> list[tuple[str, int, list[str]]]:
    return [(doc, i, [line for line in block if _skip_reason(line) is None])
            for doc in DOCS for i, block in enumerate(blocks(doc))
            if any(_skip_reason(line) is None for line in block)]


def _users_ddl() -> str:
    conn = sqlite3.connect(":memory:")
    for statement in SCHEMA:
        conn.execute(statement)
    return conn.execute("SELECT sql FROM sqlite_master WHERE name = 'users'").fetchone()[0]


@pytest.fixture(scope="module")
def storage(tmp_path_factory) -> Path:
    """The clicker's users table, 1300 deltas one every 2 s from 2026-11-26 17:00 UTC (so --at-seq 1200
    and --at-time 17:30 exist)."""
    path = tmp_path_factory.mktemp("docs") / "data"
    t0 = datetime(2026, 11, 26, 17, 0, tzinfo=UTC).timestamp()
    ddl = _users_ddl()

    def changes(seq: int) -> ChangeSet:
        ups = [(100 + (seq * 7 + i) % 90, f"{NAMES[(seq + i) % len(NAMES)]} {i}", seq + i, seq * 3 + i,
                None if i % 3 else f"user{i}", t0 + i) for i in range(5)]
        return ChangeSet(t0 + 2 * seq, {"users": TableChanges("users", ddl, COLUMNS, ["chat_id"], ups)})

    async def build():
        replica = Replica(LocalDirBackend(path, fsync=False), ReplicaConfig(snapshot_every_deltas=10**9),
                          writer_id="bot-1")
        await replica.acquire()
        for seq in range(1, 1301):
            await replica.write_delta(changes(seq))
        await replica.release()

    asyncio.run(build())
    return path


@pytest.fixture(scope="module")
def postgres():
    try:
        srv = pgserver.create()
    except pgserver.NoPostgres as e:
        pytest.fail(str(e))  # as tests/postgres: never a skip (.ci/run installs the server)
    try:
        yield srv
    finally:
        pgserver.destroy(srv)


def _sql(url: str, statement: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        cur = c.execute(statement)
        return cur.fetchall() if cur.description else []


def _follow_until_caught_up(argv: list[str], env: dict[str, str], cwd: Path, url: str, schema: str) -> None:
    """A `follow` that runs until stopped: as a process, stopped (SIGINT) once the replica has rows."""
    proc = subprocess.Popen([sys.executable, "-m", "tools", *argv], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if _sql(url, f"SELECT count(*) FROM {schema}.users")[0][0] > 0:
                    break
            except Exception:  # the table is not there yet
                pass
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err


@pytest.mark.parametrize(("doc", "index", "lines"), runnable(), ids=lambda v: str(v) if not isinstance(v, list)
                         else v[0][:60])
def test_examples_run(doc, index, lines, storage, tmp_path, monkeypatch, capsys, request):
    shutil.copytree(storage, tmp_path / "data")
    if any("./data/storage " in f"{line} " for line in lines):
        shutil.copytree(storage, tmp_path / "data" / "storage")
    monkeypatch.chdir(tmp_path)
    fresh: set[str] = set()  # PostgreSQL schemas this block starts from empty
    for line in lines:
        command, _, pipe = line.partition(" | ")
        command, _, redirect = command.partition(" > ")
        words = shlex.split(command)
        env = dict(w.split("=", 1) for w in words if re.match(r"^[A-Z_]+=", w))
        words = words[len(env):]
        if words[0] == "sqlite3":
            conn = sqlite3.connect(words[1])
            try:
                assert conn.execute(words[2]).fetchall(), f"`{line}`: no rows"
            finally:
                conn.close()
            continue
        name = _command(words)
        argv = words[1:] if words[0] == "tgsnap" else [name, *words[3:]]
        if any(PG_URL.search(w) for w in argv):  # the password: PGPASSWORD=... here, or set before
            server = request.getfixturevalue("postgres")
            url = server.url(password="", db="postgres").replace(":@", "@")
            argv = [PG_URL.sub(url, w) for w in argv]
            schema = argv[argv.index("--schema") + 1]
            if schema not in fresh:
                _sql(server.url(), f"DROP SCHEMA IF EXISTS {schema} CASCADE")
                fresh.add(schema)
            monkeypatch.setenv("PGPASSWORD", pgserver.PASSWORD)
            if name == "follow" and not {"--once", "--check"} & set(argv):
                _follow_until_caught_up(argv, {**os.environ}, tmp_path, server.url(), schema)
                continue
        code = cli.main(argv)
        out, err = capsys.readouterr()
        assert code == 0, f"`{line}` exited {code}: {err}"
        if redirect:
            Path(redirect).write_text(out)
            if redirect.endswith(".json"):
                json.loads(out)
        if pipe.startswith("head"):
            assert out.strip(), f"`{line}`: nothing to pipe"
        elif pipe.startswith("jq ."):
            assert pipe.removeprefix("jq .") in json.loads(out), f"`{line}`: no such key"


def _words(line: str) -> list[str]:
    """A line's words without its VAR=value prefixes."""
    words = shlex.split(line)
    while words and re.match(r"^[A-Z_]+=", words[0]):
        words.pop(0)
    return words


def test_the_guide_has_examples_of_every_storage_command():
    used = {_command(_words(line)) for block in blocks("operations") for line in block}
    assert {"status", "verify", "compact", "prune", "export", "restore", "follow"} <= used


def test_what_is_not_run_is_only_what_needs_telegram_or_runs_for_long():
    skipped = {(line, _skip_reason(line)) for doc in DOCS for block in blocks(doc) for line in block
               if _skip_reason(line) is not None}
    assert {why for _line, why in skipped} <= {"Telegram storage", "developer program", "placeholder"}
    assert all(_command(_words(line)) in {"bench", "emulator", "loadgen"}
               for line, why in skipped if why == "developer program")
