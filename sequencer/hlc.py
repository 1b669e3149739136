"""Hybrid logical clock (Kulkarni, Demirbas et al., "Logical Physical Clocks
and Consistent Snapshots in Globally Distributed Databases", 2014).

Role: pure core (its clock is injected), part of `SequencerCore`.

Owned here: the `Timestamp` type, its packed integer form `(l << 16) | c`,
and the clock's two rules from the paper's Figure 5 -- "send or local event"
(`HLC.now`) and "receive event of message m" (`HLC.receive`) -- plus the
CockroachDB-style refusal of a remote timestamp that is more than
`max_offset_ms` ahead of our physical clock.

Called by the sequencer node (one `now()` per intent when an epoch is
stamped), by the replicated log (`observe_log` on every applied epoch, so a
new leader continues where the log stopped) and by the API (`check_remote`
on a client's `after=` timestamp).

The clock is pure apart from the injected `physical_ms` callable: it opens no
socket and never reads the system clock itself, so tests drive it with
simulated, drifting, stalling or backwards-running clocks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import msgspec

from sequencer import limits
from sequencer.errors import ClockOffsetError, InvariantViolation, OrdoError, ValidationError

#: Bits of the packed form that hold the counter `c`.  16 bits allow 65,536
#: events within one millisecond of `l`; more only happens when the physical
#: clock is stuck or far behind `l` (see `CounterOverflowError`).
COUNTER_BITS = 16
#: Exclusive bound of `c`.
COUNTER_LIMIT = 1 << COUNTER_BITS
#: Exclusive bound of `l` in ms: 2**47 ms is about 4,460 years after the Unix
#: epoch, and keeps the packed form below 2**63 so it fits a signed 64-bit
#: column (SQLite INTEGER, PostgreSQL BIGINT, Cassandra bigint) and msgpack int64.
WALL_LIMIT_MS = 1 << (63 - COUNTER_BITS)


class CounterOverflowError(OrdoError):
    """The counter `c` would reach 2**16 within one value of `l`.

    It can only happen when more than 65,535 events are stamped while `l`
    does not advance, that is while the physical clock is stuck or stays
    behind `l` (after a backwards step, or after adopting a remote timestamp
    from a faster peer).  The clock's state is left unchanged; the caller
    retries once the physical clock has moved on.
    """


class Timestamp(msgspec.Struct, frozen=True, order=True, array_like=True):
    """One HLC timestamp: `l` is the logical wall time in ms, `c` the counter.

    Ordered lexicographically by `(l, c)`, which is also the order of
    `pack()`, so packed timestamps compare as plain integers.
    """

    l: int  # noqa: E741 -- the paper's name
    c: int

    def __post_init__(self) -> None:
        # Split checks so a failure names the one field that is wrong (STYLE 6).
        if not 0 <= self.l < WALL_LIMIT_MS:
            raise ValidationError(f"HLC wall time {self.l} ms is outside [0, 2**47)")
        if not 0 <= self.c < COUNTER_LIMIT:
            raise ValidationError(f"HLC counter {self.c} is outside [0, 2**16)")

    def pack(self) -> int:
        """The timestamp as one non-negative integer below 2**63."""
        return (self.l << COUNTER_BITS) | self.c

    @classmethod
    def unpack(cls, packed: int) -> Timestamp:
        """Inverse of `pack`; raises `ValidationError` for an integer no timestamp packs to."""
        if not 0 <= packed < 1 << 63:
            raise ValidationError(f"packed HLC timestamp {packed} is outside [0, 2**63)")
        return cls(packed >> COUNTER_BITS, packed & (COUNTER_LIMIT - 1))


#: The state of a clock that has seen no event yet.
ZERO = Timestamp(0, 0)


class HLC:
    """A hybrid logical clock with an injected physical clock.

    `physical_ms()` returns the node's physical time `pt` in ms.  It may
    stall or run backwards; timestamps from `now()` still increase strictly.

    Thread safety: the node calls `now()` on its event loop while pysyncobj
    calls `observe_log()` on its own thread.  Each rule is a read-modify-write
    of `(l, c)`, so a lock keeps an update from being lost (a lost update
    could stamp an intent below an epoch already in the log).
    """

    def __init__(self, physical_ms: Callable[[], int], max_offset_ms: int = limits.MAX_OFFSET_MS) -> None:
        if max_offset_ms < 0:
            raise ValueError(f"max_offset_ms must be >= 0, not {max_offset_ms}")
        self._physical_ms = physical_ms
        self.max_offset_ms = max_offset_ms
        self._last = ZERO
        self._lock = threading.Lock()

    @property
    def last(self) -> Timestamp:
        """The latest timestamp this clock produced or adopted."""
        return self._last

    # TLA+: HLC!SendTo (send rule), Ordo!SendRule.
    def now(self) -> Timestamp:
        """Paper: "send or local event".  Returns a timestamp above `last`.

        l := max(l, pt); c := c + 1 if l did not change, else 0.
        """
        with self._lock:
            pt_ms = self._read_physical_ms()
            last = self._last
            if pt_ms > last.l:
                ts = Timestamp(pt_ms, 0)
            else:
                ts = Timestamp(last.l, _tick(last.c, last.l))
            self._last = ts
            return ts

    # TLA+: HLC!Receive (receive rule; RefuseFar is _check_offset).
    def receive(self, remote: Timestamp) -> Timestamp:
        """Paper: "receive event of message m".  Returns a timestamp above
        both `last` and `remote`.

        Refuses (`ClockOffsetError`, state unchanged) a `remote` whose `l` is
        more than `max_offset_ms` ahead of our physical clock.
        """
        with self._lock:
            pt_ms = self._read_physical_ms()
            self._check_offset(remote, pt_ms)
            ts = _receive_rule(self._last, remote, pt_ms)
            self._last = ts
            return ts

    def check_remote(self, remote: Timestamp) -> None:
        """Raise `ClockOffsetError` if `receive(remote)` would refuse it; change nothing.

        For timestamps that are only compared, never adopted (a client's
        read-your-writes `after=`).
        """
        with self._lock:
            self._check_offset(remote, self._read_physical_ms())

    def observe_log(self, ts: Timestamp) -> None:
        """Make every later `now()` exceed `ts`, a timestamp already in the log.

        No offset check: the log is committed by a majority and cannot be
        refused.  Epochs are stamped by the leader, so on a follower this
        only matters once it becomes leader: then it continues above the
        log (TLA+: Ordo!ContinueHLC), which keeps HLC order equal to log order.
        """
        with self._lock:
            if ts > self._last:
                self._last = ts

    # -- helpers (callers hold the lock) ------------------------------------

    def _read_physical_ms(self) -> int:
        pt_ms = self._physical_ms()
        if not 0 <= pt_ms < WALL_LIMIT_MS:
            raise InvariantViolation(f"the physical clock returned {pt_ms} ms, outside [0, 2**47)")
        return pt_ms

    def _check_offset(self, remote: Timestamp, pt_ms: int) -> None:
        ahead_ms = remote.l - pt_ms
        if ahead_ms > self.max_offset_ms:
            raise ClockOffsetError(
                f"remote HLC timestamp ({remote.l} ms, {remote.c}) is {ahead_ms} ms ahead of this node's "
                f"physical clock ({pt_ms} ms); the limit is max_offset_ms={self.max_offset_ms}. "
                "Check NTP on both hosts; the timestamp was not adopted."
            )


def _receive_rule(last: Timestamp, remote: Timestamp, pt_ms: int) -> Timestamp:
    """The paper's receive rule, as a pure function of (l, c), (l_m, c_m) and pt."""
    l_ms = max(last.l, remote.l, pt_ms)
    if l_ms == last.l == remote.l:
        return Timestamp(l_ms, _tick(max(last.c, remote.c), l_ms))
    if l_ms == last.l:
        return Timestamp(l_ms, _tick(last.c, l_ms))
    if l_ms == remote.l:
        return Timestamp(l_ms, _tick(remote.c, l_ms))
    return Timestamp(l_ms, 0)


def _tick(c: int, l_ms: int) -> int:
    """`c + 1`, refusing to leave the 16 bits the packed form gives it."""
    if c + 1 >= COUNTER_LIMIT:
        raise CounterOverflowError(
            f"HLC counter exhausted: {COUNTER_LIMIT} events at l={l_ms} ms while the physical clock "
            "did not reach l (stuck or stepped back?); retry once it advances"
        )
    return c + 1
