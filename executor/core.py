"""The executor's pure core: committed epochs and loaded state in; loads and shard batches out.

Role: pure core (the executor's); driven by `runner.py` and `tests/sim/`.

Owned here: what the executor decides, i.e. where it resumes (the smallest
`applied_epoch`), which keys an epoch needs that its cache lacks, which
shard each load goes to, executing the epoch on the state machine, and
which shards still need its batch.  It does no I/O and never awaits; the
runner (`executor/runner.py`) is the I/O around it (the log feed, the
singleflight preloads, the pushers), and the simulator in `tests/sim/`
drives it directly.

    core.recover(applied, open_pendings)
    for epoch in committed epochs, in order:
        for request in core.loads(epoch): core.loaded(request, <read request.ids at request.at_epoch>)
        batches = core.execute(epoch)          # {shard: ShardBatch}, only shards that lack it
        <apply each batch>; core.pushed(shard, epoch.number)
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from executor.partition import split
from executor.state_machine import State, execute_epoch
from proxies.directory import Directory
from sequencer import limits
from sequencer.epochs import touches
from sequencer.errors import InvariantViolation
from sequencer.types import Epoch, ShardBatch, TransferRecord, hlc_ms

LOADS = ("accounts", "transfers", "resolutions")


@dataclass(frozen=True)
class LoadRequest:
    """Read `ids` of kind `what` from `shard` as of `at_epoch`, then pass the result to `loaded`."""

    what: str  # one of LOADS
    shard: str
    ids: list[int]
    at_epoch: int


class ExecutorCore:
    """See the module docstring.  The cache is bounded on purpose:

    a key is evicted once it has not been touched for `cache_epochs` epochs
    *and* its last write is durable in its shard (`pushed`); an open pending
    transfer with a timeout is never evicted (expiry needs it).  A key read
    again after eviction is loaded at the shard's safe read point,
    min(its `applied_epoch`, the last executed epoch): at or after the key's
    last write, and never past what this core has executed.
    """

    def __init__(self, directory: Directory, cache_epochs: int = limits.CACHE_EPOCHS) -> None:
        if cache_epochs < 1:
            raise InvariantViolation(f"cache_epochs must be at least 1, not {cache_epochs}")
        self.directory = directory
        self.cache_epochs = cache_epochs
        self.state = State(complete=False)
        self.applied: dict[str, int] = {}
        self.base_epoch = 0
        self.next_epoch = 1
        self._touched: dict[tuple[str, int], int] = {}  # (kind, key) -> last epoch that touched it
        self._written: dict[tuple[str, int], int] = {}  # (kind, key) -> last epoch that wrote it
        self._by_epoch: deque[tuple[int, list[tuple[str, int]]]] = deque()
        self.evicted = 0

    # TLA+: Ordo!ExecutorRecover -- resume from the smallest applied_epoch.
    def recover(self, applied: dict[str, int], open_pendings: list[TransferRecord]) -> None:
        """Start over from the shards' `applied_epoch` and their open pending transfers."""
        missing = set(self.directory.names) - set(applied)
        if missing:
            raise InvariantViolation(f"recover needs every shard's applied_epoch; missing {sorted(missing)}")
        self.applied = dict(applied)
        self.base_epoch = min(applied.values())
        self.next_epoch = self.base_epoch + 1
        self.state = State(complete=False)
        self.state.epoch = self.base_epoch
        self._touched.clear()
        self._written.clear()
        self._by_epoch.clear()
        for record in open_pendings:
            self.state.transfers[record.transfer.id] = record
            self.state.resolutions[record.transfer.id] = None
            self.state.deadlines[record.transfer.id] = record.expires_at_ms

    def loads(self, epoch: Epoch) -> list[LoadRequest]:
        """What must be read before `epoch` can execute: the keys it touches that the cache lacks.

        Each read is at its shard's safe read point (see the class docstring).
        """
        accounts: set[int] = set()
        transfers: set[int] = set()
        for intent in epoch.intents:
            account_ids, transfer_ids = touches(intent)
            accounts.update(account_ids)
            transfers.update(transfer_ids)
        for pending_id in self.state.due(hlc_ms(epoch.hlc_first)):
            record = self.state.transfers[pending_id]
            accounts.update((record.transfer.debit_account_id, record.transfer.credit_account_id))
        return [
            *self._requests("accounts", accounts, self.state.accounts, self.directory.account_shard),
            *self._requests("transfers", transfers, self.state.transfers, self.directory.transfer_shard),
            *self._requests("resolutions", transfers, self.state.resolutions, self.directory.transfer_shard),
        ]

    def _requests(self, what: str, keys: set[int], cache: dict, route) -> list[LoadRequest]:
        by_shard: dict[str, list[int]] = {}
        for key in keys:
            if key in cache:
                continue
            shard = route(key)
            if shard is None:
                cache[key] = None  # no range covers it: it cannot exist
                continue
            by_shard.setdefault(shard, []).append(key)
        return [LoadRequest(what, shard, sorted(ids), self.read_point(shard)) for shard, ids in sorted(by_shard.items())]

    def read_point(self, shard: str) -> int:
        """Where a load from `shard` is correct: it holds every write of an evicted key
        (those are pushed), and nothing this core has not executed yet."""
        return min(self.applied[shard], self.next_epoch - 1)

    def loaded(self, request: LoadRequest, found: dict) -> None:
        cache = getattr(self.state, request.what)
        for key in request.ids:
            # setdefault: never overwrite what execution has written since the load was asked for.
            cache.setdefault(key, found.get(key))

    # TLA+: Ordo!Execute -- execute one epoch; the batches of the shards that lack it.
    def execute(self, epoch: Epoch) -> dict[str, ShardBatch]:
        if epoch.number != self.next_epoch:
            raise InvariantViolation(f"executor expected epoch {self.next_epoch}, got {epoch.number}")
        effects = execute_epoch(self.state, epoch)
        self.state.apply(effects)
        self._remember(epoch, effects)
        self.next_epoch += 1
        batches = {name: batch for name, batch in split(effects, self.directory).items()
                   if batch.epoch > self.applied[name]}
        self._evict()
        return batches

    def _remember(self, epoch: Epoch, effects) -> None:
        keys: list[tuple[str, int]] = []
        for intent in epoch.intents:
            account_ids, transfer_ids = touches(intent)
            keys.extend(("accounts", a) for a in account_ids)
            keys.extend(("transfers", t) for t in transfer_ids)
            keys.extend(("resolutions", t) for t in transfer_ids)
        written = [("accounts", a.id) for a in effects.balances]
        written += [("transfers", r.transfer.id) for r in effects.transfers]
        written += [("resolutions", r.pending_id) for r in effects.resolutions]
        for key in written:
            self._written[key] = epoch.number
        keys.extend(written)  # expiries write accounts no intent named
        for key in keys:
            self._touched[key] = epoch.number
        self._by_epoch.append((epoch.number, keys))

    def _evict(self) -> None:
        """Drop keys untouched for `cache_epochs` epochs whose last write is durable."""
        horizon = self.next_epoch - 1 - self.cache_epochs
        while self._by_epoch and self._by_epoch[0][0] <= horizon:
            number, keys = self._by_epoch[0]
            kept = [key for key in keys if self._touched.get(key) == number and not self._try_evict(key)]
            if kept:
                self._by_epoch[0] = (number, kept)  # not durable yet: try again after the next push
                return
            self._by_epoch.popleft()

    def _try_evict(self, key: tuple[str, int]) -> bool:
        what, k = key
        shard = self.directory.account_shard(k) if what == "accounts" else self.directory.transfer_shard(k)
        if shard is not None and self._written.get(key, 0) > self.applied[shard]:
            return False
        if what == "transfers" and k in self.state.deadlines:
            # An open pending with a timeout stays cached (expiry needs it): look again later.
            self._touched[key] = self.next_epoch - 1
            self._by_epoch.append((self.next_epoch - 1, [key]))
            return True
        getattr(self.state, what).pop(k, None)
        self._touched.pop(key, None)
        self._written.pop(key, None)
        self.evicted += 1
        return True

    def pushed(self, shard: str, epoch: int) -> None:
        """`shard` durably holds everything up to `epoch`."""
        if epoch < self.applied[shard]:
            raise InvariantViolation(f"shard {shard} went back from epoch {self.applied[shard]} to {epoch}")
        self.applied[shard] = epoch
        self._evict()
