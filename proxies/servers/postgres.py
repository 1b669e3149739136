"""A real PostgreSQL server on loopback, in a temporary directory, for tests and `ordo up`.

Owned here: initdb, the server's settings, starting, stopping and restarting
on the same data directory and port, and creating databases.  Callers:
`proxies/servers/pytest_fixtures.py`, `python -m proxies.servers up`, and
tests that stop the server to simulate an outage.

The binaries are Debian's `postgresql` package (installed by
`install.postgres_bin_dir` on first use).  As root, initdb and postgres run
as the `postgres` user, because PostgreSQL refuses to run as root; the
temporary directory belongs to that user.  Authentication is `trust` on
loopback: the server is reachable only from this machine.

    with PostgresServer.start() as pg:
        dsn = pg.create_database("ledger")   # postgresql://postgres@127.0.0.1:<port>/ledger
        pg.stop()                            # outage
        pg.restart()                         # same data, same port
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from proxies.servers import install
from proxies.servers.process import (
    HOST,
    ServerStartError,
    die_with_parent,
    free_ports,
    log_section,
    port_clash,
    say,
    signal_and_wait,
    tail,
    track,
    untrack,
    wait_for,
)

SUPERUSER = "postgres"
#: The benchmark and the proxies' pools together stay well below this; the
#: default (100) is too tight once several test modules hold pools.
MAX_CONNECTIONS = 200
#: PREPARE TRANSACTION needs a slot per open prepared transaction; the
#: benchmark prepares at most one per connection.
MAX_PREPARED_TRANSACTIONS = MAX_CONNECTIONS
START_TIMEOUT_S_DEFAULT = 60.0  # a cold start takes ~1 s; 60 leaves room for a loaded CI machine
STOP_TIMEOUT_S_DEFAULT = 60.0  # fast shutdown writes one checkpoint
INITDB_TIMEOUT_S = 120.0
READY_POLL_S = 0.1
PORT_CLASH_RETRIES = 3  # another process took the port between our check and the bind

#: The modes of `pg_ctl stop -m`, as the signals pg_ctl sends the postmaster.
STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}

_SETTINGS = """\
# Written by proxies/servers/postgres.py for a throwaway test server.
port = {port}
listen_addresses = '{host}'
unix_socket_directories = '{socket_dir}'
max_connections = {max_connections}
max_prepared_transactions = {max_prepared_transactions}
shared_buffers = 128MB
# Durability stays as in production: the outage tests check what survives.
fsync = on
synchronous_commit = on
logging_collector = off
log_min_messages = warning
log_line_prefix = '%m [%p] '
"""


class PostgresServer:
    """One PostgreSQL server: its directory, port and process."""

    host = HOST

    def __init__(self, root: Path, port: int, bin_dir: Path, os_user: str | None, keep: bool) -> None:
        self.root = root
        self.port = port
        self.bin_dir = bin_dir
        self.os_user = os_user
        self.keep = keep
        self.data_dir = root / "data"
        self.log_path = root / "postgres.log"
        self._proc: subprocess.Popen | None = None
        self._closed = False
        self._initdb_s = 0.0

    def __repr__(self) -> str:
        return f"PostgresServer({self.host}:{self.port}, {self.root})"

    # -------------------------------------------------------------- public API

    @classmethod
    def start(cls, *, keep: bool = False, timeout_s: float = START_TIMEOUT_S_DEFAULT) -> PostgresServer:
        """initdb a temporary directory and start a server on a free loopback port.

        `keep=True` leaves the directory behind on `close()` (for a post-mortem).
        """
        bin_dir = install.postgres_bin_dir()
        os_user = install.postgres_os_user()
        root = Path(tempfile.mkdtemp(prefix="ordo-pg-"))
        server = cls(root, 0, bin_dir, os_user, keep)
        track(server)
        try:
            server._initdb()
            server._start_on_a_free_port(timeout_s)
        except BaseException:
            server.close()
            raise
        return server

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """Create database `name` unless it exists; return its DSN."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn(), autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running else None

    def stop(self, mode: str = "fast", timeout_s: float = STOP_TIMEOUT_S_DEFAULT) -> None:
        """Stop the server as `pg_ctl stop -m <mode>` would; the data directory stays.

        fast: roll back open transactions, checkpoint, exit (the default).
        immediate: exit at once, as in a crash; the next start replays the WAL.
        A server still up after `timeout_s` gets SIGQUIT, then SIGKILL.
        """
        if mode not in STOP_SIGNALS:
            raise ValueError(f"mode must be one of {sorted(STOP_SIGNALS)}, not {mode!r}")
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._proc = None
            return
        started = time.monotonic()
        if not signal_and_wait(proc, STOP_SIGNALS[mode], timeout_s):
            say(f"postgres on port {self.port} ignored a {mode} shutdown for {timeout_s:.0f} s; sending SIGQUIT")
            if not signal_and_wait(proc, signal.SIGQUIT, 10.0):
                signal_and_wait(proc, signal.SIGKILL, 10.0)
        self._proc = None
        say(f"postgres on {self.host}:{self.port} stopped ({mode}) in {time.monotonic() - started:.1f} s")

    def restart(self, timeout_s: float = START_TIMEOUT_S_DEFAULT) -> None:
        """Stop if running, then start again on the same data directory and port."""
        self._check_open()
        self.stop()
        self._launch_and_wait(timeout_s, "restarted")

    def ensure_running(self, timeout_s: float = START_TIMEOUT_S_DEFAULT) -> None:
        """Start the server again if a test stopped it and did not restart it."""
        if not self.running:
            self.restart(timeout_s)

    def close(self) -> None:
        """Stop the server and delete its directory (unless started with keep=True).  Idempotent."""
        if self._closed:
            return
        try:
            if self.keep:
                self.stop()
            else:  # the data is about to be deleted: a clean shutdown would only flush it first
                self.stop("immediate")
        finally:
            self._closed = True
            untrack(self)
            if self.keep:
                say(f"kept postgres directory {self.root}")
            else:
                shutil.rmtree(self.root, ignore_errors=True)

    def to_dict(self) -> dict[str, Any]:
        """Where to reach the server, for another process (see `python -m proxies.servers up`)."""
        return {"host": self.host, "port": self.port, "user": SUPERUSER, "dsn": self.dsn(),
                "data_dir": str(self.data_dir), "log": str(self.log_path), "pid": self.pid}

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- internals

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed; start a new one")

    def _popen_user(self) -> dict[str, Any]:
        if not self.os_user:
            return {}
        # extra_groups=[]: drop root's supplementary groups too, not just the uid and gid
        return {"user": self.os_user, "group": pwd.getpwnam(self.os_user).pw_gid, "extra_groups": []}

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # PGDATA etc. must not leak in
        return {**env, "LC_ALL": "C", "LANG": "C"}

    def _initdb(self) -> None:
        if self.os_user:
            entry = pwd.getpwnam(self.os_user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        started = time.monotonic()
        argv = [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, "-A", "trust",
                "-E", "UTF8", "--locale=C", "--no-sync"]  # --no-sync: a throwaway directory; saves seconds
        done = subprocess.run(argv, cwd=self.root, env=self._env(), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=INITDB_TIMEOUT_S, **self._popen_user())
        if done.returncode != 0:
            raise ServerStartError(f"initdb failed (exit {done.returncode}) in {self.root}:\n"
                                   f"{done.stdout}\n{done.stderr}")
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\ninclude 'ordo_harness.conf'\n")
        self._initdb_s = time.monotonic() - started

    def _write_settings(self) -> None:
        path = self.data_dir / "ordo_harness.conf"
        path.write_text(_SETTINGS.format(
            port=self.port, host=self.host, socket_dir=self.root, max_connections=MAX_CONNECTIONS,
            max_prepared_transactions=MAX_PREPARED_TRANSACTIONS))
        if self.os_user:
            entry = pwd.getpwnam(self.os_user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _start_on_a_free_port(self, timeout_s: float) -> None:
        for attempt in range(1, PORT_CLASH_RETRIES + 1):
            (self.port,) = free_ports(1)
            self._write_settings()
            try:
                self._launch_and_wait(timeout_s, "started", note=f" (after initdb, {self._initdb_s:.1f} s)")
                return
            except ServerStartError:
                if attempt == PORT_CLASH_RETRIES or not port_clash(tail(self.log_path)):
                    raise
                say(f"postgres lost port {self.port} to another process; trying another")

    def _launch_and_wait(self, timeout_s: float, verb: str, note: str = "") -> None:
        started = time.monotonic()
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self._proc = subprocess.Popen(
                [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)],
                cwd=self.root, env=self._env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal is ours to handle, not the server's
                preexec_fn=die_with_parent(signal.SIGINT), **self._popen_user())
        try:
            wait_for(self._accepts_connections, timeout_s=timeout_s, interval_s=READY_POLL_S,
                     died=self._exit_reason, what=f"postgres on {self.host}:{self.port}")
        except ServerStartError as e:
            self.stop("immediate", timeout_s=10.0)
            raise ServerStartError(f"{e}{log_section('the postgres log', self.log_path)}") from None
        say(f"postgres {verb} on {self.host}:{self.port} in {time.monotonic() - started:.1f} s{note}")

    def _exit_reason(self) -> str | None:
        code = self._proc.poll() if self._proc else None
        return None if code is None else f"postgres exited with {code} while starting on port {self.port}"

    def _accepts_connections(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.dsn(), connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True
