"""The `ordo` command: demo, node, executor, up, verify and bench.

Owned here: argument parsing and process entry points.  Every subcommand's
`--help` documents its knobs; long-running ones stop cleanly on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from sequencer.errors import ConfigError, OrdoError


def _bounded_int(low: int, high: int | None = None, why: str = ""):
    """An argparse type: an integer in [low, high], refused with one line naming the range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {bound}{why}, not {value}")
        return value

    return parse


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, type=Path, help="cluster configuration (.json or .toml)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ordo", description="Calvin-style deterministic sequencer for money movement")
    parser.add_argument("--version", action="version", version=f"ordo {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run a local cluster, send transfers, kill the leader, verify every invariant")
    demo.add_argument("--accounts", type=_bounded_int(2, why=" (a transfer needs two accounts)"), default=1000,
                      help="accounts to create (default 1000, at least 2)")
    demo.add_argument("--transfers", type=_bounded_int(1), default=100_000,
                      help="transfers to send (default 100000, at least 1)")
    demo.add_argument("--seed", type=int, default=None, help="workload seed (default: random, printed)")
    demo.add_argument("--no-kill", action="store_true", help="do not SIGKILL the Raft leader halfway through")
    demo.add_argument("--stores", default="sqlite", help="'sqlite' (embedded default) or 'postgres,cassandra'")
    demo.add_argument("--concurrency", type=_bounded_int(1, 1024), default=24, help="requests in flight (default 24)")
    demo.add_argument("--batch", type=_bounded_int(1, 128), default=100,
                      help="transfers per request (default 100, max 128)")
    demo.add_argument("--keep", action="store_true", help="keep the data directory and logs afterwards")

    node = sub.add_parser("node", help="run one sequencer replica (Raft log + API)")
    _config_arg(node)
    node.add_argument("--id", type=int, required=True, help="this replica's id in the configuration")

    executor = sub.add_parser("executor", help="run an executor: consume the log, apply to the shards")
    _config_arg(executor)

    up = sub.add_parser("up", help="start servers and the cluster described by a TOML configuration")
    _config_arg(up)

    verify = sub.add_parser("verify", help="check every invariant against a running cluster's stores")
    _config_arg(verify)

    sim = sub.add_parser("sim", help="run the deterministic whole-cluster simulator (needs a source checkout)")
    which = sim.add_mutually_exclusive_group(required=True)
    which.add_argument("--seed", type=int, help="run one seed (what a failure says to reproduce)")
    which.add_argument("--seeds", type=int, help="run this many seeds, from --first")
    sim.add_argument("--first", type=int, default=1, help="first seed of a sweep (default 1)")
    sim.add_argument("--planted", default="", help="comma-separated planted bugs, to see the simulator catch them")
    sim.add_argument("--trace", action="store_true", help="print the run's event trace (with --seed)")

    secrets_cmd = sub.add_parser("secrets", help="generate a cluster secret, API keys and (optionally) TLS files")
    secrets_cmd.add_argument("--dir", type=Path, required=True, help="folder to write them to (created, mode 0700)")
    secrets_cmd.add_argument("--tls-hosts", default="", help="comma-separated names and IPs for a server "
                             "certificate signed by a new private CA, e.g. sequencer-1,sequencer-2,127.0.0.1")

    keys = sub.add_parser("keys", help="create, list and revoke API keys (the file stores only their hashes)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="add a key to the keys file and print its token once")
    create.add_argument("--file", type=Path, required=True, help="the api_keys_file named in [security]")
    create.add_argument("--scope", required=True, choices=["operator", "client", "replica"])
    create.add_argument("--ledgers", default="", help="client keys: comma-separated ledgers, e.g. 1,2")
    create.add_argument("--accounts", default="", help="client keys: account id ranges, e.g. 1000-1999,5000-5999")
    create.add_argument("--rate", type=float, default=None, help="events per second (default by scope)")
    create.add_argument("--burst", type=int, default=None, help="events a full bucket holds (default by scope)")
    create.add_argument("--label", default="", help="a note on who holds the key")
    listing = keys_sub.add_parser("list", help="show the keys in a keys file (never their tokens)")
    listing.add_argument("--file", type=Path, required=True)
    revoke = keys_sub.add_parser("revoke", help="remove a key by id (restart the nodes to apply)")
    revoke.add_argument("--file", type=Path, required=True)
    revoke.add_argument("--id", required=True, help="the key id: the 12 hex digits after 'ordo_'")

    from sequencer.tools.bench import add_arguments as add_bench_arguments

    bench = sub.add_parser("bench", help="measure throughput and latency; compare with PostgreSQL baselines")
    add_bench_arguments(bench)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ordo")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _sigterm_is_ctrl_c(*_) -> None:
    """SIGTERM ends `ordo up` (synchronous) exactly as Ctrl-C does: every finally runs, no orphans."""
    raise KeyboardInterrupt


def _run_interruptible(coro) -> int:
    """asyncio.run, with SIGTERM cancelling the main task as Ctrl-C does (asyncio's own SIGINT
    handling), so every `finally` and `async with` unwinds before the process exits."""

    async def main():
        task = asyncio.current_task()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await coro

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "up":
        signal.signal(signal.SIGTERM, _sigterm_is_ctrl_c)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        if args.command == "demo":
            from sequencer.tools.demo import run_demo

            return _run_interruptible(run_demo(args))
        if args.command == "node":
            return asyncio.run(_run_node(args.config, args.id))
        if args.command == "executor":
            return asyncio.run(_run_executor(args.config))
        if args.command == "up":
            from sequencer.tools.up import run_up

            return run_up(args.config)
        if args.command == "verify":
            from sequencer.tools.demo import verify_cluster_cli

            return asyncio.run(verify_cluster_cli(args.config))
        if args.command == "keys":
            return _keys(args)
        if args.command == "secrets":
            return _secrets(args)
        if args.command == "sim":
            return _sim(args)
        if args.command == "bench":
            from sequencer.tools.bench import normalize, run_bench

            return _run_interruptible(run_bench(normalize(args)))
    except (ConfigError, OrdoError) as exc:
        print(f"ordo: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ordo: interrupted; everything it started was stopped", file=sys.stderr)
        return 130
    return 1


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def _sim(args: argparse.Namespace) -> int:
    import time

    repo = Path(__file__).resolve().parents[2]
    if not (repo / "tests" / "sim" / "world.py").exists():
        raise ConfigError(f"ordo sim runs the simulator in tests/sim/, which {repo} lacks: run it from a clone")
    sys.path.insert(0, str(repo))
    from tests.sim.world import PLANTED, SimFailure, Simulation

    planted = frozenset(p for p in args.planted.split(",") if p)
    if planted - set(PLANTED):
        raise ConfigError(f"unknown planted bugs {sorted(planted - set(PLANTED))}; choose from {', '.join(PLANTED)}")
    seeds = [args.seed] if args.seed is not None else range(args.first, args.first + max(0, args.seeds))
    started, passed = time.monotonic(), 0
    for seed in seeds:
        sim = Simulation(seed, planted)
        try:
            result = sim.run()
        except SimFailure as failure:
            if args.trace:
                print("\n".join(sim.trace[-200:]))
            print(f"FAILED {failure}")
            return 1
        passed += 1
        if args.seed is not None:
            if args.trace:
                print("\n".join(sim.trace))
            print(f"seed {seed} passed: {result}")
        elif passed % 100 == 0:
            rate = passed / (time.monotonic() - started)
            print(f"{passed} of {len(seeds)} seeds passed ({rate:.1f} seeds/s)", flush=True)
    elapsed = time.monotonic() - started
    print(f"{passed} passed, 0 failed in {elapsed:.1f} s: {passed / max(elapsed, 1e-9):.1f} seeds/s")
    return 0


def _secrets(args: argparse.Namespace) -> int:
    from sequencer.tools.cluster import provision_security

    if args.dir.exists() and any(args.dir.iterdir()):
        raise ConfigError(f"{args.dir} is not empty; secrets are never overwritten (remove it to start over)")
    hosts = [h.strip() for h in args.tls_hosts.split(",") if h.strip()]
    section = provision_security(args.dir, hosts or None, folder=args.dir)
    print("[security]")
    for name, path in section.items():
        print(f'{name} = "{path}"')
    print(f"wrote the cluster secret, API keys (operator token in {args.dir / 'operator.key'})"
          + (", and a private CA with a server certificate" if hosts else ""), file=sys.stderr)
    return 0


def _keys(args: argparse.Namespace) -> int:
    from sequencer.security import KeyRing, Scope, new_key, parse_ranges, write_keys_file

    ring = KeyRing.load(args.file) if args.file.exists() or args.keys_command != "create" else KeyRing([])
    if args.keys_command == "list":
        for key in ring.keys.values():
            scope = f"ledgers {key.ledgers} accounts {key.accounts}" if key.scope == Scope.CLIENT else ""
            print(f"{key.id}  {key.scope:<8}  {key.rate()[0]:g}/s  {scope}  {key.label}")
        return 0
    if args.keys_command == "revoke":
        if args.id not in ring.keys:
            raise ConfigError(f"no key {args.id} in {args.file}; 'ordo keys list --file {args.file}' shows them")
        write_keys_file(args.file, [k for k in ring.keys.values() if k.id != args.id])
        print(f"revoked {args.id}; restart the nodes to apply")
        return 0
    try:
        ledgers = [int(x) for x in args.ledgers.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--ledgers takes comma-separated integers, not {args.ledgers!r}") from None
    token, record = new_key(Scope(args.scope), ledgers, parse_ranges(args.accounts), args.rate, args.burst, args.label)
    write_keys_file(args.file, [*KeyRing([*ring.keys.values(), record]).keys.values()])
    print(token)
    print(f"added {args.scope} key {record.id} to {args.file}; the token above is shown once, store it now "
          f"(restart the nodes to load it)", file=sys.stderr)
    return 0


async def _run_node(config_path: Path, node_id: int) -> int:
    from aiohttp import web

    from sequencer.api import make_app
    from sequencer.config import ClusterConfig, is_loopback
    from sequencer.edge import EdgeSite, runner_options
    from sequencer.node import SequencerNode

    node_log = logging.getLogger("ordo.node")
    config = ClusterConfig.load(config_path)
    node = SequencerNode(config, node_id)
    server_ssl = config.security.server_ssl()
    if server_ssl is None and is_loopback(node.spec.http):
        node_log.warning("serving plain HTTP on %s: allowed on loopback only; set [security] tls_cert_file and "
                         "tls_key_file to serve HTTPS", node.spec.http)
    await node.start()
    runner = web.AppRunner(make_app(node), **runner_options(config.http.idle_timeout_ms))
    await runner.setup()
    host, port = node.spec.http.rsplit(":", 1)
    await EdgeSite(runner, host, int(port), ssl_context=server_ssl, connections_max=config.http.connections_max,
                   header_timeout_ms=config.http.header_read_timeout_ms).start()
    tasks = [asyncio.create_task(node.watermark.run()), asyncio.create_task(node.drain())]
    node_log.info("node %d serving %s, raft %s", node_id, node.spec.url, node.spec.raft)
    waiter = asyncio.create_task(_until_signalled())
    done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        if task in done:
            task.result()  # a crashed loop is a crash of the node
    for task in tasks:
        task.cancel()
    await runner.cleanup()
    await node.close()
    return 0


async def _run_executor(config_path: Path) -> int:
    from executor.runner import FaultPlan, Runner
    from sequencer.config import ClusterConfig

    config = ClusterConfig.load(config_path)
    runner = Runner(config.directory, [n.url for n in config.nodes], feed_access(config), FaultPlan.from_env())
    task = asyncio.create_task(runner.run())
    waiter = asyncio.create_task(_until_signalled())
    done, _ = await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    task.cancel()
    await runner.close()
    return 0


def feed_access(config):
    """The executor's (and `ordo verify`'s) credentials for the log feed, from the config."""
    from executor.runner import FeedAccess
    from sequencer.security import log_key

    if not config.security.executor_key.configured:
        raise ConfigError("[security] must name executor_key_file or executor_key_env: the executor reads the log "
                          "with a replica-scope API key ('ordo keys create --scope replica' makes one)")
    return FeedAccess(log_key(config.security.cluster_secret()), config.security.executor_key.read(),
                      config.security.client_ssl())


if __name__ == "__main__":
    sys.exit(main())
