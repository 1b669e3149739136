"""Sans-I/O epoch batcher: decides when an epoch closes.

Role: pure core, part of `SequencerCore` (sequencer/core.py).

Owned here: the rule that cuts the stream of submitted items into epochs.
An epoch closes when `epoch_ms` have passed since it opened (its first
item arrived), or just before an item that would push it past
`epoch_bytes_max` or `epoch_items_max`, whichever comes first.

Called by the leader's drain loop in `sequencer/node.py`, which owns the
clock and the sleeping: it passes `now_ms` (a monotonic clock) to `add` and
`poll`, and sleeps until `next_deadline_ms()`.  The batcher reads no clock,
does no I/O and never awaits (STYLE 1), in the manner of aioquic's
`handle_timer(now)`.

Why time runs from the epoch's first item, not on a fixed 10 ms grid as in
Calvin: every epoch is one Raft entry, replicated, journaled and applied
once per shard.  A fixed grid would emit 100 empty entries a second on an
idle cluster.  Starting the timer at the first item gives every item the
same latency bound as Calvin's grid (at most `epoch_ms` plus the caller's
poll lateness) and never emits an empty epoch.  Determinism does not
depend on this choice: replicas agree on epoch boundaries through the log,
not through time.

Relations the configuration must check on load (`sequencer/config.py`,
`LogConfig.check`), beside the per-argument checks in `EpochBatcher`:

* `epoch_bytes_max` < 16 KiB: pysyncobj churned leaders at 16 KiB entries
  (DESIGN.md), and it breaks outright at 64 KiB.
* `2 * epoch_bytes_max <= append_entries_batch_bytes < 64 KiB`, so one
  append_entries message carries whole epochs and stays under the size at
  which pysyncobj's chunked transmission broke.
* the largest item a client can submit (a full request batch, encoded, plus
  per-intent overhead) `<= epoch_bytes_max`, or a valid request is refused.
* the sizes passed to `add` bound each item's whole share of the encoded
  epoch (stamps, group indices, framing: node.py's INTENT_OVERHEAD_BYTES),
  because the batcher sees nothing else.
* `10 * epoch_ms <= election_timeout_ms_min`: an epoch must not be a
  noticeable fraction of a leader's lease on progress.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from sequencer import limits
from sequencer.errors import ConfigError, InvariantViolation, ValidationError

T = TypeVar("T")

class EpochBatcher(Generic[T]):
    """Collects items into epochs that close on time, size or count.

    `add` and `poll` return the closed epoch's items, in the order they were
    added, or None.  An epoch is never empty and never holds more than
    `epoch_bytes_max` bytes (the sum of its items' `size_bytes`) or
    `epoch_items_max` items.
    """

    def __init__(
        self,
        epoch_ms: int = limits.EPOCH_MS,
        epoch_bytes_max: int = limits.EPOCH_BYTES_MAX,
        epoch_items_max: int = limits.EPOCH_ITEMS_MAX,
    ) -> None:
        if epoch_ms < 1:
            raise ConfigError(f"epoch_ms must be at least 1, not {epoch_ms}")
        if not 1 <= epoch_bytes_max < limits.EPOCH_BYTES_CEILING:
            raise ConfigError(
                f"epoch_bytes_max must be in [1, 64 KiB) (pysyncobj breaks at 64 KiB), not {epoch_bytes_max}"
            )
        if epoch_items_max < 1:
            raise ConfigError(f"epoch_items_max must be at least 1, not {epoch_items_max}")
        self.epoch_ms = epoch_ms
        self.epoch_bytes_max = epoch_bytes_max
        self.epoch_items_max = epoch_items_max
        self._items: list[T] = []
        self._bytes = 0
        self._opened_ms = 0  # meaningful only while _items is non-empty
        self._now_ms_last: int | None = None

    @property
    def pending_items(self) -> int:
        """Items in the open epoch."""
        return len(self._items)

    @property
    def pending_bytes(self) -> int:
        """Sum of `size_bytes` of the items in the open epoch."""
        return self._bytes

    def add(self, item: T, size_bytes: int, now_ms: int) -> list[T] | None:
        """Add `item`; return the previous epoch if it had to close first.

        The open epoch closes before `item` joins it when its time is up, or
        when `item` would take it past either limit, so no epoch ever
        exceeds them; `item` then opens the next epoch.  An item larger than
        a whole epoch is refused with `ValidationError` and nothing changes.
        """
        self._advance(now_ms)
        if not 1 <= size_bytes <= self.epoch_bytes_max:
            raise ValidationError(
                f"an item of {size_bytes} bytes cannot join an epoch: items take 1 to "
                f"epoch_bytes_max={self.epoch_bytes_max} bytes; split it into smaller batches"
            )
        closed = self._close() if self._must_close_before(size_bytes, now_ms) else None
        if not self._items:
            self._opened_ms = now_ms
        self._items.append(item)
        self._bytes += size_bytes
        return closed

    # TLA+: Ordo!CloseEpoch -- an epoch closes on time or size.
    def poll(self, now_ms: int) -> list[T] | None:
        """Return the open epoch if `epoch_ms` have passed since it opened, else None."""
        self._advance(now_ms)
        if self._items and now_ms >= self._opened_ms + self.epoch_ms:
            return self._close()
        return None

    def next_deadline_ms(self) -> int | None:
        """When `poll` will next close an epoch; None while no epoch is open
        (sleep until an item arrives)."""
        return self._opened_ms + self.epoch_ms if self._items else None

    def flush(self) -> list[T] | None:
        """Close the open epoch now, whatever the time: for a leader stepping
        down or shutting down, which must answer every waiting item."""
        return self._close() if self._items else None

    # -- helpers -------------------------------------------------------------

    def _must_close_before(self, size_bytes: int, now_ms: int) -> bool:
        if not self._items:
            return False
        if now_ms >= self._opened_ms + self.epoch_ms:
            # Late poll: the item arrived after the epoch's deadline, so it
            # belongs to the next epoch.
            return True
        if self._bytes + size_bytes > self.epoch_bytes_max:
            return True
        return len(self._items) >= self.epoch_items_max

    def _close(self) -> list[T]:
        closed, self._items, self._bytes = self._items, [], 0
        return closed

    def _advance(self, now_ms: int) -> None:
        """Time passed in must not go backwards: a deadline would slip."""
        if self._now_ms_last is not None and now_ms < self._now_ms_last:
            raise InvariantViolation(
                f"now_ms went backwards ({now_ms} < {self._now_ms_last}); pass a monotonic clock"
            )
        self._now_ms_last = now_ms
