"""Seeded workloads for `ordo demo`, `ordo bench` and the cluster tests.

Owned here: one seed -> the same accounts and the same transfer batches
(STYLE 2).  The mix carries every kind of event the state machine knows:
plain transfers, linked chains (some of which must fail as a unit),
two-phase transfers (pending with timeouts, then post or void), duplicate
ids with the same and with a different body, and transfers that must fail.
Pure: it builds JSON-ready dicts and touches no network.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

LEDGER = 1
#: The bank account funds every other account; it has no balance limits.
BANK_ID = 1


@dataclass(frozen=True)
class Mix:
    """Shares of each kind of event, and the contention knobs."""

    linked: float = 0.10
    two_phase: float = 0.10
    duplicate: float = 0.03
    failing: float = 0.05
    zipf_s: float = 0.0  # 0 = uniform; 0.99 = hot; 1.2 = very hot
    limited_accounts: float = 0.5  # share with debits_must_not_exceed_credits
    #: Accounts in [first_id, first_id + accounts): a directory's range.
    first_account_id: int = 1000
    #: Optional second ledger on disjoint ids (cross-store settlement).
    second_ledger_first_id: int | None = None


@dataclass
class Workload:
    seed: int
    accounts: int
    mix: Mix = field(default_factory=Mix)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.account_ids = [self.mix.first_account_id + i for i in range(self.accounts)]
        self._ids = itertools.count(self.seed * 10**9 + 1)
        self._cdf = _zipf_cdf(self.accounts, self.mix.zipf_s) if self.mix.zipf_s > 0 else None
        self._pendings: list[dict] = []
        self._sent: list[dict] = []

    # -- accounts ------------------------------------------------------------

    def account_batches(self, batch_size: int) -> list[list[dict]]:
        accounts = [{"id": BANK_ID, "ledger": LEDGER, "code": 1}]
        for account_id in self.account_ids:
            limited = self.rng.random() < self.mix.limited_accounts
            flags = ["debits_must_not_exceed_credits"] if limited else []
            accounts.append({"id": account_id, "ledger": LEDGER, "code": 10, "flags": flags})
        return _chunks(accounts, batch_size)

    def funding_batches(self, batch_size: int, amount: int = 1_000_000) -> list[list[dict]]:
        return _chunks([self._transfer(BANK_ID, a, amount) for a in self.account_ids], batch_size)

    # -- transfers -----------------------------------------------------------

    def _pick(self) -> int:
        if self._cdf is None:
            return self.rng.choice(self.account_ids)
        return self.account_ids[bisect.bisect_left(self._cdf, self.rng.random())]

    def _pair(self) -> tuple[int, int]:
        a = self._pick()
        b = self._pick()
        while b == a:
            b = self.rng.choice(self.account_ids)
        return a, b

    def _transfer(self, debit: int, credit: int, amount: int, **extra) -> dict:
        body = {"id": next(self._ids), "debit_account_id": debit, "credit_account_id": credit,
                "amount": amount, "ledger": LEDGER, "code": 1}
        body.update(extra)
        return body

    def _event_group(self) -> list[dict]:
        """One event, or one linked chain, drawn from the mix."""
        r = self.rng.random()
        m = self.mix
        if r < m.linked:
            return self._chain()
        r -= m.linked
        if r < m.two_phase:
            return [self._two_phase()]
        r -= m.two_phase
        if r < m.duplicate and self._sent:
            return [self._duplicate()]
        r -= m.duplicate
        if r < m.failing:
            return [self._failing()]
        debit, credit = self._pair()
        return [self._transfer(debit, credit, self.rng.randint(1, 1_000))]

    def _chain(self) -> list[dict]:
        length = self.rng.randint(2, 4)
        chain = []
        for i in range(length):
            debit, credit = self._pair()
            # One chain in four carries a leg that cannot succeed.
            amount = 10**15 if i == length - 1 and self.rng.random() < 0.25 else self.rng.randint(1, 500)
            flags = ["linked"] if i < length - 1 else []
            chain.append(self._transfer(debit, credit, amount, flags=flags))
        return chain

    def _two_phase(self) -> dict:
        if self._pendings and self.rng.random() < 0.6:
            pending = self._pendings.pop(self.rng.randrange(len(self._pendings)))
            kind = "post_pending" if self.rng.random() < 0.7 else "void_pending"
            return self._transfer(pending["debit_account_id"], pending["credit_account_id"], 0,
                                  flags=[kind], pending_id=pending["id"], ledger=0, code=0)
        debit, credit = self._pair()
        timeout_ms = self.rng.choice([0, 0, 50, 60_000])
        pending = self._transfer(debit, credit, self.rng.randint(1, 1_000), flags=["pending"], timeout_ms=timeout_ms)
        self._pendings.append(pending)
        return pending

    def _duplicate(self) -> dict:
        original = self.rng.choice(self._sent)
        if self.rng.random() < 0.7:
            return dict(original)
        changed = dict(original)
        changed["amount"] = original["amount"] + 1
        return changed

    def _failing(self) -> dict:
        debit, credit = self._pair()
        kind = self.rng.randrange(3)
        if kind == 0:
            return self._transfer(debit, credit, 10**15)  # exceeds_credits on limited accounts
        if kind == 1:
            return self._transfer(debit, debit, 1)  # accounts_must_be_different
        return self._transfer(debit, 10**12 + self.rng.randrange(10**6), 1)  # credit_account_not_found

    def transfer_batches(self, count: int, batch_size: int) -> Iterator[list[dict]]:
        """Batches of about `batch_size` events, `count` events in all; chains never split."""
        produced = 0
        batch: list[dict] = []
        while produced < count:
            group = self._event_group()[: count - produced]
            if group and "linked" in group[-1].get("flags", []):
                group[-1] = {**group[-1], "flags": []}  # a truncated chain is closed, not left open
            if len(batch) + len(group) > batch_size:
                yield batch
                batch = []
            batch.extend(group)
            produced += len(group)
            self._sent.extend(g for g in group if not g.get("flags"))  # plain transfers only: a lone linked copy would chain onto its neighbour
            if len(self._sent) > 10_000:
                del self._sent[: len(self._sent) - 10_000]
        if batch:
            yield batch


def _zipf_cdf(n: int, s: float) -> list[float]:
    weights = [1.0 / (k**s) for k in range(1, n + 1)]
    total = sum(weights)
    cdf, acc = [], 0.0
    for w in weights:
        acc += w / total
        cdf.append(acc)
    cdf[-1] = 1.0
    return cdf


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]
