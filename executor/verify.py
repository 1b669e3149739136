"""Checking DESIGN.md's "What must hold" against real stores.

Role: checks, run by `tools/demo.py` (`ordo verify`) and the tests.

Owned here: the invariant checks that `ordo demo`, `ordo verify` and the
cluster tests print.  Each check returns a `Check` (name, ok, detail) rather
than raising, so a run reports every broken invariant, not just the first.

* serial equivalence: replay the committed log prefix up to W through the
  serial reference executor into memory shards; each real shard's dump at W
  must be identical.
* conservation: per ledger, debits equal credits (posted and pending), and
  no balance breaks its account's flags.
* hash chains: every account's postings link by `prev_hash` from its
  genesis hash, each hash recomputes, and the last one is the account's head.
* replica agreement: every replica's digest at the same epoch is equal.
* no acknowledged transfer missing: every transfer a client saw acknowledged
  is stored with the result the client was told.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from executor.partition import split
from executor.state_machine import State, execute_serial, genesis_hash, posting_hash
from proxies.base import ShardDump
from proxies.directory import Directory
from proxies.memory import MemoryShard
from sequencer.errors import InvariantViolation
from sequencer.types import Account, Epoch, broken_balance_flag


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


async def replay_serial(epochs: Iterable[Epoch], directory: Directory) -> dict[str, MemoryShard]:
    """The oracle: the committed log, one intent at a time, into memory shards."""
    shards = {name: MemoryShard(name) for name in directory.names}
    state = State(complete=True)
    for epoch in epochs:
        effects = execute_serial(state, epoch)
        state.apply(effects)
        for name, batch in split(effects, directory).items():
            await shards[name].apply([batch])
    return shards


def check_serial_equivalence(real: dict[str, ShardDump], oracle: dict[str, ShardDump]) -> Check:
    for name in sorted(oracle):
        mine, expected = real[name], oracle[name]
        for table in ("accounts", "postings", "transfers", "resolutions", "results"):
            got, want = getattr(mine, table), getattr(expected, table)
            if got != want:
                return Check("serial equivalence", False, f"shard {name}: {table} differ ({_first_difference(got, want)})")
    rows = sum(len(d.postings) for d in real.values())
    return Check("serial equivalence", True, f"{len(real)} shards equal a serial replay of the log at W ({rows} postings)")


def _first_difference(got: list, want: list) -> str:
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b:
            return f"row {i}: store has {a!r}, serial replay has {b!r}"
    return f"store has {len(got)} rows, serial replay has {len(want)}"


def check_conservation(dumps: Iterable[ShardDump]) -> Check:
    totals: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    accounts = 0
    for dump in dumps:
        for a in dump.accounts:
            accounts += 1
            t = totals[a.ledger]
            t[0] += a.debits_posted
            t[1] += a.credits_posted
            t[2] += a.debits_pending
            t[3] += a.credits_pending
            problem = _flag_problem(a)
            if problem:
                return Check("conservation", False, problem)
    for ledger, (dpo, cpo, dp, cp) in sorted(totals.items()):
        if dpo != cpo:
            return Check("conservation", False, f"ledger {ledger}: posted debits {dpo} != posted credits {cpo}")
        if dp != cp:
            return Check("conservation", False, f"ledger {ledger}: pending debits {dp} != pending credits {cp}")
    summary = ", ".join(f"ledger {k}: {v[0]} posted" for k, v in sorted(totals.items()))
    return Check("conservation", True, f"{accounts} accounts, debits = credits per ledger ({summary}); flags respected")


def _flag_problem(a: Account) -> str | None:
    broken = broken_balance_flag(a)
    return f"account {a.id}: its balances break its flag {broken}" if broken else None


def check_hash_chains(dumps: Iterable[ShardDump]) -> Check:
    links = 0
    for dump in dumps:
        by_account = defaultdict(list)
        for p in dump.postings:
            by_account[p.account_id].append(p)
        for account in dump.accounts:
            problem = _walk_chain(account, by_account.pop(account.id, []))
            if problem:
                return Check("hash chains", False, f"shard {dump.shard}: {problem}")
            links += account.seq
        if by_account:
            return Check("hash chains", False, f"shard {dump.shard}: postings for unknown account {min(by_account)}")
    return Check("hash chains", True, f"{links} links verified from each account's genesis hash")


class ChainWalk:
    """One account's hash chain, checked link by link: the one walker for dumps and for streamed postings.

    `step` takes the postings in seq order and `finish` checks the end of
    the chain against the account; each returns the first problem, or None.
    """

    def __init__(self, account: Account) -> None:
        self.account = account
        self.head = genesis_hash(account)
        self.seq = 0
        self.last = None

    def step(self, p) -> str | None:
        a = self.account.id
        if p.seq != self.seq + 1:
            return f"account {a}: posting seq {p.seq} where {self.seq + 1} was expected"
        if p.prev_hash != self.head:
            return f"account {a} posting {p.seq}: prev_hash does not link to its predecessor"
        if posting_hash(p) != p.hash:
            return f"account {a} posting {p.seq}: hash does not recompute from its fields (tampered?)"
        self.head, self.seq, self.last = p.hash, p.seq, p
        return None

    def finish(self) -> str | None:
        a = self.account
        if self.seq < a.seq:
            return (f"account {a.id} chain breaks after posting {self.seq}: posting {self.seq + 1} of {a.seq} "
                    f"is missing or does not link to its predecessor")
        if self.seq != a.seq:
            return f"account {a.id} has seq {a.seq} but {self.seq} postings"
        if self.head != a.head_hash:
            return f"account {a.id} head_hash is not its last link's hash"
        for column in ("debits_pending", "debits_posted", "credits_pending", "credits_posted"):
            if self.last is not None and getattr(self.last, column) != getattr(a, column):
                return f"account {a.id} {column} differs from its last posting's"
        return None


def _walk_chain(account: Account, postings: list) -> str | None:
    walk = ChainWalk(account)
    for p in postings:
        problem = walk.step(p)
        if problem:
            return problem
    return walk.finish()


async def verify_account_chain(shard, account_id: int, at_epoch: int) -> int:
    """Walk one account's hash chain in a store at `at_epoch`; its length.

    For stores that stream a chain (`walk_chain`, PostgreSQL), so memory
    stays bounded on accounts with millions of postings.  Raises
    `InvariantViolation` naming the first broken link.
    """
    account = (await shard.load_accounts([account_id], at_epoch)).get(account_id)
    if account is None:
        raise InvariantViolation(f"shard {shard.name}: account {account_id} does not exist at epoch {at_epoch}")
    walk = ChainWalk(account)
    async for posting in shard.walk_chain(account_id, at_epoch):
        problem = walk.step(posting)
        if problem:
            raise InvariantViolation(f"shard {shard.name}: {problem}")
    problem = walk.finish()
    if problem:
        raise InvariantViolation(f"shard {shard.name}: {problem}")
    return walk.seq


def check_replicas(statuses: dict[str, dict]) -> Check:
    seen = {url: (s["last_epoch"], s["digest"]) for url, s in statuses.items()}
    if len(set(seen.values())) != 1:
        return Check("replica digests", False, f"replicas disagree: {seen}")
    epoch, digest = next(iter(seen.values()))
    return Check("replica digests", True, f"{len(seen)} replicas at epoch {epoch}, digest {digest[:16]}…")


def check_acknowledged(acked: dict[int, str], dumps: Iterable[ShardDump]) -> Check:
    """`acked`: transfer id -> the result the client was told ("exists" means stored ok)."""
    stored = {r.transfer.id: r.result for d in dumps for r in d.transfers}
    for transfer_id, told in acked.items():
        have = stored.get(transfer_id)
        want = "ok" if told == "exists" else told
        if have is None:
            return Check("no acknowledged transfer missing", False, f"transfer {transfer_id} acknowledged as {told} is missing")
        if have != want and told not in ("exists_with_different_fields",):
            return Check("no acknowledged transfer missing", False,
                         f"transfer {transfer_id} acknowledged as {told} but stored as {have}")
    return Check("no acknowledged transfer missing", True, f"all {len(acked)} acknowledged transfers stored with their result")
