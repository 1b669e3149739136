"""A real local cluster under faults: 3 replicas, an executor, 2 SQLite shards.

Kills the Raft leader, SIGKILLs the executor at seeded random moments and at
the fault point between two shards' writes of one epoch, restarts
everything, and then checks every invariant in DESIGN.md.
"""

from __future__ import annotations

import asyncio
import os
import random

import pytest

from executor.verify import Check
from proxies.factory import make_shard
from sequencer.client import OrdoClient
from sequencer.tools.cluster import LocalCluster, write_embedded_config
from sequencer.tools.demo import setup_accounts, verify_cluster
from sequencer.tools.workload import Workload
from tests.waiting import at_least, last_epoch, until, watermark

pytestmark = pytest.mark.cluster

SEED = int(os.environ.get("ORDO_SEED", random.randrange(1, 10**6)))


def _assert_all(checks: list[Check]) -> None:
    failed = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
    assert not failed, f"invariants failed (reproduce with ORDO_SEED={SEED}): {failed}"
    assert {c.name for c in checks} == {
        "conservation", "serial equivalence", "hash chains", "replica digests", "no acknowledged transfer missing",
    }


async def _applied(cluster: LocalCluster) -> dict[str, int]:
    out = {}
    for name, spec in cluster.config.directory.shards.items():
        shard = make_shard(spec)
        await shard.open()
        out[name] = await shard.applied_epoch()
        await shard.close()
    return out


class Load:
    """Sends the workload in the background and records what was acknowledged."""

    def __init__(self, client: OrdoClient, workload: Workload, transfers: int) -> None:
        self.client = client
        self.batches = list(workload.transfer_batches(transfers, 50))
        self.acked: dict[int, str] = {}
        self.done = 0

    async def run(self, concurrency: int = 8) -> None:
        queue: asyncio.Queue = asyncio.Queue()
        for batch in self.batches:
            queue.put_nowait(batch)

        async def worker() -> None:
            while not queue.empty():
                batch = queue.get_nowait()
                reply = await self.client.create_transfers(batch)
                for event, result in zip(batch, reply["results"]):
                    self.acked.setdefault(event["id"], result["result"])
                self.done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def test_cluster_survives_leader_and_executor_kills(tmp_path) -> None:
    print(f"cluster test seed={SEED} (reproduce with ORDO_SEED={SEED})")
    rng = random.Random(SEED)
    cluster = LocalCluster(write_embedded_config(tmp_path))
    cluster.start()
    try:
        async with cluster.client(SEED) as client:
            await client.wait_for_leader()
            workload = Workload(SEED, 200)
            await setup_accounts(client, workload)
            load = Load(client, workload, 12_000)
            sending = asyncio.create_task(load.run())

            # 1. SIGKILL the executor at seeded moments (after a seeded amount of
            # progress), and restart it once the log has moved on without it.
            for _ in range(2):
                w_kill = await watermark(client) + rng.randint(2, 12)
                await until(lambda: at_least(watermark(client), w_kill), f"W to reach {w_kill}", 60)
                cluster.kill_executor()
                log_restart = await last_epoch(client) + rng.randint(1, 4)
                await until(lambda: at_least(last_epoch(client), log_restart),
                            f"the log to reach epoch {log_restart} while the executor is down", 60)
                cluster.start_executor()

            # 2. SIGKILL the Raft leader; the client follows the routing error.
            leader = await client.wait_for_leader()
            cluster.kill_node(cluster.node_of_url(leader))
            new_leader = await client.wait_for_leader()  # only live replicas answer /healthz
            assert new_leader != leader
            cluster.start_node(cluster.node_of_url(leader))

            # 3. Crash between the two shards' writes of one epoch.
            applied = await _applied(cluster)
            target = max(applied.values()) + 3
            cluster.kill_executor()
            cluster.start_executor(extra_env={"ORDO_FAULT": f"crash_between:s0:{target}"})
            proc = cluster.executors[0]
            await until(lambda: proc.poll() is not None or sending.done(), "the executor to reach the fault point")
            if proc.poll() is not None:
                torn = await _applied(cluster)
                assert torn["s0"] >= target > torn["s1"], f"expected a torn epoch, shards at {torn}"
                cluster.executors.pop(0)
            else:
                pytest.fail(f"the load finished before epoch {target} reached the fault point")
            cluster.start_executor()

            await sending
            cluster.check_alive()
            checks = await verify_cluster(cluster.config, client, cluster.urls, load.acked)
            _assert_all(checks)
            assert len(load.acked) > 10_000
    finally:
        cluster.stop()
