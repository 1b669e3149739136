"""An in-memory shard: the plain dict model of a store.

Role: the plain dict model of a store, for tests and the simulator.

Owned here: the simplest correct implementation of `ShardProxy`, versioned
exactly like the real stores.  Used by unit and property tests and by the
verifier, which replays the committed log serially into memory shards and
compares them with the real ones.  Never used for integration tests.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from proxies.base import ShardDump, ShardProxy, check_account, check_batches
from sequencer.types import Account, EventResult, Posting, Resolution, ShardBatch, TransferRecord


class MemoryShard(ShardProxy):
    def __init__(self, name: str) -> None:
        self.name = name
        self._applied = 0
        self._statics: dict[int, Account] = {}
        self._versions: dict[int, list[Account]] = {}  # id -> versions in epoch order
        self._postings: dict[int, list[Posting]] = {}
        self._transfers: dict[int, TransferRecord] = {}
        self._resolutions: dict[int, Resolution] = {}
        self._results: dict[int, list[EventResult]] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def applied_epoch(self) -> int:
        return self._applied

    async def apply(self, batches: Sequence[ShardBatch]) -> int:
        todo = check_batches(self._applied, batches, self.name)
        for batch in todo:
            self.apply_one(batch)
        return len(todo)

    def apply_one(self, batch: ShardBatch) -> None:
        for account in batch.accounts:
            self._statics[account.id] = account
        for account in batch.balances:
            self._versions.setdefault(account.id, []).append(account)
        for posting in batch.postings:
            self._postings.setdefault(posting.account_id, []).append(posting)
        for record in batch.transfers:
            self._transfers[record.transfer.id] = record
        for resolution in batch.resolutions:
            self._resolutions[resolution.pending_id] = resolution
        if batch.results:
            self._results[batch.epoch] = list(batch.results)
        self._applied = batch.epoch

    # -- versioned lookups ---------------------------------------------------

    def _account_at(self, account_id: int, at_epoch: int) -> Account | None:
        best = None
        for version in self._versions.get(account_id, ()):
            if version.epoch <= at_epoch:
                best = version
        if best is not None:
            check_account(best)
        return best

    async def load_accounts(self, ids: Collection[int], at_epoch: int) -> dict[int, Account]:
        found = {i: self._account_at(i, at_epoch) for i in ids}
        return {i: a for i, a in found.items() if a is not None}

    async def load_transfers(self, ids: Collection[int], at_epoch: int) -> dict[int, TransferRecord]:
        return {i: r for i in ids if (r := self._transfers.get(i)) is not None and r.epoch <= at_epoch}

    async def load_resolutions(self, pending_ids: Collection[int], at_epoch: int) -> dict[int, Resolution]:
        return {i: r for i in pending_ids if (r := self._resolutions.get(i)) is not None and r.epoch <= at_epoch}

    async def load_open_pendings(self, at_epoch: int) -> list[TransferRecord]:
        return sorted(
            (
                r
                for r in self._transfers.values()
                if r.expires_at_ms and r.epoch <= at_epoch and r.result == "ok"
                and not (
                    (res := self._resolutions.get(r.transfer.id)) is not None and res.epoch <= at_epoch
                )
            ),
            key=lambda r: r.transfer.id,
        )

    async def read_postings(self, account_id: int, at_epoch: int, after_seq: int = 0, limit: int = 100) -> list[Posting]:
        rows = [p for p in self._postings.get(account_id, ()) if p.epoch <= at_epoch and p.seq > after_seq]
        return rows[:limit]

    async def read_results(self, epoch: int) -> list[EventResult]:
        return list(self._results.get(epoch, ()))

    async def dump(self, at_epoch: int) -> ShardDump:
        accounts = [a for i in sorted(self._versions) if (a := self._account_at(i, at_epoch)) is not None]
        postings = [p for i in sorted(self._postings) for p in self._postings[i] if p.epoch <= at_epoch]
        return ShardDump(
            shard=self.name,
            at_epoch=at_epoch,
            accounts=accounts,
            postings=postings,
            transfers=[r for _, r in sorted(self._transfers.items()) if r.epoch <= at_epoch],
            resolutions=[r for _, r in sorted(self._resolutions.items()) if r.epoch <= at_epoch],
            results=[r for e in sorted(self._results) if e <= at_epoch for r in self._results[e]],
        )
