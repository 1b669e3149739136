"""The pure cores: SequencerCore (queue, batching, stamping) and LogState (numbering, continuity, digest)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sequencer import limits
from sequencer.core import Proposal, Refusal, SequencerCore, _Queued
from sequencer.epochs import build_epoch, groups_for
from sequencer.errors import Overloaded, TooLarge
from sequencer.hlc import HLC
from sequencer.log_state import LogState
from sequencer.types import CreateTransfer, decode_epoch, encode_epoch, fold_log_digest, log_genesis_digest


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def __call__(self) -> int:
        return self.ms


def _core(clock: Clock, epoch_bytes_max: int = 12 * 1024, queue_max: int = 8) -> SequencerCore:
    return SequencerCore(HLC(clock, max_offset_ms=500), 10, epoch_bytes_max, queue_max)


def _t(i: int, linked: bool = False) -> CreateTransfer:
    return CreateTransfer(i, 1000 + i % 7, 2000 + i % 5, 1 + i, 1, 1, 1 if linked else 0)


# ------------------------------------------------------------ SequencerCore


def test_an_epoch_closes_on_time_and_carries_its_tickets_in_order() -> None:
    clock = Clock()
    core = _core(clock)
    a, b = core.submit([_t(1), _t(2)]), core.submit([_t(3)])
    assert core.poll(0, True) == ([], [])  # open, not yet due
    assert core.next_deadline_ms() == 10
    proposals, refusals = core.poll(10, True)
    assert refusals == [] and len(proposals) == 1
    p = proposals[0]
    assert p.tickets == [a, b] and p.starts == [0, 2] and p.ends == [2, 3]
    epoch = decode_epoch(p.data)
    assert epoch.bounds == [2, 3] and [x.id for x in epoch.intents] == [1, 2, 3]
    assert epoch.groups == groups_for(epoch.intents, epoch.bounds)
    assert epoch.stamps == p.stamps and all(x < y for x, y in zip(p.stamps, p.stamps[1:]))


def test_submit_refuses_before_queueing() -> None:
    core = _core(Clock(), queue_max=2)
    core.submit([_t(1)])
    core.submit([_t(2)])
    with pytest.raises(Overloaded):
        core.submit([_t(3)])
    smallest = limits.request_bytes_max(limits.BATCH_EVENTS_MAX) + limits.EPOCH_FRAME_BYTES_MAX
    small = _core(Clock(), epoch_bytes_max=smallest)
    huge = [CreateTransfer(2**63 - 2 - i, 2**62, 2**61, 2**62, 2**32 - 1, 1, 0, 0, 0, 2**62) for i in range(200)]
    with pytest.raises(TooLarge):
        small.submit(huge)
    assert small.queue_depth == 0


def test_a_follower_refuses_and_a_bad_item_fails_alone() -> None:
    clock = Clock()
    core = _core(clock)
    t1 = core.submit([_t(1)])
    assert core.poll(0, may_stamp=False) == ([], [])
    proposals, refusals = core.poll(10, may_stamp=False)
    assert proposals == [] and refusals == [Refusal([t1], "not-leader", refusals[0].detail)]
    # An item whose size was underestimated: the encoded epoch exceeds the limit; it is refused, not raised.
    core._queue.append(_Queued(77, [_t(i) for i in range(700)], 10))
    good = core.submit([_t(500)])
    proposals, refusals = core.poll(20, True)
    proposals2, refusals2 = core.poll(40, True)
    kinds = {r.kind for r in refusals + refusals2}
    assert "invariant" in kinds
    carried = [t for p in proposals + proposals2 for t in p.tickets]
    refused = [t for r in refusals + refusals2 for t in r.tickets]
    assert sorted(carried + refused) == [good, 77]


class SequencerMachine(RuleBasedStateMachine):
    """Random submissions, polls and leadership: every ticket is answered once, in order, and fits."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.now = 0
        self.core = _core(self.clock, queue_max=16)
        self.submitted: list[int] = []
        self.answered: dict[int, str] = {}
        self.last_stamp = 0
        self.next_id = 1

    @rule(n=st.integers(1, limits.BATCH_EVENTS_MAX), linked=st.booleans())
    def submit(self, n: int, linked: bool) -> None:
        intents = [_t(self.next_id + i, linked and i < n - 1) for i in range(n)]
        self.next_id += n
        try:
            self.submitted.append(self.core.submit(intents))
        except Overloaded:
            assert self.core.queue_depth == 16

    @rule(dt=st.integers(0, 25), dphys=st.integers(0, 3), leader=st.booleans())
    def poll(self, dt: int, dphys: int, leader: bool) -> None:
        self.now += dt
        self.clock.ms += dphys  # the physical clock may stall; the HLC still advances
        proposals, refusals = self.core.poll(self.now, leader)
        for p in proposals:
            assert len(p.data) <= self.core.epoch_bytes_max
            assert p.stamps[0] > self.last_stamp
            self.last_stamp = p.stamps[-1]
            for t in p.tickets:
                assert t not in self.answered
                self.answered[t] = "proposed"
        for r in refusals:
            assert r.kind != "invariant", r.detail
            for t in r.tickets:
                assert t not in self.answered
                self.answered[t] = r.kind

    @precondition(lambda self: self.submitted)
    @rule()
    def flush(self) -> None:
        for r in self.core.flush():
            for t in r.tickets:
                assert t not in self.answered
                self.answered[t] = r.kind

    @invariant()
    def answers_follow_submission_order(self) -> None:
        answered = [t for t in self.submitted if t in self.answered]
        assert answered == self.submitted[: len(answered)]

    def teardown(self) -> None:
        self.core.poll(self.now + 10_000, True)


SequencerMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestSequencerCore = SequencerMachine.TestCase


# ------------------------------------------------------------------ LogState


def _epoch(stamps: list[int]) -> bytes:
    intents = [_t(i + 1) for i in range(len(stamps))]
    return encode_epoch(build_epoch(stamps, intents, [len(intents)]))


def test_log_state_numbers_refuses_and_folds_the_keyed_digest() -> None:
    key = b"k" * 32
    log = LogState(key)
    first = log.apply(_epoch([10, 11]))
    assert first.number == 1 and first.hlc_last == 11
    assert first.digest == fold_log_digest(key, log_genesis_digest(key), first.data)
    assert decode_epoch(first.data).number == 1
    assert log.apply(_epoch([11, 12])) is None  # does not continue the HLC: refused, nothing changes
    assert (log.last_number, log.last_hlc, log.digest) == (1, 11, first.digest)
    second = log.apply(_epoch([12]))
    assert second.number == 2 and log.digest == second.digest


class LogMachine(RuleBasedStateMachine):
    """Replicas applying one committed log (with stale and duplicated entries) agree entry by entry."""

    def __init__(self) -> None:
        super().__init__()
        self.key = b"r" * 32
        self.committed: list[bytes] = []
        self.replicas = [LogState(self.key) for _ in range(3)]
        self.applied = [0, 0, 0]
        self.entries: list[dict[int, tuple]] = [{}, {}, {}]
        self.hlc = 100

    @rule(size=st.integers(1, 4), stale=st.booleans(), duplicate=st.booleans())
    def commit(self, size: int, stale: bool, duplicate: bool) -> None:
        start = self.hlc - 50 if stale else self.hlc + 1  # a stale leader stamps below the log
        data = _epoch(list(range(start, start + size)))
        self.hlc = max(self.hlc, start + size)
        self.committed.append(data)
        if duplicate:
            self.committed.append(data)

    @rule(replica=st.integers(0, 2), steps=st.integers(1, 3))
    def catch_up(self, replica: int, steps: int) -> None:
        for _ in range(steps):
            if self.applied[replica] == len(self.committed):
                return
            entry = self.replicas[replica].apply(self.committed[self.applied[replica]])
            self.applied[replica] += 1
            if entry is not None:
                self.entries[replica][entry.number] = (entry.hlc_last, entry.digest, entry.data)

    @invariant()
    def replicas_agree_and_hlc_increases(self) -> None:
        for number in set().union(*self.entries):
            seen = {e[number] for e in self.entries if number in e}
            assert len(seen) == 1, f"replicas disagree on epoch {number}"
        for e in self.entries:
            stamps = [decode_epoch(e[n][2]).stamps for n in sorted(e)]
            flat = [s for group in stamps for s in group]
            assert all(a < b for a, b in zip(flat, flat[1:]))


LogMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestLogState = LogMachine.TestCase


# -------------------------------------------------------------- ExecutorCore


class ExecutorMachine(RuleBasedStateMachine):
    """ExecutorCore with a tiny cache, crashes, and shards that apply at their own pace,
    against the serial reference executor: the shards at W always equal it."""

    def __init__(self) -> None:
        super().__init__()
        from executor.core import ExecutorCore
        from proxies.directory import Directory, Range, ShardSpec
        from proxies.memory import MemoryShard

        self.directory = Directory([ShardSpec(n, "memory") for n in ("a", "b")], [Range(1, 2**63 - 2, ("a", "b"))])
        self.shards = {n: MemoryShard(n) for n in ("a", "b")}
        self.make_core = lambda: ExecutorCore(self.directory, cache_epochs=1)
        self.core = None
        self.epochs: list = []
        self.pending: dict = {}
        self.next_id = 1000
        self.hlc = 1 << 20
        self._recover()

    def _run(self, coro):
        from tests.sim.world import run_now

        return run_now(coro)

    def _recover(self) -> None:
        applied = {n: self._run(s.applied_epoch()) for n, s in self.shards.items()}
        pendings = [r for s in self.shards.values() for r in self._run(s.load_open_pendings(min(applied.values())))]
        self.core = self.make_core()
        self.core.recover(applied, pendings)
        self.pending = {}

    @rule(kinds=st.lists(st.integers(0, 9), min_size=1, max_size=6))
    def commit_epoch(self, kinds: list[int]) -> None:
        from sequencer.types import CreateAccount

        intents = [CreateAccount(i, 1, 1, i % 2) for i in range(1, 5)] if not self.epochs else []
        for k in kinds:
            self.next_id += 1
            if k == 0:
                intents.append(CreateAccount(5, 1, 1))
            else:
                flags = 2 if k == 9 else 0
                intents.append(CreateTransfer(self.next_id, 1 + k % 4, 1 + (k + 1) % 4, k, 1, 1, flags,
                                              timeout_ms=3 if flags else 0))
        stamps = [self.hlc + i for i in range(len(intents))]
        self.hlc += 1 << 16  # a millisecond per epoch, so pendings expire
        epoch = msgspec.structs.replace(build_epoch(stamps, intents, [len(intents)]), number=len(self.epochs) + 1)
        self.epochs.append(epoch)

    @precondition(lambda self: self.core.next_epoch <= len(self.epochs) and not self.pending)
    @rule()
    def execute(self) -> None:
        epoch = self.epochs[self.core.next_epoch - 1]
        for request in self.core.loads(epoch):
            method = getattr(self.shards[request.shard], f"load_{request.what}")
            self.core.loaded(request, self._run(method(request.ids, request.at_epoch)))
        self.pending = self.core.execute(epoch)

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def push_one(self, data) -> None:
        name = data.draw(st.sampled_from(sorted(self.pending)))
        batch = self.pending.pop(name)
        self._run(self.shards[name].apply([batch]))
        self.core.pushed(name, batch.epoch)

    @rule()
    def crash(self) -> None:
        self._recover()

    @invariant()
    def shards_at_w_equal_the_serial_oracle(self) -> None:
        from executor.verify import replay_serial

        w = min(self._run(s.applied_epoch()) for s in self.shards.values())
        oracle = self._run(replay_serial(self.epochs[:w], self.directory))
        for name, shard in self.shards.items():
            assert self._run(shard.dump(w)) == self._run(oracle[name].dump(w)), f"shard {name} differs at W={w}"


ExecutorMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
TestExecutorCore = ExecutorMachine.TestCase
