"""The epoch batcher (sequencer/batcher.py) against a plain list model.

Randomized tests are hypothesis state machines; on failure hypothesis
prints the steps and a `@reproduce_failure` blob (STYLE 2).
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sequencer.batcher import EpochBatcher
from sequencer.limits import EPOCH_BYTES_MAX as EPOCH_BYTES_MAX_DEFAULT
from sequencer.errors import ConfigError, InvariantViolation, ValidationError

# ---------------------------------------------------------------- examples


def test_epoch_closes_on_time_not_before() -> None:
    b = EpochBatcher(epoch_ms=10)
    assert b.next_deadline_ms() is None
    assert b.add("a", 100, now_ms=1_000) is None
    assert b.next_deadline_ms() == 1_010
    assert b.add("b", 100, now_ms=1_005) is None
    assert b.poll(1_009) is None
    assert b.poll(1_010) == ["a", "b"]
    assert b.next_deadline_ms() is None


def test_time_runs_from_the_first_item_and_empty_epochs_are_never_emitted() -> None:
    b = EpochBatcher(epoch_ms=10)
    assert b.poll(0) is None
    assert b.poll(1_000) is None  # idle: nothing to emit
    b.add("a", 1, now_ms=1_003)
    assert b.poll(1_012) is None
    assert b.poll(1_013) == ["a"]


def test_closes_before_an_item_that_would_overflow() -> None:
    b = EpochBatcher(epoch_ms=10, epoch_bytes_max=1_000)
    assert b.add("a", 600, now_ms=0) is None
    assert b.add("b", 400, now_ms=1) is None  # exactly full is allowed
    assert b.add("c", 1, now_ms=2) == ["a", "b"]
    assert b.pending_bytes == 1
    assert b.next_deadline_ms() == 12  # "c" opened a new epoch at 2


def test_closes_on_item_count() -> None:
    b = EpochBatcher(epoch_items_max=2)
    assert b.add("a", 1, now_ms=0) is None
    assert b.add("b", 1, now_ms=0) is None
    assert b.add("c", 1, now_ms=0) == ["a", "b"]
    assert b.pending_items == 1


def test_an_item_arriving_after_the_deadline_opens_the_next_epoch() -> None:
    b = EpochBatcher(epoch_ms=10)
    b.add("a", 1, now_ms=0)
    assert b.add("b", 1, now_ms=10) == ["a"]  # the caller polled late
    assert b.poll(19) is None
    assert b.poll(20) == ["b"]


def test_oversized_item_is_refused_and_nothing_changes() -> None:
    b = EpochBatcher(epoch_bytes_max=1_000)
    b.add("a", 10, now_ms=0)
    with pytest.raises(ValidationError, match="1001 bytes.*epoch_bytes_max=1000"):
        b.add("huge", 1_001, now_ms=1)
    assert (b.pending_items, b.pending_bytes) == (1, 10)
    with pytest.raises(ValidationError):
        b.add("empty", 0, now_ms=1)


def test_flush_closes_whatever_is_open() -> None:
    b = EpochBatcher()
    assert b.flush() is None
    b.add("a", 1, now_ms=0)
    assert b.flush() == ["a"]
    assert b.next_deadline_ms() is None


def test_time_going_backwards_is_an_invariant_violation() -> None:
    b = EpochBatcher()
    b.poll(100)
    with pytest.raises(InvariantViolation, match="monotonic"):
        b.add("a", 1, now_ms=99)


@pytest.mark.parametrize(
    "kwargs",
    [{"epoch_ms": 0}, {"epoch_bytes_max": 0}, {"epoch_bytes_max": 64 * 1024}, {"epoch_items_max": 0}],
)
def test_bad_limits_are_config_errors(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        EpochBatcher(**kwargs)


def test_default_matches_the_log_config() -> None:
    pytest.importorskip("pysyncobj")  # sequencer.log needs it; the batcher does not
    from sequencer.log import LogConfig

    assert LogConfig().epoch_bytes_max == EPOCH_BYTES_MAX_DEFAULT


# ------------------------------------------------------ against a list model

EPOCH_MS = 10
BYTES_MAX = 100
ITEMS_MAX = 5


class BatcherVsModel(RuleBasedStateMachine):
    """Random adds, clock advances and polls; the model is a list and a start time."""

    def __init__(self) -> None:
        super().__init__()
        self.batcher: EpochBatcher[int] = EpochBatcher(EPOCH_MS, BYTES_MAX, ITEMS_MAX)
        self.now_ms = 0
        self.next_item = 0
        self.added: list[int] = []
        self.sizes: dict[int, int] = {}
        self.emitted: list[list[int]] = []
        self.model_open: list[int] = []
        self.model_opened_ms = 0

    def _emit(self, closed: list[int] | None, expected: list[int] | None) -> None:
        assert closed == expected
        if closed is not None:
            self.emitted.append(closed)

    @rule(ms=st.integers(0, 15))
    def advance(self, ms: int) -> None:
        self.now_ms += ms

    # Small sizes half the time, so the count limit binds too, not only bytes.
    @rule(size=st.one_of(st.integers(1, 10), st.integers(1, BYTES_MAX)))
    def add(self, size: int) -> None:
        item, self.next_item = self.next_item, self.next_item + 1
        self.added.append(item)
        self.sizes[item] = size
        expected = None
        if self.model_open and (
            self.now_ms >= self.model_opened_ms + EPOCH_MS
            or sum(self.sizes[i] for i in self.model_open) + size > BYTES_MAX
            or len(self.model_open) == ITEMS_MAX
        ):
            expected, self.model_open = self.model_open, []
        if not self.model_open:
            self.model_opened_ms = self.now_ms
        self.model_open.append(item)
        self._emit(self.batcher.add(item, size, self.now_ms), expected)

    @rule()
    def poll(self) -> None:
        expected = None
        if self.model_open and self.now_ms >= self.model_opened_ms + EPOCH_MS:
            expected, self.model_open = self.model_open, []
        self._emit(self.batcher.poll(self.now_ms), expected)

    @precondition(lambda self: self.model_open)
    @rule()
    def sleep_until_deadline_and_poll(self) -> None:
        # What the node's loop does: sleep until next_deadline_ms, then poll.
        deadline = self.batcher.next_deadline_ms()
        assert deadline == self.model_opened_ms + EPOCH_MS
        self.now_ms = max(self.now_ms, deadline)
        self.poll()

    @invariant()
    def epochs_are_within_limits(self) -> None:
        for epoch in self.emitted:
            assert 1 <= len(epoch) <= ITEMS_MAX
            assert sum(self.sizes[i] for i in epoch) <= BYTES_MAX

    @invariant()
    def nothing_lost_duplicated_or_reordered(self) -> None:
        flat = [i for epoch in self.emitted for i in epoch]
        assert flat + self.model_open == self.added
        assert self.batcher.pending_items == len(self.model_open)

    def teardown(self) -> None:
        self._emit(self.batcher.flush(), self.model_open or None)
        assert [i for epoch in self.emitted for i in epoch] == self.added


BatcherVsModel.TestCase.settings = settings(print_blob=True, max_examples=200, stateful_step_count=60, deadline=None)
test_batcher_matches_model = BatcherVsModel.TestCase
