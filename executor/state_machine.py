"""The deterministic state machine: (state, epoch) -> (effects, results).

Role: pure core, part of `ExecutorCore`.

Owned here: the meaning of every intent, i.e. balance checks, account flags,
linked all-or-nothing chains, two-phase transfers with expiry on HLC time,
duplicate ids and the per-account SHA-256 hash chains.  It reads no clock and
does no I/O; the runner (`executor/runner.py`) preloads the state an epoch
needs and persists the `Effects` through the shard proxies.

Two executors live here and must always agree:

* `execute_serial` is the oracle: one intent at a time, in log order.
* `execute_epoch` runs the epoch's independent groups, each against its own
  overlay, in any interleaving (`schedule`), then merges.  If the dependency
  graph ever missed a conflict the merge raises `InvariantViolation`, and the
  property tests compare both executors on random workloads.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import msgspec

from sequencer.epochs import chains
from sequencer.errors import InvariantViolation
from sequencer.types import (
    ACCOUNT_CLOSED,
    ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS,
    ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS,
    TRANSFER_LINKED,
    TRANSFER_PENDING,
    TRANSFER_POST_PENDING,
    TRANSFER_VOID_PENDING,
    U63_MAX,
    Account,
    CreateAccount,
    CreateTransfer,
    Epoch,
    EventResult,
    Intent,
    Posting,
    Resolution,
    Result,
    TransferRecord,
    broken_balance_flag,
    hlc_ms,
)

_hash_encoder = msgspec.msgpack.Encoder()


# ------------------------------------------------------------------ state


class State:
    """What the executor knows: a cache of the stores as of the last epoch.

    With `complete=True` (the oracle, the memory proxy) a missing key means
    "does not exist".  With `complete=False` (the runner's cache) every key an
    epoch touches must have been preloaded, as a value or as `None` for
    "known absent"; touching an unloaded key is a runner bug and raises.
    """

    def __init__(self, complete: bool = True) -> None:
        self.complete = complete
        self.accounts: dict[int, Account | None] = {}
        self.transfers: dict[int, TransferRecord | None] = {}
        self.resolutions: dict[int, Resolution | None] = {}
        #: open pending transfers with a timeout: pending id -> expires_at_ms
        self.deadlines: dict[int, int] = {}
        self.epoch = 0

    def account(self, account_id: int) -> Account | None:
        return self._get(self.accounts, account_id, "account")

    def transfer(self, transfer_id: int) -> TransferRecord | None:
        return self._get(self.transfers, transfer_id, "transfer")

    def resolution(self, pending_id: int) -> Resolution | None:
        return self._get(self.resolutions, pending_id, "resolution")

    def _get(self, table: dict, key: int, what: str):
        try:
            return table[key]
        except KeyError:
            if self.complete:
                return None
            raise InvariantViolation(f"{what} {key} was not preloaded before execution") from None

    def due(self, now_ms: int) -> list[int]:
        """Open pending transfers whose timeout has passed, in (deadline, id) order."""
        due = [(at, pid) for pid, at in self.deadlines.items() if at <= now_ms]
        return [pid for _, pid in sorted(due)]

    def apply(self, effects: Effects) -> None:
        """Advance this state by one executed epoch (the cache update)."""
        for account in effects.balances:
            self.accounts[account.id] = account
        for record in effects.transfers:
            self.transfers[record.transfer.id] = record
            if record.expires_at_ms:
                self.deadlines[record.transfer.id] = record.expires_at_ms
        for resolution in effects.resolutions:
            self.resolutions[resolution.pending_id] = resolution
            self.deadlines.pop(resolution.pending_id, None)
        self.epoch = effects.epoch


@dataclass
class Effects:
    """Everything one epoch changed, before it is split by shard."""

    epoch: int
    hlc: int
    accounts: list[Account] = field(default_factory=list)  # newly created (static part)
    balances: list[Account] = field(default_factory=list)  # final version of each touched account
    postings: list[Posting] = field(default_factory=list)
    transfers: list[TransferRecord] = field(default_factory=list)
    resolutions: list[Resolution] = field(default_factory=list)
    results: list[EventResult] = field(default_factory=list)

    def canonical(self) -> tuple:
        """A representation independent of execution order, for comparison."""
        return (
            self.epoch,
            sorted(self.accounts, key=lambda a: a.id),
            sorted(self.balances, key=lambda a: a.id),
            sorted(self.postings, key=lambda p: (p.account_id, p.seq)),
            sorted(self.transfers, key=lambda t: t.transfer.id),
            sorted(self.resolutions, key=lambda r: r.pending_id),
            sorted(self.results, key=lambda r: r.index),
        )


# ---------------------------------------------------------------- hashing


def genesis_hash(account: Account) -> bytes:
    """The first link of an account's chain: a hash of its static fields."""
    body = [account.id, account.ledger, account.code, account.flags, account.user_data, account.created_epoch]
    return hashlib.sha256(b"ordo/account/v1" + _hash_encoder.encode(body)).digest()


def posting_hash(p: Posting) -> bytes:
    """SHA-256 over the previous hash and every field of the posting but its own hash."""
    body = [
        p.account_id, p.seq, p.epoch, p.hlc, p.transfer_id, p.kind, p.amount,
        p.debits_pending, p.debits_posted, p.credits_pending, p.credits_posted,
    ]
    return hashlib.sha256(p.prev_hash + _hash_encoder.encode(body)).digest()


# ---------------------------------------------------------------- overlay


class _Overlay:
    """Copy-on-write view over a `State` (or a parent overlay) for one group or chain."""

    def __init__(self, base: State | _Overlay, epoch: int) -> None:
        self.base = base
        self.epoch = epoch
        self.accounts: dict[int, Account] = {}
        self.created: dict[int, Account] = {}
        self.transfers: dict[int, TransferRecord] = {}
        self.resolutions: dict[int, Resolution] = {}
        self.postings: list[Posting] = []

    def account(self, account_id: int) -> Account | None:
        found = self.accounts.get(account_id)
        return found if found is not None else self.base.account(account_id)

    def transfer(self, transfer_id: int) -> TransferRecord | None:
        found = self.transfers.get(transfer_id)
        return found if found is not None else self.base.transfer(transfer_id)

    def resolution(self, pending_id: int) -> Resolution | None:
        found = self.resolutions.get(pending_id)
        return found if found is not None else self.base.resolution(pending_id)

    def child(self) -> _Overlay:
        return _Overlay(self, self.epoch)

    def commit_into(self, parent: _Overlay) -> None:
        parent.accounts.update(self.accounts)
        parent.created.update(self.created)
        parent.transfers.update(self.transfers)
        parent.resolutions.update(self.resolutions)
        parent.postings.extend(self.postings)

    def post(self, account: Account, transfer_id: int, kind: str, amount: int, hlc: int, **balances: int) -> None:
        """Write a new balance version of `account` and the posting that links it."""
        updated = msgspec.structs.replace(account, **balances)
        posting = Posting(
            account_id=account.id,
            seq=account.seq + 1,
            epoch=self.epoch,
            hlc=hlc,
            transfer_id=transfer_id,
            kind=kind,
            amount=amount,
            debits_pending=updated.debits_pending,
            debits_posted=updated.debits_posted,
            credits_pending=updated.credits_pending,
            credits_posted=updated.credits_posted,
            prev_hash=account.head_hash,
            hash=b"",
        )
        posting = msgspec.structs.replace(posting, hash=posting_hash(posting))
        self.postings.append(posting)
        self.accounts[account.id] = msgspec.structs.replace(
            updated, seq=posting.seq, head_hash=posting.hash, epoch=self.epoch
        )


# ------------------------------------------------------------- accounts


def _create_account(ov: _Overlay, intent: CreateAccount) -> Result:
    if intent.id == 0:
        return Result.ID_MUST_NOT_BE_ZERO
    if intent.id == U63_MAX:
        return Result.ID_MUST_NOT_BE_INT_MAX
    flags = intent.flags
    both = ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS | ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS
    if flags & both == both:
        return Result.FLAGS_ARE_MUTUALLY_EXCLUSIVE
    if intent.ledger == 0:
        return Result.LEDGER_MUST_NOT_BE_ZERO
    if intent.code == 0:
        return Result.CODE_MUST_NOT_BE_ZERO
    existing = ov.account(intent.id)
    if existing is not None:
        same = (existing.ledger, existing.code, existing.flags, existing.user_data) == (
            intent.ledger, intent.code, intent.flags, intent.user_data
        )
        return Result.EXISTS if same else Result.EXISTS_WITH_DIFFERENT_FIELDS
    account = Account(
        id=intent.id, ledger=intent.ledger, code=intent.code, flags=intent.flags,
        user_data=intent.user_data, created_epoch=ov.epoch, epoch=ov.epoch,
    )
    account = msgspec.structs.replace(account, head_hash=genesis_hash(account))
    ov.accounts[account.id] = account
    ov.created[account.id] = account
    return Result.OK


# ------------------------------------------------------------ transfers


def _check_shape(t: CreateTransfer) -> Result | None:
    """Checks that need no state, in TigerBeetle's order."""
    if t.id == 0:
        return Result.ID_MUST_NOT_BE_ZERO
    if t.id == U63_MAX:
        return Result.ID_MUST_NOT_BE_INT_MAX
    kinds = t.flags & (TRANSFER_PENDING | TRANSFER_POST_PENDING | TRANSFER_VOID_PENDING)
    if kinds & (kinds - 1):
        return Result.FLAGS_ARE_MUTUALLY_EXCLUSIVE
    if t.debit_account_id == 0:
        return Result.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO
    if t.credit_account_id == 0:
        return Result.CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO
    if t.debit_account_id == t.credit_account_id:
        return Result.ACCOUNTS_MUST_BE_DIFFERENT
    if t.is_resolution:
        if t.pending_id == 0:
            return Result.PENDING_ID_MUST_NOT_BE_ZERO
        if t.pending_id == t.id:
            return Result.PENDING_ID_MUST_BE_DIFFERENT
    elif t.pending_id != 0:
        return Result.PENDING_ID_MUST_BE_ZERO
    if t.timeout_ms and not t.flags & TRANSFER_PENDING:
        return Result.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER
    if not t.is_resolution:
        if t.ledger == 0:
            return Result.LEDGER_MUST_NOT_BE_ZERO
        if t.code == 0:
            return Result.CODE_MUST_NOT_BE_ZERO
        if t.amount == 0:
            return Result.AMOUNT_MUST_NOT_BE_ZERO
    return None


def _check_accounts(t: CreateTransfer, dr: Account | None, cr: Account | None) -> Result | None:
    if dr is None:
        return Result.DEBIT_ACCOUNT_NOT_FOUND
    if cr is None:
        return Result.CREDIT_ACCOUNT_NOT_FOUND
    if dr.ledger != cr.ledger:
        return Result.LEDGER_MISMATCH
    if t.ledger and t.ledger != dr.ledger:
        return Result.LEDGER_MISMATCH
    if dr.flags & ACCOUNT_CLOSED:
        return Result.DEBIT_ACCOUNT_CLOSED
    if cr.flags & ACCOUNT_CLOSED:
        return Result.CREDIT_ACCOUNT_CLOSED
    return None


def _check_limits(dr: Account, cr: Account, amount: int, pending: bool) -> Result | None:
    """Overflow of every sum, then the accounts' balance flags."""
    dr_column = dr.debits_pending if pending else dr.debits_posted
    cr_column = cr.credits_pending if pending else cr.credits_posted
    if dr_column + amount > U63_MAX:
        return Result.OVERFLOWS_DEBITS_PENDING if pending else Result.OVERFLOWS_DEBITS_POSTED
    if cr_column + amount > U63_MAX:
        return Result.OVERFLOWS_CREDITS_PENDING if pending else Result.OVERFLOWS_CREDITS_POSTED
    if dr.debits_pending + dr.debits_posted + amount > U63_MAX:
        return Result.OVERFLOWS_DEBITS
    if cr.credits_pending + cr.credits_posted + amount > U63_MAX:
        return Result.OVERFLOWS_CREDITS
    if broken_balance_flag(dr, debit=amount) == "debits_must_not_exceed_credits":
        return Result.EXCEEDS_CREDITS
    if broken_balance_flag(cr, credit=amount) == "credits_must_not_exceed_debits":
        return Result.EXCEEDS_DEBITS
    return None


def _existing(ov: _Overlay, t: CreateTransfer) -> Result | None:
    """Idempotency: the same id with the same body returns the original result."""
    record = ov.transfer(t.id)
    if record is None:
        return None
    if record.transfer != t:
        return Result.EXISTS_WITH_DIFFERENT_FIELDS
    return Result.EXISTS if record.result == Result.OK else Result(record.result)


def _create_transfer(ov: _Overlay, t: CreateTransfer, hlc: int) -> Result:
    code = _check_shape(t)
    if code is not None:
        return code
    code = _existing(ov, t)
    if code is not None:
        return code
    if t.is_resolution:
        return _resolve_pending(ov, t, hlc)
    dr, cr = ov.account(t.debit_account_id), ov.account(t.credit_account_id)
    code = _check_accounts(t, dr, cr)
    if code is not None:
        return code
    pending = bool(t.flags & TRANSFER_PENDING)
    code = _check_limits(dr, cr, t.amount, pending)
    if code is not None:
        return code
    expires_at_ms = 0
    if pending and t.timeout_ms:
        expires_at_ms = hlc_ms(hlc) + t.timeout_ms
    if pending:
        ov.post(dr, t.id, "debit_pending", t.amount, hlc, debits_pending=dr.debits_pending + t.amount)
        ov.post(cr, t.id, "credit_pending", t.amount, hlc, credits_pending=cr.credits_pending + t.amount)
    else:
        ov.post(dr, t.id, "debit", t.amount, hlc, debits_posted=dr.debits_posted + t.amount)
        ov.post(cr, t.id, "credit", t.amount, hlc, credits_posted=cr.credits_posted + t.amount)
    ov.transfers[t.id] = TransferRecord(t, Result.OK.value, ov.epoch, hlc, expires_at_ms)
    return Result.OK


def _check_pending(ov: _Overlay, t: CreateTransfer, hlc: int) -> tuple[Result | None, TransferRecord | None]:
    record = ov.transfer(t.pending_id)
    if record is None:
        return Result.PENDING_TRANSFER_NOT_FOUND, None
    p = record.transfer
    if record.result != Result.OK or not p.flags & TRANSFER_PENDING:
        return Result.PENDING_TRANSFER_NOT_PENDING, None
    if t.debit_account_id != p.debit_account_id:
        return Result.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID, None
    if t.credit_account_id != p.credit_account_id:
        return Result.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID, None
    if t.ledger and t.ledger != p.ledger:
        return Result.PENDING_TRANSFER_HAS_DIFFERENT_LEDGER, None
    if t.code and t.code != p.code:
        return Result.PENDING_TRANSFER_HAS_DIFFERENT_CODE, None
    if t.amount > p.amount:
        return Result.EXCEEDS_PENDING_TRANSFER_AMOUNT, None
    done = ov.resolution(t.pending_id)
    if done is not None:
        return {
            "posted": Result.PENDING_TRANSFER_ALREADY_POSTED,
            "voided": Result.PENDING_TRANSFER_ALREADY_VOIDED,
        }.get(done.kind, Result.PENDING_TRANSFER_EXPIRED), None
    if record.expires_at_ms and hlc_ms(hlc) >= record.expires_at_ms:
        return Result.PENDING_TRANSFER_EXPIRED, None
    return None, record


def _resolve_pending(ov: _Overlay, t: CreateTransfer, hlc: int) -> Result:
    code, record = _check_pending(ov, t, hlc)
    if code is not None:
        return code
    p = record.transfer
    dr, cr = ov.account(p.debit_account_id), ov.account(p.credit_account_id)
    if dr is None or cr is None:
        raise InvariantViolation(f"pending transfer {p.id} refers to a missing account")
    post = bool(t.flags & TRANSFER_POST_PENDING)
    amount = (t.amount or p.amount) if post else 0
    if post and (dr.debits_posted + amount > U63_MAX):
        return Result.OVERFLOWS_DEBITS_POSTED
    if post and (cr.credits_posted + amount > U63_MAX):
        return Result.OVERFLOWS_CREDITS_POSTED
    kind = "post" if post else "void"
    _release(ov, p, amount, kind, t.id, hlc)
    ov.transfers[t.id] = TransferRecord(t, Result.OK.value, ov.epoch, hlc, 0)
    ov.resolutions[p.id] = Resolution(p.id, "posted" if post else "voided", amount, ov.epoch, t.id)
    return Result.OK


def _release(ov: _Overlay, p: CreateTransfer, amount: int, kind: str, by_id: int, hlc: int) -> None:
    """Take `p` out of the pending columns and post `amount` of it (0 = none)."""
    dr, cr = ov.account(p.debit_account_id), ov.account(p.credit_account_id)
    ov.post(dr, by_id or p.id, f"{kind}_debit", amount, hlc,
            debits_pending=dr.debits_pending - p.amount, debits_posted=dr.debits_posted + amount)
    ov.post(cr, by_id or p.id, f"{kind}_credit", amount, hlc,
            credits_pending=cr.credits_pending - p.amount, credits_posted=cr.credits_posted + amount)


def _expire(ov: _Overlay, pending_id: int, hlc: int) -> None:
    record = ov.transfer(pending_id)
    if record is None:
        raise InvariantViolation(f"pending transfer {pending_id} due for expiry is unknown")
    _release(ov, record.transfer, 0, "expire", 0, hlc)
    ov.resolutions[pending_id] = Resolution(pending_id, "expired", 0, ov.epoch, 0)


# ---------------------------------------------------------------- chains


def _is_open(epoch: Epoch, unit: list[int]) -> bool:
    last = epoch.intents[unit[-1]]
    return isinstance(last, CreateTransfer) and bool(last.flags & TRANSFER_LINKED)


def _run_unit(ov: _Overlay, epoch: Epoch, unit: list[int]) -> list[tuple[int, Result]]:
    """Execute one intent, or one linked chain all-or-nothing."""
    if len(unit) == 1 and not _is_open(epoch, unit):
        outcomes = [(unit[0], _run_intent(ov, epoch, unit[0]))]
    elif _is_open(epoch, unit):
        outcomes = [(i, Result.LINKED_EVENT_CHAIN_OPEN) for i in unit]
    else:
        outcomes = _run_chain(ov, epoch, unit)
    _record_failures(ov, epoch, outcomes)
    return outcomes


def _run_chain(ov: _Overlay, epoch: Epoch, unit: list[int]) -> list[tuple[int, Result]]:
    replay = _replayed_chain(ov, epoch, unit)
    if replay is not None:
        return replay
    scratch = ov.child()
    for i in unit:
        code = _run_intent(scratch, epoch, i)
        if code != Result.OK:
            # The scratch overlay is dropped: nothing of the chain is applied.
            return [(j, code if j == i else Result.LINKED_EVENT_FAILED) for j in unit]
    scratch.commit_into(ov)
    return [(i, Result.OK) for i in unit]


def _replayed_chain(ov: _Overlay, epoch: Epoch, unit: list[int]) -> list[tuple[int, Result]] | None:
    """A client retrying a whole chain gets each member's original result.

    Chains apply as a unit, so if every member is already stored with the
    same body the chain was decided before; answering `exists` for the first
    and `linked_event_failed` for the rest would tell the client a settled
    chain had failed.
    """
    outcomes = []
    for i in unit:
        t = epoch.intents[i]
        code = _existing(ov, t) if t.id not in (0, U63_MAX) else None
        if code is None or code == Result.EXISTS_WITH_DIFFERENT_FIELDS:
            return None
        outcomes.append((i, code))
    return outcomes


def _record_failures(ov: _Overlay, epoch: Epoch, outcomes: list[tuple[int, Result]]) -> None:
    """Store failed transfers, so a resubmission returns the original result.

    Not stored: invalid ids (they cannot be keys) and ids that already have a
    record (`exists*`, or a duplicate earlier in the same chain).
    """
    for i, code in outcomes:
        t = epoch.intents[i]
        if not isinstance(t, CreateTransfer) or code == Result.OK:
            continue
        if t.id in (0, U63_MAX) or ov.transfer(t.id) is not None:
            continue
        ov.transfers[t.id] = TransferRecord(t, code.value, ov.epoch, epoch.stamps[i], 0)


def _run_intent(ov: _Overlay, epoch: Epoch, i: int) -> Result:
    intent = epoch.intents[i]
    if isinstance(intent, CreateAccount):
        return _create_account(ov, intent)
    return _create_transfer(ov, intent, epoch.stamps[i])


# ------------------------------------------------------------- executors


def _expire_due(state: State, ov: _Overlay, epoch: Epoch) -> None:
    """Expire every pending transfer whose deadline is at or before the epoch's first stamp."""
    for pending_id in state.due(hlc_ms(epoch.hlc_first)):
        _expire(ov, pending_id, epoch.hlc_first)


def _effects(epoch: Epoch, ov: _Overlay, outcomes: Iterable[tuple[int, Result]]) -> Effects:
    effects = Effects(epoch=epoch.number, hlc=epoch.hlc_last)
    effects.accounts = list(ov.created.values())
    effects.balances = list(ov.accounts.values())
    effects.postings = ov.postings
    effects.transfers = list(ov.transfers.values())
    effects.resolutions = list(ov.resolutions.values())
    for i, code in sorted(outcomes):
        intent = epoch.intents[i]
        kind = "account" if isinstance(intent, CreateAccount) else "transfer"
        effects.results.append(EventResult(epoch.number, i, intent.id, kind, code.value))
    return effects


def execute_serial(state: State, epoch: Epoch) -> Effects:
    """The reference executor: every unit in log order, on one overlay."""
    ov = _Overlay(state, epoch.number)
    _expire_due(state, ov, epoch)
    outcomes: list[tuple[int, Result]] = []
    for unit in chains(epoch.intents, epoch.bounds):
        outcomes.extend(_run_unit(ov, epoch, unit))
    return _effects(epoch, ov, outcomes)


Schedule = Callable[[list[Iterator[None]]], None]


def round_robin(runners: list[Iterator[None]]) -> None:
    """Drive every group one unit at a time, in turn."""
    active = list(runners)
    while active:
        for runner in list(active):
            if next(runner, StopIteration) is StopIteration:
                active.remove(runner)


def random_schedule(rng: random.Random) -> Schedule:
    """A schedule that steps a randomly chosen group each time (for property tests)."""

    def run(runners: list[Iterator[None]]) -> None:
        active = list(runners)
        while active:
            runner = rng.choice(active)
            if next(runner, StopIteration) is StopIteration:
                active.remove(runner)

    return run


# TLA+: Ordo!ExecEpoch -- the model runs an epoch serially, as execute_serial does.
def execute_epoch(state: State, epoch: Epoch, schedule: Schedule = round_robin) -> Effects:
    """Run the epoch's independent groups concurrently and merge their effects.

    Each group sees only the epoch-start state and its own writes, so if the
    graph put two conflicting intents in different groups, the merge finds
    the same key written twice and raises.
    """
    base = _Overlay(state, epoch.number)
    _expire_due(state, base, epoch)
    units = chains(epoch.intents, epoch.bounds)
    unit_of = {unit[0]: unit for unit in units}
    overlays: list[_Overlay] = []
    outcomes: list[tuple[int, Result]] = []

    def group_runner(group: list[int], ov: _Overlay) -> Iterator[None]:
        for i in group:
            if i in unit_of:
                outcomes.extend(_run_unit(ov, epoch, unit_of[i]))
                yield

    runners = []
    for group in epoch.groups:
        ov = base.child()
        overlays.append(ov)
        runners.append(group_runner(group, ov))
    schedule(runners)
    _merge(base, overlays)
    if len(outcomes) != len(epoch.intents):
        raise InvariantViolation(
            f"epoch {epoch.number}: groups covered {len(outcomes)} of {len(epoch.intents)} intents"
        )
    return _effects(epoch, base, outcomes)


def _merge(base: _Overlay, overlays: list[_Overlay]) -> None:
    seen_accounts: set[int] = set()
    seen_transfers: set[int] = set()
    for ov in overlays:
        for what, keys, seen in (("account", ov.accounts, seen_accounts), ("transfer", ov.transfers, seen_transfers)):
            clash = seen & keys.keys()
            if clash:
                raise InvariantViolation(f"two independent groups wrote {what} {min(clash)}: the graph missed a conflict")
            seen.update(keys)
        ov.commit_into(base)


def check_epoch(epoch: Epoch) -> None:
    """Shape checks on an epoch received from the log, before executing it."""
    if not epoch.intents:
        raise InvariantViolation(f"epoch {epoch.number} is empty")
    if len(epoch.stamps) != len(epoch.intents):
        raise InvariantViolation(f"epoch {epoch.number}: {len(epoch.stamps)} stamps for {len(epoch.intents)} intents")
    if any(b <= a for a, b in zip(epoch.stamps, epoch.stamps[1:])):
        raise InvariantViolation(f"epoch {epoch.number}: HLC stamps do not increase strictly")
    if not epoch.bounds or epoch.bounds[-1] != len(epoch.intents):
        raise InvariantViolation(f"epoch {epoch.number}: batch bounds do not end at the last intent")
    covered = sorted(i for group in epoch.groups for i in group)
    if covered != list(range(len(epoch.intents))):
        raise InvariantViolation(f"epoch {epoch.number}: groups are not a partition of the intents")
