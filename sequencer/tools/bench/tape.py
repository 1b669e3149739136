"""The bench's workload: seeded transfers drawn ahead into a tape every system replays.

Role: driver (tools); part of `ordo bench`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator

from sequencer.limits import BATCH_EVENTS_MAX
from sequencer.tools.workload import Mix, Workload
from sequencer.tools.bench.constants import PAIR_TRIES_MAX, TAPE_DIGEST_GROUPS, TAPE_IDS_SPAN


# ------------------------------------------------------------------ workload


class BenchWorkload(Workload):
    """`Workload` plus a cross-shard knob and an endless stream of event groups.

    With the embedded directory an account lives on shard `id % shards`; a
    pair on the same shard touches one store, a pair on two shards makes the
    executor push to both.  `cross_shard` is the share of pairs drawn across
    shards (None keeps `Workload`'s choice: whatever the draw gives).
    """

    def __init__(self, seed: int, accounts: int, mix: Mix, shards: int = 2, cross_shard: float | None = None,
                 tape_index: int | None = None) -> None:
        super().__init__(seed, accounts, mix)
        self.shards = shards
        self.cross_shard = cross_shard
        self._on_shard = {r: [a for a in self.account_ids if a % shards == r] for r in range(shards)}
        if tape_index is not None:
            self._ids = itertools.count(seed * 10**9 + (tape_index + 1) * TAPE_IDS_SPAN + 1)

    def _pair(self) -> tuple[int, int]:
        if self.cross_shard is None or self.shards < 2:
            return super()._pair()
        a = self._pick()
        cross = self.rng.random() < self.cross_shard
        for _ in range(PAIR_TRIES_MAX):
            b = self._pick()
            if b != a and (a % self.shards != b % self.shards) == cross:
                return a, b
        side = (a + 1) % self.shards if cross else a % self.shards
        candidates = [x for x in self._on_shard[side] if x != a] or [x for x in self.account_ids if x != a]
        return a, self.rng.choice(candidates)

    def accounts_list(self) -> list[dict]:
        return [a for batch in self.account_batches(BATCH_EVENTS_MAX) for a in batch]

    def groups(self) -> Iterator[list[dict]]:
        """One transfer or one linked chain at a time, for ever (as `transfer_batches` draws them)."""
        while True:
            group = self._event_group()
            yield group
            self._sent.extend(g for g in group if not g.get("flags"))
            if len(self._sent) > 10_000:
                del self._sent[: len(self._sent) - 10_000]


class GroupTape:
    """The groups of one workload, drawn once and replayed to every system."""

    def __init__(self, workload: BenchWorkload) -> None:
        self._draw = workload.groups()
        self.groups: list[list[dict]] = []
        self.ends: list[int] = []  # events in groups[0..i]
        self.events = 0

    def fill(self, events: int) -> None:
        while self.events < events:
            group = next(self._draw)
            self.groups.append(group)
            self.events += len(group)
            self.ends.append(self.events)

    def ensure(self, cursor: TapeCursor, events: int) -> None:
        """Draw `events` beyond the cursor now, so that no run draws while it is measured.

        Drawing costs ~12 us per event in the bench process, which shares the
        machine with the cluster: at 30k intents/s, drawing on the fly took a
        third of the client's CPU.
        """
        done = self.ends[cursor.index - 1] if 0 < cursor.index <= len(self.ends) else 0
        self.fill(done + events)

    def group(self, index: int) -> list[dict]:
        while index >= len(self.groups):
            self.fill(self.events + 1)
        return self.groups[index]

    def cursor(self, start: int = 0) -> TapeCursor:
        return TapeCursor(self, start)

    def digest(self, start: int, groups: int = TAPE_DIGEST_GROUPS) -> str:
        """A fingerprint of the transfers from `start` on: equal digests, equal transfers."""
        h = hashlib.sha256()
        for i in range(start, start + groups):
            h.update(json.dumps(self.group(i), sort_keys=True).encode())
        return h.hexdigest()[:16]


class TapeCursor:
    """One reader of a tape; units are groups (baselines) or batches of whole groups (ordo)."""

    def __init__(self, tape: GroupTape, start: int = 0) -> None:
        self.tape = tape
        self.index = start

    def next_group(self) -> list[dict]:
        group = self.tape.group(self.index)
        self.index += 1
        return group

    def next_batch(self, size: int) -> list[dict]:
        batch = list(self.next_group())
        while len(batch) + len(self.tape.group(self.index)) <= size:
            batch.extend(self.next_group())
        return batch


