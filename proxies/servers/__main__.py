"""`python -m proxies.servers up`: run the real servers until SIGTERM or SIGINT.

Owned here: the command line that `ordo up` runs to get its stores.  It
starts the chosen servers, writes where they listen to `--state-file` as
JSON, stays in the foreground while they run, and on SIGTERM/SIGINT stops
them cleanly, removes their directories (unless `--keep`) and the state file.

    python -m proxies.servers up --postgres --cassandra --state-file /tmp/ordo-servers.json

The state file, written once every server answers:

    {"pid": 1234,
     "postgres": {"host": "127.0.0.1", "port": 21042, "dsn": "postgresql://postgres@127.0.0.1:21042/postgres", ...},
     "cassandra": {"host": "127.0.0.1", "port": 24117, "local_dc": "datacenter1", ...}}

Exit status: 0 after a requested stop, 1 if a server failed to start or died.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from proxies.servers.cassandra import CassandraServer
from proxies.servers.postgres import PostgresServer
from proxies.servers.process import InstallError, ServerStartError, say

WATCH_INTERVAL_S = 1.0  # how soon a server that died is noticed


class _Stop(Exception):
    """SIGTERM or SIGINT arrived while servers were still starting."""


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m proxies.servers")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start servers and run until SIGTERM/SIGINT")
    up.add_argument("--postgres", action="store_true", help="start PostgreSQL")
    up.add_argument("--cassandra", action="store_true", help="start Cassandra")
    up.add_argument("--state-file", type=Path, help="write the servers' addresses here as JSON")
    up.add_argument("--keep", action="store_true", help="keep the servers' directories after stopping")
    args = parser.parse_args(argv)
    if not (args.postgres or args.cassandra):  # neither named: both
        args.postgres = args.cassandra = True
    return args


def _write_state(path: Path, servers: dict[str, PostgresServer | CassandraServer]) -> None:
    state = {"pid": os.getpid(), **{name: server.to_dict() for name, server in servers.items()}}
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(state, indent=2) + "\n")
    partial.replace(path)  # readers never see half a file


def _start(args: argparse.Namespace, servers: dict) -> None:
    """Start what was asked, overlapping Cassandra's JVM start with PostgreSQL's."""
    if args.cassandra:
        servers["cassandra"] = CassandraServer.start(keep=args.keep, wait=False)
    if args.postgres:
        servers["postgres"] = PostgresServer.start(keep=args.keep)
    if args.cassandra:
        servers["cassandra"].wait_ready()


def _watch(servers: dict, stop: threading.Event) -> int:
    while not stop.wait(WATCH_INTERVAL_S):
        dead = [name for name, server in servers.items() if not server.running]
        if dead:
            say(f"{', '.join(dead)} stopped unexpectedly; stopping the rest (logs: "
                + ", ".join(str(servers[name].log_path) for name in dead) + ")")
            return 1
    return 0


def up(args: argparse.Namespace) -> int:
    servers: dict[str, PostgresServer | CassandraServer] = {}
    stop = threading.Event()
    starting = True

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()
        if starting:
            raise _Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        _start(args, servers)
        starting = False
        if args.state_file:
            _write_state(args.state_file, servers)
        say(f"up: {', '.join(servers)}" + (f"; addresses in {args.state_file}" if args.state_file else "")
            + "; stop with SIGTERM or Ctrl-C")
        return _watch(servers, stop)
    except _Stop as e:
        say(f"{e} during start-up; stopping")
        return 0
    except (ServerStartError, InstallError) as e:
        say(f"could not start: {e}")
        return 1
    finally:
        starting = False
        for server in reversed(servers.values()):
            server.close()
        if args.state_file:
            args.state_file.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    return up(args)


if __name__ == "__main__":
    sys.exit(main())
