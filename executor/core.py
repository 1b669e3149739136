"""The executor's pure core: committed epochs and loaded state in; loads and shard batches out.

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

from dataclasses import dataclass

from executor.partition import split
from executor.state_machine import State, execute_epoch
from proxies.directory import Directory
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
    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self.state = State(complete=False)
        self.applied: dict[str, int] = {}
        self.base_epoch = 0
        self.next_epoch = 1

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
        for record in open_pendings:
            self.state.transfers[record.transfer.id] = record
            self.state.resolutions[record.transfer.id] = None
            self.state.deadlines[record.transfer.id] = record.expires_at_ms

    def loads(self, epoch: Epoch) -> list[LoadRequest]:
        """What must be read before `epoch` can execute: the keys it touches that the cache lacks.

        Reads are at `base_epoch`: every shard holds at least that much, and
        everything after it is in the cache, because this core executed it.
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
        return [LoadRequest(what, shard, sorted(ids), self.base_epoch) for shard, ids in sorted(by_shard.items())]

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
        self.next_epoch += 1
        return {name: batch for name, batch in split(effects, self.directory).items()
                if batch.epoch > self.applied[name]}

    def pushed(self, shard: str, epoch: int) -> None:
        """`shard` durably holds everything up to `epoch`."""
        if epoch < self.applied[shard]:
            raise InvariantViolation(f"shard {shard} went back from epoch {self.applied[shard]} to {epoch}")
        self.applied[shard] = epoch
