"""The epoch batcher: sans-I/O, with time passed in.

Owned here: when an epoch closes.  The leader's drain loop
(`sequencer/node.py`) adds request batches and polls; an epoch closes
`epoch_ms` after it opened (Calvin's 10 ms) or when the next batch would
push it past `epoch_bytes_max`, whichever comes first.  Empty epochs are
never emitted.  A batch is never split: a linked chain must be ordered as
one unit.  No clock reads, no I/O: `now_ms` comes from the caller.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from sequencer.errors import ValidationError

T = TypeVar("T")

#: Default epoch size bound: pysyncobj broke on 64 KiB entries and churned
#: leaders with 16 KiB ones (DESIGN.md); see `sequencer.log.LogConfig`.
EPOCH_BYTES_MAX_DEFAULT = 12 * 1024


class EpochBatcher(Generic[T]):
    def __init__(self, epoch_ms: int = 10, epoch_bytes_max: int = EPOCH_BYTES_MAX_DEFAULT) -> None:
        if epoch_ms <= 0:
            raise ValueError("epoch_ms must be positive")
        if epoch_bytes_max <= 0:
            raise ValueError("epoch_bytes_max must be positive")
        self.epoch_ms = epoch_ms
        self.epoch_bytes_max = epoch_bytes_max
        self._items: list[T] = []
        self._bytes = 0
        self._opened_ms: int | None = None

    def add(self, item: T, size_bytes: int, now_ms: int) -> list[T] | None:
        """Add a batch; returns the epoch that had to close to make room, if any."""
        if size_bytes > self.epoch_bytes_max:
            raise ValidationError(f"a batch of {size_bytes} bytes can never fit an epoch of {self.epoch_bytes_max}")
        closed = None
        if self._items and self._bytes + size_bytes > self.epoch_bytes_max:
            closed = self._close()
        if not self._items:
            self._opened_ms = now_ms
        self._items.append(item)
        self._bytes += size_bytes
        return closed

    def poll(self, now_ms: int) -> list[T] | None:
        """The epoch, if its time is up."""
        if self._items and now_ms - self._opened_ms >= self.epoch_ms:
            return self._close()
        return None

    def next_deadline_ms(self) -> int | None:
        return None if not self._items else self._opened_ms + self.epoch_ms

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    def _close(self) -> list[T]:
        items, self._items, self._bytes, self._opened_ms = self._items, [], 0, None
        return items
