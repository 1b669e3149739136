"""Typed, frozen messages: intents, epochs, results and the rows they produce.

Role: the protocol, shared by every core and driver.

Owned here because every role speaks them: the API decodes intents, the
sequencer packs them into epochs, the executor turns epochs into `ShardBatch`
effects and the proxies persist those rows.  Decoding validates *shape*
(integers, ranges, no floats, no unknown fields); the state machine validates
*meaning* and answers with a `Result` code.  Nothing here does I/O.

Money is an integer count of minor units.  Ids, amounts and balances are
unsigned 63-bit integers so that they fit every store's signed BIGINT.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from typing import Annotated, Union

import msgspec

#: Largest id, amount or balance.  63 bits, so that PostgreSQL BIGINT,
#: Cassandra bigint and SQLite INTEGER all hold it without sign tricks.
U63_MAX = 2**63 - 1
#: Largest `code` (TigerBeetle uses u16 for codes; we keep that).
CODE_MAX = 2**16 - 1
#: Largest `ledger` (u32, as in TigerBeetle).
LEDGER_MAX = 2**32 - 1
#: Largest pending timeout, one year.  Longer holds are a modelling error, and
#: the bound keeps `hlc_ms + timeout_ms` far from overflow.
TIMEOUT_MS_MAX = 366 * 24 * 3600 * 1000

U63 = Annotated[int, msgspec.Meta(ge=0, le=U63_MAX)]
Ledger = Annotated[int, msgspec.Meta(ge=0, le=LEDGER_MAX)]
Code = Annotated[int, msgspec.Meta(ge=0, le=CODE_MAX)]
TimeoutMs = Annotated[int, msgspec.Meta(ge=0, le=TIMEOUT_MS_MAX)]


class AccountFlags(enum.IntFlag):
    DEBITS_MUST_NOT_EXCEED_CREDITS = 1
    CREDITS_MUST_NOT_EXCEED_DEBITS = 2
    HISTORY = 4
    CLOSED = 8


class TransferFlags(enum.IntFlag):
    LINKED = 1
    PENDING = 2
    POST_PENDING = 4
    VOID_PENDING = 8


ACCOUNT_FLAGS_ALL = int(sum(AccountFlags))
TRANSFER_FLAGS_ALL = int(sum(TransferFlags))

# The same bits as plain ints, for the executor's hot path.  Intents carry
# `flags` as an int, and `int & IntFlag` goes through enum's `__call__` to
# build a new IntFlag: 13% of the executor's samples in
# `ordo bench --profile`, where `int & int` is one opcode.
ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS = int(AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS)
ACCOUNT_CLOSED = int(AccountFlags.CLOSED)
TRANSFER_LINKED = int(TransferFlags.LINKED)
TRANSFER_PENDING = int(TransferFlags.PENDING)
TRANSFER_POST_PENDING = int(TransferFlags.POST_PENDING)
TRANSFER_VOID_PENDING = int(TransferFlags.VOID_PENDING)


class Result(enum.StrEnum):
    """Every event's outcome.  The strings are a stable part of the API."""

    OK = "ok"
    EXISTS = "exists"
    EXISTS_WITH_DIFFERENT_FIELDS = "exists_with_different_fields"
    LINKED_EVENT_FAILED = "linked_event_failed"
    LINKED_EVENT_CHAIN_OPEN = "linked_event_chain_open"
    ID_MUST_NOT_BE_ZERO = "id_must_not_be_zero"
    ID_MUST_NOT_BE_INT_MAX = "id_must_not_be_int_max"
    FLAGS_ARE_MUTUALLY_EXCLUSIVE = "flags_are_mutually_exclusive"
    LEDGER_MUST_NOT_BE_ZERO = "ledger_must_not_be_zero"
    CODE_MUST_NOT_BE_ZERO = "code_must_not_be_zero"
    # transfers
    DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO = "debit_account_id_must_not_be_zero"
    CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO = "credit_account_id_must_not_be_zero"
    ACCOUNTS_MUST_BE_DIFFERENT = "accounts_must_be_different"
    PENDING_ID_MUST_BE_ZERO = "pending_id_must_be_zero"
    PENDING_ID_MUST_NOT_BE_ZERO = "pending_id_must_not_be_zero"
    PENDING_ID_MUST_BE_DIFFERENT = "pending_id_must_be_different"
    TIMEOUT_RESERVED_FOR_PENDING_TRANSFER = "timeout_reserved_for_pending_transfer"
    AMOUNT_MUST_NOT_BE_ZERO = "amount_must_not_be_zero"
    DEBIT_ACCOUNT_NOT_FOUND = "debit_account_not_found"
    CREDIT_ACCOUNT_NOT_FOUND = "credit_account_not_found"
    LEDGER_MISMATCH = "ledger_mismatch"
    DEBIT_ACCOUNT_CLOSED = "debit_account_closed"
    CREDIT_ACCOUNT_CLOSED = "credit_account_closed"
    PENDING_TRANSFER_NOT_FOUND = "pending_transfer_not_found"
    PENDING_TRANSFER_NOT_PENDING = "pending_transfer_not_pending"
    PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID = "pending_transfer_has_different_debit_account_id"
    PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID = "pending_transfer_has_different_credit_account_id"
    PENDING_TRANSFER_HAS_DIFFERENT_LEDGER = "pending_transfer_has_different_ledger"
    PENDING_TRANSFER_HAS_DIFFERENT_CODE = "pending_transfer_has_different_code"
    EXCEEDS_PENDING_TRANSFER_AMOUNT = "exceeds_pending_transfer_amount"
    PENDING_TRANSFER_ALREADY_POSTED = "pending_transfer_already_posted"
    PENDING_TRANSFER_ALREADY_VOIDED = "pending_transfer_already_voided"
    PENDING_TRANSFER_EXPIRED = "pending_transfer_expired"
    OVERFLOWS_DEBITS_PENDING = "overflows_debits_pending"
    OVERFLOWS_CREDITS_PENDING = "overflows_credits_pending"
    OVERFLOWS_DEBITS_POSTED = "overflows_debits_posted"
    OVERFLOWS_CREDITS_POSTED = "overflows_credits_posted"
    OVERFLOWS_DEBITS = "overflows_debits"
    OVERFLOWS_CREDITS = "overflows_credits"
    EXCEEDS_CREDITS = "exceeds_credits"
    EXCEEDS_DEBITS = "exceeds_debits"


def broken_balance_flag(account: Account, debit: int = 0, credit: int = 0) -> str | None:
    """The balance flag `account` breaks once `debit` more is debited and `credit` more
    credited (pending or posted alike), or None: the one statement of the rule.

    `debits_must_not_exceed_credits`: debits_pending + debits_posted <= credits_posted.
    `credits_must_not_exceed_debits`: credits_pending + credits_posted <= debits_posted.
    """
    if account.flags & ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS:
        if account.debits_pending + account.debits_posted + debit > account.credits_posted:
            return "debits_must_not_exceed_credits"
    if account.flags & ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS:
        if account.credits_pending + account.credits_posted + credit > account.debits_posted:
            return "credits_must_not_exceed_debits"
    return None


#: Results that mean "this id is now settled as the client intended".
ACK_OK = frozenset({Result.OK, Result.EXISTS})


# ---------------------------------------------------------------- intents
#
# Intents travel in the Raft log, where every byte counts (an epoch must stay
# under `epoch_bytes_max`), so they encode as tagged arrays.  The JSON shapes
# clients send live in `sequencer/wire.py`.


class CreateAccount(msgspec.Struct, frozen=True, array_like=True, tag=1):
    """Intent: open an account.  `id` is the idempotency key."""

    id: U63
    ledger: Ledger
    code: Code
    flags: Annotated[int, msgspec.Meta(ge=0, le=ACCOUNT_FLAGS_ALL)] = 0
    user_data: U63 = 0


class CreateTransfer(msgspec.Struct, frozen=True, array_like=True, tag=2):
    """Intent: move `amount` from `debit_account_id` to `credit_account_id`.

    `post_pending` / `void_pending` name the pending transfer in `pending_id`
    and must repeat its two account ids: Calvin fixes every intent's footprint
    before execution, so the sequencer has to know which accounts a
    resolution touches without reading state.  `amount` 0 on a post means
    "the full pending amount"; `ledger` and `code` 0 mean "as the pending".
    """

    id: U63
    debit_account_id: U63
    credit_account_id: U63
    amount: U63
    ledger: Ledger
    code: Code
    flags: Annotated[int, msgspec.Meta(ge=0, le=TRANSFER_FLAGS_ALL)] = 0
    pending_id: U63 = 0
    timeout_ms: TimeoutMs = 0
    user_data: U63 = 0

    @property
    def is_resolution(self) -> bool:
        return bool(self.flags & (TRANSFER_POST_PENDING | TRANSFER_VOID_PENDING))


Intent = Union[CreateAccount, CreateTransfer]


# ----------------------------------------------------------------- epochs


class Epoch(msgspec.Struct, frozen=True, array_like=True):
    """One replicated log entry: a batch of intents in their final order.

    `number` is assigned when the entry is applied (the leader proposes 0):
    only the replicated state machine knows the previous number for sure.
    `stamps[i]` is intent i's packed HLC timestamp; they increase strictly.
    `bounds[k]` is the exclusive end index of the k-th submitted batch: a
    linked chain never crosses a bound, so two clients' batches can never be
    chained together by accident.
    `groups` is the dependency graph: independent groups of intent indices.
    """

    number: int
    stamps: list[int]
    intents: list[Intent]
    bounds: list[int]
    groups: list[list[int]]

    @property
    def hlc_first(self) -> int:
        return self.stamps[0]

    @property
    def hlc_last(self) -> int:
        return self.stamps[-1]


# ------------------------------------------------------- state and effects


class Account(msgspec.Struct, frozen=True, array_like=True):
    """An account as of some epoch: its static fields and its balances.

    `head_hash` is the SHA-256 of the account's latest posting (or of its
    genesis record) and `seq` counts its postings: the per-account chain of
    seeds 000 and 001.
    """

    id: int
    ledger: int
    code: int
    flags: int
    user_data: int
    created_epoch: int
    debits_pending: int = 0
    debits_posted: int = 0
    credits_pending: int = 0
    credits_posted: int = 0
    seq: int = 0
    head_hash: bytes = b""
    epoch: int = 0  # the epoch of this balance version


class TransferRecord(msgspec.Struct, frozen=True, array_like=True):
    """A transfer as stored: the intent, its result and where it was ordered.

    Failed transfers are stored too, so that resubmitting the same id returns
    the original result instead of executing again.
    """

    transfer: CreateTransfer
    result: str
    epoch: int
    hlc: int
    expires_at_ms: int = 0  # pending transfers with a timeout; 0 = never


class Resolution(msgspec.Struct, frozen=True, array_like=True):
    """How a pending transfer ended: posted, voided or expired, and when."""

    pending_id: int
    kind: str  # "posted" | "voided" | "expired"
    amount: int  # amount posted (0 for void / expiry)
    epoch: int
    by_transfer_id: int  # 0 for expiry


class Posting(msgspec.Struct, frozen=True, array_like=True):
    """One balance change on one account, a link in its hash chain."""

    account_id: int
    seq: int
    epoch: int
    hlc: int
    transfer_id: int
    kind: str  # "debit" | "credit" | "debit_pending" | "credit_pending" | "post_*" | "void_*" | "expire_*"
    amount: int
    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int
    prev_hash: bytes
    hash: bytes


class EventResult(msgspec.Struct, frozen=True, array_like=True):
    """The outcome of intent `index` of epoch `epoch`."""

    epoch: int
    index: int
    id: int
    kind: str  # "account" | "transfer"
    result: str


class ShardBatch(msgspec.Struct, frozen=True):
    """Everything one shard must write for one epoch, in one atomic apply.

    Every row has a deterministic key, so applying a batch twice writes the
    same bytes; the `applied_epoch` guard makes the second apply a no-op.
    """

    shard: str
    epoch: int
    hlc: int
    accounts: list[Account]  # new accounts (their first balance version)
    balances: list[Account]  # new balance versions of existing accounts
    postings: list[Posting]
    transfers: list[TransferRecord]
    resolutions: list[Resolution]
    results: list[EventResult]

    @property
    def is_empty(self) -> bool:
        return not (self.accounts or self.balances or self.postings or self.transfers or self.resolutions or self.results)


# ------------------------------------------------------------------ codecs

epoch_encoder = msgspec.msgpack.Encoder()
epoch_decoder = msgspec.msgpack.Decoder(Epoch)
batch_encoder = msgspec.msgpack.Encoder()
batch_decoder = msgspec.msgpack.Decoder(ShardBatch)


def encode_epoch(epoch: Epoch) -> bytes:
    return epoch_encoder.encode(epoch)


def decode_epoch(data: bytes) -> Epoch:
    return epoch_decoder.decode(data)


def hlc_ms(packed: int) -> int:
    """The physical (millisecond) part of a packed HLC timestamp `(l << 16) | c`."""
    return packed >> 16


# ------------------------------------------------------- the log digest chain


class AppliedEpoch(msgspec.Struct, frozen=True):
    """An epoch as a replica applied it: its number, last stamp, running digest and stored bytes.

    What `GET /v1/log` serves and the executor chain-checks.
    """

    number: int
    hlc_last: int
    digest: str
    data: bytes



def log_genesis_digest(key: bytes) -> str:
    """The digest before epoch 1."""
    return hmac.new(key, b"ordo/log/v1/genesis", hashlib.sha256).hexdigest()


def fold_log_digest(key: bytes, previous: str, data: bytes) -> str:
    """The digest after an epoch whose stored encoding is `data`.

    Keyed (HMAC-SHA256 with the log key derived from the cluster secret), so
    that only a holder of the secret, a replica, can extend a chain that an
    executor accepts.  Every replica folds the same bytes in the same order,
    so equal digests mean identical logs.
    """
    return hmac.new(key, previous.encode() + data, hashlib.sha256).hexdigest()
