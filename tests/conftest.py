"""Shared fixtures: the real servers (started once per session, on first use)."""

from proxies.servers.pytest_fixtures import cassandra_server, postgres_server  # noqa: F401
