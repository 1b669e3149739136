"""One sequencer replica process: the driver of `SequencerCore` (sequencer/core.py).

Role: driver of `SequencerCore`.

Owned here: the I/O around the pure core.  Handlers submit request batches
to the core's bounded queue and wait on a future (STYLE 9); the leader's
drain loop wakes on a submission or the core's next deadline, polls the core
with the monotonic time and whether this replica may stamp, proposes each
closed epoch to the Raft log (`sequencer/log.py`) and resolves the futures
when it commits.  Every replica serves reads at the watermark W and the
journal of applied epochs that executors consume.  Started by `ordo node`,
which `ordo demo` and `ordo up` spawn.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from proxies.base import ShardProxy
from proxies.factory import make_shard
from sequencer import limits
from sequencer.config import ClusterConfig
from sequencer.core import Proposal, Refusal, SequencerCore
from sequencer.errors import InvariantViolation, NotLeaderError, TooLarge
from sequencer.hlc import HLC
from sequencer.log import EpochJournal, ReplicatedLog
from sequencer.security import log_key, raft_password
from sequencer.types import AppliedEpoch, Intent

log = logging.getLogger("ordo.node")


@dataclass(frozen=True)
class Placement:
    """Where a submission landed in the log."""

    epoch: int
    start: int
    stamps: list[int]


def physical_ms() -> int:
    return time.time_ns() // 1_000_000


# TLA+: Ordo!W -- W = min applied_epoch, used by every read and acknowledgement.
class Watermark:
    """W: the smallest `applied_epoch` over all shards, polled from the stores.

    Polling is fast while someone waits for an epoch and slow otherwise, so
    idle replicas barely touch the stores.
    """

    POLL_BUSY_MS = limits.W_POLL_BUSY_MS
    POLL_IDLE_MS = limits.W_POLL_IDLE_MS

    def __init__(self, shards: dict[str, ShardProxy]) -> None:
        self.shards = shards
        self.value = 0
        self.waiters = 0
        self._changed = asyncio.Event()
        self.store_error: str | None = None
        self.advanced_at_ms = mono_ms()  # when W last moved (or this node started)

    async def refresh(self) -> int:
        try:
            values = await asyncio.gather(*(s.applied_epoch() for s in self.shards.values()))
        except Exception as exc:  # a store is down: keep serving at the last W
            self.store_error = f"{type(exc).__name__}: {exc}"
            return self.value
        self.store_error = None
        new = min(values)
        if new > self.value:
            self.value = new
            self.advanced_at_ms = mono_ms()
            self._changed.set()
            self._changed = asyncio.Event()
        return self.value

    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep((self.POLL_BUSY_MS if self.waiters else self.POLL_IDLE_MS) / 1000)

    async def wait_for(self, epoch: int) -> int:
        self.waiters += 1
        try:
            while self.value < epoch:
                await self._changed.wait()
            return self.value
        finally:
            self.waiters -= 1


def not_ready_reasons(leader: str | None, store_error: str | None, last_epoch: int, w: int,
                      w_still_ms: int) -> list[str]:
    """Why a node should not take traffic, or nothing (pure; `/readyz` asks it)."""
    reasons = []
    if leader is None:
        reasons.append("no known leader: an election is in progress, or this replica is cut off from the others")
    if store_error is not None:
        reasons.append(f"a store is unreachable ({store_error}); reads answer at the last W")
    if last_epoch > w and w_still_ms >= limits.READY_W_STALL_MS:
        reasons.append(f"W={w} is {last_epoch - w} epochs behind the log and has not advanced for "
                       f"{w_still_ms} ms: is the executor running, and are the stores up?")
    return reasons


class ResultsCache:
    """Results of recent epochs, fetched once from all shards (singleflight)."""

    EPOCHS_MAX = limits.RESULTS_EPOCHS_MAX

    def __init__(self, shards: dict[str, ShardProxy]) -> None:
        self.shards = shards
        self._tasks: dict[int, asyncio.Task] = {}

    async def get(self, epoch: int) -> dict[int, str]:
        task = self._tasks.get(epoch)
        if task is None:
            task = asyncio.ensure_future(self._fetch(epoch))
            self._tasks[epoch] = task
            while len(self._tasks) > self.EPOCHS_MAX:
                self._tasks.pop(next(iter(self._tasks)))
        try:
            return await asyncio.shield(task)
        except Exception:
            self._tasks.pop(epoch, None)
            raise

    async def _fetch(self, epoch: int) -> dict[int, str]:
        parts = await asyncio.gather(*(s.read_results(epoch) for s in self.shards.values()))
        return {r.index: r.result for part in parts for r in part}


class SequencerNode:
    def __init__(self, config: ClusterConfig, node_id: int) -> None:
        self.config = config
        self.spec = config.node(node_id)
        self.dir = config.data_dir / f"node{node_id}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.hlc = HLC(physical_ms, max_offset_ms=config.sequencer.max_offset_ms)
        self.journal = EpochJournal(self.dir / "epochs.db")
        self.raft_to_http = {n.raft: n.url for n in config.nodes}
        self.core = SequencerCore(self.hlc, config.sequencer.epoch_ms, config.log.epoch_bytes_max,
                                  config.sequencer.queue_batches_max)
        self._waiting: dict[int, asyncio.Future] = {}  # ticket -> its request's future
        self._submitted = asyncio.Event()
        secret = config.security.cluster_secret()
        if secret is None:
            log.warning("no cluster secret configured: Raft messages are neither authenticated nor encrypted; "
                        "this is safe only while every replica listens on loopback")
        self.log_key = log_key(secret)
        self._raft_password = raft_password(secret) if secret is not None else None
        self.keys = config.security.key_ring()
        self.shards = {name: make_shard(spec) for name, spec in config.directory.shards.items()}
        self.watermark = Watermark(self.shards)
        self.results = ResultsCache(self.shards)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._log_changed = asyncio.Event()
        self.log: ReplicatedLog | None = None
        self.leader_changes = 0

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        await asyncio.gather(*(s.open() for s in self.shards.values()))
        partners = [n.raft for n in self.config.nodes if n.id != self.spec.id]
        self.log = ReplicatedLog(
            self.spec.raft, partners, self.hlc, self.journal, self.dir, self.config.log, self._on_applied,
            self.log_key, self._raft_password,
        )

    # -- called on pysyncobj's thread -------------------------------------

    def _on_applied(self, entry: AppliedEpoch) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._wake_log_readers)

    def _wake_log_readers(self) -> None:
        self._log_changed.set()
        self._log_changed = asyncio.Event()

    # -- routing -------------------------------------------------------------

    def leader_url(self) -> str | None:
        status = self.log.status()
        return self.raft_to_http.get(status["leader"]) if status["leader"] else None

    def members(self) -> list[str]:
        return [n.url for n in self.config.nodes]

    def require_leader(self) -> None:
        if not self.log.is_leader():
            raise NotLeaderError(self.leader_url(), self.members())

    # -- the write path: the driver of SequencerCore ---------------------------

    def submit(self, intents: list[Intent]) -> asyncio.Future:
        """Queue a request batch; a future for its Placement.

        Raises NotLeaderError, Overloaded (queue full) or TooLarge (it could
        never fit one epoch), and then nothing is queued.
        """
        self.require_leader()
        ticket = self.core.submit(intents)
        future = asyncio.get_running_loop().create_future()
        self._waiting[ticket] = future
        self._submitted.set()
        return future

    async def drain(self) -> None:
        """The leader's loop: epochs close on time or size, never on arrival (STYLE 9)."""
        while True:
            deadline = self.core.next_deadline_ms()
            timeout = None if deadline is None else max(0, deadline - mono_ms()) / 1000
            try:
                await asyncio.wait_for(self._submitted.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            self._submitted.clear()
            try:
                self._poll()
            except Exception:  # the loop outlives any one turn; the turn's requests time out and are retried
                log.exception("a turn of the drain loop failed; the loop goes on")

    def _poll(self) -> None:
        """One turn of the core; whatever goes wrong fails its tickets, never the loop."""
        may_stamp = bool(self.log is not None and self.log.is_leader() and self.log.caught_up())
        proposals, refusals = self.core.poll(mono_ms(), may_stamp)
        for refusal in refusals:
            self._refuse(refusal)
        for proposal in proposals:
            try:
                self._propose(proposal)
            except Exception as exc:
                log.exception("proposing an epoch of %d batches failed", len(proposal.tickets))
                for ticket in proposal.tickets:
                    _fail(self._waiting.pop(ticket, None), exc)

    def _refuse(self, refusal: Refusal) -> None:
        if refusal.kind == "invariant":
            log.error("%s", refusal.detail)
        elif refusal.kind == "clock":
            log.error("cannot stamp epoch: %s", refusal.detail)
        for ticket in refusal.tickets:
            if refusal.kind == "too-large":
                error: Exception = TooLarge(refusal.detail)
            elif refusal.kind == "invariant":
                error = InvariantViolation(refusal.detail)
            else:
                error = NotLeaderError(self.leader_url() if self.log is not None else None, self.members())
                error.add_note(refusal.detail)
            _fail(self._waiting.pop(ticket, None), error)

    def _propose(self, proposal: Proposal) -> None:
        loop = self.loop

        def committed(number, error) -> None:  # pysyncobj's thread
            loop.call_soon_threadsafe(self._resolve, proposal, number, error)

        self.log.apply_epoch(proposal.data, callback=committed)

    def _resolve(self, proposal: Proposal, number, error) -> None:
        for ticket, start, end in zip(proposal.tickets, proposal.starts, proposal.ends):
            future = self._waiting.pop(ticket, None)
            if error or number is None:
                reason = "the epoch was refused (leader change)" if number is None and not error else f"raft: {error}"
                _fail(future, NotLeaderError(self.leader_url(), self.members()), reason)
            elif future is not None and not future.done():
                future.set_result(Placement(number, start, proposal.stamps[start:end]))

    # -- the log feed for executors ------------------------------------------

    async def read_log(self, first: int, limit: int, wait_ms: int) -> list[AppliedEpoch]:
        deadline = mono_ms() + wait_ms
        while True:
            changed = self._log_changed
            entries = await asyncio.to_thread(self.journal.range, first, limit, limits.LOG_RESPONSE_BYTES_MAX)
            remaining = deadline - mono_ms()
            if entries or remaining <= 0:
                return entries
            try:
                await asyncio.wait_for(changed.wait(), remaining / 1000)
            except asyncio.TimeoutError:
                return []

    async def close(self) -> None:
        if self.log is not None:
            self.log.destroy()
        await asyncio.gather(*(s.close() for s in self.shards.values()), return_exceptions=True)
        self.journal.close()


def _fail(future: asyncio.Future | None, error: Exception, note: str | None = None) -> None:
    if note:
        error.add_note(note)
    if future is not None and not future.done():
        future.set_exception(error)


def mono_ms() -> int:
    return time.monotonic_ns() // 1_000_000
