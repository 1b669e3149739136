"""Session-scoped pytest fixtures for the real servers.

Owned here: one PostgreSQL and one Cassandra per test session, started on
first use and closed (stopped, directory removed) when the session ends.
Caller: tests/conftest.py, which imports them by name so pytest registers them:

    from proxies.servers.pytest_fixtures import cassandra_server, postgres_server  # noqa: F401

The servers are shared by every test in the session.  A test that stops one
(an outage) must bring it back before it ends, in a `finally`:
`server.ensure_running()` restarts it on the same data directory and port.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from proxies.servers.cassandra import CassandraServer
from proxies.servers.postgres import PostgresServer


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """`.dsn(db)`, `.create_database(db)`, `.host`, `.port`, `.stop()`, `.restart()`."""
    with PostgresServer.start() as server:
        yield server


@pytest.fixture(scope="session")
def cassandra_server() -> Iterator[CassandraServer]:
    """`.host`, `.port`, `.cluster()`, `.stop()`, `.kill()`, `.restart()`."""
    with CassandraServer.start() as server:
        yield server
