"""Delivery versus payment across PostgreSQL and Cassandra, under faults.

Each trade is a linked chain: a cash leg on PostgreSQL and a securities leg
on Cassandra.  Against the real servers this shows that both legs apply or
neither, exactly once, through an executor crash between the two stores'
writes of one epoch and through an outage of each store, and that a reader
polling both legs at one W never sees one without the other.
"""

from __future__ import annotations

import asyncio
import os
import random

import pytest

from proxies.factory import make_shard
from sequencer.client import OrdoClient
from sequencer.tools.cluster import LocalCluster
from sequencer.tools.demo import verify_cluster
from sequencer.tools.settlement import HalfSettledReader, Settlement, settle
from sequencer.tools.up import DEFAULT_TOPOLOGY, Servers, load_topology, resolve
from tests.waiting import at_least, until, watermark

pytestmark = [pytest.mark.servers, pytest.mark.cluster]

SEED = int(os.environ.get("ORDO_SEED", random.randrange(1, 10**6)))


@pytest.fixture
def dvp_cluster(postgres_server, cassandra_server, tmp_path):
    servers = Servers(postgres=postgres_server, cassandra=cassandra_server)
    topology = load_topology(DEFAULT_TOPOLOGY)
    # Fresh schemas and keyspace per test, on the shared servers.
    suffix = f"t{random.randrange(10**6)}"
    for name, shard in topology["directory"]["shards"].items():
        if shard["store"] == "postgres":
            shard["schema"] = f"{shard['schema']}_{suffix}"
        else:
            shard["keyspace"] = f"{shard['keyspace']}_{suffix}"
    cluster = LocalCluster(resolve(topology, servers, tmp_path))
    cluster.start()
    yield cluster
    cluster.stop()


async def _applied(cluster: LocalCluster) -> dict[str, int]:
    out = {}
    for name, spec in cluster.config.directory.shards.items():
        shard = make_shard(spec)
        await shard.open()
        try:
            out[name] = await shard.applied_epoch()
        finally:
            await shard.close()
    return out


async def _setup(client: OrdoClient, workload: Settlement) -> None:
    accounts = workload.accounts()
    for i in range(0, len(accounts), 128):
        await client.create_accounts(accounts[i : i + 128])
    funding = workload.funding()
    for i in range(0, len(funding), 128):
        await client.create_transfers(funding[i : i + 128])


def _assert_checks(checks) -> None:
    failed = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
    assert not failed, f"reproduce with ORDO_SEED={SEED}: {failed}"


def _legs_settled_together(acked: dict[int, str], trade_ids: list[tuple[int, int]]) -> None:
    for cash_id, securities_id in trade_ids:
        a, b = acked[cash_id], acked[securities_id]
        both_ok = a in ("ok", "exists") and b in ("ok", "exists")
        both_failed = a not in ("ok", "exists") and b not in ("ok", "exists")
        assert both_ok or both_failed, f"trade legs {cash_id}={a} {securities_id}={b} disagree"


async def test_crash_between_postgres_and_cassandra_writes(dvp_cluster) -> None:
    print(f"seed={SEED}")
    cluster = dvp_cluster
    async with cluster.client(SEED) as client:
        await client.wait_for_leader()
        workload = Settlement(SEED, traders=16)
        await _setup(client, workload)
        reader = HalfSettledReader(client, workload)
        reading = asyncio.create_task(reader.run())

        target = max((await _applied(cluster)).values()) + 4
        cluster.kill_executor()
        cluster.start_executor(extra_env={"ORDO_FAULT": f"crash_between:cash-1:{target}"})
        acked: dict[int, str] = {}
        sending = asyncio.create_task(settle(client, workload, 1500, 4, acked))
        proc = cluster.executors[0]
        await until(lambda: proc.poll() is not None or sending.done(), "the executor to reach the fault point")
        assert proc.poll() is not None, "the executor never reached the fault point"
        cluster.executors.pop(0)
        torn = await _applied(cluster)
        assert torn["cash-1"] >= target > torn["securities-1"], f"expected a torn epoch: {torn}"
        seen = reader.snapshots  # reads meanwhile are served at the old W
        await until(lambda: reader.snapshots >= seen + 5, "5 reader snapshots of the torn state")
        cluster.start_executor()
        await sending
        seen = reader.snapshots
        await until(lambda: reader.snapshots >= seen + 3, "3 reader snapshots after the load")
        reading.cancel()

        checks = await verify_cluster(cluster.config, client, cluster.urls, acked)
        checks.append(reader.check())
        _assert_checks(checks)
        assert reader.snapshots > 10


async def test_store_outages_lose_and_duplicate_nothing(dvp_cluster, postgres_server, cassandra_server) -> None:
    print(f"seed={SEED}")
    cluster = dvp_cluster
    async with cluster.client(SEED) as client:
        await client.wait_for_leader()
        workload = Settlement(SEED + 1, traders=16)
        await _setup(client, workload)
        reader = HalfSettledReader(client, workload)
        reading = asyncio.create_task(reader.run())
        acked: dict[int, str] = {}
        # ack=applied would stall while a store is down; the client keeps retrying
        # with the same ids, so nothing is lost or doubled either way.
        sending = asyncio.create_task(settle(client, workload, 2000, 4, acked))

        # Stop PostgreSQL, then Cassandra; reads of the store still up keep
        # answering at the last W, reads of the one down get a clear 503.
        for server, live, dead in (
            (postgres_server, workload.securities(1), workload.cash(1)),
            (cassandra_server, workload.cash(1), workload.securities(1)),
        ):
            w_start = await watermark(client)
            await until(lambda: at_least(watermark(client), w_start + 5), "W to advance 5 epochs under load")
            w_before = await watermark(client)
            await asyncio.to_thread(server.stop)
            try:
                await until(lambda: _store_error_seen(client), "a replica to see the store down")
                status, body = await client.get(f"/v1/accounts/{live}")
                assert status == 200 and body["watermark"] >= w_before - 1, body
                status, body = await client.get(f"/v1/accounts/{dead}")
                assert status == 503 and body["type"].endswith("/store-unavailable"), body
            finally:
                await asyncio.to_thread(server.ensure_running)
        await sending
        seen = reader.snapshots
        await until(lambda: reader.snapshots >= seen + 3, "3 reader snapshots after the load")
        reading.cancel()

        checks = await verify_cluster(cluster.config, client, cluster.urls, acked)
        checks.append(reader.check())
        _assert_checks(checks)
        trade_legs = [(ids[0], ids[1]) for ids in _pairs(acked)]
        _legs_settled_together(acked, trade_legs)


async def _store_error_seen(client) -> bool:
    """Some replica's W poll has hit the stopped store (its /healthz names the error)."""
    for url in client.members:
        health = await client.health(url)
        if health is not None and health.get("store_error"):
            return True
    return False


def _pairs(acked: dict[int, str]) -> list[tuple[int, int]]:
    """Settlement ids are issued two per trade (cash, then securities), after the funding legs."""
    ids = sorted(acked)
    return [(ids[i], ids[i + 1]) for i in range(0, len(ids) - 1, 2)]
