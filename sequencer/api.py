"""The aiohttp API: submissions, reads at W, health and the log feed.

Role: driver (the HTTP edge of a replica, in front of `SequencerCore` through `node.py`).

Owned here: the HTTP edge.  Handlers decode, enqueue and wait; they never
order or execute anything themselves.  Every error is an RFC 9457
`application/problem+json` body with a stable `type` (see `wire.problem`)
and a `field` naming what to fix; no handler ever answers a bare 500.
Called by `ordo node` (`sequencer/tools/cli.py`), which runs one app per replica
behind `sequencer/edge.py`'s connection limits.

Every request but `/healthz` carries `Authorization: Bearer <API key>`; the
middleware authenticates it (401), applies the key's rate limit (429) and,
for writes, insists on a plain `application/json` body (415) before any
handler runs.  Handlers then check the key's scope (403) with the pure rules
of `sequencer/security.py`.  Nothing is queued for a refused request.

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
import secrets
import time

import msgspec
from aiohttp import web

from sequencer import limits, wire
from sequencer.errors import (
    BodyTimeout,
    ClockOffsetError,
    Forbidden,
    NotLeaderError,
    Overloaded,
    RateLimited,
    StoreUnavailable,
    TooLarge,
    Unauthenticated,
    UnsupportedMedia,
    ValidationError,
)
from sequencer.hlc import Timestamp
from sequencer.node import Placement, SequencerNode, mono_ms, not_ready_reasons
from sequencer.security import (
    ApiKey,
    RateLimiter,
    Scope,
    check_may_read_account,
    check_may_see_ledger,
    check_may_submit_transfers,
    require_scope,
    retry_after_header,
)
from sequencer.types import Intent

log = logging.getLogger("ordo.api")

NODE = web.AppKey("node", SequencerNode)
LIMITER = web.AppKey("limiter", RateLimiter)
KEY = web.RequestKey("key", ApiKey)  # the authenticated API key
REQUEST_ID = web.RequestKey("request_id", str)

#: Paths anyone may call: liveness probes carry no credentials.  /healthz
#: shows the role, the leader, the term, W and the log digest, and nothing
#: about any account.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})


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


def parse_int(raw: str, name: str, low: int, high: int, what: str = "query parameter") -> int:
    """An integer from a path or query: ASCII digits only, length-checked before int()."""
    if not (0 < len(raw) <= limits.INT_DIGITS_MAX and raw.isascii() and raw.isdigit()):
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise ValidationError(f"{what} {name!r} must be a decimal integer (ASCII digits) between {low} and "
                              f"{high}, not {shown!r}", field=name)
    value = int(raw)
    if not low <= value <= high:
        raise ValidationError(f"{what} {name!r} must be between {low} and {high}, not {value}", field=name)
    return value


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    return default if raw is None else parse_int(raw, name, low, high)


def _path_id(request: web.Request) -> int:
    return parse_int(request.match_info["id"], "id", 1, 2**63 - 1, what="path id")


async def read_body(request: web.Request) -> bytes:
    """The whole body, within the body deadline and size limit."""
    timeout_ms = request.app[NODE].config.http.body_read_timeout_ms
    try:
        return await asyncio.wait_for(request.read(), timeout_ms / 1000)
    except asyncio.TimeoutError:
        raise BodyTimeout(f"the request body did not arrive within {timeout_ms} ms", field="body") from None
    except web.HTTPRequestEntityTooLarge:
        raise TooLarge(f"the request body exceeds {limits.BODY_BYTES_MAX} bytes; send at most "
                       f"{limits.BATCH_EVENTS_MAX} events per request", field="body") from None


# ------------------------------------------------------------- middleware


@web.middleware
async def edge_middleware(request: web.Request, handler):
    """Request id, authentication, media checks and rate limit; every error as problem+json."""
    request_id = secrets.token_hex(8)
    request[REQUEST_ID] = request_id
    try:
        response = await _guarded(request, handler)
        if response.status >= 500:  # expected outages (no leader, a store down, an ack timeout): one line each
            log.warning("request %s %s %s answered %d", request_id, request.method, request.path, response.status)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the catch-all: a bug answers problem+json, logged once with its id
        log.exception("request %s %s %s failed", request_id, request.method, request.path)
        response = problem_response(
            500, "internal", "Internal error",
            f"the node failed on this request (request id {request_id}); a write may or may not have been "
            f"applied: resubmit it with the same ids to learn its outcome ({type(exc).__name__})",
            request_id=request_id,
        )
    response.headers["X-Request-Id"] = request_id
    return response


async def _guarded(request: web.Request, handler) -> web.StreamResponse:
    try:
        if request.path not in PUBLIC_PATHS:
            key = request.app[NODE].keys.authenticate(request.headers.get("Authorization"))
            request[KEY] = key
            if request.method == "POST":
                _check_body_headers(request)
            _charge(request, key, 1)
        return await handler(request)
    except ValidationError as exc:
        return problem_response(400, "invalid-request", "Invalid request", exc.detail, field=exc.field)
    except Unauthenticated as exc:
        return problem_response(401, "unauthenticated", "Authentication required", exc.detail, field=exc.field,
                                headers={"WWW-Authenticate": 'Bearer realm="ordo"'})
    except Forbidden as exc:
        return problem_response(403, "forbidden", "Outside this key's scope", exc.detail, field=exc.field)
    except TooLarge as exc:
        return problem_response(413, "too-large", "Request too large", exc.detail, field=exc.field or "body")
    except UnsupportedMedia as exc:
        return problem_response(415, "unsupported-media-type", "Unsupported media type", exc.detail, field=exc.field)
    except BodyTimeout as exc:
        response = problem_response(408, "body-timeout", "Request body too slow", exc.detail, field=exc.field)
        response.force_close()
        return response
    except RateLimited as exc:
        return problem_response(429, "rate-limited", "Rate limit reached", str(exc),
                                headers={"Retry-After": retry_after_header(exc.retry_after_s)})
    except NotLeaderError as exc:
        return not_leader(exc)
    except ClockOffsetError as exc:
        return problem_response(400, "clock-offset", "HLC too far ahead", str(exc), field="after")
    except StoreUnavailable as exc:
        return problem_response(
            503, "store-unavailable", "Store unavailable", f"{exc}; other shards still answer at the last W",
            headers={"Retry-After": "1"},
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_problem(request, exc)


def _http_problem(request: web.Request, exc: web.HTTPException) -> web.Response:
    headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
    if exc.status == 404:
        return problem_response(404, "not-found", "Not found", f"no such path {request.path!r}; see the API table "
                                "in the README", field="path")
    if exc.status == 405:
        return problem_response(405, "method-not-allowed", "Method not allowed",
                                f"{request.method} is not allowed on {request.path}; use {headers.get('Allow', '')}",
                                headers=headers, field="method")
    return problem_response(exc.status, "http", exc.reason, exc.text or exc.reason, headers=headers or None)


def _check_body_headers(request: web.Request) -> None:
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding != "identity":
        raise UnsupportedMedia(f"request bodies must not be compressed (Content-Encoding: {encoding}); "
                               f"send plain JSON", field="Content-Encoding")
    if request.content_type != "application/json":
        raise UnsupportedMedia(f"writes take Content-Type: application/json, not {request.content_type!r}",
                               field="Content-Type")
    charset = request.charset
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise UnsupportedMedia(f"JSON bodies are UTF-8, not {charset!r}", field="Content-Type")
    if request.content_length is not None and request.content_length > limits.BODY_BYTES_MAX:
        raise TooLarge(f"the request body is {request.content_length} bytes; the limit is {limits.BODY_BYTES_MAX}",
                       field="body")


def _charge(request: web.Request, key: ApiKey, cost: int) -> None:
    wait_s = request.app[LIMITER].take(key, cost, time.monotonic())
    if wait_s is not None:
        raise RateLimited(f"API key {key.id} is over its rate of {key.rate()[0]:g} events/s; "
                          f"retry after the delay", wait_s)


# ------------------------------------------------------------------ writes


# TLA+: Ordo!Ack -- answer once W covers the epoch (AckAtW).
async def _submit(request: web.Request, intents: list[Intent]) -> web.Response:
    node = request.app[NODE]
    ack = request.query.get("ack", "applied")
    if ack not in ("applied", "committed"):
        raise ValidationError("ack must be 'applied' or 'committed'", field="ack")
    if len(intents) > 1:
        _charge(request, request[KEY], len(intents) - 1)  # the middleware charged the first event
    try:
        placed = node.submit(intents)
    except Overloaded as exc:
        return problem_response(429, "overloaded", "Sequencer queue full", str(exc), headers={"Retry-After": "1"})
    timeout_s = node.config.sequencer.ack_timeout_ms / 1000
    try:
        placement: Placement = await asyncio.wait_for(asyncio.shield(placed), timeout_s)
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
    require_scope(request[KEY], Scope.OPERATOR, what="creating accounts")
    node.require_leader()
    intents = wire.decode_accounts(await read_body(request))
    for i, account in enumerate(intents):
        reason = node.config.directory.admit_account(account.id, account.ledger)
        if reason is not None:
            raise ValidationError(f"accounts[{i}]: {reason}", field=f"$[{i}].id")
    return await _submit(request, intents)


# TLA+: Ordo!Submit -- a client's batch enters the leader's queue.
async def post_transfers(request: web.Request) -> web.Response:
    key = request[KEY]
    require_scope(key, Scope.OPERATOR, Scope.CLIENT, what="submitting transfers")
    request.app[NODE].require_leader()
    intents = wire.decode_transfers(await read_body(request))
    check_may_submit_transfers(key, intents)
    return await _submit(request, intents)


# ------------------------------------------------------------------- reads


async def _read_epoch(request: web.Request) -> int:
    """W for this read; with `after=HLC`, wait until W's HLC reaches it (read your writes)."""
    node = request.app[NODE]
    after = request.query.get("after")
    w = await node.watermark.refresh()
    if after is None:
        return w
    wanted = parse_int(after, "after", 0, 2**64 - 1)
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


async def _load_account(request: web.Request, account_id: int, w: int):
    """The account at W, after the key's scope checks (403), or None."""
    node, key = request.app[NODE], request[KEY]
    check_may_read_account(key, account_id)
    shard = node.config.directory.account_shard(account_id)
    found = await node.shards[shard].load_accounts([account_id], w) if shard else {}
    account = found.get(account_id)
    if account is not None:
        check_may_see_ledger(key, account_id, account.ledger)
    return account


async def get_account(request: web.Request) -> web.Response:
    node = request.app[NODE]
    account_id = _path_id(request)
    check_may_read_account(request[KEY], account_id)
    w = await _read_epoch(request)
    account = await _load_account(request, account_id, w)
    if account is None:
        return problem_response(404, "account-not-found", "Account not found", f"no account {account_id} at W={w}",
                                field="id")
    return json_response({**_account_json(account, node), **_snapshot(node, w)})


async def get_accounts(request: web.Request) -> web.Response:
    """Several accounts at ONE W: how a reader sees both legs of a trade together."""
    node = request.app[NODE]
    key = request[KEY]
    raw = request.query.get("ids", "")
    parts = [p for p in raw.split(",") if p]
    if not parts or len(parts) > limits.SNAPSHOT_IDS_MAX:
        raise ValidationError(f"ids must be 1 to {limits.SNAPSHOT_IDS_MAX} comma-separated account ids", field="ids")
    ids = [parse_int(p, "ids", 1, 2**63 - 1) for p in parts]
    for account_id in ids:
        check_may_read_account(key, account_id, field_name="ids")
    w = await _read_epoch(request)
    by_shard: dict[str, list[int]] = {}
    for account_id in ids:
        shard = node.config.directory.account_shard(account_id)
        if shard is not None:
            by_shard.setdefault(shard, []).append(account_id)
    found = {}
    for shard, shard_ids in by_shard.items():
        found.update(await node.shards[shard].load_accounts(shard_ids, w))
    for account_id, account in found.items():
        check_may_see_ledger(key, account_id, account.ledger, field_name="ids")
    accounts = [_account_json(found[i], node) for i in ids if i in found]
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
    limit = _int_param(request, "limit", 100, 1, limits.HISTORY_LIMIT_MAX)
    check_may_read_account(request[KEY], account_id)
    w = await _read_epoch(request)
    if await _load_account(request, account_id, w) is None:
        return problem_response(404, "account-not-found", "Account not found", f"no account {account_id} at W={w}",
                                field="id")
    shard = node.config.directory.account_shard(account_id)
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
    if record is None or not _may_see_transfer(request[KEY], record.transfer):
        return problem_response(404, "transfer-not-found", "Transfer not found", f"no transfer {transfer_id} at W={w}",
                                field="id")
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


def _may_see_transfer(key: ApiKey, transfer) -> bool:
    """A client key sees a transfer that touches one of its accounts on one of its
    ledgers; any other transfer is 'not found' to it, so ids reveal nothing."""
    if key.scope is Scope.OPERATOR:
        return True
    if key.scope is not Scope.CLIENT:
        return False
    ledger_ok = transfer.ledger == 0 or key.covers_ledger(transfer.ledger)
    return ledger_ok and (key.covers_account(transfer.debit_account_id) or key.covers_account(transfer.credit_account_id))


async def get_log(request: web.Request) -> web.Response:
    require_scope(request[KEY], Scope.REPLICA, what="reading the log")
    node = request.app[NODE]
    first = _int_param(request, "from", 1, 1, 2**62)
    limit = _int_param(request, "limit", 64, 1, limits.LOG_LIMIT_MAX)
    wait_ms = _int_param(request, "wait_ms", 0, 0, limits.LOG_WAIT_MS_MAX)
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
        "queue_depth": node.core.queue_depth,
    }
    return json_response(body)


async def readyz(request: web.Request) -> web.Response:
    """Readiness, apart from liveness (`/healthz`): 503 with the reasons while this node should not take traffic."""
    node = request.app[NODE]
    status = node.log.status()
    w = node.watermark.value
    reasons = not_ready_reasons(node.leader_url(), node.watermark.store_error, status["last_epoch"], w,
                                max(0, mono_ms() - node.watermark.advanced_at_ms))
    if reasons:
        return problem_response(503, "not-ready", "Not ready", "; ".join(reasons), headers={"Retry-After": "1"},
                                reasons=reasons, field="readiness")
    return json_response({"status": "ready", "node": node.spec.id, "watermark": w, "last_epoch": status["last_epoch"]})


def make_app(node: SequencerNode) -> web.Application:
    app = web.Application(middlewares=[edge_middleware], client_max_size=limits.BODY_BYTES_MAX)
    app[NODE] = node
    app[LIMITER] = RateLimiter()
    app.router.add_post("/v1/accounts", post_accounts)
    app.router.add_post("/v1/transfers", post_transfers)
    app.router.add_get("/v1/accounts", get_accounts)
    app.router.add_get("/v1/accounts/{id}", get_account)
    app.router.add_get("/v1/accounts/{id}/transfers", get_account_transfers)
    app.router.add_get("/v1/transfers/{id}", get_transfer)
    app.router.add_get("/v1/log", get_log)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
