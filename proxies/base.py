"""The ShardProxy interface: what the executor and the API need from a store.

Role: the stores' interface; every proxy is a driver of one store.

Owned here: the contract every store honours (SQLite, PostgreSQL, Cassandra,
memory) and the store-independent checks run on what they return.  Callers:
`executor/runner.py` (apply, preload, recovery), `sequencer/api.py` (reads at
W) and `ordo verify` (dumps and hash chains).

The contract, which `tests/proxy_contract.py` checks against every store:

* `apply(batches)` writes one or more *consecutive* epochs atomically,
  together with the shard's `applied_epoch`.  Batches at or below
  `applied_epoch` are skipped (replay is a no-op); a batch that would leave a
  gap raises `InvariantViolation`, because an epoch is never skipped.
* Every read takes `at_epoch` and sees exactly the effects of epochs
  `<= at_epoch`: balances and postings are versioned by epoch.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Collection, Sequence

import msgspec

from sequencer.errors import InvariantViolation
from sequencer.types import Account, EventResult, Posting, Resolution, ShardBatch, TransferRecord, broken_balance_flag


class ShardDump(msgspec.Struct, frozen=True):
    """Every row of a shard visible at `at_epoch`, in canonical order."""

    shard: str
    at_epoch: int
    accounts: list[Account]  # latest balance version <= at_epoch, sorted by id
    postings: list[Posting]  # sorted by (account_id, seq)
    transfers: list[TransferRecord]  # sorted by transfer id
    resolutions: list[Resolution]  # sorted by pending id
    results: list[EventResult]  # sorted by (epoch, index)

    def digest(self) -> str:
        return hashlib.sha256(msgspec.msgpack.encode(self)).hexdigest()


class ShardProxy(abc.ABC):
    """One shard of one store.  Every method may raise `StoreUnavailable`."""

    name: str

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, and create the schema if it is missing."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def applied_epoch(self) -> int:
        """The last epoch whose effects this shard holds (0 before any)."""

    @abc.abstractmethod
    async def apply(self, batches: Sequence[ShardBatch]) -> int:
        """Atomically write consecutive epochs; returns how many were new."""

    # -- preload (the runner) ------------------------------------------------

    @abc.abstractmethod
    async def load_accounts(self, ids: Collection[int], at_epoch: int) -> dict[int, Account]: ...

    @abc.abstractmethod
    async def load_transfers(self, ids: Collection[int], at_epoch: int) -> dict[int, TransferRecord]: ...

    @abc.abstractmethod
    async def load_resolutions(self, pending_ids: Collection[int], at_epoch: int) -> dict[int, Resolution]: ...

    @abc.abstractmethod
    async def load_open_pendings(self, at_epoch: int) -> list[TransferRecord]:
        """Successful pending transfers with a timeout and no resolution at `at_epoch`."""

    # -- reads (the API) ---------------------------------------------------

    @abc.abstractmethod
    async def read_postings(self, account_id: int, at_epoch: int, after_seq: int = 0, limit: int = 100) -> list[Posting]: ...

    @abc.abstractmethod
    async def read_results(self, epoch: int) -> list[EventResult]:
        """The results of `epoch` whose home is this shard, by index."""

    @abc.abstractmethod
    async def dump(self, at_epoch: int) -> ShardDump: ...


# TLA+: Ordo!ShardApply -- the applied_epoch guard (GuardAppliedEpoch).
def check_batches(applied: int, batches: Sequence[ShardBatch], shard: str) -> list[ShardBatch]:
    """The `applied_epoch` guard, shared by every proxy.

    Returns the batches still to write.  Raises if they are not consecutive or
    would leave a gap after `applied`.
    """
    for a, b in zip(batches, batches[1:]):
        if b.epoch != a.epoch + 1:
            raise InvariantViolation(f"shard {shard}: batches for epochs {a.epoch} and {b.epoch} are not consecutive")
    todo = [b for b in batches if b.epoch > applied]
    if todo and todo[0].epoch != applied + 1:
        raise InvariantViolation(
            f"shard {shard}: applying epoch {todo[0].epoch} on top of {applied} would skip an epoch"
        )
    for batch in todo:
        if batch.shard != shard:
            raise InvariantViolation(f"batch for shard {batch.shard} pushed to shard {shard}")
        check_rows(batch)
    return todo


def check_rows(batch: ShardBatch) -> None:
    """Row checks before a proxy writes them (STYLE 6: check before writing)."""
    for account in (*batch.accounts, *batch.balances):
        if account.epoch != batch.epoch:
            raise InvariantViolation(f"account {account.id} version {account.epoch} in batch of epoch {batch.epoch}")
        check_account(account)
    for posting in batch.postings:
        if posting.epoch != batch.epoch:
            raise InvariantViolation(f"posting {posting.account_id}/{posting.seq} in batch of epoch {batch.epoch}")


def check_account(account: Account) -> None:
    """Balance invariants of one account row; run after every read too."""
    for column in ("debits_pending", "debits_posted", "credits_pending", "credits_posted"):
        value = getattr(account, column)
        if not 0 <= value < 2**63:
            raise InvariantViolation(f"account {account.id}: {column}={value} is out of range")
    broken = broken_balance_flag(account)
    if broken:
        raise InvariantViolation(f"account {account.id}: its balances break its flag {broken}")
