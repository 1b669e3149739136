"""A seeded burst of 10,000+ invalid requests against a live cluster.

Every class of bad input the API must refuse is drawn from one seed:
malformed JSON, wrong types, floats for money, overflow, oversized batches,
unknown fields and flags, duplicate keys, Unicode and huge digit strings,
wrong media types and encodings, missing, wrong and out-of-scope
credentials, unknown paths and methods, and bad query values.  It asserts:

* no 5xx, ever;
* every refusal is `application/problem+json` and names the field;
* the state is byte-identical before and after the burst: every shard's
  dump (balances, postings, transfers), `applied_epoch` and row counts, and
  every replica's last epoch and digest.

Reproduce a failure with `ORDO_SEED=<seed> pytest tests/test_fuzz_api.py`.
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import msgspec
import pytest

from proxies.factory import make_shard
from sequencer.tools.cluster import LocalCluster, write_embedded_config
from sequencer.tools.demo import wait_replicas_agree
from sequencer.security import KeyRing, Scope, new_key, write_keys_file

pytestmark = pytest.mark.cluster

SEED = int(os.environ.get("ORDO_SEED", random.randrange(1, 10**6)))
REQUESTS = 10_000
CONCURRENCY = 32
OWN, OTHER = 3001, 5002  # the client key covers 3000..3999 on ledger 1: OWN is its own, OTHER is not


@dataclass
class Req:
    kind: str
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None


def _transfer(rng: random.Random, **kw) -> dict:
    body = {"id": rng.randrange(10**6, 10**7), "debit_account_id": OWN, "credit_account_id": OTHER,
            "amount": rng.randrange(1, 100), "ledger": 1, "code": 1}
    body.update(kw)
    return body


WRONG_VALUES = ["1", "x", None, True, [], {}, [1], 1.5, -1, "１", "1e3"]
FIELDS = ["id", "debit_account_id", "credit_account_id", "amount", "ledger", "code", "pending_id", "timeout_ms",
          "user_data"]


class Generator:
    """Draws invalid requests; each class is a method returning a Req."""

    def __init__(self, rng: random.Random, tokens: dict[str, str]) -> None:
        self.rng = rng
        self.tokens = tokens
        self.classes = [getattr(self, n) for n in sorted(dir(self)) if n.startswith("bad_")]

    def draw(self) -> Req:
        return self.rng.choice(self.classes)()

    def _post(self, kind: str, body: bytes, path: str = "/v1/transfers", token: str = "operator", **headers) -> Req:
        h = {"Content-Type": "application/json", **headers}
        if token:
            h["Authorization"] = f"Bearer {self.tokens[token]}"
        return Req(kind, "POST", path, h, body)

    def _json(self, events) -> bytes:
        return msgspec.json.encode(events)

    # -- bodies ------------------------------------------------------------

    def bad_malformed_json(self) -> Req:
        full = self._json([_transfer(self.rng)])
        choice = self.rng.randrange(4)
        if choice == 0:
            body = full[: self.rng.randrange(0, len(full) - 1)]
        elif choice == 1:
            body = bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(1, 64)))
        elif choice == 2:
            body = b'[{"id": 1, "amount": \xff\xfe}]'  # not UTF-8
        else:
            body = full.replace(b":", b"=", 1)
        return self._post("malformed-json", body)

    def bad_wrong_type(self) -> Req:
        name = self.rng.choice(FIELDS)
        value = self.rng.choice(WRONG_VALUES)
        if value == -1 or value == 1.5:
            value = "wrong"  # covered by their own classes
        return self._post("wrong-type", self._json([_transfer(self.rng, **{name: value})]))

    def bad_float_money(self) -> Req:
        amount = self.rng.choice(["1.5", "1e3", "0.01", "-0.0", "100.00", "1E2"])
        body = self._json([_transfer(self.rng)]).replace(b'"amount":', b'"amount":' + amount.encode() + b",\"x\":", 1)
        # keep it JSON: {"amount":1.5,"x":<old>}; the float is refused before the unknown field
        return self._post("float-money", body)

    def bad_overflow(self) -> Req:
        name = self.rng.choice(FIELDS)
        value = self.rng.choice([2**63, 2**64, 10**30, -1, -(2**63), 2**64 + 1])
        if name == "ledger":
            value = self.rng.choice([2**32, 2**40, -1])
        if name == "code":
            value = self.rng.choice([2**16, 2**20, -1])
        if name == "timeout_ms":
            value = self.rng.choice([366 * 24 * 3600 * 1000 + 1, 2**63, -1])
        return self._post("overflow", self._json([_transfer(self.rng, **{name: value})]))

    def bad_oversized_batch(self) -> Req:
        count = self.rng.randrange(129, 400)
        return self._post("oversized-batch", self._json([_transfer(self.rng, id=i + 1) for i in range(count)]))

    def bad_body_too_large(self) -> Req:
        return self._post("body-too-large", b"[" + b" " * (130 * 1024) + b"]")

    def bad_empty_batch(self) -> Req:
        return self._post("empty-batch", self.rng.choice([b"[]", b"{}", b"null", b"1", b'"x"', b""]))

    def bad_unknown_field(self) -> Req:
        return self._post("unknown-field", self._json([_transfer(self.rng, **{self.rng.choice(["memo", "Amount",
                                                                                                "id ", ""]): 1})]))

    def bad_unknown_flag(self) -> Req:
        flag = self.rng.choice(["lnked", "LINKED", "closed", "history", "", "pending "])
        return self._post("unknown-flag", self._json([_transfer(self.rng, flags=[flag])]))

    def bad_duplicate_key(self) -> Req:
        body = self._json([_transfer(self.rng)])
        name = self.rng.choice(["amount", "debit_account_id", "id"]).encode()
        body = body.replace(b"{", b'{"' + name + b'":7,', 1)
        return self._post("duplicate-key", body)

    def bad_account_create(self) -> Req:
        account = {"id": self.rng.randrange(1, 10**6), "ledger": self.rng.choice([1.5, "1", -1, 2**32]), "code": 1}
        return self._post("bad-account", self._json([account]), path="/v1/accounts")

    # -- media and credentials ----------------------------------------------

    def bad_content_type(self) -> Req:
        ctype = self.rng.choice(["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=x",
                                 "application/json; charset=latin-1", "application/jsonx"])
        return self._post("content-type", self._json([_transfer(self.rng)]), **{"Content-Type": ctype})

    def bad_content_encoding(self) -> Req:
        enc = self.rng.choice(["gzip", "deflate", "br", "x-unknown"])
        return self._post("content-encoding", self._json([_transfer(self.rng)]), **{"Content-Encoding": enc})

    def bad_credentials(self) -> Req:
        auth = self.rng.choice([None, "", "Bearer", "Basic YTpi", "Bearer ordo_", "Bearer x" * 50,
                                f"Bearer {self.tokens['operator'][:-2]}zz", "bearer" + " " * 3])
        req = self._post("credentials", self._json([_transfer(self.rng)]), token="")
        if auth is not None:
            req.headers["Authorization"] = auth
        if self.rng.random() < 0.5:
            req.method, req.path, req.body = "GET", self.rng.choice(["/v1/accounts/3001", "/v1/log"]), None
        return req

    def bad_scope(self) -> Req:
        choice = self.rng.randrange(5)
        if choice == 0:  # debit someone else's account
            return self._post("scope", self._json([_transfer(self.rng, debit_account_id=OTHER, credit_account_id=OWN)]),
                              token="client")
        if choice == 1:  # a ledger the key does not hold
            return self._post("scope", self._json([_transfer(self.rng, ledger=2)]), token="client")
        if choice == 2:  # clients do not create accounts
            return self._post("scope", self._json([{"id": 3500, "ledger": 1, "code": 1}]), path="/v1/accounts",
                              token="client")
        if choice == 3:  # only replicas read the log
            return Req("scope", "GET", "/v1/log", {"Authorization": f"Bearer {self.tokens['operator']}"})
        return Req("scope", "GET", f"/v1/accounts/{OTHER}", {"Authorization": f"Bearer {self.tokens['client']}"})

    # -- paths, methods and queries ------------------------------------------

    def bad_path_id(self) -> Req:
        raw = self.rng.choice(["%C2%B2", "%EF%BC%91", "%D9%A1", "9" * self.rng.choice([21, 100, 5000]), "0", "-1",
                               "1.0", "0x10", "1e3", "%20", "abc", "9223372036854775808"])
        path = self.rng.choice(["/v1/accounts/{}", "/v1/transfers/{}", "/v1/accounts/{}/transfers"]).format(raw)
        return Req("path-id", "GET", path, {"Authorization": f"Bearer {self.tokens['operator']}"})

    def bad_query(self) -> Req:
        name, value = self.rng.choice([
            ("after", "abc"), ("after", "%EF%BC%91"), ("after", "9" * 30), ("limit", "0"), ("limit", "1001"),
            ("limit", "%C2%B2"), ("after_seq", "-1"), ("ids", ""), ("ids", ",".join(["1"] * 129)), ("ids", "1,x"),
        ])
        path = "/v1/accounts/3001/transfers" if name in ("limit", "after_seq") else (
            "/v1/accounts" if name == "ids" else "/v1/accounts/3001")
        return Req("query", "GET", f"{path}?{name}={value}", {"Authorization": f"Bearer {self.tokens['operator']}"})

    def bad_ack(self) -> Req:
        req = self._post("ack", self._json([_transfer(self.rng)]))
        req.path += "?ack=" + self.rng.choice(["maybe", "APPLIED", "", "%EF%BC%91"])
        return req

    def bad_method_or_path(self) -> Req:
        method, path = self.rng.choice([("DELETE", "/v1/transfers"), ("PUT", "/v1/accounts"), ("PATCH", "/v1/log"),
                                        ("GET", "/v2/x"), ("POST", "/v1/accounts/1"), ("GET", "/v1/transferz")])
        return Req("method-path", method, path, {"Authorization": f"Bearer {self.tokens['operator']}"})


async def _state(cluster: LocalCluster, client) -> dict:
    """Everything that must not change: shard dumps, applied_epoch, row counts, replicas' epochs and digests."""
    out = {}
    for name, spec in cluster.config.directory.shards.items():
        shard = make_shard(spec)
        await shard.open()
        try:
            out[name] = (await shard.applied_epoch(), msgspec.msgpack.encode(await shard.dump(2**62)))
        finally:
            await shard.close()
        with sqlite3.connect(spec.options["path"]) as conn:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
            out[f"{name} rows"] = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
    for url in cluster.urls:
        health = await client.health(url)
        out[url] = (health["last_epoch"], health["digest"])
    return out


async def test_ten_thousand_invalid_requests_change_nothing(tmp_path) -> None:
    print(f"fuzz seed={SEED} (reproduce with ORDO_SEED={SEED})")
    cluster = LocalCluster(write_embedded_config(tmp_path))
    keys_file = cluster.config.security.api_keys_file
    client_token, client_key = new_key(Scope.CLIENT, ledgers=[1], accounts=[(3000, 3999)], rate_per_s=10**6,
                                       burst=10**6)
    write_keys_file(keys_file, [*KeyRing.load(keys_file).keys.values(), client_key])
    tokens = {"operator": cluster.operator_token, "client": client_token}
    cluster.start()
    try:
        async with cluster.client(SEED) as client:
            leader = await client.wait_for_leader()
            await client.create_accounts([{"id": OWN, "ledger": 1, "code": 1}, {"id": OTHER, "ledger": 1, "code": 1}])
            await client.create_transfers([{"id": 1, "debit_account_id": OTHER, "credit_account_id": OWN,
                                            "amount": 500, "ledger": 1, "code": 1}])
            # Followers may still be applying the last epoch: start from a cluster at rest.
            await wait_replicas_agree(client, cluster.urls)
            before = await _state(cluster, client)
            failures, kinds, statuses = await _burst(leader, Generator(random.Random(SEED), tokens))
            assert not failures, (f"seed={SEED}: {len(failures)} bad answers, first ones: {failures[:5]} "
                                  f"(reproduce with ORDO_SEED={SEED})")
            assert sum(kinds.values()) >= REQUESTS
            assert len(kinds) == len(Generator(random.Random(0), tokens).classes)  # every class was drawn
            print(f"fuzz: {sum(kinds.values())} requests, classes {dict(kinds)}, statuses {dict(statuses)}")
            cluster.check_alive()
            after = await _state(cluster, client)
            changed = [k for k in before if before[k] != after[k]]
            assert not changed, f"seed={SEED}: the invalid burst changed {changed}"
    finally:
        cluster.stop()


async def _burst(leader: str, gen: Generator) -> tuple[list[str], Counter, Counter]:
    failures: list[str] = []
    kinds: Counter = Counter()
    statuses: Counter = Counter()
    requests = [gen.draw() for _ in range(REQUESTS)]
    queue: asyncio.Queue[Req] = asyncio.Queue()
    for req in requests:
        queue.put_nowait(req)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector, skip_auto_headers=["Content-Type"]) as session:

        async def worker() -> None:
            while not queue.empty():
                req = queue.get_nowait()
                kinds[req.kind] += 1
                async with session.request(req.method, leader + req.path, headers=req.headers, data=req.body,
                                           allow_redirects=False) as resp:
                    raw = await resp.read()
                    statuses[resp.status] += 1
                    why = _judge(resp.status, resp.content_type, raw)
                    if why:
                        failures.append(f"{req.kind} {req.method} {req.path[:80]} -> {resp.status}: {why}")

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return failures, kinds, statuses


def _judge(status: int, content_type: str, raw: bytes) -> str | None:
    """Why an answer to an invalid request is wrong, or None."""
    if status >= 500:
        return f"a 5xx: {raw[:200]!r}"
    if status < 400:
        return f"an invalid request was accepted: {raw[:200]!r}"
    if content_type != "application/problem+json":
        return f"not problem+json but {content_type}"
    problem = msgspec.json.decode(raw)
    if problem.get("status") != status or not problem.get("type", "").startswith("https://ordo.dev/problems/"):
        return f"a malformed problem: {problem}"
    if not problem.get("field"):
        return f"the problem names no field: {problem}"
    return None
