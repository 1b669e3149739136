"""The HTTP edge's transport limits: header deadline, connection cap, TLS site.

Role: driver (aiohttp's transport, under `api.py`).

Owned here: what aiohttp does not bound by itself.  aiohttp holds a
connection that trickles its headers (slowloris) until its keep-alive timer,
and accepts any number of connections.  `EdgeRequestHandler` closes a
connection whose request line and headers are not complete within
`HEADER_READ_TIMEOUT_MS` of their first byte (or of the connection opening),
and answers 503 to connections past `CONNECTIONS_MAX`.  Body deadlines are
enforced where bodies are read (`sequencer/api.py: read_body`).  Used by
`ordo node` (`sequencer/tools/cli.py`), which serves the API through `EdgeSite`.

This extends aiohttp's `RequestHandler` and reads two of its attributes
(`_request_count`, `_waiter`); `tests/test_trust_boundary.py` fails if an aiohttp
upgrade changes them.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from sequencer import limits, wire

log = logging.getLogger("ordo.edge")


class EdgeStats:
    """Connection counters shared by every handler of one site."""

    def __init__(self, connections_max: int) -> None:
        self.connections_max = connections_max
        self.open = 0
        self.refused = 0
        self.header_timeouts = 0


def _busy_response() -> bytes:
    _, body = wire.problem(503, "too-many-connections", "Too many connections",
                           "this node holds its maximum of open connections; retry shortly, or reuse a connection")
    head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n")
    return head.encode() + body


class EdgeRequestHandler(RequestHandler):
    """aiohttp's handler with a header deadline and a share of a connection cap."""

    def __init__(self, *args, edge: EdgeStats, header_timeout_s: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._edge = edge
        self._header_timeout_s = header_timeout_s
        self._header_timer: asyncio.TimerHandle | None = None
        self._counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._edge.open >= self._edge.connections_max:
            self._edge.refused += 1
            transport.write(_busy_response())
            transport.close()
            return
        self._edge.open += 1
        self._counted = True
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._counted:
            return
        self._counted = False
        self._edge.open -= 1
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._counted:
            return
        count = self._request_count
        # While start() waits for the next message, arriving bytes are a new
        # request's line and headers: they get HEADER_READ_TIMEOUT_MS.
        between_requests = self._waiter is not None
        super().data_received(data)
        if self._request_count != count:
            self._cancel_header_timer()
        elif between_requests and data and self._header_timer is None:
            self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._header_timer = self._loop.call_later(self._header_timeout_s, self._header_deadline)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_deadline(self) -> None:
        self._header_timer = None
        self._edge.header_timeouts += 1
        self.force_close()


class EdgeSite(web.TCPSite):
    """A TCPSite whose connections are `EdgeRequestHandler`s."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, *, ssl_context: ssl.SSLContext | None,
                 connections_max: int, header_timeout_ms: int) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context)
        self.edge = EdgeStats(connections_max)
        self._header_timeout_s = header_timeout_ms / 1000

    def _make_handler(self) -> EdgeRequestHandler:
        server = self._runner.server
        return EdgeRequestHandler(server, loop=server._loop, edge=self.edge,
                                  header_timeout_s=self._header_timeout_s, **server._kwargs)

    async def start(self) -> None:
        # Registers the site with its runner (BaseSite.start), then listens
        # with our handler factory instead of the runner's server.
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._make_handler, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port


def runner_options(idle_timeout_ms: int) -> dict:
    """aiohttp handler settings for the edge (limits and their reasons: `sequencer/limits.py`)."""
    return {
        "keepalive_timeout": idle_timeout_ms / 1000,
        "lingering_time": limits.LINGER_MS / 1000,
        "max_line_size": limits.HEADER_LINE_BYTES_MAX,
        "max_field_size": limits.HEADER_LINE_BYTES_MAX,
        "max_headers": limits.HEADERS_MAX,
        # Never inflate a request body: bodies with Content-Encoding are
        # refused (415), and inflating first is how a 1 MB gzip bomb became
        # seconds of CPU before any check ran.
        "auto_decompress": False,
        "access_log": None,
    }
