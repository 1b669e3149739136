"""The attacks of the trust-boundary issue, each against a real local cluster.

Every test here was an attack that worked before the trust boundary existed:
code execution through the Raft port, Raft commands from strangers, moving
or reading another key's money, reading the log, a forged epoch, a valid
request that crashed the leader, slowloris and stalled bodies, a gzip bomb,
Unicode digits and duplicate JSON keys.  Where an attack's success would be
silent (no marker file, no reply), a control run against an unprotected
target shows that the same bytes do work there, so the test can fail.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import pickle
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import aiohttp
import msgspec
import pytest
from aiohttp import web
from multidict import CIMultiDict

from executor.runner import FeedAccess, LogFeed
from sequencer import limits
from sequencer.tools.cluster import LocalCluster, free_ports, write_embedded_config
from sequencer.security import KeyRing, Scope, log_key, new_key, write_keys_file
from sequencer.types import (
    AppliedEpoch,
    CODE_MAX,
    LEDGER_MAX,
    U63_MAX,
    decode_epoch,
    encode_epoch,
    fold_log_digest,
    log_genesis_digest,
)

pytestmark = pytest.mark.cluster

HTTP_LIMITS = {"header_read_timeout_ms": 1000, "body_read_timeout_ms": 1500, "idle_timeout_ms": 5000,
               "connections_max": 48}
VICTIM, VICTIM_2, THIEF = 1001, 1002, 2001
SMALLEST_EPOCH = limits.request_bytes_max(limits.BATCH_EVENTS_MAX) + limits.EPOCH_FRAME_BYTES_MAX


class Tokens:
    operator: str
    thief: str
    slow: str
    replica: str


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("trust")
    # The smallest epoch that config validation accepts: the largest valid request must still be sequenced.
    cluster = LocalCluster(write_embedded_config(root, http=HTTP_LIMITS, log={"epoch_bytes_max": SMALLEST_EPOCH}))
    keys_file = cluster.config.security.api_keys_file
    ring = KeyRing.load(keys_file)
    thief_token, thief = new_key(Scope.CLIENT, ledgers=[1], accounts=[(2000, 2999)], label="the thief")
    slow_token, slow = new_key(Scope.CLIENT, ledgers=[1], accounts=[(2000, 2999)], rate_per_s=1, burst=3)
    write_keys_file(keys_file, [*ring.keys.values(), thief, slow])
    cluster.tokens = Tokens()
    cluster.tokens.operator = cluster.operator_token
    cluster.tokens.thief, cluster.tokens.slow = thief_token, slow_token
    cluster.tokens.replica = cluster.config.security.executor_key.read()
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
async def operator(cluster):
    async with cluster.client() as client:
        await client.wait_for_leader()
        reply = await client.create_accounts([
            {"id": VICTIM, "ledger": 1, "code": 1}, {"id": VICTIM_2, "ledger": 1, "code": 1},
            {"id": THIEF, "ledger": 1, "code": 1}, {"id": 2002, "ledger": 2, "code": 1},
        ])
        assert {r["result"] for r in reply["results"]} <= {"ok", "exists"}
        yield client


async def _request(cluster, method: str, path: str, token: str | None = None, url: str | None = None,
                   **kwargs) -> tuple[int, CIMultiDict, dict]:
    headers = dict(kwargs.pop("headers", {}))
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.request(method, (url or cluster.urls[0]) + path, headers=headers, **kwargs) as resp:
            raw = await resp.read()
            body = msgspec.json.decode(raw) if resp.content_type.endswith("json") and raw else {}
            return resp.status, CIMultiDict(resp.headers), body


def _problem(status: int, headers: dict, body: dict, expected: int) -> dict:
    assert status == expected, body
    assert headers["Content-Type"].startswith("application/problem+json"), headers
    assert body["status"] == expected and body["type"].startswith("https://ordo.dev/problems/")
    return body


async def _balance(client, account_id: int) -> tuple[int, int, int, int]:
    status, body = await client.get(f"/v1/accounts/{account_id}")
    assert status == 200, body
    return body["debits_pending"], body["debits_posted"], body["credits_pending"], body["credits_posted"]


# ------------------------------------------------------------- Raft transport


def _frame(message) -> bytes:
    """A message framed exactly as pysyncobj's TcpConnection.send frames it (no encryption)."""
    data = zlib.compress(pickle.dumps(message), 3)
    return struct.pack("i", len(data)) + data


class _Mkdir:
    """Unpickling this runs os.mkdir(path): the stand-in for arbitrary code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


async def _send_and_read(port: int, data: bytes, timeout_s: float = 10.0) -> bytes:
    """Send `data`, then read until the peer closes; what it answered (b'' for nothing)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(1 << 20), timeout_s)
    finally:
        writer.close()


def _bare_syncobj(tmp_path, password: str | None):
    """A bare pysyncobj node (no ordo hardening), the control target for an attack."""
    port = free_ports(1)[0]
    script = ("import sys, time\nfrom pysyncobj import SyncObj, SyncObjConf\n"
              f"o = SyncObj('127.0.0.1:{port}', [], SyncObjConf(bindAddress='127.0.0.1:{port}', "
              f"password={password!r}))\nprint('ready', flush=True)\ntime.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=tmp_path)
    assert proc.stdout.readline().strip() == b"ready"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    return port, proc


@pytest.fixture
def unprotected_syncobj(tmp_path):
    port, proc = _bare_syncobj(tmp_path, None)
    yield port
    proc.kill()
    proc.wait()


def _encrypted_frame(password: str, message) -> bytes:
    """A message framed and encrypted as pysyncobj does with `password` set: what a key holder can send."""
    from pysyncobj.encryptor import getEncryptor

    data = getEncryptor(password).encrypt_at_time(zlib.compress(pickle.dumps(message, 2), 3), int(time.monotonic()))
    return struct.pack("i", len(data)) + data


async def _wait_for(path: Path, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while not path.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)  # polling a condition with a deadline
    return path.exists()


async def test_even_a_key_holder_cannot_unpickle_code(cluster, operator, tmp_path) -> None:
    from sequencer.security import raft_password

    password = raft_password(cluster.config.security.cluster_secret())
    port, proc = _bare_syncobj(tmp_path, password)
    try:
        control = tmp_path / "control-with-key"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_encrypted_frame(password, _Mkdir(str(control))))
        await writer.drain()
        assert await _wait_for(control), "the encrypted control pickle did not run: the frame is wrong"
        writer.close()
    finally:
        proc.kill()
        proc.wait()
    for node in cluster.config.nodes:
        marker = tmp_path / f"keyed-marker-{node.id}"
        answer = await _send_and_read(int(node.raft.rsplit(":", 1)[1]), _encrypted_frame(password, _Mkdir(str(marker))))
        assert answer == b"" and not marker.exists(), f"node {node.id} ran a pickle sent with the key"
    cluster.check_alive()


async def test_a_pickle_sent_to_a_raft_port_executes_nothing(cluster, operator, unprotected_syncobj, tmp_path) -> None:
    # Control: the very same bytes run code in a pysyncobj node without a password.
    control_marker = tmp_path / "control-marker"
    reader, writer = await asyncio.open_connection("127.0.0.1", unprotected_syncobj)
    writer.write(_frame(_Mkdir(str(control_marker))))
    await writer.drain()
    assert await _wait_for(control_marker), "the framing is wrong: the control pickle did not run"
    writer.close()
    for node in cluster.config.nodes:
        marker = tmp_path / f"marker-{node.id}"
        port = int(node.raft.rsplit(":", 1)[1])
        answer = await _send_and_read(port, _frame(_Mkdir(str(marker))))
        # The replica read the frame, failed to authenticate it and hung up without a word.
        assert answer == b""
        assert not marker.exists(), f"node {node.id} unpickled an unauthenticated message"
    cluster.check_alive()


async def test_raft_commands_without_the_key_are_ignored(cluster, unprotected_syncobj, operator) -> None:
    control = await _send_and_read(unprotected_syncobj, _frame(["status"]))
    assert len(control) > 4, "the control node did not answer 'status': the framing is wrong"
    leader = await operator.wait_for_leader()
    term = (await operator.health(leader))["term"]
    follower = next(n for n in cluster.config.nodes if n.url != leader)
    for node in cluster.config.nodes:
        port = int(node.raft.rsplit(":", 1)[1])
        assert await _send_and_read(port, _frame(["status"])) == b""
        assert await _send_and_read(port, _frame(["transfer", follower.raft])) == b""
    health = await operator.health(leader)
    assert health["is_leader"] and health["term"] == term, health
    cluster.check_alive()


async def test_raft_and_http_ports_bind_only_their_address(cluster, operator) -> None:
    # Every port is bound to 127.0.0.1, so 127.0.0.2 (also loopback, also this
    # machine) must find nothing listening; a 0.0.0.0 bind would accept it.
    for node in cluster.config.nodes:
        for address in (node.raft, node.http):
            port = int(address.rsplit(":", 1)[1])
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.2", port), timeout=2)


async def test_a_forged_epoch_is_refused_and_the_real_one_taken(cluster, operator) -> None:
    await operator.create_transfers([{"id": 91, "debit_account_id": THIEF, "credit_account_id": VICTIM,
                                      "amount": 1, "ledger": 1, "code": 1}])
    key = log_key(cluster.config.security.cluster_secret())
    access = FeedAccess(key, cluster.tokens.replica)
    honest = LogFeed(cluster.urls, access)
    try:
        real = await honest.fetch(1)
    finally:
        await honest.close()
    assert real and real[0].number == 1
    # The attacker serves epoch 1 with a new intent, chained as the old unkeyed SHA-256 chain was.
    epoch = decode_epoch(real[0].data)
    theft = msgspec.structs.replace(epoch.intents[0], id=424242)
    data = encode_epoch(msgspec.structs.replace(epoch, intents=[theft, *epoch.intents[1:]]))
    unkeyed = hashlib.sha256(hashlib.sha256(b"ordo/log/v1").hexdigest().encode() + data).hexdigest()
    forged = [AppliedEpoch(1, real[0].hlc_last, unkeyed, data),
              AppliedEpoch(1, real[0].hlc_last, fold_log_digest(b"guess", log_genesis_digest(b"guess"), data), data)]
    served: list[int] = []

    async def fake_log(request: web.Request) -> web.Response:
        served.append(1)
        return web.Response(body=msgspec.msgpack.encode([forged[len(served) - 1]]), content_type="application/msgpack")

    app = web.Application()
    app.router.add_get("/v1/log", fake_log)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_ports(1)[0]
    await web.TCPSite(runner, "127.0.0.1", port).start()
    feed = LogFeed([f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}", *cluster.urls], access)
    feed.digest = log_genesis_digest(key)
    try:
        for _ in range(2):
            assert feed.accept(await feed.fetch(1), 1) == []  # both forgeries refused
        accepted = feed.accept(await feed.fetch(1), 1)
    finally:
        await feed.close()
        await runner.cleanup()
    assert feed.refused == 2 and len(served) == 2
    assert accepted and accepted[0] == real[0]


# ---------------------------------------------------------------- API keys


async def test_no_credentials_get_401_and_nothing_is_queued(cluster, operator) -> None:
    before = await _balance(operator, VICTIM)
    transfer = [{"id": 501, "debit_account_id": VICTIM, "credit_account_id": THIEF, "amount": 1000, "ledger": 1,
                 "code": 1}]
    leader = operator.leader
    for token in (None, "ordo_000000000000_" + "x" * 43, cluster.tokens.operator[:-1] + "Z"):
        status, headers, body = await _request(cluster, "POST", "/v1/transfers", token, url=leader, json=transfer)
        problem = _problem(status, headers, body, 401)
        assert problem["field"] == "Authorization" and "Bearer" in headers.get("WWW-Authenticate", "")
    for path in ("/v1/accounts/1001", "/v1/log", "/v1/transfers/501"):
        status, headers, body = await _request(cluster, "GET", path)
        _problem(status, headers, body, 401)
    assert await _balance(operator, VICTIM) == before
    status, _, _ = await _request(cluster, "GET", "/v1/transfers/501", cluster.tokens.operator)
    assert status == 404  # never queued


async def test_a_client_cannot_take_or_void_what_is_not_its_own(cluster, operator) -> None:
    funding = await operator.create_transfers([
        {"id": 601, "debit_account_id": VICTIM_2, "credit_account_id": VICTIM, "amount": 5000, "ledger": 1, "code": 1},
        {"id": 602, "debit_account_id": VICTIM, "credit_account_id": VICTIM_2, "amount": 700, "ledger": 1, "code": 1,
         "flags": ["pending"], "timeout_ms": 600_000},
    ])
    assert [r["result"] for r in funding["results"]] in (["ok", "ok"], ["exists", "exists"])
    victim_before = await _balance(operator, VICTIM)
    thief = cluster.tokens.thief
    leader = operator.leader
    theft = {"id": 603, "debit_account_id": VICTIM, "credit_account_id": THIEF, "amount": 1000, "ledger": 1, "code": 1}
    status, headers, body = await _request(cluster, "POST", "/v1/transfers", thief, url=leader, json=[theft])
    assert _problem(status, headers, body, 403)["field"] == "$[0].debit_account_id"
    void = {"id": 604, "debit_account_id": VICTIM, "credit_account_id": VICTIM_2, "amount": 0, "ledger": 1,
            "code": 1, "pending_id": 602, "flags": ["void_pending"]}
    status, headers, body = await _request(cluster, "POST", "/v1/transfers", thief, url=leader, json=[void])
    _problem(status, headers, body, 403)
    # Naming its own account as the debit side passes the edge, and the state machine refuses the void.
    disguised = {**void, "id": 605, "debit_account_id": THIEF}
    status, _, body = await _request(cluster, "POST", "/v1/transfers", thief, url=leader, json=[disguised])
    assert status == 200 and body["results"][0]["result"] == "pending_transfer_has_different_debit_account_id"
    # Another ledger, even on its own account.
    status, headers, body = await _request(cluster, "POST", "/v1/transfers", thief, url=leader,
                                           json=[{**theft, "id": 606, "debit_account_id": THIEF, "ledger": 2}])
    assert _problem(status, headers, body, 403)["field"] == "$[0].ledger"
    # Creating accounts is for operators.
    status, headers, body = await _request(cluster, "POST", "/v1/accounts", thief, url=leader,
                                           json=[{"id": 2500, "ledger": 1, "code": 1}])
    _problem(status, headers, body, 403)
    assert await _balance(operator, VICTIM) == victim_before
    status, transfer = await operator.get("/v1/transfers/602")
    assert transfer["resolution"] is None  # still pending


async def test_a_client_reads_only_its_own_accounts_and_transfers(cluster, operator) -> None:
    thief = cluster.tokens.thief
    status, headers, body = await _request(cluster, "GET", f"/v1/accounts/{VICTIM}", thief)
    _problem(status, headers, body, 403)
    status, headers, body = await _request(cluster, "GET", f"/v1/accounts/{VICTIM}/transfers", thief)
    _problem(status, headers, body, 403)
    status, headers, body = await _request(cluster, "GET", "/v1/accounts", thief, params={"ids": f"{THIEF},{VICTIM}"})
    assert _problem(status, headers, body, 403)["field"] == "ids"
    status, headers, body = await _request(cluster, "GET", "/v1/accounts/2002", thief)  # its range, ledger 2
    _problem(status, headers, body, 403)
    status, _, body = await _request(cluster, "GET", f"/v1/accounts/{THIEF}", thief)
    assert status == 200 and body["id"] == THIEF
    # Someone else's transfer is "not found" to it: ids reveal nothing.
    await operator.create_transfers([{"id": 607, "debit_account_id": VICTIM, "credit_account_id": VICTIM_2,
                                      "amount": 1, "ledger": 1, "code": 1}])
    status, headers, body = await _request(cluster, "GET", "/v1/transfers/607", thief)
    assert status == 404 and body["type"].endswith("/transfer-not-found")
    status, _, _ = await _request(cluster, "GET", "/v1/transfers/607", cluster.tokens.operator)
    assert status == 200


async def test_only_the_replica_key_reads_the_log(cluster, operator) -> None:
    for token in (cluster.tokens.thief, cluster.tokens.operator):
        status, headers, body = await _request(cluster, "GET", "/v1/log", token)
        _problem(status, headers, body, 403)
    status, headers, _ = await _request(cluster, "GET", "/v1/log", cluster.tokens.replica)
    assert status == 200 and headers["Content-Type"].startswith("application/msgpack")


async def test_writes_need_plain_json(cluster, operator) -> None:
    token, leader = cluster.tokens.operator, operator.leader
    body = msgspec.json.encode([{"id": 701, "debit_account_id": VICTIM, "credit_account_id": VICTIM_2, "amount": 1,
                                 "ledger": 1, "code": 1}])
    cases = [
        ({"Content-Type": "text/plain"}, body, "Content-Type"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, b"a=1", "Content-Type"),
        ({}, body, "Content-Type"),
        ({"Content-Type": "application/json", "Content-Encoding": "gzip"}, body, "Content-Encoding"),
        ({"Content-Type": "application/json; charset=latin-1"}, body, "Content-Type"),
    ]
    for headers, data, field in cases:
        status, got, problem = await _request(cluster, "POST", "/v1/transfers", token, url=leader, data=data,
                                              headers=headers)
        assert _problem(status, got, problem, 415)["field"] == field, (headers, problem)
    status, _, _ = await _request(cluster, "GET", "/v1/transfers/701", token)
    assert status == 404


async def test_rate_limits_apply_per_key(cluster, operator) -> None:
    statuses = []
    for _ in range(6):
        status, headers, body = await _request(cluster, "GET", f"/v1/accounts/{THIEF}", cluster.tokens.slow)
        statuses.append(status)
        if status == 429:
            _problem(status, headers, body, 429)
            assert int(headers["Retry-After"]) >= 1
    assert statuses[:3] == [200, 200, 200] and 429 in statuses
    # Other keys are unaffected.
    status, _, _ = await _request(cluster, "GET", f"/v1/accounts/{THIEF}", cluster.tokens.thief)
    assert status == 200


# ---------------------------------------------------- the leader and the edge


async def test_the_largest_valid_request_is_sequenced_and_the_leader_lives(cluster, operator) -> None:
    big = [{"id": U63_MAX - 1 - i, "debit_account_id": U63_MAX - 1000 - i, "credit_account_id": U63_MAX - 2000 - i,
            "amount": U63_MAX, "ledger": LEDGER_MAX, "code": CODE_MAX, "flags": ["pending"],
            "timeout_ms": 366 * 24 * 3600 * 1000, "user_data": U63_MAX} for i in range(128)]
    reply = await operator.create_transfers(big)
    assert {r["result"] for r in reply["results"]} <= {"debit_account_not_found", "exists"}
    cluster.check_alive()
    await operator.create_transfers([{"id": 801, "debit_account_id": VICTIM, "credit_account_id": VICTIM_2,
                                      "amount": 1, "ledger": 1, "code": 1}])


async def _slow_connections(port: int, count: int, payload: bytes) -> list[tuple[asyncio.StreamReader, object]]:
    conns = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        await writer.drain()
        conns.append((reader, writer))
    return conns


async def _closed_within(conns, timeout_s: float) -> list[bytes]:
    answers = await asyncio.gather(*(asyncio.wait_for(r.read(1 << 16), timeout_s) for r, _ in conns))
    for _, w in conns:
        w.close()
    return answers


async def test_slowloris_and_stalled_bodies_are_cut_off(cluster, operator) -> None:
    url = operator.leader  # a follower answers a write with 421 before reading its body
    port = int(url.rsplit(":", 1)[1])
    token = cluster.tokens.operator
    header_trickle = await _slow_connections(port, 20, b"GET /v1/accounts/1001 HTTP/1.1\r\nHost: x\r\nX-a: ")
    silent = await _slow_connections(port, 5, b"")
    head = (f"POST /v1/transfers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\n").encode()
    chunked = await _slow_connections(port, 5, head + b"Transfer-Encoding: chunked\r\n\r\n10\r\n[{\"id\": 1, \"de")
    stalled = await _slow_connections(port, 5, head + b"Content-Length: 131072\r\n\r\n" + b" " * 1024)
    # While they hang, the node still answers.
    assert (await operator.health(url))["status"] == "ok"
    bound_s = (HTTP_LIMITS["body_read_timeout_ms"] + HTTP_LIMITS["header_read_timeout_ms"]) / 1000 + 10
    for answer in await _closed_within(header_trickle + silent, bound_s):
        assert answer == b""  # closed without a word: a request never began
    for answer in await _closed_within(chunked + stalled, bound_s):
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"application/problem+json" in answer and b"body-timeout" in answer
    cluster.check_alive()


async def test_a_gzip_bomb_is_refused_unread(cluster, operator) -> None:
    bomb = gzip.compress(b"[" + b" " * (64 << 20) + b"]", 9)  # 64 MiB inflated
    status, headers, body = await _request(
        cluster, "POST", "/v1/transfers", cluster.tokens.operator, url=operator.leader, data=bomb,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert _problem(status, headers, body, 415)["field"] == "Content-Encoding"
    assert (await operator.health(operator.leader))["status"] == "ok"


async def test_connections_past_the_cap_get_503(cluster, operator) -> None:
    port = int(cluster.urls[1].rsplit(":", 1)[1])
    conns = await _slow_connections(port, HTTP_LIMITS["connections_max"] + 5, b"")
    try:
        answers = await asyncio.gather(*(asyncio.wait_for(r.read(1 << 16), 10) for r, _ in conns[-5:]))
        assert all(a.startswith(b"HTTP/1.1 503") and b"too-many-connections" in a for a in answers), answers
    finally:
        for _, w in conns:
            w.close()


@pytest.mark.parametrize("path, field", [
    ("/v1/accounts/%C2%B2", "id"),            # superscript two
    ("/v1/accounts/%EF%BC%91", "id"),         # fullwidth one: used to return account 1
    ("/v1/accounts/" + "9" * 5000, "id"),     # past int()'s 4,300-digit limit: used to be a 500
    ("/v1/accounts/1001?after=%D9%A1", "after"),  # Arabic-Indic one
    ("/v1/accounts/1001/transfers?limit=%C2%B2", "limit"),
    ("/v1/accounts?ids=1001,%EF%BC%91", "ids"),
])
async def test_only_ascii_digits_are_numbers(cluster, operator, path, field) -> None:
    status, headers, body = await _request(cluster, "GET", path, cluster.tokens.operator)
    assert _problem(status, headers, body, 400)["field"] == field


async def test_duplicate_keys_are_refused(cluster, operator) -> None:
    body = (b'[{"id": 901, "debit_account_id": 1002, "credit_account_id": 1001, "amount": 1, '
            b'"amount": 4000, "ledger": 1, "code": 1}]')
    status, headers, problem = await _request(cluster, "POST", "/v1/transfers", cluster.tokens.operator,
                                              url=operator.leader, data=body,
                                              headers={"Content-Type": "application/json"})
    assert _problem(status, headers, problem, 400)["field"] == "$[0].amount"
    status, _, _ = await _request(cluster, "GET", "/v1/transfers/901", cluster.tokens.operator)
    assert status == 404


async def test_405_carries_allow_and_unknown_paths_are_problems(cluster, operator) -> None:
    status, headers, body = await _request(cluster, "DELETE", "/v1/transfers", cluster.tokens.operator)
    _problem(status, headers, body, 405)
    assert headers["Allow"] == "POST" and body["field"] == "method"
    status, headers, body = await _request(cluster, "GET", "/v2/nothing", cluster.tokens.operator)
    assert _problem(status, headers, body, 404)["field"] == "path"
    assert headers.get("X-Request-Id"), headers


# ---------------------------------------------------------------------- TLS


async def test_tls_serves_https_with_the_cluster_ca(tmp_path) -> None:
    cluster = LocalCluster(write_embedded_config(tmp_path, tls=True))
    assert all(url.startswith("https://") for url in cluster.urls)
    cluster.start()
    try:
        async with cluster.client() as client:
            await client.wait_for_leader()
            reply = await client.create_accounts([{"id": 1, "ledger": 1, "code": 1}])
            assert reply["results"][0]["result"] == "ok"
            status, body = await client.get("/v1/accounts/1")
            assert status == 200 and body["id"] == 1  # applied: the executor read the log over TLS
        # Without the cluster's CA, the certificate is not trusted.
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await session.get(cluster.urls[0] + "/healthz")
        plain = cluster.urls[0].replace("https://", "http://")
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientError):
                async with session.get(plain + "/healthz") as resp:
                    await resp.read()
    finally:
        cluster.stop()
