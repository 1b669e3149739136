"""The HTTP API of a real local cluster: writes, reads at W, and every kind of bad input.

Bad input must get a specific `application/problem+json` error, and must not
change anything that was already accepted.
"""

from __future__ import annotations

import aiohttp
import msgspec
import pytest

from sequencer.client import OrdoClient
from sequencer.tools.cluster import LocalCluster, write_embedded_config

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = LocalCluster(write_embedded_config(tmp_path_factory.mktemp("api")))
    cluster.start()
    yield cluster
    cluster.stop()


async def _post(cluster: LocalCluster, url: str, path: str, body: bytes) -> tuple[int, str, dict]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {cluster.operator_token}"}
    async with aiohttp.ClientSession() as session:
        async with session.post(url + path, data=body, headers=headers) as resp:
            return resp.status, resp.content_type, msgspec.json.decode(await resp.read())


@pytest.fixture
async def client(cluster):
    async with cluster.client() as client:
        await client.wait_for_leader()
        yield client


async def _seed_accounts(client: OrdoClient) -> None:
    reply = await client.create_accounts([
        {"id": 11, "ledger": 1, "code": 1},
        {"id": 12, "ledger": 1, "code": 1, "flags": ["debits_must_not_exceed_credits"]},
    ])
    assert {r["result"] for r in reply["results"]} <= {"ok", "exists"}


BAD_BODIES = {
    "malformed": (b'[{"id": 1,', "malformed JSON"),
    "float_amount": (b'[{"id":1,"debit_account_id":11,"credit_account_id":12,"amount":1.5,"ledger":1,"code":1}]', "float"),
    "overflow": (b'[{"id":1,"debit_account_id":11,"credit_account_id":12,"amount":9223372036854775808,"ledger":1,"code":1}]', "<= 9223372036854775807"),
    "negative": (b'[{"id":1,"debit_account_id":11,"credit_account_id":12,"amount":-5,"ledger":1,"code":1}]', ">= 0"),
    "string_id": (b'[{"id":"1","debit_account_id":11,"credit_account_id":12,"amount":5,"ledger":1,"code":1}]', "Expected `int`"),
    "unknown_field": (b'[{"id":1,"debit_account_id":11,"credit_account_id":12,"amount":5,"ledger":1,"code":1,"memo":"x"}]', "unknown field"),
    "unknown_flag": (b'[{"id":1,"debit_account_id":11,"credit_account_id":12,"amount":5,"ledger":1,"code":1,"flags":["lnked"]}]',
                     "valid transfers flags are linked, pending, post_pending, void_pending"),
    "empty": (b"[]", "holds no transfers"),
    "object": (b'{"id": 1}', "Expected `array`"),
    "oversized": (msgspec.json.encode([
        {"id": i + 1, "debit_account_id": 11, "credit_account_id": 12, "amount": 1, "ledger": 1, "code": 1}
        for i in range(129)
    ]), "limit is 128"),
}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
async def test_bad_transfers_get_a_specific_problem_and_change_nothing(cluster, client, name) -> None:
    await _seed_accounts(client)
    status, body = await client.get("/v1/accounts/12")
    before = (body["credits_posted"], body["debits_posted"])
    payload, needle = BAD_BODIES[name]
    status, content_type, problem = await _post(cluster, client.leader, "/v1/transfers", payload)
    assert status == 400, problem
    assert content_type == "application/problem+json"
    assert problem["type"].endswith("/invalid-request")
    assert needle in problem["detail"], problem["detail"]
    assert problem["field"], problem
    status, body = await client.get("/v1/accounts/12")
    assert (body["credits_posted"], body["debits_posted"]) == before


async def test_follower_answers_with_the_leader_and_membership(cluster, client) -> None:
    follower = next(u for u in cluster.urls if u != client.leader)
    status, content_type, problem = await _post(cluster, follower, "/v1/transfers", b"[]")
    assert status == 421
    assert content_type == "application/problem+json"
    assert problem["leader"] == client.leader
    assert sorted(problem["members"]) == sorted(cluster.urls)


async def test_transfer_results_reads_and_history(cluster, client) -> None:
    await _seed_accounts(client)
    reply = await client.create_transfers([
        {"id": 7001, "debit_account_id": 11, "credit_account_id": 12, "amount": 250, "ledger": 1, "code": 1},
        {"id": 7002, "debit_account_id": 12, "credit_account_id": 11, "amount": 10**9, "ledger": 1, "code": 1},
        {"id": 7003, "debit_account_id": 11, "credit_account_id": 424242, "amount": 1, "ledger": 1, "code": 1},
    ])
    assert [r["result"] for r in reply["results"]] == ["ok", "exceeds_credits", "credit_account_not_found"]
    assert reply["status"] == "applied" and reply["watermark"] >= reply["epoch"]

    # Read your writes through ANY replica with after=<hlc>.
    for url in cluster.urls:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {cluster.operator_token}"}) as s:
            async with s.get(f"{url}/v1/accounts/12", params={"after": str(reply["hlc"])}) as resp:
                body = await resp.json()
        assert body["credits_posted"] >= 250 and body["watermark"] >= reply["epoch"]
        assert body["hlc"] >= reply["hlc"]

    status, transfer = await client.get("/v1/transfers/7002")
    assert status == 200 and transfer["result"] == "exceeds_credits"
    status, history = await client.get("/v1/accounts/12/transfers", {"limit": "1000"})
    assert any(p["transfer_id"] == 7001 for p in history["postings"])
    status, problem = await client.get("/v1/accounts/999999")
    assert status == 404 and problem["type"].endswith("/account-not-found")
    status, problem = await client.get("/v1/accounts/abc")
    assert status == 400

    # The same id again: the original result, never a second application.
    again = await client.create_transfers([
        {"id": 7001, "debit_account_id": 11, "credit_account_id": 12, "amount": 250, "ledger": 1, "code": 1},
        {"id": 7001, "debit_account_id": 11, "credit_account_id": 12, "amount": 251, "ledger": 1, "code": 1},
    ])
    assert [r["result"] for r in again["results"]] == ["exists", "exists_with_different_fields"]


async def test_health_reports_role_and_digest(cluster, client) -> None:
    leaders = []
    for url in cluster.urls:
        health = await client.health(url)
        assert health is not None and health["status"] == "ok"
        leaders.append(health["is_leader"])
        assert len(health["digest"]) == 64
    assert leaders.count(True) == 1


async def test_readyz_is_ready_then_names_a_stalled_watermark(cluster, client) -> None:
    from tests.waiting import until

    await _seed_accounts(client)

    async def ready(url: str) -> tuple[int, dict]:
        async with aiohttp.ClientSession() as s:  # a probe carries no credentials
            async with s.get(f"{url}/readyz") as resp:
                return resp.status, msgspec.json.decode(await resp.read())

    for url in cluster.urls:
        await until(lambda u=url: _status_is(ready(u), 200), f"{url}/readyz to answer 200", 30)
    cluster.kill_executor()
    try:
        # The log grows (ack=committed does not wait for W) while nothing applies it.
        await client.create_transfers([{"id": 7101, "debit_account_id": 11, "credit_account_id": 12, "amount": 1,
                                        "ledger": 1, "code": 1}], ack="committed")
        await until(lambda: _status_is(ready(client.leader), 503), "/readyz to notice W stalled", 60)
        status, problem = await ready(client.leader)
        assert problem["type"].endswith("/not-ready") and any("executor" in r for r in problem["reasons"]), problem
    finally:
        cluster.start_executor()
    await until(lambda: _status_is(ready(client.leader), 200), "/readyz to recover once the executor is back", 60)


async def _status_is(answer, status: int) -> bool:
    return (await answer)[0] == status
