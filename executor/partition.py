"""Grouping an epoch's effects by shard.

Role: pure core, part of `ExecutorCore`.

Owned here: which shard each row of `Effects` goes to.  Called by the runner
before it pushes, and by the verifier when it replays the log into memory
shards.  Every shard receives a batch for every epoch, even an empty one,
because W (the minimum `applied_epoch`) may only advance when all do.
"""

from __future__ import annotations

from executor.state_machine import Effects
from proxies.directory import Directory
from sequencer.errors import InvariantViolation
from sequencer.types import ShardBatch


def _account_shard(directory: Directory, account_id: int) -> str:
    shard = directory.account_shard(account_id)
    if shard is None:
        # The API refuses unroutable account ids, so this is a config change or a bug.
        raise InvariantViolation(f"account {account_id} exists but no directory range covers it")
    return shard


def split(effects: Effects, directory: Directory) -> dict[str, ShardBatch]:
    rows: dict[str, dict[str, list]] = {
        name: {"accounts": [], "balances": [], "postings": [], "transfers": [], "resolutions": [], "results": []}
        for name in directory.names
    }
    for account in effects.accounts:
        rows[_account_shard(directory, account.id)]["accounts"].append(account)
    for account in effects.balances:
        rows[_account_shard(directory, account.id)]["balances"].append(account)
    for posting in effects.postings:
        rows[_account_shard(directory, posting.account_id)]["postings"].append(posting)
    for record in effects.transfers:
        rows[directory.transfer_shard(record.transfer.id)]["transfers"].append(record)
    for resolution in effects.resolutions:
        rows[directory.transfer_shard(resolution.pending_id)]["resolutions"].append(resolution)
    for result in effects.results:
        rows[directory.result_shard(result.kind, result.id)]["results"].append(result)
    return {
        name: ShardBatch(shard=name, epoch=effects.epoch, hlc=effects.hlc, **_canonical(parts))
        for name, parts in rows.items()
    }


def _canonical(parts: dict[str, list]) -> dict[str, list]:
    """Sort rows by key, so that a batch's bytes do not depend on group interleaving."""
    return {
        "accounts": sorted(parts["accounts"], key=lambda a: a.id),
        "balances": sorted(parts["balances"], key=lambda a: a.id),
        "postings": sorted(parts["postings"], key=lambda p: (p.account_id, p.seq)),
        "transfers": sorted(parts["transfers"], key=lambda r: r.transfer.id),
        "resolutions": sorted(parts["resolutions"], key=lambda r: r.pending_id),
        "results": sorted(parts["results"], key=lambda r: r.index),
    }
