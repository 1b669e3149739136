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


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, type=Path, help="cluster configuration (.json or .toml)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ordo", description="Calvin-style deterministic sequencer for money movement")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run a local cluster, send transfers, kill the leader, verify every invariant")
    demo.add_argument("--accounts", type=int, default=1000, help="accounts to create (default 1000)")
    demo.add_argument("--transfers", type=int, default=100_000, help="transfers to send (default 100000)")
    demo.add_argument("--seed", type=int, default=None, help="workload seed (default: random, printed)")
    demo.add_argument("--no-kill", action="store_true", help="do not SIGKILL the Raft leader halfway through")
    demo.add_argument("--stores", default="sqlite", help="'sqlite' (embedded default) or 'postgres,cassandra'")
    demo.add_argument("--concurrency", type=int, default=24, help="requests in flight (default 24)")
    demo.add_argument("--batch", type=int, default=100, help="transfers per request (default 100, max 128)")
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

    from sequencer.bench import add_arguments as add_bench_arguments

    bench = sub.add_parser("bench", help="measure throughput and latency; compare with PostgreSQL baselines")
    add_bench_arguments(bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        if args.command == "demo":
            from sequencer.demo import run_demo

            return asyncio.run(run_demo(args))
        if args.command == "node":
            return asyncio.run(_run_node(args.config, args.id))
        if args.command == "executor":
            return asyncio.run(_run_executor(args.config))
        if args.command == "up":
            from sequencer.up import run_up

            return run_up(args.config)
        if args.command == "verify":
            from sequencer.demo import verify_cluster_cli

            return asyncio.run(verify_cluster_cli(args.config))
        if args.command == "bench":
            from sequencer.bench import normalize, run_bench

            return asyncio.run(run_bench(normalize(args)))
    except (ConfigError, OrdoError) as exc:
        print(f"ordo: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 1


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _run_node(config_path: Path, node_id: int) -> int:
    from aiohttp import web

    from sequencer.api import make_app
    from sequencer.config import ClusterConfig
    from sequencer.node import SequencerNode

    config = ClusterConfig.load(config_path)
    node = SequencerNode(config, node_id)
    await node.start()
    runner = web.AppRunner(make_app(node), access_log=None)
    await runner.setup()
    host, port = node.spec.http.rsplit(":", 1)
    await web.TCPSite(runner, host, int(port)).start()
    tasks = [asyncio.create_task(node.watermark.run()), asyncio.create_task(node.drain())]
    logging.getLogger("ordo.node").info("node %d serving http://%s, raft %s", node_id, node.spec.http, node.spec.raft)
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
    runner = Runner(config.directory, [n.url for n in config.nodes], FaultPlan.from_env())
    task = asyncio.create_task(runner.run())
    waiter = asyncio.create_task(_until_signalled())
    done, _ = await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    task.cancel()
    await runner.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
