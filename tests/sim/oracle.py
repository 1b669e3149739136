"""A plain dict model of ordo's money rules, written apart from `executor/state_machine.py`.

The simulator compares the stores at W with this model after every step.
It is deliberately naive: dicts of ints, one epoch at a time, one intent at a
time, copies instead of overlays.  It covers what the simulator's workload
sends (accounts on one ledger with and without `debits_must_not_exceed_credits`,
plain, linked, pending, post, void and expiring transfers, duplicates, and
transfers that must fail); for anything else it raises, so the workload
cannot drift outside what it models without notice.  It follows the rules as
the README and DESIGN.md state them (TigerBeetle's semantics), so a rule bug
shared by both executors of `state_machine.py` shows up as a difference.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from sequencer.types import CreateAccount, CreateTransfer, Epoch

LINKED, PENDING, POST, VOID = 1, 2, 4, 8
DEBITS_MUST_NOT_EXCEED_CREDITS = 1


class OutsideTheModel(Exception):
    """The workload sent something this model does not cover."""


@dataclass
class Model:
    #: account id -> [debits_pending, debits_posted, credits_pending, credits_posted]
    balances: dict[int, list[int]] = field(default_factory=dict)
    limited: set[int] = field(default_factory=set)
    ledger: dict[int, int] = field(default_factory=dict)
    #: transfer id -> (the transfer, its result)
    transfers: dict[int, tuple[CreateTransfer, str]] = field(default_factory=dict)
    #: pending id -> "open" | "posted" | "voided" | "expired"
    pending_state: dict[int, str] = field(default_factory=dict)
    #: pending id -> expiry (HLC ms), for open pendings with a timeout
    expiry: dict[int, int] = field(default_factory=dict)
    epoch: int = 0
    results: dict[tuple[int, int], str] = field(default_factory=dict)  # (epoch, index) -> result

    def apply_epoch(self, epoch: Epoch) -> None:
        if epoch.number != self.epoch + 1:
            raise AssertionError(f"the model expected epoch {self.epoch + 1}, got {epoch.number}")
        now_ms = epoch.stamps[0] >> 16
        for pending_id in sorted(self.expiry, key=lambda p: (self.expiry[p], p)):
            if self.expiry[pending_id] <= now_ms:
                self._release(pending_id, post_amount=0)
                self.pending_state[pending_id] = "expired"
                del self.expiry[pending_id]
        start = 0
        for end in epoch.bounds:
            run: list[int] = []
            for i in range(start, end):
                run.append(i)
                if not (isinstance(epoch.intents[i], CreateTransfer) and epoch.intents[i].flags & LINKED):
                    self._unit(epoch, run)
                    run = []
            if run:  # a chain still open at the end of its batch
                for i in run:
                    self._record(epoch, i, "linked_event_chain_open")
            start = end
        self.epoch = epoch.number

    # -- units -----------------------------------------------------------------

    def _unit(self, epoch: Epoch, run: list[int]) -> None:
        if len(run) == 1:
            self._record(epoch, run[0], self._one(epoch, run[0]))
            return
        replay = [self._existing(epoch.intents[i]) for i in run]
        if all(code not in (None, "exists_with_different_fields") for code in replay):
            for i, code in zip(run, replay):
                self._record(epoch, i, code)
            return
        saved = copy.deepcopy((self.balances, self.transfers, self.pending_state, self.expiry))
        for pos, i in enumerate(run):
            code = self._one(epoch, i)
            if code != "ok":
                self.balances, self.transfers, self.pending_state, self.expiry = saved
                for j in run:
                    self._record(epoch, j, code if j == i else "linked_event_failed")
                return
        for i in run:
            self._record(epoch, i, "ok")

    def _record(self, epoch: Epoch, i: int, code: str) -> None:
        self.results[(epoch.number, i)] = code
        t = epoch.intents[i]
        if isinstance(t, CreateTransfer) and code != "ok" and t.id not in self.transfers:
            self.transfers[t.id] = (t, code)  # failures are stored: a retry returns the same code

    # -- one intent --------------------------------------------------------------

    def _one(self, epoch: Epoch, i: int) -> str:
        t = epoch.intents[i]
        if isinstance(t, CreateAccount):
            return self._account(t)
        return self._transfer(t, epoch.stamps[i] >> 16)

    def _account(self, a: CreateAccount) -> str:
        if a.id in self.balances:
            return "exists"
        if a.flags not in (0, DEBITS_MUST_NOT_EXCEED_CREDITS) or a.user_data:
            raise OutsideTheModel(f"account {a}")
        self.balances[a.id] = [0, 0, 0, 0]
        self.ledger[a.id] = a.ledger
        if a.flags & DEBITS_MUST_NOT_EXCEED_CREDITS:
            self.limited.add(a.id)
        return "ok"

    def _existing(self, t) -> str | None:
        if not isinstance(t, CreateTransfer) or t.id not in self.transfers:
            return None
        stored, code = self.transfers[t.id]
        if stored != t:
            return "exists_with_different_fields"
        return "exists" if code == "ok" else code

    def _transfer(self, t: CreateTransfer, now_ms: int) -> str:
        if t.debit_account_id == t.credit_account_id:
            return "accounts_must_be_different"
        resolution = bool(t.flags & (POST | VOID))
        if t.timeout_ms and not t.flags & PENDING:
            raise OutsideTheModel(f"timeout on a non-pending transfer {t}")
        existing = self._existing(t)
        if existing is not None:
            return existing
        if resolution:
            return self._resolve(t, now_ms)
        if t.debit_account_id not in self.balances:
            return "debit_account_not_found"
        if t.credit_account_id not in self.balances:
            return "credit_account_not_found"
        dr, cr = self.balances[t.debit_account_id], self.balances[t.credit_account_id]
        if t.debit_account_id in self.limited and dr[0] + dr[1] + t.amount > dr[3]:
            return "exceeds_credits"
        if t.flags & PENDING:
            dr[0] += t.amount
            cr[2] += t.amount
            self.pending_state[t.id] = "open"
            if t.timeout_ms:
                self.expiry[t.id] = now_ms + t.timeout_ms
        else:
            dr[1] += t.amount
            cr[3] += t.amount
        self.transfers[t.id] = (t, "ok")
        return "ok"

    def _resolve(self, t: CreateTransfer, now_ms: int) -> str:
        found = self.transfers.get(t.pending_id)
        if found is None:
            return "pending_transfer_not_found"
        p, code = found
        if code != "ok" or not p.flags & PENDING:
            return "pending_transfer_not_pending"
        if t.debit_account_id != p.debit_account_id:
            return "pending_transfer_has_different_debit_account_id"
        if t.credit_account_id != p.credit_account_id:
            return "pending_transfer_has_different_credit_account_id"
        if t.amount > p.amount:
            return "exceeds_pending_transfer_amount"
        state = self.pending_state[p.id]
        if state != "open":
            return {"posted": "pending_transfer_already_posted", "voided": "pending_transfer_already_voided",
                    "expired": "pending_transfer_expired"}[state]
        if p.id in self.expiry and now_ms >= self.expiry[p.id]:
            return "pending_transfer_expired"
        post = bool(t.flags & POST)
        self._release(p.id, post_amount=(t.amount or p.amount) if post else 0)
        self.pending_state[p.id] = "posted" if post else "voided"
        self.expiry.pop(p.id, None)
        self.transfers[t.id] = (t, "ok")
        return "ok"

    def _release(self, pending_id: int, post_amount: int) -> None:
        p, _ = self.transfers[pending_id]
        dr, cr = self.balances[p.debit_account_id], self.balances[p.credit_account_id]
        dr[0] -= p.amount
        cr[2] -= p.amount
        dr[1] += post_amount
        cr[3] += post_amount
