"""The executor runner: the driver of `ExecutorCore` (executor/core.py).

Role: driver of `ExecutorCore`.

Owned here: the I/O loop around the pure core (seed 000's preloader and
pusher).  It fetches epochs from any replica's `/v1/log`,
checks their digest chain and dependency graph, preloads the state they
touch (singleflight: one load per key however many epochs want it),
executes, and hands each shard its batch.  One pusher task per shard applies
batches in order, coalescing a backlog into one atomic apply (group commit)
and retrying with backoff while the store is down.  Started by `ordo executor`.

Exactly once: a shard's `applied_epoch` is written in the same transaction
as the epoch's effects.  On start, `recover` resumes from the smallest
`applied_epoch`; shards already past an epoch skip it, so after a kill -9 at
any point no epoch is skipped or applied twice.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import msgspec
from tenacity import AsyncRetrying, retry_if_not_exception_type, wait_exponential_jitter

from executor.core import ExecutorCore, LoadRequest
from executor.state_machine import check_epoch
from proxies.base import ShardProxy
from proxies.directory import Directory
from proxies.factory import make_shard
from sequencer.epochs import verify_groups
from sequencer.errors import ConfigError, InvariantViolation
from sequencer.limits import COALESCE_EPOCHS_MAX, FETCH_EPOCHS_MAX, FETCH_WAIT_MS, PUSH_QUEUE_EPOCHS_MAX
from sequencer.types import (
    AppliedEpoch,
    Epoch,
    ShardBatch,
    decode_epoch,
    fold_log_digest,
    log_genesis_digest,
)

log = logging.getLogger("ordo.executor")


@dataclass(frozen=True)
class FaultPlan:
    """Test-only fault point: SIGKILL ourselves between two shards' writes.

    `ORDO_FAULT=crash_between:<shard>:<epoch>` makes every other shard wait
    for `<shard>` to apply `<epoch>`, then kills the process, so `<shard>`
    holds the epoch and the others do not.
    """

    shard: str
    epoch: int

    @classmethod
    def from_env(cls) -> FaultPlan | None:
        spec = os.environ.get("ORDO_FAULT")
        if not spec:
            return None
        kind, shard, epoch = spec.split(":")
        if kind != "crash_between":
            raise ValueError(f"unknown fault {kind!r}")
        return cls(shard, int(epoch))


class Singleflight:
    """Load each key once, however many epochs ask for it at the same time.

    Keys not yet in flight are loaded in one batched call; callers wanting a
    key already in flight wait for that load instead of issuing another.
    """

    def __init__(self) -> None:
        self._inflight: dict[tuple[str, int], asyncio.Future] = {}

    async def load(self, what: str, ids: list[int], fetch: Callable[[list[int]], "asyncio.Future"]) -> None:
        waits = {self._inflight[(what, k)] for k in ids if (what, k) in self._inflight}
        new = [k for k in ids if (what, k) not in self._inflight]
        if new:
            future = asyncio.get_running_loop().create_future()
            for key in new:
                self._inflight[(what, key)] = future
            try:
                await fetch(new)
                future.set_result(None)
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()  # mark retrieved: the caller re-raises it
                raise
            finally:
                for key in new:
                    self._inflight.pop((what, key), None)
        if waits:
            await asyncio.gather(*waits)


@dataclass(frozen=True)
class FeedAccess:
    """What the executor needs to read the log: the log key, its replica-scope token, TLS trust."""

    log_key: bytes
    token: str
    ssl: ssl.SSLContext | None = None


class LogFeed:
    """Committed epochs from any replica, with the keyed digest chain checked.

    An epoch whose digest does not extend the chain (forged, corrupted, or
    from a replica with another key) is refused: it is logged, the replica
    that served it is skipped, and the same epoch is asked of the next one.
    The executor never skips an epoch, so a cluster with no honest replica
    stalls instead of applying a forged one.
    """

    def __init__(self, urls: list[str], access: FeedAccess) -> None:
        self.urls = urls
        self.access = access
        self._next_url = 0
        self.session: aiohttp.ClientSession | None = None
        self.digest: str | None = None
        self.refused = 0

    async def fetch(self, first: int) -> list[AppliedEpoch]:
        if self.session is None:
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=FETCH_WAIT_MS / 1000 + 5),
                headers={"Authorization": f"Bearer {self.access.token}"},
                connector=aiohttp.TCPConnector(ssl=self.access.ssl if self.access.ssl is not None else True),
            )
        url = self.urls[self._next_url % len(self.urls)]
        params = {"from": first, "limit": FETCH_EPOCHS_MAX, "wait_ms": FETCH_WAIT_MS}
        try:
            async with self.session.get(f"{url}/v1/log", params=params) as resp:
                if resp.status in (401, 403):
                    raise ConfigError(f"{url} refused the executor's API key ({resp.status}: "
                                      f"{(await resp.text())[:200]}); check [security] executor_key_file")
                resp.raise_for_status()
                entries = msgspec.msgpack.decode(await resp.read(), type=list[AppliedEpoch])
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, msgspec.DecodeError) as exc:
            log.warning("log feed %s failed (%s); trying the next replica", url, exc)
            self._next_url += 1
            await asyncio.sleep(0.1)
            return []
        if not entries:
            self._next_url += 1  # a lagging or isolated replica: ask another next time
        return entries

    def _refuse(self, entry: AppliedEpoch, why: str) -> None:
        self.refused += 1
        url = self.urls[self._next_url % len(self.urls)]
        log.error("refused epoch %d from %s: %s; asking the next replica", entry.number, url, why)
        self._next_url += 1

    async def seed_digest(self, base: int) -> None:
        """Learn the digest of epoch `base`, to chain-check everything after it.

        The digest is authenticated by checking one link: the entry for
        `base` must fold from its predecessor's digest under the log key, and
        must hold epoch number `base`, so a forged or replayed entry cannot
        seed the chain.
        """
        genesis = log_genesis_digest(self.access.log_key)
        if base == 0:
            self.digest = genesis
            return
        first = base - 1 if base > 1 else base
        for _ in range(50):
            entries = await self.fetch(first)
            if base > 1 and len(entries) >= 2 and entries[0].number == base - 1:
                previous, entry = entries[0].digest, entries[1]
            elif base == 1 and entries:
                previous, entry = genesis, entries[0]
            else:
                continue
            if entry.number == base and self._extends(previous, entry) and self._holds_its_number(entry):
                self.digest = entry.digest
                return
            self._refuse(entry, "its digest does not extend the chain under this cluster's log key")
        raise InvariantViolation(f"no replica serves an authentic epoch {base}, where the shards stopped")

    def _extends(self, previous: str, entry: AppliedEpoch) -> bool:
        return fold_log_digest(self.access.log_key, previous, entry.data) == entry.digest

    @staticmethod
    def _holds_its_number(entry: AppliedEpoch) -> bool:
        """A real link replayed at another position carries its own number inside.

        Checked when seeding the chain, where the previous digest is not yet
        authentic; once seeded, `_extends` alone ties each entry to its place
        (and the runner decodes and checks the number again before executing).
        """
        try:
            return decode_epoch(entry.data).number == entry.number
        except (msgspec.DecodeError, msgspec.ValidationError):
            return False

    def accept(self, entries: list[AppliedEpoch], next_epoch: int) -> list[AppliedEpoch]:
        """The leading run of `entries` from `next_epoch` that extends the chain; the rest is refused."""
        out = []
        for entry in entries:
            if entry.number < next_epoch + len(out):
                continue  # already consumed
            if entry.number != next_epoch + len(out):
                self._refuse(entry, f"expected epoch {next_epoch + len(out)}")
                break
            if not self._extends(self.digest, entry):
                self._refuse(entry, "its digest does not extend the chain (forged, corrupted, or another key)")
                break
            self.digest = entry.digest
            out.append(entry)
        return out

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


@dataclass
class StageTimes:
    """Seconds spent per stage since start, logged every `REPORT_S` (where the time goes)."""

    preload_s: float = 0.0
    execute_s: float = 0.0
    apply_s: dict[str, float] = field(default_factory=dict)
    applies: dict[str, int] = field(default_factory=dict)
    epochs: int = 0
    intents: int = 0

    REPORT_S = 5.0

    def line(self) -> str:
        shards = ", ".join(
            f"{name} {self.apply_s[name]:.2f}s/{self.applies[name]} applies" for name in sorted(self.apply_s)
        )
        return (f"{self.epochs} epochs, {self.intents} intents: preload {self.preload_s:.2f}s, "
                f"execute {self.execute_s:.2f}s, apply [{shards}]")


class Runner:
    def __init__(
        self, directory: Directory, node_urls: list[str], access: FeedAccess, fault: FaultPlan | None = None
    ) -> None:
        self.directory = directory
        self.shards: dict[str, ShardProxy] = {n: make_shard(s) for n, s in directory.shards.items()}
        self.feed = LogFeed(node_urls, access)
        self.core = ExecutorCore(directory)
        self.loads = Singleflight()
        self.fault = fault
        self.queues: dict[str, asyncio.Queue[ShardBatch]] = {}
        self._applied_event = asyncio.Event()
        self.times = StageTimes()
        self._reported_at = time.monotonic()

    async def recover(self) -> None:
        await asyncio.gather(*(_retrying(s.open) for s in self.shards.values()))
        applied = {name: await _retrying(shard.applied_epoch) for name, shard in self.shards.items()}
        base = min(applied.values())
        pendings = [record for shard in self.shards.values()
                    for record in await _retrying(lambda s=shard: s.load_open_pendings(base))]
        self.core.recover(applied, pendings)
        await self.feed.seed_digest(self.core.base_epoch)
        log.info("recovered: shards at %s, resuming at epoch %d", applied, self.core.next_epoch)

    async def run(self) -> None:
        await self.recover()
        self.queues = {name: asyncio.Queue(PUSH_QUEUE_EPOCHS_MAX) for name in self.shards}
        pushers = [asyncio.create_task(self._pusher(name)) for name in self.shards]
        try:
            while True:
                next_epoch = self.core.next_epoch
                entries = self.feed.accept(await self.feed.fetch(next_epoch), next_epoch)
                epochs = [self._accept(e) for e in entries]
                prefetch = asyncio.gather(*(self.preload(e) for e in epochs))
                for epoch in epochs:
                    await self.run_epoch(epoch)
                await prefetch
                for task in pushers:
                    if task.done():
                        task.result()  # surface a pusher's InvariantViolation
        finally:
            for task in pushers:
                task.cancel()

    def _accept(self, entry: AppliedEpoch) -> Epoch:
        epoch = decode_epoch(entry.data)
        if epoch.number != entry.number:
            raise InvariantViolation(f"journal entry {entry.number} holds epoch {epoch.number}")
        check_epoch(epoch)
        verify_groups(epoch)
        return epoch

    async def run_epoch(self, epoch: Epoch) -> None:
        t0 = time.perf_counter()
        await self.preload(epoch)
        t1 = time.perf_counter()
        batches = self.core.execute(epoch)
        self.times.preload_s += t1 - t0
        self.times.execute_s += time.perf_counter() - t1
        self.times.epochs += 1
        self.times.intents += len(epoch.intents)
        if time.monotonic() - self._reported_at > StageTimes.REPORT_S:
            self._reported_at = time.monotonic()
            log.info("stages: %s", self.times.line())
        for name, batch in batches.items():
            await self.queues[name].put(batch)

    # -- preload: the core says what; this loads it, once per key (singleflight) ----

    async def preload(self, epoch: Epoch) -> None:
        # Until nothing is missing: while loads wait, a pusher's progress may let the
        # core evict a key this epoch needs, and execute() runs right after, unawaited.
        while requests := self.core.loads(epoch):
            await asyncio.gather(*(self._load(request) for request in requests))

    async def _load(self, request: LoadRequest) -> None:
        method = getattr(self.shards[request.shard], f"load_{request.what}")

        async def fetch(missing: list[int]) -> None:
            found = await _retrying(lambda: method(missing, request.at_epoch), what=f"preload from {request.shard}")
            self.core.loaded(LoadRequest(request.what, request.shard, missing, request.at_epoch), found)

        await self.loads.load(request.what, request.ids, fetch)

    # -- push --------------------------------------------------------------------

    # TLA+: Ordo!ShardApply -- one atomic, idempotent apply per shard.
    async def _pusher(self, name: str) -> None:
        queue = self.queues[name]
        proxy = self.shards[name]
        while True:
            batches = [await queue.get()]
            while not queue.empty() and len(batches) < COALESCE_EPOCHS_MAX:
                batches.append(queue.get_nowait())
            await self._fault_gate(name, batches)
            t0 = time.perf_counter()
            await _retrying(lambda: proxy.apply(batches), what=f"apply to {name}")
            self.times.apply_s[name] = self.times.apply_s.get(name, 0.0) + time.perf_counter() - t0
            self.times.applies[name] = self.times.applies.get(name, 0) + 1
            self.core.pushed(name, batches[-1].epoch)
            self._applied_event.set()
            self._applied_event = asyncio.Event()
            self._fault_trip(name, batches)

    async def _fault_gate(self, name: str, batches: list[ShardBatch]) -> None:
        if self.fault and name != self.fault.shard and batches[-1].epoch >= self.fault.epoch:
            while True:  # hold the other shards until the fault trips (then we die)
                await self._applied_event.wait()

    def _fault_trip(self, name: str, batches: list[ShardBatch]) -> None:
        if self.fault and name == self.fault.shard and batches[-1].epoch >= self.fault.epoch:
            log.warning("fault point: SIGKILL after %s applied epoch %d", name, batches[-1].epoch)
            os.kill(os.getpid(), signal.SIGKILL)

    async def close(self) -> None:
        await self.feed.close()
        await asyncio.gather(*(s.close() for s in self.shards.values()), return_exceptions=True)


async def _retrying(call, what: str = "store call"):
    """Retry a store call with jittered exponential backoff until it succeeds.

    `InvariantViolation` is never retried: it means a bug, not an outage.
    """
    started = time.monotonic()
    async for attempt in AsyncRetrying(
        wait=wait_exponential_jitter(multiplier=0.05, max=2.0, jitter=0.1),
        retry=retry_if_not_exception_type(InvariantViolation),
        before_sleep=lambda rs: log.warning(
            "%s failed (%s), retrying (attempt %d, %.1fs)", what, rs.outcome.exception(), rs.attempt_number,
            time.monotonic() - started,
        ),
        reraise=True,
    ):
        with attempt:
            return await call()
