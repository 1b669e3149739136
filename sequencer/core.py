"""The sequencer's pure core: submissions in, epochs to propose out.

Role: pure core (the sequencer's); driven by `node.py` and `tests/sim/`.

Owned here: the leader's policy, i.e. the bounded queue, the size check at
submit, when an epoch closes (`EpochBatcher`), HLC stamping, the dependency
graph and the encoded epoch's size check.  It opens no socket, never awaits
and reads no clock but the HLC's injected one: the driver passes `now_ms`
(monotonic) and whether this replica may stamp (it leads and has applied
its whole log).  Driven by `sequencer/node.py` (asyncio and pysyncobj) and
by the simulator in `tests/sim/`, in the manner of h11's
`receive_data` / `next_event` / `send`.

A bad item fails alone: `poll` answers every ticket it takes, with a
proposal or a refusal, and never raises for one item.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import msgspec

from sequencer import limits
from sequencer.batcher import EpochBatcher
from sequencer.epochs import build_epoch
from sequencer.errors import InvariantViolation, Overloaded, TooLarge, ValidationError
from sequencer.hlc import HLC, CounterOverflowError
from sequencer.types import Intent, encode_epoch


@dataclass(frozen=True)
class Proposal:
    """One closed, stamped epoch for the log, and the submissions it carries."""

    data: bytes
    tickets: list[int]
    starts: list[int]  # index of each ticket's first intent in the epoch
    ends: list[int]  # and one past its last
    stamps: list[int]


@dataclass(frozen=True)
class Refusal:
    """Submissions that will not be proposed, and why.

    `kind` is "not-leader" (the driver answers with the current leader),
    "clock" (the HLC counter is spent: answered like not-leader, and logged),
    "too-large" or "invariant" (a bug in a size bound: logged, never fatal).
    """

    tickets: list[int]
    kind: str
    detail: str


@dataclass
class _Queued:
    ticket: int
    intents: list[Intent]
    size_bytes: int


class SequencerCore:
    def __init__(self, hlc: HLC, epoch_ms: int, epoch_bytes_max: int, queue_batches_max: int) -> None:
        self.hlc = hlc
        self.epoch_bytes_max = epoch_bytes_max
        self.queue_batches_max = queue_batches_max
        self.batcher: EpochBatcher[_Queued] = EpochBatcher(
            epoch_ms=epoch_ms, epoch_bytes_max=limits.epoch_budget_bytes(epoch_bytes_max)
        )
        self._queue: deque[_Queued] = deque()
        self._next_ticket = 1

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def epoch_budget_bytes(self) -> int:
        return self.batcher.epoch_bytes_max

    def submit(self, intents: list[Intent]) -> int:
        """Queue one request batch; its ticket.  Raises Overloaded or TooLarge, and then queues nothing."""
        if len(self._queue) >= self.queue_batches_max:
            raise Overloaded(f"{len(self._queue)} batches are waiting for the sequencer; retry after the delay")
        size = limits.submission_bytes(len(msgspec.msgpack.encode(intents)), len(intents))
        if size > self.batcher.epoch_bytes_max:
            raise TooLarge(f"the batch needs {size} bytes of an epoch, which holds {self.batcher.epoch_bytes_max}; "
                           f"split it into smaller batches (keep each linked chain in one batch)")
        ticket = self._next_ticket
        self._next_ticket += 1
        self._queue.append(_Queued(ticket, intents, size))
        return ticket

    def next_deadline_ms(self) -> int | None:
        """When `poll` must next run if nothing arrives (None: not until something is submitted)."""
        return self.batcher.next_deadline_ms()

    def poll(self, now_ms: int, may_stamp: bool) -> tuple[list[Proposal], list[Refusal]]:
        """Move queued submissions into epochs; stamp and encode every epoch that closed."""
        closed: list[list[_Queued]] = []
        refusals: list[Refusal] = []
        while self._queue:
            item = self._queue.popleft()
            try:
                ready = self.batcher.add(item, item.size_bytes, now_ms)
            except ValidationError as exc:
                refusals.append(Refusal([item.ticket], "too-large", exc.detail))
                continue
            if ready:
                closed.append(ready)
        ready = self.batcher.poll(now_ms)
        if ready:
            closed.append(ready)
        proposals = []
        for items in closed:
            outcome = self._stamp(items, may_stamp)
            (proposals if isinstance(outcome, Proposal) else refusals).append(outcome)
        return proposals, refusals

    def flush(self) -> list[Refusal]:
        """Refuse everything waiting (a leader stepping down or stopping answers every item)."""
        waiting = [*self._queue, *(self.batcher.flush() or [])]
        self._queue.clear()
        return [Refusal([q.ticket for q in waiting], "not-leader", "this replica stopped leading")] if waiting else []

    # TLA+: Ordo!CloseEpoch -- stamp only when caught_up(), one HLC.now per intent.
    def _stamp(self, items: list[_Queued], may_stamp: bool) -> Proposal | Refusal:
        tickets = [q.ticket for q in items]
        if not may_stamp:
            return Refusal(tickets, "not-leader", "this replica does not lead, or has not applied its whole log")
        intents: list[Intent] = []
        bounds: list[int] = []
        for q in items:
            intents.extend(q.intents)
            bounds.append(len(intents))
        try:
            stamps = [self.hlc.now().pack() for _ in intents]
        except CounterOverflowError as exc:
            # The physical clock stalled for over a second at full load: refuse
            # this epoch (clients retry) rather than stamp out of order.
            return Refusal(tickets, "clock", str(exc))
        data = encode_epoch(build_epoch(stamps, intents, bounds))
        if len(data) > self.epoch_bytes_max:
            error = InvariantViolation(f"an epoch of {len(data)} bytes exceeds epoch_bytes_max="
                                       f"{self.epoch_bytes_max}; the size bound in limits.py is wrong")
            return Refusal(tickets, "invariant", str(error))
        starts = [b - len(q.intents) for b, q in zip(bounds, items)]
        return Proposal(data, tickets, starts, bounds, stamps)
