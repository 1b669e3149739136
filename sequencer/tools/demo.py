"""`ordo demo`: a whole cluster on this machine, under load and under fire.

Owned here: the demo's script.  It starts 3 sequencer replicas and an
executor as local processes (SQLite shards by default), creates accounts,
sends transfers through the HTTP API with a progress bar, SIGKILLs the Raft
leader halfway through, and then verifies and prints every invariant of
DESIGN.md.  It exits non-zero if any invariant fails.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from executor.verify import (
    Check,
    check_acknowledged,
    check_conservation,
    check_hash_chains,
    check_replicas,
    check_serial_equivalence,
    replay_serial,
)
from proxies.factory import make_shard
from sequencer.client import OrdoClient
from sequencer.errors import ConfigError
from sequencer.tools.cluster import LocalCluster, write_embedded_config
from sequencer.config import ClusterConfig
from sequencer.types import ACK_OK, AppliedEpoch, decode_epoch
from sequencer.tools.stats import quantile
from sequencer.tools.workload import Mix, Workload

console = Console(highlight=False)


@dataclass
class LoadStats:
    latencies_ms: list[float] = field(default_factory=list)
    results: Counter = field(default_factory=Counter)
    acked: dict[int, str] = field(default_factory=dict)
    sent: int = 0
    max_epoch: int = 0


async def run_demo(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else random.randrange(1, 10**6)
    console.print(f"[bold]ordo demo[/] seed={seed} accounts={args.accounts} transfers={args.transfers} "
                  f"stores={args.stores} (reproduce with --seed {seed})")
    if args.stores != "sqlite":
        from sequencer.tools.settlement import multi_store_demo

        return await multi_store_demo(args, seed)
    root = Path(tempfile.mkdtemp(prefix="ordo-demo-"))
    cluster = LocalCluster(write_embedded_config(root))
    try:
        return await drive(cluster, args, seed)
    finally:
        cluster.stop()
        if args.keep:
            console.print(f"data and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


async def drive(cluster: LocalCluster, args: argparse.Namespace, seed: int, mix: Mix | None = None) -> int:
    started = time.monotonic()
    cluster.start()
    print_credentials(cluster, getattr(args, "keep", False))
    async with cluster.client(seed) as client:
        leader = await client.wait_for_leader()
        console.print(f"cluster up in {time.monotonic() - started:.1f} s; leader {leader}")
        workload = Workload(seed, args.accounts, mix or Mix())
        await setup_accounts(client, workload)
        monitor = LeaderMonitor(client, cluster.urls)
        monitor_task = asyncio.create_task(monitor.run())
        stats = LoadStats()
        load_started = time.monotonic()
        try:
            await _send_transfers(client, cluster, workload, args, stats)
        finally:
            await cancelled(monitor_task)
        elapsed = time.monotonic() - load_started
        cluster.check_alive()
        _report_load(stats, elapsed, monitor, client)
        checks = await verify_cluster(cluster.config, client, cluster.urls, stats.acked)
    return report_checks(checks)


async def setup_accounts(client: OrdoClient, workload: Workload) -> None:
    t0 = time.monotonic()
    for batch in workload.account_batches(128):
        reply = await client.create_accounts(batch)
        bad = [r for r in reply["results"] if r["result"] not in ACK_OK]
        if bad:
            raise RuntimeError(f"account creation failed: {bad[:3]}")
    for batch in workload.funding_batches(128):
        await client.create_transfers(batch)
    console.print(f"created and funded {workload.accounts} accounts in {time.monotonic() - t0:.1f} s")


async def _send_transfers(client, cluster, workload, args, stats: LoadStats) -> None:
    batches = workload.transfer_batches(args.transfers, min(args.batch, 128))
    queue: asyncio.Queue = asyncio.Queue(maxsize=args.concurrency * 2)
    kill_at = None if args.no_kill else args.transfers // 2
    progress = Progress(TextColumn("transfers"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                        TimeElapsedColumn(), console=console, transient=False)

    async def worker() -> None:
        while (batch := await queue.get()) is not None:
            t0 = time.monotonic()
            reply = await client.create_transfers(batch)
            stats.latencies_ms.append((time.monotonic() - t0) * 1000)
            stats.max_epoch = max(stats.max_epoch, reply["epoch"])
            for event, result in zip(batch, reply["results"]):
                stats.results[result["result"]] += 1
                stats.acked.setdefault(event["id"], result["result"])
            progress.update(task, advance=len(batch))

    with progress:
        task = progress.add_task("send", total=args.transfers, rate="")
        workers = [asyncio.create_task(worker()) for _ in range(args.concurrency)]
        t0 = time.monotonic()
        for batch in batches:
            await queue.put(batch)
            stats.sent += len(batch)
            done = progress.tasks[0].completed
            progress.update(task, rate=f"{done / max(1e-9, time.monotonic() - t0):,.0f}/s")
            if kill_at is not None and stats.sent >= kill_at:
                kill_at = None
                await kill_leader(client, cluster)
            if any(w.done() for w in workers):
                break
        try:
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)
        finally:
            await cancelled(*workers)  # on an interrupt too: none may outlive the client's session


async def cancelled(*tasks: asyncio.Task) -> None:
    """Cancel `tasks` and wait until they have stopped (their errors are theirs: not re-raised)."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def kill_leader(client: OrdoClient, cluster: LocalCluster) -> None:
    leader = await client.wait_for_leader()
    node_id = cluster.node_of_url(leader)
    console.print(f"[bold red]SIGKILL[/] the Raft leader, node {node_id} ({leader})")
    cluster.kill_node(node_id)

    async def restart_later() -> None:
        await asyncio.sleep(3)
        console.print(f"restarting node {node_id}; it rejoins as a follower and catches up from its journal")
        cluster.start_node(node_id)

    asyncio.get_running_loop().create_task(restart_later())


class LeaderMonitor:
    """Counts leader changes by polling every replica's /healthz."""

    def __init__(self, client: OrdoClient, urls: list[str]) -> None:
        self.client = client
        self.urls = urls
        self.changes: list[tuple[float, str, int]] = []

    async def run(self) -> None:
        last = None
        while True:
            for url in self.urls:
                health = await self.client.health(url)
                if health and health.get("is_leader") and (url, health["term"]) != last:
                    last = (url, health["term"])
                    self.changes.append((time.monotonic(), url, health["term"]))
            await asyncio.sleep(0.2)


def _report_load(stats: LoadStats, elapsed: float, monitor: LeaderMonitor, client: OrdoClient) -> None:
    sent = sum(stats.results.values())
    table = Table(title="load", show_header=False)
    table.add_row("transfers acknowledged", f"{sent:,} in {elapsed:.1f} s")
    table.add_row("throughput", f"{sent / elapsed:,.0f} transfers/s")
    table.add_row("ack latency per batch", f"p50 {quantile(stats.latencies_ms, 0.5):.0f} ms, "
                  f"p99 {quantile(stats.latencies_ms, 0.99):.0f} ms")
    table.add_row("leader changes", f"{max(0, len(monitor.changes) - 1)} "
                  f"(leaders: {', '.join(u for _, u, _ in monitor.changes)})")
    table.add_row("client retries", f"{client.stats.retries} (redirects {client.stats.redirects}, "
                  f"connection errors {client.stats.connection_errors})")
    console.print(table)
    codes = Table(title="result codes")
    codes.add_column("result")
    codes.add_column("count", justify="right")
    for code, count in stats.results.most_common():
        codes.add_row(code, f"{count:,}")
    console.print(codes)


def print_credentials(cluster: LocalCluster, kept: bool) -> None:
    security = cluster.config.security
    folder = security.api_keys_file.parent
    fate = "kept after the demo (--keep)" if kept else "removed with the cluster at exit; --keep keeps them"
    console.print(f"credentials generated in {folder} ({fate}): operator API key [bold]{folder / 'operator.key'}[/] "
                  f"(send it as 'Authorization: Bearer <key>'), executor key {security.executor_key_file.name}, "
                  f"cluster secret {security.secret_file.name}, API key hashes {security.api_keys_file.name}")


def log_reader(config: ClusterConfig, urls: list[str]) -> OrdoClient:
    """A client holding the replica-scope key: only it may read /v1/log."""
    return OrdoClient(urls, token=config.security.executor_key.read(), ssl=config.security.client_ssl())


async def fetch_log(client: OrdoClient, urls: list[str], last: int) -> list[AppliedEpoch]:
    """The committed log 1..last from any replica (`client` must hold a replica-scope key)."""
    entries: list[AppliedEpoch] = []
    while len(entries) < last:
        first = len(entries) + 1
        for url in urls:
            try:
                async with client.session.get(f"{url}/v1/log", params={"from": first, "limit": 256}) as resp:
                    got = msgspec.msgpack.decode(await resp.read(), type=list[AppliedEpoch])
                    break
            except Exception:
                continue
        else:
            raise RuntimeError("no replica serves the log")
        entries.extend(e for e in got if e.number <= last)
        if not got:
            raise RuntimeError(f"the log ends at {len(entries)} but W is {last}")
    return entries


async def wait_replicas_agree(client: OrdoClient, urls: list[str], timeout_s: float = 30) -> dict[str, dict]:
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = {u: h for u in urls if (h := await client.health(u)) is not None}
        epochs = {h["last_epoch"] for h in statuses.values()}
        if (len(statuses) == len(urls) and len(epochs) == 1) or time.monotonic() > deadline:
            return statuses
        await asyncio.sleep(0.2)


async def verify_cluster(config: ClusterConfig, client: OrdoClient, urls: list[str], acked: dict[int, str]) -> list[Check]:
    t0 = time.monotonic()
    shards = {name: make_shard(spec) for name, spec in config.directory.shards.items()}
    await asyncio.gather(*(s.open() for s in shards.values()))
    try:
        # Let the executor drain, so that W covers the whole committed log.
        statuses = await wait_replicas_agree(client, urls)
        if not statuses:
            raise ConfigError(f"no replica of this cluster answers at {', '.join(urls)}: start it first "
                              f"(ordo up --config ..., or ordo demo --keep) and verify while it runs")
        last = max(h["last_epoch"] for h in statuses.values())
        w = await _wait_watermark(shards, last)
        dumps = {name: await s.dump(w) for name, s in shards.items()}
    finally:
        await asyncio.gather(*(s.close() for s in shards.values()), return_exceptions=True)
    async with log_reader(config, urls) as reader:
        epochs = [decode_epoch(e.data) for e in await fetch_log(reader, urls, w)]
    oracle_shards = await replay_serial(epochs, config.directory)
    oracle = {name: await s.dump(w) for name, s in oracle_shards.items()}
    checks = [
        check_conservation(dumps.values()),
        check_serial_equivalence(dumps, oracle),
        check_hash_chains(dumps.values()),
        check_replicas(statuses),
        check_acknowledged(acked, dumps.values()),
    ]
    console.print(f"verified {len(epochs)} epochs up to W={w} in {time.monotonic() - t0:.1f} s")
    return checks


async def _wait_watermark(shards, last: int, timeout_s: float = 60) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        w = min(await asyncio.gather(*(s.applied_epoch() for s in shards.values())))
        if w >= last or time.monotonic() > deadline:
            return w
        await asyncio.sleep(0.1)


def report_checks(checks: list[Check]) -> int:
    table = Table(title="invariants")
    table.add_column("invariant")
    table.add_column("")
    table.add_column("detail")
    for check in checks:
        table.add_row(check.name, "[green]verified[/]" if check.ok else "[red]FAILED[/]", check.detail)
    console.print(table)
    failed = [c for c in checks if not c.ok]
    if failed:
        console.print(f"[bold red]{len(failed)} invariant(s) failed[/]")
        return 1
    console.print("[bold green]all invariants verified[/]")
    return 0


async def verify_cluster_cli(config_path: Path) -> int:
    config = ClusterConfig.load(config_path)
    urls = [n.url for n in config.nodes]
    async with log_reader(config, urls) as client:
        if not [h for u in urls if (h := await client.health(u)) is not None]:
            raise ConfigError(f"no replica of the cluster in {config_path} answers at {', '.join(urls)}: "
                              f"start it first (ordo up, or ordo demo --keep) and verify while it runs")
        return report_checks(await verify_cluster(config, client, urls, {}))
