"""The ordo client: submissions with self-healing routing and retries.

Role: driver (the client side of the HTTP API).

Owned here: how a caller finds the leader and survives its loss.  It keeps
a cache of the leader and the membership; a routing error (421) carries both
(seed 000's self-healing routing), so the client updates its cache and
retries there.  Connection failures, elections (503), overload (429) and ack
timeouts (504) are retried with tenacity, always with the *same* ids, so a
retry can never apply a transfer twice: it returns `exists` or the original
result instead.  Used by `ordo demo`, `ordo bench` and the tests.
"""

from __future__ import annotations

import asyncio
import random
import ssl as _ssl
import time
from dataclasses import dataclass, field

import aiohttp
import msgspec
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential_jitter

from sequencer.limits import SUBMIT_DEADLINE_S


class Retryable(Exception):
    """A transient failure: retry the same batch, maybe elsewhere."""


class RequestRejected(Exception):
    """The server refused the batch (4xx): retrying the same bytes cannot help."""

    def __init__(self, status: int, problem: dict) -> None:
        super().__init__(f"{status} {problem.get('title')}: {problem.get('detail')}")
        self.status = status
        self.problem = problem


@dataclass
class ClientStats:
    retries: int = 0
    redirects: int = 0
    connection_errors: int = 0
    leaders_seen: list[str] = field(default_factory=list)


class OrdoClient:
    def __init__(
        self,
        urls: list[str],
        seed: int = 0,
        request_timeout_s: float = 35.0,
        token: str | None = None,
        ssl: _ssl.SSLContext | None = None,
    ) -> None:
        """`token` is the API key sent as `Authorization: Bearer`; `ssl` the
        trust for https members (None: the system's CA store)."""
        self.members = list(urls)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._ssl = ssl
        self.leader: str | None = None
        self.stats = ClientStats()
        self._rng = random.Random(seed)
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> OrdoClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=256, ssl=self._ssl if self._ssl is not None else True)
            self._session = aiohttp.ClientSession(timeout=self._timeout, connector=connector, headers=self._headers)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _target(self) -> str:
        return self.leader or self._rng.choice(self.members)

    def _learn(self, problem: dict) -> None:
        members = problem.get("members")
        if members:
            self.members = list(members)
        leader = problem.get("leader")
        if leader != self.leader and leader is not None:
            self.stats.leaders_seen.append(leader)
        self.leader = leader

    async def create_accounts(self, accounts: list[dict], ack: str = "applied") -> dict:
        return await self.submit("accounts", accounts, ack)

    async def create_transfers(self, transfers: list[dict], ack: str = "applied") -> dict:
        return await self.submit("transfers", transfers, ack)

    # TLA+: Ordo!Submit -- a retry re-sends the same ids.
    async def submit(self, kind: str, events: list[dict], ack: str = "applied") -> dict:
        body = msgspec.json.encode(events)
        async for attempt in AsyncRetrying(
            stop=stop_after_delay(SUBMIT_DEADLINE_S),
            wait=wait_exponential_jitter(multiplier=0.02, max=1.0, jitter=0.05),
            retry=retry_if_exception_type(Retryable),
            reraise=True,
        ):
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    self.stats.retries += 1
                return await self._post_once(kind, body, ack)
        raise AssertionError("unreachable")

    async def _post_once(self, kind: str, body: bytes, ack: str) -> dict:
        url = self._target()
        try:
            async with self.session.post(
                f"{url}/v1/{kind}", data=body, params={"ack": ack}, headers={"Content-Type": "application/json"}
            ) as resp:
                payload = await resp.read()
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            self.stats.connection_errors += 1
            if url in self.members and len(self.members) > 1 and url == self.leader:
                self.leader = None
            raise Retryable(f"{url}: {exc}") from exc
        data = msgspec.json.decode(payload) if payload else {}
        if status == 200:
            if self.leader is None:
                self.leader = url
            return data
        if status in (421, 503):
            self.stats.redirects += 1
            self._learn(data)
            if status == 503 and self.leader is None:
                await asyncio.sleep(float(retry_after or 0.2))
            raise Retryable(data.get("detail", str(status)))
        if status in (429, 504):
            await asyncio.sleep(float(retry_after or 0.5))
            raise Retryable(data.get("detail", str(status)))
        raise RequestRejected(status, data)

    async def get(self, path: str, params: dict | None = None) -> tuple[int, dict]:
        """A read from any member (reads do not need the leader)."""
        last_error: Exception | None = None
        for url in [self._target(), *self.members]:
            try:
                async with self.session.get(f"{url}{path}", params=params) as resp:
                    return resp.status, msgspec.json.decode(await resp.read())
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                last_error = exc
        raise Retryable(f"no member answered {path}: {last_error}")

    async def health(self, url: str) -> dict | None:
        try:
            async with self.session.get(f"{url}/healthz", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                return msgspec.json.decode(await resp.read())
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return None

    async def wait_for_leader(self, timeout_s: float = 30.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for url in self.members:
                health = await self.health(url)
                if health and health.get("is_leader"):
                    self.leader = url
                    return url
            await asyncio.sleep(0.1)
        raise TimeoutError(f"no leader elected among {self.members} within {timeout_s} s")
