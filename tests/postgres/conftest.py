"""A real PostgreSQL server for the session, started from the installed binaries on 127.0.0.1
(tools/bench/pgserver.py: initdb + pg_ctl in a temporary directory, password authentication over TCP, as
`nobody` under root). No binaries: the tests FAIL with how to install them (`.ci/run` installs Debian's
`postgresql` package when missing); they never skip.
"""

from __future__ import annotations

import uuid

import pytest

from tools.bench import pgserver
from tools.bench.pgserver import PASSWORD, free_port  # noqa: F401  (used by the tests)


@pytest.fixture(scope="session")
def pg_server():
    try:
        srv = pgserver.create()
    except pgserver.NoPostgres as e:
        pytest.fail(str(e))
    try:
        yield srv
    finally:
        pgserver.destroy(srv)


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
