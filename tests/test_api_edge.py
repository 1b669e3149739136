"""The API middleware in-process: the catch-all answers problem+json with a request id, logged once."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sequencer.api import LIMITER, NODE, edge_middleware
from sequencer.security import KeyRing, RateLimiter, Scope, new_key


async def test_an_unexpected_error_is_a_problem_with_a_request_id(caplog) -> None:
    token, key = new_key(Scope.OPERATOR)

    async def broken(request: web.Request) -> web.Response:
        raise KeyError("a bug")

    app = web.Application(middlewares=[edge_middleware])
    app[NODE] = SimpleNamespace(keys=KeyRing([key]))
    app[LIMITER] = RateLimiter()
    app.router.add_get("/v1/broken", broken)
    async with TestClient(TestServer(app)) as client:
        with caplog.at_level(logging.ERROR, logger="ordo.api"):
            resp = await client.get("/v1/broken", headers={"Authorization": f"Bearer {token}"})
            body = await resp.json(content_type=None)
    assert resp.status == 500
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert body["type"].endswith("/internal") and body["request_id"] == resp.headers["X-Request-Id"]
    assert "resubmit it with the same ids" in body["detail"]
    logged = [r for r in caplog.records if body["request_id"] in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None  # once, with its traceback
