"""The server harness (proxies/servers) against the real PostgreSQL and Cassandra.

Each test starts its own server rather than the session's, because it stops,
kills and closes it.  What is checked is what the fault tests rely on: data
survives a clean stop, a crash and a restart on the same directory and port,
another process can find the servers, and a failed start says why.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from proxies.servers import CassandraServer, PostgresServer, ServerStartError
from proxies.servers.process import free_ports

REPO = Path(__file__).resolve().parents[1]
CLI_START_S_MAX = 120.0  # `up --postgres` takes a few seconds; the rest is room for a loaded CI machine


def _refuses_connections(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2.0).close()
    except OSError:
        return True
    return False


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range():
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = free_ports(5)
    assert len(set(ports)) == 5
    assert all(20000 <= port < low for port in ports), (ports, low)
    assert not set(ports) & set(free_ports(5)), "a port was handed out twice"


@pytest.mark.servers
def test_postgres_keeps_data_through_stop_crash_and_restart():
    with PostgresServer.start() as pg:
        root, port = pg.root, pg.port
        dsn = pg.create_database("harness")
        assert pg.create_database("harness") == dsn  # idempotent
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("SHOW max_prepared_transactions").fetchone()[0] == "200"
            assert int(conn.execute("SHOW max_connections").fetchone()[0]) >= 200
            conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
            conn.execute("BEGIN")
            conn.execute("INSERT INTO t VALUES (1, 'before stop')")
            conn.execute("PREPARE TRANSACTION 'harness-1'")  # the benchmark's two-phase commit
            conn.execute("COMMIT PREPARED 'harness-1'")

        pg.stop()
        assert not pg.running and pg.pid is None
        assert _refuses_connections(pg.host, port)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(dsn, connect_timeout=2)

        pg.restart()
        assert (pg.port, pg.root) == (port, root)
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("SELECT v FROM t").fetchall() == [("before stop",)]
            conn.execute("INSERT INTO t VALUES (2, 'before crash')")

        pg.stop("immediate")  # no checkpoint: the restart must replay the WAL
        pg.restart()
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT id, v FROM t ORDER BY id").fetchall() == [
                (1, "before stop"), (2, "before crash")]
    assert not root.exists(), "close() must remove the temporary directory"
    assert _refuses_connections("127.0.0.1", port)


@pytest.mark.servers
def test_postgres_start_failure_quotes_the_server_log():
    with PostgresServer.start() as pg:
        pg.stop()
        with open(pg.data_dir / "ordo_harness.conf", "a") as conf:
            conf.write("no_such_setting_for_the_test = 1\n")
        with pytest.raises(ServerStartError) as caught:
            pg.restart(timeout_s=30)
        message = str(caught.value)
        assert "the postgres log" in message
        assert "no_such_setting_for_the_test" in message
        assert not pg.running


@pytest.mark.servers
def test_up_command_publishes_addresses_and_stops_on_sigterm(tmp_path):
    state_file = tmp_path / "servers.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "proxies.servers", "up", "--postgres", "--state-file",
                             str(state_file)], env=env, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + CLI_START_S_MAX
        while not state_file.exists():
            assert proc.poll() is None, f"`up` exited with {proc.returncode} before writing {state_file}"
            assert time.monotonic() < deadline, f"no {state_file} after {CLI_START_S_MAX:.0f} s"
            time.sleep(0.2)
        state = json.loads(state_file.read_text())
        assert state["pid"] == proc.pid
        assert set(state) == {"pid", "postgres"}
        with psycopg.connect(state["postgres"]["dsn"]) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        data_dir = Path(state["postgres"]["data_dir"])
        assert data_dir.exists()

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not state_file.exists()
    assert not data_dir.exists()
    assert _refuses_connections(state["postgres"]["host"], state["postgres"]["port"])


def _rows(cs: CassandraServer) -> list[tuple[int, str]]:
    cluster = cs.cluster()
    try:
        session = cluster.connect()
        assert cluster.protocol_version == 5
        return sorted((row.id, row.v) for row in session.execute("SELECT id, v FROM harness.t"))
    finally:
        cluster.shutdown()


def _execute(cs: CassandraServer, *statements: str) -> None:
    cluster = cs.cluster()
    try:
        session = cluster.connect()
        for statement in statements:
            session.execute(statement, timeout=60)
    finally:
        cluster.shutdown()


@pytest.mark.servers
def test_cassandra_keeps_data_through_stop_crash_and_restart():
    with CassandraServer.start() as cs:
        root, port = cs.root, cs.port
        assert cs.release_version and cs.release_version.startswith("5.0."), cs.release_version
        _execute(cs,
                 "CREATE KEYSPACE harness WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
                 "CREATE TABLE harness.t (id int PRIMARY KEY, v text)",
                 "INSERT INTO harness.t (id, v) VALUES (1, 'before stop')")

        cs.stop()
        assert not cs.running and cs.pid is None
        assert _refuses_connections(cs.host, port)

        cs.restart()
        assert (cs.port, cs.root) == (port, root)
        assert _rows(cs) == [(1, "before stop")]
        # Acknowledged, then killed at once: only the commitlog has it.
        _execute(cs, "INSERT INTO harness.t (id, v) VALUES (2, 'before kill')")

        cs.kill()
        assert not cs.running
        cs.restart()
        assert _rows(cs) == [(1, "before stop"), (2, "before kill")]
    assert not root.exists(), "close() must remove the temporary directory"
    assert _refuses_connections("127.0.0.1", port)
