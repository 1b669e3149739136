"""The ShardProxy contract, checked against every store.

Owned here: the store-independent tests every proxy must pass, and the
seeded workload that drives them.  The reference is `proxies.memory.MemoryShard`
(the plain dict model, STYLE 3): every store must return what it returns.

Usage, for a store `foo` (see `tests/test_proxy_sqlite.py`):

    from tests.proxy_contract import ContractTests

    class TestFooContract(ContractTests):
        @pytest.fixture
        async def shard_factory(self, tmp_path):
            # async (name: str) -> an *opened* ShardProxy with empty state
            ...

        # optional: lets the atomicity test inject a failure in the middle
        # of a write; the default (None) skips that test.
        @pytest.fixture
        async def faulty_shard_factory(self, tmp_path):
            # async (name: str, fail_epoch: int) -> an opened ShardProxy whose
            # apply raises after writing part of epoch `fail_epoch`'s rows
            ...

Both factories own their shards: they close them at teardown.  The shard
names used are "s0" and "s1" (the directory below routes to them).

The randomized test draws its workload from one seed (STYLE 2), prints it,
and takes `ORDO_SEED` from the environment to reproduce a failure.

`sequencer.epochs` (and through it the state machine) is imported lazily:
it needs `sequencer/graph.py`, and the pure helpers here must stay
importable without it.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Awaitable, Callable, Sequence

import msgspec
import pytest

from proxies.base import ShardDump, ShardProxy
from proxies.directory import Directory, Range, ShardSpec
from proxies.memory import MemoryShard
from sequencer.errors import InvariantViolation
from sequencer.types import (
    CODE_MAX,
    LEDGER_MAX,
    TIMEOUT_MS_MAX,
    U63_MAX,
    Account,
    AccountFlags,
    CreateAccount,
    CreateTransfer,
    Epoch,
    EventResult,
    Intent,
    Posting,
    Resolution,
    ShardBatch,
    TransferFlags,
    TransferRecord,
)

ShardFactory = Callable[[str], Awaitable[ShardProxy]]
FaultyShardFactory = Callable[[str, int], Awaitable[ShardProxy]]

#: Physical time of the first epoch: a realistic epoch-millisecond value, so
#: packed HLC stamps `(ms << 16) | c` have the magnitude they have in production.
START_MS = 1_700_000_000_000
#: The HLC logical counter is 16 bits, so one epoch stamps at most this many
#: intents in the same millisecond.
STAMPS_PER_MS_MAX = 2**16
#: An `at_epoch` above every epoch any test writes: "everything stored".
EPOCH_ALL = 10**9


def workload_seeds() -> list[int]:
    """`ORDO_SEED` reproduces one run; otherwise a few fixed seeds run in CI."""
    if "ORDO_SEED" in os.environ:
        return [int(os.environ["ORDO_SEED"])]
    return [1, 2, 3]


# --------------------------------------------------------------- directories


def directory(names: Sequence[str] = ("s0", "s1")) -> Directory:
    """Every routable id spread over `names` by `id % len(names)`."""
    shards = [ShardSpec(name, "memory") for name in names]
    return Directory(shards, [Range(1, U63_MAX - 1, tuple(names))])


# ------------------------------------------------------------------ workload


class _Workload:
    """Draws intents from one `random.Random`, remembering what it created.

    It aims at every outcome the state machine has: duplicates with the same
    and different bodies, linked chains that fail, chains left open at a
    batch bound, pending transfers that are posted, voided or expire, and
    amounts near 2**63 that overflow or leave extreme balances.
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.accounts: list[CreateAccount] = []
        self.transfers: list[CreateTransfer] = []
        self.pendings: list[CreateTransfer] = []
        self.next_account_id = 1
        self.next_transfer_id = 1

    # -- accounts --------------------------------------------------------

    def account(self) -> CreateAccount:
        r = self.rng
        if self.accounts and r.random() < 0.05:
            old = r.choice(self.accounts)  # duplicate, same or different body
            return old if r.random() < 0.5 else msgspec.structs.replace(old, code=old.code % 3 + 1)
        if r.random() < 0.04:
            account_id = U63_MAX - 1 - r.randrange(4)  # the largest routable ids
        else:
            account_id = self.next_account_id
            self.next_account_id += 1
        flags = r.choice([0, 0, 0, AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS,
                          AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS, AccountFlags.HISTORY])
        if r.random() < 0.02:
            flags = AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS
        intent = CreateAccount(
            id=account_id, ledger=r.choice((1, 1, 1, 2)), code=r.randint(1, 3), flags=int(flags),
            user_data=r.choice((0, r.randrange(1000), U63_MAX)),
        )
        self.accounts.append(intent)
        return intent

    def _account(self) -> CreateAccount | None:
        if not self.accounts or self.rng.random() < 0.02:
            return None  # never created: *_account_not_found
        return self.rng.choice(self.accounts)

    def _account_id(self) -> int:
        account = self._account()
        return self.next_account_id + 1000 if account is None else account.id

    def _pair(self) -> tuple[int, int, int]:
        """Debit id, credit id and ledger; mostly one ledger, so most transfers get past the checks."""
        r = self.rng
        debit = self._account()
        ledger = r.choice((1, 2)) if debit is None or r.random() < 0.05 else debit.ledger
        same = [a for a in self.accounts if a.ledger == ledger]
        credit = r.choice(same) if same and r.random() < 0.95 else self._account()
        debit_id = self.next_account_id + 1000 if debit is None else debit.id
        return debit_id, self.next_account_id + 1000 if credit is None else credit.id, ledger

    def _transfer_id(self) -> int:
        roll = self.rng.random()
        if roll < 0.01:
            return self.rng.choice((0, U63_MAX))  # invalid ids are never stored
        if roll < 0.03:
            return U63_MAX - 1 - self.rng.randrange(8)
        self.next_transfer_id += 1
        return self.next_transfer_id

    # -- transfers -------------------------------------------------------

    def _amount(self) -> int:
        roll = self.rng.random()
        if roll < 0.03:
            return U63_MAX - self.rng.randrange(3)  # overflows, or extreme balances
        if roll < 0.05:
            return 0  # amount_must_not_be_zero
        return self.rng.randint(1, 1000)

    def simple(self, pending: bool = False) -> CreateTransfer:
        r = self.rng
        debit_id, credit_id, ledger = self._pair()
        flags = TransferFlags.PENDING if pending else 0
        timeout_ms = r.choice((0, r.randint(1, 120))) if pending else 0
        t = CreateTransfer(
            id=self._transfer_id(), debit_account_id=debit_id, credit_account_id=credit_id,
            amount=self._amount(), ledger=ledger, code=r.randint(1, 3), flags=int(flags),
            timeout_ms=timeout_ms, user_data=r.choice((0, r.randrange(1000), U63_MAX)),
        )
        (self.pendings if pending else self.transfers).append(t)
        return t

    def resolve(self) -> CreateTransfer:
        """Post or void an earlier pending transfer (which may have failed, expired or been resolved)."""
        r = self.rng
        if not self.pendings:
            return self.simple(pending=True)
        p = r.choice(self.pendings)
        post = r.random() < 0.6
        amount = r.choice((0, 0, r.randint(1, max(1, p.amount)), p.amount + 1)) if post else 0
        debit_id = p.debit_account_id if r.random() < 0.95 else self._account_id()
        t = CreateTransfer(
            id=self._transfer_id(), debit_account_id=debit_id, credit_account_id=p.credit_account_id,
            amount=min(amount, U63_MAX), ledger=r.choice((0, p.ledger)), code=r.choice((0, p.code)),
            flags=int(TransferFlags.POST_PENDING if post else TransferFlags.VOID_PENDING), pending_id=p.id,
        )
        self.transfers.append(t)
        return t

    def duplicate(self) -> CreateTransfer:
        old = self.rng.choice(self.transfers or self.pendings or [self.simple()])
        if self.rng.random() < 0.6:
            return old
        return msgspec.structs.replace(old, user_data=(old.user_data + 1) % U63_MAX)

    def transfer(self) -> CreateTransfer:
        roll = self.rng.random()
        if roll < 0.55:
            return self.simple()
        if roll < 0.75:
            return self.simple(pending=True)
        if roll < 0.90:
            return self.resolve()
        return self.duplicate()

    def chain(self) -> list[CreateTransfer]:
        """2-4 transfers, all but the last `linked`: one bad link fails them all."""
        links = [self.transfer() for _ in range(self.rng.randint(2, 4))]
        return [msgspec.structs.replace(t, flags=t.flags | TransferFlags.LINKED) for t in links[:-1]] + links[-1:]

    # -- epochs ----------------------------------------------------------

    def client_batch(self, first_epoch: bool) -> list[Intent]:
        """One client's submission: a few units; a chain may be left open at its end."""
        r = self.rng
        batch: list[Intent] = []
        for _ in range(r.randint(1, 6)):
            roll = r.random()
            if first_epoch or len(self.accounts) < 6 or roll < 0.12:
                batch.append(self.account())
            elif roll < 0.25:
                batch.extend(self.chain())
            else:
                batch.append(self.transfer())
        last = batch[-1]
        if isinstance(last, CreateTransfer) and r.random() < 0.03:
            batch[-1] = msgspec.structs.replace(last, flags=last.flags | TransferFlags.LINKED)
        return batch

    def epoch(self, number: int, now_ms: int, intents_max: int) -> Epoch:
        from sequencer.epochs import build_epoch

        intents: list[Intent] = []
        bounds: list[int] = []
        target = self.rng.randint(1, intents_max)
        while len(intents) < target:
            intents.extend(self.client_batch(first_epoch=number == 1))
            bounds.append(len(intents))
        if len(intents) > STAMPS_PER_MS_MAX:
            raise ValueError(f"{len(intents)} intents do not fit one millisecond of HLC counter")
        stamps = [(now_ms << 16) | c for c in range(len(intents))]
        return msgspec.structs.replace(build_epoch(stamps, intents, bounds), number=number)


def random_epochs(seed: int, n_epochs: int, intents_max: int = 40) -> list[Epoch]:
    """`n_epochs` epochs (numbered from 1) drawn from `seed`, a deterministic function of it.

    Cluster time advances 1-30 ms per epoch, so pending timeouts (1-120 ms)
    expire a few epochs later, sometimes in an epoch that touches nothing else.
    """
    rng = random.Random(seed)
    workload = _Workload(rng)
    now_ms = START_MS
    epochs = []
    for number in range(1, n_epochs + 1):
        now_ms += rng.randint(1, 30)
        epochs.append(workload.epoch(number, now_ms, intents_max))
    return epochs


def scripted_epochs(intents_by_epoch: Sequence[Sequence[Intent]], step_ms: int = 10) -> list[Epoch]:
    """Hand-written epochs: one client batch each, `step_ms` of cluster time apart."""
    from sequencer.epochs import build_epoch

    epochs = []
    for number, intents in enumerate(intents_by_epoch, start=1):
        now_ms = START_MS + number * step_ms
        stamps = [(now_ms << 16) | c for c in range(len(intents))]
        epoch = build_epoch(stamps, list(intents), [len(intents)])
        epochs.append(msgspec.structs.replace(epoch, number=number))
    return epochs


def execute(epochs: Sequence[Epoch], names: Sequence[str] = ("s0", "s1")) -> dict[str, list[ShardBatch]]:
    """Run `epochs` through the serial oracle and split the effects: shard -> batches 1..n."""
    from executor.partition import split
    from executor.state_machine import State, execute_serial

    routes = directory(names)
    state = State()
    out: dict[str, list[ShardBatch]] = {name: [] for name in names}
    for epoch in epochs:
        effects = execute_serial(state, epoch)
        state.apply(effects)
        for name, batch in split(effects, routes).items():
            out[name].append(batch)
    return out


async def memory_after(name: str, batches: Sequence[ShardBatch]) -> MemoryShard:
    """The reference model holding `batches`."""
    shard = MemoryShard(name)
    await shard.apply(batches)
    return shard


# ---------------------------------------------------------------- comparison


def assert_dumps_equal(got: ShardDump, want: ShardDump, context: str = "") -> None:
    """Names the first table and row that differ, instead of printing two dumps."""
    where = f"shard {want.shard} at epoch {want.at_epoch}{context}"
    assert got.shard == want.shard, where
    assert got.at_epoch == want.at_epoch, where
    for table in ("accounts", "postings", "transfers", "resolutions", "results"):
        rows_got, rows_want = getattr(got, table), getattr(want, table)
        for i, (a, b) in enumerate(zip(rows_got, rows_want)):
            assert a == b, f"{where}: {table}[{i}] differs:\n  got  {a}\n  want {b}"
        assert len(rows_got) == len(rows_want), f"{where}: {len(rows_got)} {table}, want {len(rows_want)}"
    assert got.digest() == want.digest(), where


# ------------------------------------------------------------ the scenario

A, B, C, D = 1, 2, 3, 4  # accounts; D is created later, C must not overdraw


def scenario() -> list[list[Intent]]:
    """Five small epochs exercising every read; comments give the expected state.

    Cluster time: epoch n is at START_MS + 10 n ms.
    """
    dmnec = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
    pending, post = int(TransferFlags.PENDING), int(TransferFlags.POST_PENDING)
    return [
        # 1: three accounts
        [CreateAccount(A, 1, 1), CreateAccount(B, 1, 1), CreateAccount(C, 1, 1, flags=dmnec)],
        # 2: A -> B 100, B -> C 50
        [CreateTransfer(10, A, B, 100, 1, 1), CreateTransfer(11, B, C, 50, 1, 1)],
        # 3: D appears; 12 pending A -> D, expires at epoch 3 + 15 ms; 13 pending
        #    B -> A without timeout; 14 fails (C holds only 50)
        [CreateAccount(D, 1, 1), CreateTransfer(12, A, D, 30, 1, 1, flags=pending, timeout_ms=15),
         CreateTransfer(13, B, A, 5, 1, 1, flags=pending), CreateTransfer(14, C, A, 60, 1, 1)],
        # 4: 15 posts 13 in full
        [CreateTransfer(15, B, A, 0, 0, 0, flags=post, pending_id=13)],
        # 5: 12 expires as the epoch opens (20 ms later); then A -> B 1
        [CreateTransfer(16, A, B, 1, 1, 1)],
    ]


def scenario_batches() -> list[ShardBatch]:
    return execute(scripted_epochs(scenario()), names=("s0",))["s0"]


def extreme_batch() -> ShardBatch:
    """One epoch of hand-made rows at the edges of every column's range."""
    big = U63_MAX
    digest = bytes(range(32))  # every byte value class: NUL, low, high
    account = Account(big - 1, LEDGER_MAX, CODE_MAX, 0, big, 1, big, big, big, big, big, digest, 1)
    transfer = CreateTransfer(big - 1, big - 1, big - 2, big, LEDGER_MAX, CODE_MAX, int(TransferFlags.PENDING),
                              0, TIMEOUT_MS_MAX, big)
    return ShardBatch(
        shard="s0", epoch=1, hlc=big,
        accounts=[account], balances=[account],
        # sorted by (account_id, seq), as `executor.partition.split` emits them
        postings=[Posting(big - 1, 1, 1, 0, 1, "debit", 1, 0, 0, 0, 0, b"\xff" * 32, digest),
                  Posting(big - 1, big, 1, big, big, "credit_pending", big, big, big, big, big, b"", b"\x00" * 32)],
        transfers=[TransferRecord(transfer, "ok", 1, big, big)],
        resolutions=[Resolution(big, "posted", big, 1, big)],
        results=[EventResult(1, 2**31 - 1, big, "transfer", "exceeds_pending_transfer_amount")],
    )


# ------------------------------------------------------------------- tests


class ContractTests:
    """Mix into a `Test*` class that provides `shard_factory` (see module docstring)."""

    @pytest.fixture
    def faulty_shard_factory(self) -> FaultyShardFactory | None:
        return None  # stores that can inject a mid-write failure override this

    # -- apply and the applied_epoch guard -------------------------------

    async def test_fresh_shard_is_empty(self, shard_factory: ShardFactory) -> None:
        shard = await shard_factory("s0")
        assert await shard.applied_epoch() == 0
        assert_dumps_equal(await shard.dump(EPOCH_ALL), await MemoryShard("s0").dump(EPOCH_ALL))
        assert await shard.load_accounts([A], EPOCH_ALL) == {}
        assert await shard.load_open_pendings(EPOCH_ALL) == []
        assert await shard.apply([]) == 0
        assert await shard.applied_epoch() == 0

    async def test_apply_advances_applied_epoch(self, shard_factory: ShardFactory) -> None:
        shard, batches = await shard_factory("s0"), scenario_batches()
        for batch in batches:
            assert await shard.apply([batch]) == 1
            assert await shard.applied_epoch() == batch.epoch

    async def test_apply_several_epochs_at_once(self, shard_factory: ShardFactory) -> None:
        shard, batches = await shard_factory("s0"), scenario_batches()
        assert await shard.apply(batches[:3]) == 3
        assert await shard.applied_epoch() == 3
        assert_dumps_equal(await shard.dump(3), await (await memory_after("s0", batches[:3])).dump(3))

    async def test_replay_is_a_noop(self, shard_factory: ShardFactory) -> None:
        shard, batches = await shard_factory("s0"), scenario_batches()
        await shard.apply(batches[:3])
        before = await shard.dump(EPOCH_ALL)
        assert await shard.apply(batches[:3]) == 0
        assert await shard.apply([batches[1]]) == 0
        assert await shard.applied_epoch() == 3
        assert_dumps_equal(await shard.dump(EPOCH_ALL), before)

    async def test_replay_overlapping_writes_only_the_new_epochs(self, shard_factory: ShardFactory) -> None:
        shard, batches = await shard_factory("s0"), scenario_batches()
        await shard.apply(batches[:3])
        assert await shard.apply(batches[1:5]) == 2
        assert await shard.applied_epoch() == 5
        want = await memory_after("s0", batches)
        assert_dumps_equal(await shard.dump(EPOCH_ALL), await want.dump(EPOCH_ALL))

    async def test_concurrent_applies_write_each_epoch_once(self, shard_factory: ShardFactory) -> None:
        """A retry may overlap an apply still in flight: the outcome is as if they ran one by one.

        Stores with serializable transactions write each epoch once (the
        counts sum to 4); a store of idempotent upserts (Cassandra) may write
        an epoch's identical rows twice.  What must hold for every store:
        `applied_epoch` ends at the highest epoch, never behind it, and the
        rows are exactly the model's.
        """
        shard, batches = await shard_factory("s0"), scenario_batches()
        counts = await asyncio.gather(shard.apply(batches[:3]), shard.apply(batches[:3]), shard.apply(batches[:4]))
        assert all(0 <= n <= want for n, want in zip(counts, (3, 3, 4))), f"epochs written per call: {counts}"
        assert await shard.applied_epoch() == 4
        want = await memory_after("s0", batches[:4])
        assert_dumps_equal(await shard.dump(EPOCH_ALL), await want.dump(EPOCH_ALL))

    async def test_snapshot_at_an_epoch_never_changes(self, shard_factory: ShardFactory) -> None:
        shard, batches = await shard_factory("s0"), scenario_batches()
        await shard.apply(batches[:3])
        before = await shard.dump(3)
        await shard.apply(batches[3:])
        assert_dumps_equal(await shard.dump(3), before)

    async def test_gap_raises_and_writes_nothing(self, shard_factory: ShardFactory) -> None:
        shard, batches = await shard_factory("s0"), scenario_batches()
        await shard.apply(batches[:1])
        before = await shard.dump(EPOCH_ALL)
        with pytest.raises(InvariantViolation):
            await shard.apply(batches[2:4])
        assert await shard.applied_epoch() == 1
        assert_dumps_equal(await shard.dump(EPOCH_ALL), before)

    async def test_non_consecutive_batches_raise(self, shard_factory: ShardFactory) -> None:
        shard, batches = await shard_factory("s0"), scenario_batches()
        with pytest.raises(InvariantViolation):
            await shard.apply([batches[0], batches[2]])
        assert await shard.applied_epoch() == 0

    async def test_batch_for_another_shard_raises(self, shard_factory: ShardFactory) -> None:
        shard, batches = await shard_factory("s1"), scenario_batches()  # batches are for s0
        with pytest.raises(InvariantViolation):
            await shard.apply(batches[:1])
        assert await shard.applied_epoch() == 0

    async def test_invalid_row_in_a_later_epoch_writes_nothing(self, shard_factory: ShardFactory) -> None:
        shard, batches = await shard_factory("s0"), scenario_batches()
        bad_posting = msgspec.structs.replace(batches[1].postings[0], epoch=99)
        bad = msgspec.structs.replace(batches[1], postings=[bad_posting, *batches[1].postings[1:]])
        with pytest.raises(InvariantViolation):
            await shard.apply([batches[0], bad, batches[2]])
        assert await shard.applied_epoch() == 0
        assert_dumps_equal(await shard.dump(EPOCH_ALL), await MemoryShard("s0").dump(EPOCH_ALL))

    async def test_overdrawn_balance_is_refused(self, shard_factory: ShardFactory) -> None:
        shard, batches = await shard_factory("s0"), scenario_batches()
        c = next(a for a in batches[1].balances if a.id == C)
        overdrawn = msgspec.structs.replace(c, debits_posted=c.credits_posted + 1)
        bad = msgspec.structs.replace(batches[1], balances=[a if a.id != C else overdrawn for a in batches[1].balances])
        await shard.apply(batches[:1])
        with pytest.raises(InvariantViolation):
            await shard.apply([bad])
        assert await shard.applied_epoch() == 1

    async def test_store_failure_mid_write_writes_nothing(self, faulty_shard_factory: FaultyShardFactory | None) -> None:
        if faulty_shard_factory is None:
            pytest.skip("this store has no fault injection")
        batches = scenario_batches()
        shard = await faulty_shard_factory("s0", 2)
        with pytest.raises(Exception):
            await shard.apply(batches[:3])
        assert await shard.applied_epoch() == 0
        assert_dumps_equal(await shard.dump(EPOCH_ALL), await MemoryShard("s0").dump(EPOCH_ALL))
        assert await shard.apply(batches[:1]) == 1
        with pytest.raises(Exception):
            await shard.apply(batches[1:3])
        assert await shard.applied_epoch() == 1
        want = await memory_after("s0", batches[:1])
        assert_dumps_equal(await shard.dump(EPOCH_ALL), await want.dump(EPOCH_ALL))

    # -- versioned reads ---------------------------------------------------

    async def test_load_accounts_returns_latest_version_at_epoch(self, shard_factory: ShardFactory) -> None:
        shard, batches = await shard_factory("s0"), scenario_batches()
        await shard.apply(batches)
        want = await memory_after("s0", batches)
        for at in range(0, 7):
            got = await shard.load_accounts([A, B, C, D, 999], at)
            assert got == await want.load_accounts([A, B, C, D, 999], at), f"at epoch {at}"
        at1, at2 = await shard.load_accounts([A], 1), await shard.load_accounts([A], 2)
        assert (at1[A].debits_posted, at1[A].epoch) == (0, 1)
        assert (at2[A].debits_posted, at2[A].epoch) == (100, 2)
        assert (await shard.load_accounts([A], 4))[A].credits_posted == 5

    async def test_accounts_created_later_are_absent(self, shard_factory: ShardFactory) -> None:
        shard, batches = await shard_factory("s0"), scenario_batches()
        await shard.apply(batches)
        assert D not in await shard.load_accounts([D], 2)
        assert (await shard.load_accounts([D], 3))[D].created_epoch == 3
        assert await shard.load_accounts([], 5) == {}

    async def test_transfers_filter_by_epoch(self, shard_factory: ShardFactory) -> None:
        shard, batches = await shard_factory("s0"), scenario_batches()
        await shard.apply(batches)
        want = await memory_after("s0", batches)
        ids = range(9, 18)
        for at in range(0, 7):
            assert await shard.load_transfers(ids, at) == await want.load_transfers(ids, at), f"at epoch {at}"
        assert sorted(await shard.load_transfers(ids, 2)) == [10, 11]
        failed = (await shard.load_transfers([14], 3))[14]
        assert (failed.result, failed.epoch) == ("exceeds_credits", 3)
        assert (await shard.load_transfers([12], 3))[12].expires_at_ms == START_MS + 30 + 15

    async def test_resolutions_filter_by_epoch(self, shard_factory: ShardFactory) -> None:
        shard, batches = await shard_factory("s0"), scenario_batches()
        await shard.apply(batches)
        want = await memory_after("s0", batches)
        for at in range(0, 7):
            assert await shard.load_resolutions([12, 13, 99], at) == await want.load_resolutions([12, 13, 99], at)
        assert await shard.load_resolutions([12, 13], 3) == {}
        assert (await shard.load_resolutions([13], 4))[13] == Resolution(13, "posted", 5, 4, 15)
        assert (await shard.load_resolutions([12], 5))[12] == Resolution(12, "expired", 0, 5, 0)

    async def test_load_open_pendings(self, shard_factory: ShardFactory) -> None:
        shard, batches = await shard_factory("s0"), scenario_batches()
        await shard.apply(batches)
        want = await memory_after("s0", batches)
        for at in range(0, 7):
            assert await shard.load_open_pendings(at) == await want.load_open_pendings(at), f"at epoch {at}"
        # 13 has no timeout, so it never counts; 12 is open from epoch 3 until it expires at 5
        assert [r.transfer.id for r in await shard.load_open_pendings(3)] == [12]
        assert [r.transfer.id for r in await shard.load_open_pendings(4)] == [12]
        assert await shard.load_open_pendings(5) == []

    async def test_read_results(self, shard_factory: ShardFactory) -> None:
        shard, batches = await shard_factory("s0"), scenario_batches()
        await shard.apply(batches)
        want = await memory_after("s0", batches)
        for epoch in range(0, 7):
            assert await shard.read_results(epoch) == await want.read_results(epoch), f"epoch {epoch}"
        assert [(r.index, r.id, r.result) for r in await shard.read_results(3)] == [
            (0, D, "ok"), (1, 12, "ok"), (2, 13, "ok"), (3, 14, "exceeds_credits"),
        ]

    async def test_read_postings_filters_by_epoch(self, shard_factory: ShardFactory) -> None:
        shard, batches = await shard_factory("s0"), scenario_batches()
        await shard.apply(batches)
        want = await memory_after("s0", batches)
        for account_id in (A, B, C, D, 999):
            for at in range(0, 7):
                got = await shard.read_postings(account_id, at)
                assert got == await want.read_postings(account_id, at), f"account {account_id} at {at}"
        assert [p.kind for p in await shard.read_postings(A, 5)] == [
            "debit", "debit_pending", "credit_pending", "post_credit", "expire_debit", "debit",
        ]

    async def test_read_postings_pages(self, shard_factory: ShardFactory) -> None:
        shard, batches = await shard_factory("s0"), scenario_batches()
        await shard.apply(batches)
        every = await shard.read_postings(A, EPOCH_ALL, after_seq=0, limit=1000)
        pages, after = [], 0
        while page := await shard.read_postings(A, EPOCH_ALL, after_seq=after, limit=2):
            assert len(page) <= 2
            pages.extend(page)
            after = page[-1].seq
        assert pages == every
        assert [p.seq for p in every] == list(range(1, 7))
        assert await shard.read_postings(A, EPOCH_ALL, after_seq=6) == []
        assert [p.seq for p in await shard.read_postings(A, 3, after_seq=1, limit=100)] == [2, 3]

    # -- exact round trips -------------------------------------------------

    async def test_extreme_values_round_trip(self, shard_factory: ShardFactory) -> None:
        shard, batch = await shard_factory("s0"), extreme_batch()
        await shard.apply([batch])
        account = batch.accounts[0]
        assert await shard.load_accounts([account.id], 1) == {account.id: account}
        record = batch.transfers[0]
        assert await shard.load_transfers([record.transfer.id], 1) == {record.transfer.id: record}
        assert await shard.load_resolutions([U63_MAX], 1) == {U63_MAX: batch.resolutions[0]}
        assert await shard.read_postings(account.id, 1) == batch.postings
        assert await shard.read_results(1) == batch.results
        assert await shard.load_open_pendings(1) == [record]
        want = await memory_after("s0", [batch])
        assert_dumps_equal(await shard.dump(1), await want.dump(1))

    async def test_rows_keep_their_python_types(self, shard_factory: ShardFactory) -> None:
        """`==` would let 1 == True or 1.0 pass; a store must hand back ints, bytes and str."""
        shard, batch = await shard_factory("s0"), extreme_batch()
        await shard.apply([batch])
        dump = await shard.dump(1)
        for row in (*dump.accounts, *dump.postings, *dump.resolutions, *dump.results,
                    *dump.transfers, *(t.transfer for t in dump.transfers)):
            for field, value in zip(row.__struct_fields__, msgspec.structs.astuple(row)):
                if isinstance(value, msgspec.Struct):
                    continue
                assert type(value) in (int, bytes, str), f"{type(row).__name__}.{field} is {type(value).__name__}"

    # -- the oracle --------------------------------------------------------

    @pytest.mark.parametrize("seed", workload_seeds())
    async def test_random_workload_matches_memory(self, shard_factory: ShardFactory, seed: int) -> None:
        print(f"reproduce this workload with ORDO_SEED={seed}")
        n_epochs = 30
        batches = execute(random_epochs(seed, n_epochs))
        rng = random.Random(seed)
        for name, shard_batches in batches.items():
            shard = await shard_factory(name)
            # applies of 1-4 epochs at a time, as a runner catching up would push them
            start = 0
            while start < n_epochs:
                end = min(n_epochs, start + rng.randint(1, 4))
                assert await shard.apply(shard_batches[start:end]) == end - start
                start = end
            want = await memory_after(name, shard_batches)
            for at in sorted({0, 1, n_epochs // 3, n_epochs // 2, n_epochs - 1, n_epochs, EPOCH_ALL}):
                assert_dumps_equal(await shard.dump(at), await want.dump(at), f" (ORDO_SEED={seed})")
