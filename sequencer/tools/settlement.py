"""The multi-store settlement demo: cash in PostgreSQL, securities in Cassandra, settled DvP.

Owned here: the delivery-versus-payment workload (each trade is a linked
chain with a cash leg on PostgreSQL and a securities leg on Cassandra, which
must settle both or neither), the reader that polls traders at one W
throughout and counts any snapshot showing one leg without the other, and
`ordo demo --stores postgres,cassandra`.  Runs on `tools/up.py`'s topology.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from executor.verify import Check
from sequencer.client import OrdoClient
from sequencer.errors import ConfigError
from sequencer.tools.cluster import LocalCluster
from sequencer.tools.up import DEFAULT_TOPOLOGY, Servers, load_topology, resolve

console = Console(highlight=False)

CASH_LEDGER, SECURITIES_LEDGER = 1, 2
#: Account ids: cash in the PostgreSQL range, securities in the Cassandra range.
CASH_BASE, SECURITIES_BASE = 1_000, 1_000_001_000
PRICE = 100  # cash minor units per security, fixed so the value check is exact
CASH_FUNDING, SECURITIES_FUNDING = 1_000_000, 5_000


@dataclass
class Settlement:
    """Delivery-versus-payment trades between traders, from one seed."""

    seed: int
    traders: int
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._ids = iter(range(self.seed * 10**9 + 1, 2**62))

    def cash(self, t: int) -> int:
        return CASH_BASE + t

    def securities(self, t: int) -> int:
        return SECURITIES_BASE + t

    def accounts(self) -> list[dict]:
        limited = ["debits_must_not_exceed_credits"]
        out = [{"id": CASH_BASE, "ledger": CASH_LEDGER, "code": 1},
               {"id": SECURITIES_BASE, "ledger": SECURITIES_LEDGER, "code": 1}]
        for t in range(1, self.traders + 1):
            out.append({"id": self.cash(t), "ledger": CASH_LEDGER, "code": 2, "flags": limited})
            out.append({"id": self.securities(t), "ledger": SECURITIES_LEDGER, "code": 2, "flags": limited})
        return out

    def _leg(self, debit: int, credit: int, amount: int, ledger: int, linked: bool) -> dict:
        return {"id": next(self._ids), "debit_account_id": debit, "credit_account_id": credit, "amount": amount,
                "ledger": ledger, "code": 7, "flags": ["linked"] if linked else []}

    def funding(self) -> list[dict]:
        out = []
        for t in range(1, self.traders + 1):
            out.append(self._leg(CASH_BASE, self.cash(t), CASH_FUNDING, CASH_LEDGER, False))
            out.append(self._leg(SECURITIES_BASE, self.securities(t), SECURITIES_FUNDING, SECURITIES_LEDGER, False))
        return out

    def trade(self) -> list[dict]:
        buyer, seller = self.rng.sample(range(1, self.traders + 1), 2)
        # One trade in ten is too large for the seller's holding: both legs must fail.
        qty = self.rng.randint(1, 50) if self.rng.random() > 0.1 else SECURITIES_FUNDING * 10
        return [
            self._leg(self.cash(buyer), self.cash(seller), qty * PRICE, CASH_LEDGER, True),
            self._leg(self.securities(seller), self.securities(buyer), qty, SECURITIES_LEDGER, False),
        ]

    def value(self, cash: dict, securities: dict) -> int:
        """A trader's cash plus securities at PRICE: every settled trade leaves it unchanged."""
        net_cash = cash["credits_posted"] - cash["debits_posted"]
        net_securities = securities["credits_posted"] - securities["debits_posted"]
        return net_cash + PRICE * net_securities


class HalfSettledReader:
    """Polls traders at one W each time; counts snapshots showing one leg without the other."""

    def __init__(self, client: OrdoClient, workload: Settlement, watch: int = 8) -> None:
        self.client = client
        self.workload = workload
        self.traders = list(range(1, min(workload.traders, watch) + 1))
        self.snapshots = 0
        self.half_settled: list[str] = []
        self.errors = 0

    async def run(self) -> None:
        ids = [x for t in self.traders for x in (self.workload.cash(t), self.workload.securities(t))]
        expected = CASH_FUNDING + PRICE * SECURITIES_FUNDING
        while True:
            try:
                status, body = await self.client.get("/v1/accounts", {"ids": ",".join(map(str, ids))})
            except Exception:
                self.errors += 1  # a store or replica is down: reads resume at the last W
                await asyncio.sleep(0.05)
                continue
            if status == 200 and len(body["accounts"]) == len(ids):
                self.snapshots += 1
                by_id = {a["id"]: a for a in body["accounts"]}
                for t in self.traders:
                    cash, sec = by_id[self.workload.cash(t)], by_id[self.workload.securities(t)]
                    if cash["credits_posted"] and sec["credits_posted"]:  # funded
                        value = self.workload.value(cash, sec)
                        if value != expected:
                            self.half_settled.append(f"trader {t} at W={body['watermark']}: value {value} != {expected}")
            await asyncio.sleep(0.01)

    def check(self) -> Check:
        if self.half_settled:
            return Check("no half-settled trade observed", False, self.half_settled[0])
        return Check("no half-settled trade observed", True,
                     f"{self.snapshots} snapshots of {len(self.traders)} traders, every one whole")


async def settle(client: OrdoClient, workload: Settlement, trades: int, concurrency: int, acked: dict[int, str],
                 on_progress=None) -> list[float]:
    """Send `trades` DvP chains in batches; returns per-batch ack latencies (ms)."""
    latencies: list[float] = []
    batches = []
    batch: list[dict] = []
    for _ in range(trades):
        batch.extend(workload.trade())
        if len(batch) >= 100:
            batches.append(batch)
            batch = []
    if batch:
        batches.append(batch)
    queue: asyncio.Queue = asyncio.Queue()
    for b in batches:
        queue.put_nowait(b)

    async def worker() -> None:
        while not queue.empty():
            b = queue.get_nowait()
            t0 = time.monotonic()
            reply = await client.create_transfers(b)
            latencies.append((time.monotonic() - t0) * 1000)
            for event, result in zip(b, reply["results"]):
                acked.setdefault(event["id"], result["result"])
            if on_progress:
                on_progress(len(b) // 2)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def multi_store_demo(args: argparse.Namespace, seed: int) -> int:
    from sequencer.tools.demo import LeaderMonitor, kill_leader, report_checks, verify_cluster
    from sequencer.tools.stats import quantile

    stores = set(args.stores.split(","))
    if stores != {"postgres", "cassandra"}:
        raise ConfigError(f"--stores takes 'sqlite' or 'postgres,cassandra', not {args.stores!r}")
    topology = load_topology(DEFAULT_TOPOLOGY)
    data_dir = Path(tempfile.mkdtemp(prefix="ordo-dvp-"))
    servers = Servers.start_for(topology)
    cluster = LocalCluster(resolve(topology, servers, data_dir))
    try:
        cluster.start()
        async with cluster.client(seed) as client:
            await client.wait_for_leader()
            workload = Settlement(seed, traders=max(4, min(args.accounts, 500)))
            for i in range(0, len(workload.accounts()), 128):
                await client.create_accounts(workload.accounts()[i : i + 128])
            funding = workload.funding()
            for i in range(0, len(funding), 128):
                await client.create_transfers(funding[i : i + 128])
            reader = HalfSettledReader(client, workload)
            reader_task = asyncio.create_task(reader.run())
            monitor = LeaderMonitor(client, cluster.urls)
            monitor_task = asyncio.create_task(monitor.run())
            trades = max(1, args.transfers // 2)
            acked: dict[int, str] = {}
            t0 = time.monotonic()
            sending = asyncio.create_task(settle(client, workload, trades, args.concurrency, acked))
            if not args.no_kill:
                await asyncio.sleep(2)
                await kill_leader(client, cluster)
            latencies = await sending
            elapsed = time.monotonic() - t0
            await asyncio.sleep(0.5)
            reader_task.cancel()
            monitor_task.cancel()
            console.print(f"settled {trades:,} trades ({2 * trades:,} legs) in {elapsed:.1f} s: "
                          f"{2 * trades / elapsed:,.0f} legs/s; ack p50 {quantile(latencies, 0.5):.0f} ms, "
                          f"p99 {quantile(latencies, 0.99):.0f} ms; leader changes {max(0, len(monitor.changes) - 1)}")
            results: dict[str, int] = {}
            for code in acked.values():
                results[code] = results.get(code, 0) + 1
            console.print(f"result codes: {dict(sorted(results.items(), key=lambda kv: -kv[1]))}")
            checks = await verify_cluster(cluster.config, client, cluster.urls, acked)
            checks.append(reader.check())
        return report_checks(checks)
    finally:
        cluster.stop()
        servers.close()
