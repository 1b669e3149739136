"""Properties of the hybrid logical clock (sequencer/hlc.py).

Every randomized test draws from hypothesis, which prints the falsifying
example and (with `print_blob=True`) a `@reproduce_failure` blob: one line
reproduces a run (STYLE 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sequencer.errors import ClockOffsetError, ValidationError
from sequencer.hlc import COUNTER_LIMIT, HLC, CounterOverflowError, Timestamp

SETTINGS = settings(print_blob=True, max_examples=200, deadline=None)

#: Simulated physical times stay small so collisions (equal `l`) are common.
pt_values = st.integers(min_value=0, max_value=50)
timestamps = st.builds(Timestamp, st.integers(0, 2**47 - 1), st.integers(0, COUNTER_LIMIT - 1))
#: Timestamps a log could hold: counters far from the 2**16 limit, so a
#: following `now()` cannot overflow (that case has its own test).
log_stamps = st.builds(Timestamp, st.integers(0, 10_000), st.integers(0, 1_000))


class FakeClock:
    """A physical clock the test sets by hand."""

    def __init__(self, now_ms: int = 0) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


# ------------------------------------------------------------ the timestamp


@SETTINGS
@given(timestamps, timestamps)
def test_packed_order_is_timestamp_order(a: Timestamp, b: Timestamp) -> None:
    assert (a < b) == (a.pack() < b.pack())
    assert (a == b) == (a.pack() == b.pack())


@SETTINGS
@given(timestamps)
def test_pack_round_trips_below_2_63(ts: Timestamp) -> None:
    assert 0 <= ts.pack() < 2**63
    assert Timestamp.unpack(ts.pack()) == ts


@pytest.mark.parametrize("packed", [-1, 2**63])
def test_unpack_refuses_out_of_range(packed: int) -> None:
    with pytest.raises(ValidationError):
        Timestamp.unpack(packed)


@pytest.mark.parametrize("l_ms, c", [(-1, 0), (2**47, 0), (0, -1), (0, COUNTER_LIMIT)])
def test_timestamp_refuses_out_of_range_fields(l_ms: int, c: int) -> None:
    with pytest.raises(ValidationError):
        Timestamp(l_ms, c)


# ------------------------------------------- (a) monotonic on one node


@SETTINGS
@given(st.lists(pt_values, min_size=1, max_size=200))
def test_now_strictly_increases_even_if_the_clock_stalls_or_goes_back(pts: list[int]) -> None:
    clock = FakeClock()
    hlc = HLC(clock)
    previous = hlc.last
    for pt in pts:
        clock.now_ms = pt
        ts = hlc.now()
        assert ts > previous
        assert ts == hlc.last
        # l never falls behind the physical clock (paper: l >= pt).
        assert ts.l >= pt
        previous = ts


def test_now_follows_the_physical_clock_when_it_leads() -> None:
    clock = FakeClock(100)
    hlc = HLC(clock)
    assert hlc.now() == Timestamp(100, 0)
    assert hlc.now() == Timestamp(100, 1)
    clock.now_ms = 90  # stepped back: keep l, count
    assert hlc.now() == Timestamp(100, 2)
    clock.now_ms = 101
    assert hlc.now() == Timestamp(101, 0)


def test_receive_rule_cases() -> None:
    clock = FakeClock(10)
    hlc = HLC(clock, max_offset_ms=100)
    hlc.now()  # (10, 0)
    assert hlc.receive(Timestamp(10, 5)) == Timestamp(10, 6)  # l == l' == l_m
    assert hlc.receive(Timestamp(9, 50)) == Timestamp(10, 7)  # l == l'
    assert hlc.receive(Timestamp(30, 3)) == Timestamp(30, 4)  # l == l_m
    clock.now_ms = 40
    assert hlc.receive(Timestamp(35, 3)) == Timestamp(40, 0)  # l == pt


def test_observe_log_only_moves_forward() -> None:
    hlc = HLC(FakeClock(10))
    hlc.observe_log(Timestamp(2_000, 7))  # committed log: adopted without the offset check
    assert hlc.now() == Timestamp(2_000, 8)
    hlc.observe_log(Timestamp(5, 0))
    assert hlc.last == Timestamp(2_000, 8)


def test_counter_overflow_is_refused_without_changing_state() -> None:
    hlc = HLC(FakeClock(5))
    for _ in range(COUNTER_LIMIT):
        hlc.now()
    assert hlc.last == Timestamp(5, COUNTER_LIMIT - 1)
    with pytest.raises(CounterOverflowError, match="65536 events at l=5 ms"):
        hlc.now()
    with pytest.raises(CounterOverflowError):
        hlc.receive(Timestamp(5, 0))
    assert hlc.last == Timestamp(5, COUNTER_LIMIT - 1)


# ---------------------- (b, c) several nodes with drifting physical clocks


#: Largest distance between any node's physical clock and true time.
DRIFT_MS_MAX = 20


@dataclass
class Node:
    hlc: HLC
    clock: FakeClock
    offset_ms: int = 0
    vector: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Event:
    node: int
    vector: tuple[int, ...]
    ts: Timestamp


def _happens_before(a: Event, b: Event) -> bool:
    return a.vector != b.vector and all(x <= y for x, y in zip(a.vector, b.vector))


step = st.one_of(
    st.tuples(st.just("tick"), st.integers(0, 5)),  # true time advances by ms
    st.tuples(st.just("drift"), st.integers(0, 3), st.integers(-DRIFT_MS_MAX, DRIFT_MS_MAX)),
    st.tuples(st.just("local"), st.integers(0, 3)),
    st.tuples(st.just("send"), st.integers(0, 3), st.integers(0, 3)),
    st.tuples(st.just("deliver"), st.integers(0, 1_000)),
)


class Simulation:
    """Nodes exchanging messages on a random schedule, with vector clocks beside the HLCs."""

    def __init__(self, node_count: int) -> None:
        self.true_ms = 1_000
        # Two clocks drift at most 2*DRIFT_MS_MAX apart, so no honest message is refused.
        self.nodes = []
        for _ in range(node_count):
            clock = FakeClock(self.true_ms)
            self.nodes.append(Node(HLC(clock, max_offset_ms=2 * DRIFT_MS_MAX), clock, 0, [0] * node_count))
        self.in_flight: list[tuple[int, Event]] = []  # (target, send event)
        self.events: list[Event] = []

    def run(self, steps: list[tuple]) -> None:
        for kind, *args in steps:
            getattr(self, kind)(*args)
            self._sync_clocks()
            self._check_bounds()

    def tick(self, ms: int) -> None:
        self.true_ms += ms

    def drift(self, node: int, offset_ms: int) -> None:
        # Drift may move a physical clock backwards: HLC must not care.
        self.nodes[node % len(self.nodes)].offset_ms = offset_ms

    def local(self, node: int) -> Event:
        n = self.nodes[node % len(self.nodes)]
        n.vector[node % len(self.nodes)] += 1
        return self._record(node % len(self.nodes), n.hlc.now())

    def send(self, source: int, target: int) -> None:
        event = self.local(source)
        self.in_flight.append((target % len(self.nodes), event))

    def deliver(self, pick: int) -> None:
        if not self.in_flight:
            return
        target, sent = self.in_flight.pop(pick % len(self.in_flight))
        n = self.nodes[target]
        n.vector = [max(a, b) for a, b in zip(n.vector, sent.vector)]
        n.vector[target] += 1
        self._record(target, n.hlc.receive(sent.ts))

    def _record(self, node: int, ts: Timestamp) -> Event:
        event = Event(node, tuple(self.nodes[node].vector), ts)
        self.events.append(event)
        return event

    def _sync_clocks(self) -> None:
        for n in self.nodes:
            n.clock.now_ms = self.true_ms + n.offset_ms

    def _check_bounds(self) -> None:
        for n in self.nodes:
            # (c) l - pt <= the largest skew between two clocks (paper, Theorem 2).
            assert n.hlc.last.l - n.clock.now_ms <= 2 * DRIFT_MS_MAX
            # c counts events sharing one l, so it never exceeds the events so far.
            assert n.hlc.last.c <= len(self.events)


@SETTINGS
@given(st.integers(2, 4), st.lists(step, max_size=120))
def test_happens_before_implies_hlc_order(node_count: int, steps: list[tuple]) -> None:
    sim = Simulation(node_count)
    sim.run(steps)
    for a in sim.events:
        for b in sim.events:
            if _happens_before(a, b):
                assert a.ts < b.ts, (a, b)


@SETTINGS
@given(st.integers(2, 4), st.lists(step, max_size=120))
def test_each_node_stamps_strictly_increasing(node_count: int, steps: list[tuple]) -> None:
    sim = Simulation(node_count)
    sim.run(steps)
    for node in range(node_count):
        mine = [e.ts for e in sim.events if e.node == node]
        assert all(a < b for a, b in zip(mine, mine[1:]))


# ----------------------------------------------- (d) refusal changes nothing


@SETTINGS
@given(
    st.lists(st.one_of(pt_values.map(lambda pt: ("now", pt)), log_stamps.map(lambda ts: ("obs", ts))), max_size=20),
    pt_values,
    st.integers(0, 100),
    st.integers(1, 10_000),
    st.integers(0, COUNTER_LIMIT - 1),
)
def test_refused_remote_leaves_state_unchanged(
    history: list[tuple], pt: int, max_offset_ms: int, excess_ms: int, remote_c: int
) -> None:
    clock = FakeClock()
    hlc = HLC(clock, max_offset_ms=max_offset_ms)
    for kind, value in history:
        if kind == "now":
            clock.now_ms = value
            hlc.now()
        else:
            hlc.observe_log(value)
    clock.now_ms = pt
    before = hlc.last
    remote = Timestamp(pt + max_offset_ms + excess_ms, remote_c)
    with pytest.raises(ClockOffsetError) as refused:
        hlc.receive(remote)
    assert hlc.last == before
    with pytest.raises(ClockOffsetError):
        hlc.check_remote(remote)
    assert hlc.last == before
    message = str(refused.value)
    assert f"{max_offset_ms + excess_ms} ms ahead" in message
    assert f"max_offset_ms={max_offset_ms}" in message


def test_remote_exactly_at_the_limit_is_accepted() -> None:
    hlc = HLC(FakeClock(1_000), max_offset_ms=500)
    assert hlc.receive(Timestamp(1_500, 3)) == Timestamp(1_500, 4)
