"""Building an epoch: stamps, batch bounds, footprints and the dependency graph.

Role: pure core, part of `SequencerCore` and `ExecutorCore`.

Owned here: what an intent touches (`footprint`), how linked chains are cut
(`chains`) and `build_epoch`, which the leader calls when the batcher closes
an epoch.  The executor calls `verify_groups` on every epoch it receives,
because the graph is a deterministic function of the epoch and a replica
must not be trusted to have built it right.
"""

from __future__ import annotations

from collections.abc import Sequence

from sequencer.errors import InvariantViolation
from sequencer.graph import build_groups
from sequencer.types import TRANSFER_LINKED, CreateAccount, CreateTransfer, Epoch, Intent


def touches(intent: Intent) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The account ids and transfer ids an intent reads or writes.

    The one statement of an intent's footprint: the dependency graph
    (`footprint`) and the executor's preload (`executor/core.py`) both use it.
    A transfer touches its two accounts and its own id (so duplicates of one
    id conflict); a post or void also touches the pending transfer's id.
    """
    if isinstance(intent, CreateAccount):
        return (intent.id,), ()
    accounts = (intent.debit_account_id, intent.credit_account_id)
    return accounts, ((intent.id, intent.pending_id) if intent.pending_id else (intent.id,))


def footprint(intent: Intent) -> set[int]:
    """The keys an intent touches for the graph: account ids as 2*id, transfer ids as 2*id+1."""
    accounts, transfers = touches(intent)
    return {2 * a for a in accounts} | {2 * t + 1 for t in transfers}


def chains(intents: Sequence[Intent], bounds: Sequence[int]) -> list[list[int]]:
    """Split intents into units: single intents and whole linked chains.

    A chain is a run of transfers carrying `linked`, closed by the next
    transfer without it.  A run still open at a batch bound stays open: it
    is never joined with the next client's batch.
    """
    units: list[list[int]] = []
    start = 0
    for end in bounds:
        current: list[int] = []
        for i in range(start, end):
            current.append(i)
            intent = intents[i]
            if not (isinstance(intent, CreateTransfer) and intent.flags & TRANSFER_LINKED):
                units.append(current)
                current = []
        if current:
            units.append(current)
        start = end
    return units


def groups_for(intents: Sequence[Intent], bounds: Sequence[int]) -> list[list[int]]:
    links = [(unit[0], i) for unit in chains(intents, bounds) for i in unit[1:]]
    return build_groups([footprint(x) for x in intents], links)


def build_epoch(stamps: list[int], intents: list[Intent], bounds: list[int]) -> Epoch:
    """The leader's proposal; `number` is fixed when the log applies it."""
    return Epoch(number=0, stamps=stamps, intents=intents, bounds=bounds, groups=groups_for(intents, bounds))


def verify_groups(epoch: Epoch) -> None:
    expected = groups_for(epoch.intents, epoch.bounds)
    if expected != epoch.groups:
        raise InvariantViolation(f"epoch {epoch.number}: the dependency graph in the log differs from the recomputed one")
