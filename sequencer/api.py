"""The aiohttp API: submissions, reads at W, health and the log feed.

Owned here: the HTTP edge.  Handlers decode, enqueue and wait; they never
order or execute anything themselves.  Every error is an RFC 9457
`application/problem+json` body with a stable `type` (see `wire.problem`).
Called by `ordo node` (`sequencer/cli.py`), which runs one app per replica.

| method | path                          | what                                        |
|--------|-------------------------------|---------------------------------------------|
| POST   | /v1/accounts                  | create accounts (batch)                     |
| POST   | /v1/transfers                 | create transfers (batch)                    |
| GET    | /v1/accounts?ids=1,2          | several accounts at one W (snapshot)        |
| GET    | /v1/accounts/{id}             | balances at W                               |
| GET    | /v1/accounts/{id}/transfers   | postings (the hash chain) at W              |
| GET    | /v1/transfers/{id}            | a transfer and its resolution at W          |
| GET    | /v1/log?from=N                | applied epochs (msgpack), for executors     |
| GET    | /healthz                      | role, leader, members, digest, W            |
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
from aiohttp import web

from sequencer import wire
from sequencer.errors import NotLeaderError, StoreUnavailable, ValidationError
from sequencer.hlc import Timestamp
from sequencer.node import Placement, SequencerNode
from sequencer.types import Intent
from sequencer.errors import ClockOffsetError

log = logging.getLogger("ordo.api")

NODE = web.AppKey("node", SequencerNode)

#: Epochs handed to an executor per /v1/log call, and how long it may wait.
LOG_LIMIT_MAX = 256
LOG_WAIT_MS_MAX = 5_000
#: Postings returned per page of account history.
HISTORY_LIMIT_MAX = 1000


def problem_response(status: int, slug: str, title: str, detail: str, headers=None, **extra) -> web.Response:
    status, body = wire.problem(status, slug, title, detail, **extra)
    return web.Response(status=status, body=body, content_type="application/problem+json", headers=headers)


def json_response(body, status: int = 200) -> web.Response:
    return web.Response(status=status, body=msgspec.json.encode(body), content_type="application/json")


def not_leader(exc: NotLeaderError) -> web.Response:
    if exc.leader is None:
        return problem_response(
            503, "no-leader", "No leader", "an election is in progress; retry shortly",
            headers={"Retry-After": "1"}, leader=None, members=exc.members,
        )
    return problem_response(
        421, "not-leader", "Not the leader", f"send writes to {exc.leader}", leader=exc.leader, members=exc.members
    )


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(f"query parameter {name!r} must be an integer, not {raw!r}", field=name) from None
    if not low <= value <= high:
        raise ValidationError(f"query parameter {name!r} must be between {low} and {high}", field=name)
    return value


def _path_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isdigit() or not 0 < int(raw) < 2**63:
        raise ValidationError(f"id must be an integer between 1 and 2**63-1, not {raw!r}", field="id")
    return int(raw)


@web.middleware
async def errors_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except ValidationError as exc:
        return problem_response(400, "invalid-request", "Invalid request", exc.detail, field=exc.field)
    except NotLeaderError as exc:
        return not_leader(exc)
    except ClockOffsetError as exc:
        return problem_response(400, "clock-offset", "HLC too far ahead", str(exc))
    except StoreUnavailable as exc:
        return problem_response(
            503, "store-unavailable", "Store unavailable", f"{exc}; other shards still answer at the last W",
            headers={"Retry-After": "1"},
        )
    except web.HTTPException as exc:
        if exc.status >= 400:
            return problem_response(exc.status, "http", exc.reason, exc.text or exc.reason)
        raise


# ------------------------------------------------------------------ writes


# TLA+: Ordo!Ack -- answer once W covers the epoch (AckAtW).
async def _submit(request: web.Request, intents: list[Intent]) -> web.Response:
    node = request.app[NODE]
    ack = request.query.get("ack", "applied")
    if ack not in ("applied", "committed"):
        raise ValidationError("ack must be 'applied' or 'committed'", field="ack")
    try:
        submission = node.submit(intents)
    except asyncio.QueueFull:
        return problem_response(
            429, "overloaded", "Sequencer queue full", "too many batches are waiting; retry after the delay",
            headers={"Retry-After": "1"},
        )
    timeout_s = node.config.sequencer.ack_timeout_ms / 1000
    try:
        placement: Placement = await asyncio.wait_for(asyncio.shield(submission.done), timeout_s)
        if ack == "committed":
            return _committed(node, placement, intents)
        await asyncio.wait_for(node.watermark.wait_for(placement.epoch), timeout_s)
        results = await node.results.get(placement.epoch)
    except asyncio.TimeoutError:
        return problem_response(
            504, "ack-timeout", "Not acknowledged in time",
            "the batch may still be applied; resubmit it with the same ids to learn its outcome",
            headers={"Retry-After": "1"},
        )
    out = []
    for offset, intent in enumerate(intents):
        code = results.get(placement.start + offset)
        if code is None:
            raise RuntimeError(f"epoch {placement.epoch} has no result for index {placement.start + offset}")
        out.append(wire.EventResultOut(offset, intent.id, code))
    body = wire.SubmitResponse("applied", placement.epoch, placement.stamps[-1], node.watermark.value, out)
    return json_response(body)


def _committed(node: SequencerNode, placement: Placement, intents: list[Intent]) -> web.Response:
    out = [wire.EventResultOut(i, x.id, "committed") for i, x in enumerate(intents)]
    return json_response(wire.SubmitResponse("committed", placement.epoch, placement.stamps[-1], node.watermark.value, out))


async def post_accounts(request: web.Request) -> web.Response:
    node = request.app[NODE]
    node.require_leader()
    intents = wire.decode_accounts(await request.read())
    for i, account in enumerate(intents):
        reason = node.config.directory.admit_account(account.id, account.ledger)
        if reason is not None:
            raise ValidationError(f"accounts[{i}]: {reason}", field=f"$[{i}].id")
    return await _submit(request, intents)


# TLA+: Ordo!Submit -- a client's batch enters the leader's queue.
async def post_transfers(request: web.Request) -> web.Response:
    request.app[NODE].require_leader()
    return await _submit(request, wire.decode_transfers(await request.read()))


# ------------------------------------------------------------------- reads


async def _read_epoch(request: web.Request) -> int:
    """W for this read; with `after=HLC`, wait until W's HLC reaches it (read your writes)."""
    node = request.app[NODE]
    after = request.query.get("after")
    w = await node.watermark.refresh()
    if after is None:
        return w
    if not after.isdigit():
        raise ValidationError("after must be an HLC timestamp as returned by a write", field="after")
    wanted = int(after)
    node.hlc.check_remote(Timestamp.unpack(wanted))
    deadline = asyncio.get_running_loop().time() + node.config.sequencer.ack_timeout_ms / 1000
    while True:
        entry = node.journal.get(w) if w else None
        if entry is not None and entry.hlc_last >= wanted:
            return w
        if asyncio.get_running_loop().time() > deadline:
            raise web.HTTPGatewayTimeout(text=f"W={w} has not reached HLC {wanted} in time")
        await asyncio.sleep(0.005)
        w = await node.watermark.refresh()


def _snapshot(node: SequencerNode, w: int) -> dict:
    entry = node.journal.get(w) if w else None
    return {"watermark": w, "hlc": entry.hlc_last if entry else 0}


async def get_account(request: web.Request) -> web.Response:
    node = request.app[NODE]
    account_id = _path_id(request)
    w = await _read_epoch(request)
    shard = node.config.directory.account_shard(account_id)
    found = await node.shards[shard].load_accounts([account_id], w) if shard else {}
    account = found.get(account_id)
    if account is None:
        return problem_response(404, "account-not-found", "Account not found", f"no account {account_id} at W={w}")
    return json_response({**_account_json(account, node), **_snapshot(node, w)})


#: Accounts one snapshot read may ask for.
SNAPSHOT_IDS_MAX = 128


async def get_accounts(request: web.Request) -> web.Response:
    """Several accounts at ONE W: how a reader sees both legs of a trade together."""
    node = request.app[NODE]
    raw = request.query.get("ids", "")
    parts = [p for p in raw.split(",") if p]
    if not parts or len(parts) > SNAPSHOT_IDS_MAX or not all(p.isdigit() and 0 < int(p) < 2**63 for p in parts):
        raise ValidationError(f"ids must be 1 to {SNAPSHOT_IDS_MAX} comma-separated account ids", field="ids")
    w = await _read_epoch(request)
    by_shard: dict[str, list[int]] = {}
    for account_id in map(int, parts):
        shard = node.config.directory.account_shard(account_id)
        if shard is not None:
            by_shard.setdefault(shard, []).append(account_id)
    found = {}
    for shard, ids in by_shard.items():
        found.update(await node.shards[shard].load_accounts(ids, w))
    accounts = [_account_json(found[i], node) for i in map(int, parts) if i in found]
    return json_response({"accounts": accounts, **_snapshot(node, w)})


def _account_json(account, node: SequencerNode) -> dict:
    body = msgspec.structs.asdict(account)
    body["flags"] = wire.flag_names(account.flags, wire.AccountFlags)
    body["head_hash"] = account.head_hash.hex()
    body["shard"] = node.config.directory.account_shard(account.id)
    return body


async def get_account_transfers(request: web.Request) -> web.Response:
    node = request.app[NODE]
    account_id = _path_id(request)
    after_seq = _int_param(request, "after_seq", 0, 0, 2**63 - 1)
    limit = _int_param(request, "limit", 100, 1, HISTORY_LIMIT_MAX)
    w = await _read_epoch(request)
    shard = node.config.directory.account_shard(account_id)
    if shard is None:
        return problem_response(404, "account-not-found", "Account not found", f"no account {account_id}")
    postings = await node.shards[shard].read_postings(account_id, w, after_seq, limit)
    rows = []
    for p in postings:
        row = msgspec.structs.asdict(p)
        row["prev_hash"], row["hash"] = p.prev_hash.hex(), p.hash.hex()
        rows.append(row)
    return json_response({"account_id": account_id, "postings": rows, **_snapshot(node, w)})


async def get_transfer(request: web.Request) -> web.Response:
    node = request.app[NODE]
    transfer_id = _path_id(request)
    w = await _read_epoch(request)
    shard = node.shards[node.config.directory.transfer_shard(transfer_id)]
    record = (await shard.load_transfers([transfer_id], w)).get(transfer_id)
    if record is None:
        return problem_response(404, "transfer-not-found", "Transfer not found", f"no transfer {transfer_id} at W={w}")
    resolution = (await shard.load_resolutions([transfer_id], w)).get(transfer_id)
    body = {
        **wire.transfer_json(record.transfer),
        "result": record.result,
        "epoch": record.epoch,
        "hlc": record.hlc,
        "expires_at_ms": record.expires_at_ms,
        "resolution": msgspec.structs.asdict(resolution) if resolution else None,
    }
    return json_response({**body, **_snapshot(node, w)})


async def get_log(request: web.Request) -> web.Response:
    node = request.app[NODE]
    first = _int_param(request, "from", 1, 1, 2**62)
    limit = _int_param(request, "limit", 64, 1, LOG_LIMIT_MAX)
    wait_ms = _int_param(request, "wait_ms", 0, 0, LOG_WAIT_MS_MAX)
    entries = await node.read_log(first, limit, wait_ms)
    return web.Response(body=msgspec.msgpack.encode(entries), content_type="application/msgpack")


async def healthz(request: web.Request) -> web.Response:
    node = request.app[NODE]
    status = node.log.status()
    body = {
        "status": "ok",
        "node": node.spec.id,
        "is_leader": status["is_leader"],
        "leader": node.leader_url(),
        "members": node.members(),
        "term": status["term"],
        "last_epoch": status["last_epoch"],
        "digest": status["digest"],
        "watermark": node.watermark.value,
        "store_error": node.watermark.store_error,
        "queue_depth": node.queue.qsize(),
    }
    return json_response(body)


def make_app(node: SequencerNode) -> web.Application:
    app = web.Application(middlewares=[errors_middleware], client_max_size=wire.BODY_BYTES_MAX)
    app[NODE] = node
    app.router.add_post("/v1/accounts", post_accounts)
    app.router.add_post("/v1/transfers", post_transfers)
    app.router.add_get("/v1/accounts", get_accounts)
    app.router.add_get("/v1/accounts/{id}", get_account)
    app.router.add_get("/v1/accounts/{id}/transfers", get_account_transfers)
    app.router.add_get("/v1/transfers/{id}", get_transfer)
    app.router.add_get("/v1/log", get_log)
    app.router.add_get("/healthz", healthz)
    return app
