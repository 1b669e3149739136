"""Baselines for `ordo bench`: the same transfers through PostgreSQL, without ordo.

Owned here: two conventional designs that ordo is measured against, on the
same machine, with the same seeded transfers (`bench.GroupTape`), driven by
the same closed loop as ordo (`bench.closed_loop`):

- `Monolith`: one database.  Every transfer, or every linked chain as a
  whole, is its own SERIALIZABLE transaction.  Serialization failures
  (SQLSTATE 40001), deadlocks (40P01) and duplicate keys from a duplicate in
  flight (23505) are retried with the same transfer, and counted.
- `TwoPhase` (XA): accounts split over two databases by `id % 2`, as ordo's
  embedded directory splits them over two shards.  A transfer whose accounts
  all live in one database commits there in one phase (what every XA
  transaction manager does for a single resource).  Otherwise it runs one
  branch per database -- BEGIN, the debit side in one, the credit side in the
  other -- then `PREPARE TRANSACTION` on both and `COMMIT PREPARED` on both
  (`ROLLBACK` / `ROLLBACK PREPARED` when a branch refuses or fails).

Both call one PL/pgSQL function, `ordo_bench.apply`, which does in one round
trip what ordo's state machine does for the same event: idempotency by
transfer id (`exists`, `exists_with_different_fields`), the
`debits_must_not_exceed_credits` balance check, pending / post / void,
linked chains that fail as a unit, and a SHA-256 hash chain of postings per
account.  It locks the accounts it touches in id order first, so that a
branch never deadlocks with another, and the coordinator runs branches in
database order, so that no waits-for cycle can span the two servers (where
PostgreSQL could not detect it).

Simplifications, all in the baselines' favour: a failed transfer is not
recorded (ordo records every result); a pending transfer that times out is
refused when posted but its amount is not released; `ledger` and `code` are
not checked.  Called by `sequencer/tools/bench.py`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from sequencer.tools.workload import BANK_ID


SCHEMA = "ordo_bench"
#: Attempts per transaction before the baseline gives up on it.  Under zipf
#: 1.2 a hot account sees a serialization failure on most attempts; a
#: hundred tries with backoff bounds a transfer's time without dropping any
#: at the contention levels the bench sweeps.
ATTEMPTS_MAX = 100
#: Longest backoff between two attempts; the first waits up to 1 ms.
BACKOFF_S_MAX = 0.05
#: Server-side bounds: a lock wait or a statement this long is a stuck
#: transaction, better failed and retried than left to stall a client.
LOCK_TIMEOUT_MS = 10_000
STATEMENT_TIMEOUT_MS = 30_000

#: SQLSTATEs that mean "the same transaction may succeed if run again".
RETRYABLE = {
    "40001": "serialization_failure",
    "40P01": "deadlock",
    "23505": "unique_violation",  # a duplicate of a transfer still in flight
    "55P03": "lock_timeout",
}

KIND = {"pending": 1, "post_pending": 2, "void_pending": 3}

_DDL = """
DROP SCHEMA IF EXISTS ordo_bench CASCADE;
CREATE SCHEMA ordo_bench;
CREATE TABLE ordo_bench.accounts (
    id              bigint PRIMARY KEY,
    flags           integer NOT NULL,
    debits_pending  bigint NOT NULL DEFAULT 0 CHECK (debits_pending >= 0),
    debits_posted   bigint NOT NULL DEFAULT 0 CHECK (debits_posted >= 0),
    credits_pending bigint NOT NULL DEFAULT 0 CHECK (credits_pending >= 0),
    credits_posted  bigint NOT NULL DEFAULT 0 CHECK (credits_posted >= 0),
    seq             bigint NOT NULL DEFAULT 0,
    head_hash       bytea  NOT NULL DEFAULT '\\x'::bytea
) WITH (fillfactor = 50);  -- room for HOT updates: balance updates never touch the index
-- One row per (transfer, account side held here): idempotency and pending state.
CREATE TABLE ordo_bench.sides (
    transfer_id       bigint  NOT NULL,
    account_id        bigint  NOT NULL,
    debit_account_id  bigint  NOT NULL,
    credit_account_id bigint  NOT NULL,
    amount            bigint  NOT NULL,
    kind              integer NOT NULL,  -- 0 plain, 1 pending, 2 post, 3 void
    pending_id        bigint  NOT NULL,
    state             integer NOT NULL,  -- of a pending: 1 open, 2 posted, 3 voided
    expires_at_ms     bigint,
    PRIMARY KEY (transfer_id, account_id)
);
CREATE TABLE ordo_bench.postings (
    account_id  bigint  NOT NULL,
    seq         bigint  NOT NULL,
    transfer_id bigint  NOT NULL,
    amount      bigint  NOT NULL,
    kind        integer NOT NULL,
    hash        bytea   NOT NULL,
    PRIMARY KEY (account_id, seq)
);

-- One side (debit or credit) of one transfer, on an account already locked.
CREATE FUNCTION ordo_bench.side(
    p_id bigint, p_account bigint, p_is_debit boolean, p_debit bigint, p_credit bigint,
    p_amount bigint, p_kind integer, p_pending bigint, p_timeout_ms bigint, p_now_ms bigint
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    a ordo_bench.accounts%ROWTYPE;
    pend ordo_bench.sides%ROWTYPE;
    amt bigint := p_amount;
BEGIN
    SELECT * INTO a FROM ordo_bench.accounts WHERE id = p_account;
    IF NOT FOUND THEN
        RETURN CASE WHEN p_is_debit THEN 'debit_account_not_found' ELSE 'credit_account_not_found' END;
    END IF;
    IF p_kind IN (2, 3) THEN
        SELECT * INTO pend FROM ordo_bench.sides WHERE transfer_id = p_pending AND account_id = p_account;
        IF NOT FOUND OR pend.kind <> 1 THEN RETURN 'pending_transfer_not_found'; END IF;
        IF pend.state = 2 THEN RETURN 'pending_transfer_already_posted'; END IF;
        IF pend.state = 3 THEN RETURN 'pending_transfer_already_voided'; END IF;
        IF pend.expires_at_ms IS NOT NULL AND p_now_ms >= pend.expires_at_ms THEN
            RETURN 'pending_transfer_expired';
        END IF;
        IF amt = 0 OR p_kind = 3 THEN amt := pend.amount; END IF;
        IF amt > pend.amount THEN RETURN 'exceeds_pending_transfer_amount'; END IF;
        IF p_is_debit THEN
            a.debits_pending := a.debits_pending - pend.amount;
            IF p_kind = 2 THEN a.debits_posted := a.debits_posted + amt; END IF;
        ELSE
            a.credits_pending := a.credits_pending - pend.amount;
            IF p_kind = 2 THEN a.credits_posted := a.credits_posted + amt; END IF;
        END IF;
    ELSIF p_kind = 1 THEN
        IF p_is_debit THEN a.debits_pending := a.debits_pending + amt;
        ELSE a.credits_pending := a.credits_pending + amt; END IF;
    ELSE
        IF p_is_debit THEN a.debits_posted := a.debits_posted + amt;
        ELSE a.credits_posted := a.credits_posted + amt; END IF;
    END IF;
    IF p_is_debit AND a.flags & 1 = 1 AND a.debits_pending + a.debits_posted > a.credits_posted THEN
        RETURN 'exceeds_credits';
    END IF;
    IF p_kind IN (2, 3) THEN
        UPDATE ordo_bench.sides SET state = p_kind WHERE transfer_id = p_pending AND account_id = p_account;
    END IF;
    a.seq := a.seq + 1;
    a.head_hash := sha256(a.head_hash || int8send(p_id) || int8send(amt));
    UPDATE ordo_bench.accounts SET debits_pending = a.debits_pending, debits_posted = a.debits_posted,
        credits_pending = a.credits_pending, credits_posted = a.credits_posted, seq = a.seq, head_hash = a.head_hash
        WHERE id = p_account;
    INSERT INTO ordo_bench.postings VALUES (p_account, a.seq, p_id, amt, p_kind, a.head_hash);
    RETURN 'ok';
END $$;

-- One transfer: the sides of it held by this database ('none' if it holds neither).
CREATE FUNCTION ordo_bench.leg(
    p_id bigint, p_debit bigint, p_credit bigint, p_amount bigint, p_kind integer, p_pending bigint,
    p_timeout_ms bigint, p_mod integer, p_rem integer, p_now_ms bigint
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    prior ordo_bench.sides%ROWTYPE;
    code text;
    local_debit boolean := p_debit % p_mod = p_rem;
    local_credit boolean := p_credit % p_mod = p_rem;
    here bigint := CASE WHEN local_debit THEN p_debit ELSE p_credit END;
    state integer := CASE WHEN p_kind = 1 THEN 1 ELSE 0 END;
    expires bigint := CASE WHEN p_kind = 1 AND p_timeout_ms > 0 THEN p_now_ms + p_timeout_ms END;
BEGIN
    IF NOT (local_debit OR local_credit) THEN RETURN 'none'; END IF;
    IF p_debit = p_credit THEN RETURN 'accounts_must_be_different'; END IF;
    -- Idempotency by insert, not by lookup.  ON CONFLICT checks the key with a
    -- dirty snapshot and leaves no SIREAD lock; a lookup would lock the index
    -- page that every concurrent transfer inserts its (ascending) id into, and
    -- SERIALIZABLE would then fail most of them for no real conflict.  A leg
    -- that fails later is undone by `apply`'s subtransaction, row included.
    INSERT INTO ordo_bench.sides VALUES (p_id, here, p_debit, p_credit, p_amount, p_kind, p_pending, state, expires)
        ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        SELECT * INTO prior FROM ordo_bench.sides WHERE transfer_id = p_id AND account_id = here;
        IF (prior.debit_account_id, prior.credit_account_id, prior.amount, prior.kind, prior.pending_id)
           = (p_debit, p_credit, p_amount, p_kind, p_pending) THEN
            RETURN 'exists';
        END IF;
        RETURN 'exists_with_different_fields';
    END IF;
    IF local_debit AND local_credit THEN
        INSERT INTO ordo_bench.sides VALUES (p_id, p_credit, p_debit, p_credit, p_amount, p_kind, p_pending, state,
                                             expires);
    END IF;
    IF local_debit THEN
        code := ordo_bench.side(p_id, p_debit, true, p_debit, p_credit, p_amount, p_kind, p_pending,
                                p_timeout_ms, p_now_ms);
        IF code <> 'ok' THEN RETURN code; END IF;
    END IF;
    IF local_credit THEN
        code := ordo_bench.side(p_id, p_credit, false, p_debit, p_credit, p_amount, p_kind, p_pending,
                                p_timeout_ms, p_now_ms);
        IF code <> 'ok' THEN RETURN code; END IF;
    END IF;
    RETURN 'ok';
END $$;

-- A transfer or a linked chain: every leg, or (on the first failing leg) none.
CREATE FUNCTION ordo_bench.apply(
    p_ids bigint[], p_debits bigint[], p_credits bigint[], p_amounts bigint[], p_kinds integer[],
    p_pending bigint[], p_timeouts bigint[], p_mod integer, p_rem integer, p_now_ms bigint
) RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE
    n integer := array_length(p_ids, 1);
    codes text[] := array_fill('none'::text, ARRAY[n]);
    failed integer := 0;
BEGIN
    -- Lock every account held here in id order: two transactions never wait on each other in a cycle.
    PERFORM 1 FROM ordo_bench.accounts
        WHERE id = ANY(p_debits || p_credits) AND id % p_mod = p_rem ORDER BY id FOR UPDATE;
    BEGIN
        FOR i IN 1..n LOOP
            codes[i] := ordo_bench.leg(p_ids[i], p_debits[i], p_credits[i], p_amounts[i], p_kinds[i],
                                       p_pending[i], p_timeouts[i], p_mod, p_rem, p_now_ms);
            IF codes[i] NOT IN ('ok', 'exists', 'none') THEN
                failed := i;
                RAISE EXCEPTION 'leg % failed', i USING ERRCODE = 'OB001';
            END IF;
        END LOOP;
    EXCEPTION WHEN SQLSTATE 'OB001' THEN
        -- This block is a subtransaction: leaving it this way undoes the earlier legs' writes.
        FOR i IN 1..n LOOP
            IF i <> failed THEN codes[i] := 'linked_event_failed'; END IF;
        END LOOP;
    END;
    RETURN codes;
END $$;
"""

_APPLY = (
    "SELECT ordo_bench.apply(%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::int[],"
    " %s::bigint[], %s::bigint[], %s, %s, %s)"
)


@dataclass(frozen=True)
class Legs:
    """A group (one transfer or one linked chain) as the arrays `ordo_bench.apply` takes."""

    ids: list[int]
    debits: list[int]
    credits: list[int]
    amounts: list[int]
    kinds: list[int]
    pending: list[int]
    timeouts: list[int]

    @classmethod
    def of(cls, group: list[dict]) -> Legs:
        kinds = []
        for t in group:
            flags = t.get("flags", [])
            kinds.append(next((KIND[f] for f in flags if f in KIND), 0))
        return cls(
            [t["id"] for t in group], [t["debit_account_id"] for t in group], [t["credit_account_id"] for t in group],
            [t["amount"] for t in group], kinds, [t.get("pending_id", 0) for t in group],
            [t.get("timeout_ms", 0) for t in group],
        )

    def params(self, mod: int, rem: int, now_ms: int) -> tuple:
        return (self.ids, self.debits, self.credits, self.amounts, self.kinds, self.pending, self.timeouts,
                mod, rem, now_ms)

    def databases(self, mod: int) -> list[int]:
        return sorted({a % mod for a in (*self.debits, *self.credits)})


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def _connect(dsn: str, isolation: str) -> psycopg.AsyncConnection:
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    await conn.execute(f"SET default_transaction_isolation TO '{isolation}'")
    await conn.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
    await conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
    return conn


async def load_schema(dsn: str, accounts: list[dict], funding: int, mod: int = 1, rem: int = 0) -> None:
    """(Re)create the schema and the accounts held here, each funded by the bank as ordo's setup funds them."""
    rows = []
    for a in accounts:
        if a["id"] % mod != rem:
            continue
        flags = 1 if "debits_must_not_exceed_credits" in a.get("flags", []) else 0
        credited = 0 if a["id"] == BANK_ID else funding
        rows.append((a["id"], flags, credited))
    bank_debits = funding * (len(accounts) - 1)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        async with conn.cursor() as cur:
            for gid in await (await cur.execute(
                "SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'ob%%' AND database = current_database()"
            )).fetchall():  # left by a killed earlier run; they would hold their locks for ever
                await cur.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid[0])))
            await cur.execute(_DDL)
            async with cur.copy("COPY ordo_bench.accounts (id, flags, credits_posted) FROM STDIN") as copy:
                for row in rows:
                    await copy.write_row(row)
            await cur.execute("UPDATE ordo_bench.accounts SET debits_posted = %s WHERE id = %s", (bank_debits, BANK_ID))
            await cur.execute("ANALYZE ordo_bench.accounts")


async def check_prepared_transactions(dsn: str) -> int:
    """`max_prepared_transactions` of the server; 2PC needs it above 0."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        row = await (await conn.execute("SHOW max_prepared_transactions")).fetchone()
    return int(row[0])


@dataclass
class Outcome:
    codes: list[str]
    retries: Counter = field(default_factory=Counter)


def _failed(code: str) -> bool:
    return code not in ("ok", "exists", "none")


class Monolith:
    """One database; one SERIALIZABLE transaction per transfer or chain (one round trip)."""

    name = "monolith"

    def __init__(self, dsn: str, seed: int) -> None:
        self.dsn = dsn
        self.seed = seed

    async def setup(self, accounts: list[dict], funding: int) -> None:
        await load_schema(self.dsn, accounts, funding)

    async def connect(self, index: int) -> MonolithWorker:
        return MonolithWorker(await _connect(self.dsn, "serializable"), random.Random(self.seed * 1000 + index))


class MonolithWorker:
    def __init__(self, conn: psycopg.AsyncConnection, rng: random.Random) -> None:
        self.conn = conn
        self.rng = rng

    async def run(self, group: list[dict]) -> Outcome:
        legs = Legs.of(group)
        outcome = Outcome([])
        for attempt in range(ATTEMPTS_MAX):
            try:
                # autocommit + default isolation SERIALIZABLE: the statement is the transaction.
                row = await (await self.conn.execute(_APPLY, legs.params(1, 0, _now_ms()))).fetchone()
                outcome.codes = row[0]
                return outcome
            except psycopg.Error as exc:
                kind = RETRYABLE.get(exc.sqlstate or "")
                if kind is None:
                    raise
                outcome.retries[kind] += 1
                await _backoff(self.rng, attempt)
        raise RuntimeError(f"transfer {legs.ids[0]} failed {ATTEMPTS_MAX} times: {dict(outcome.retries)}")

    async def close(self) -> None:
        await self.conn.close()


class TwoPhase:
    """Accounts over two databases by id % 2; cross-database transfers commit with 2PC."""

    name = "xa"

    def __init__(self, dsns: list[str], seed: int) -> None:
        if len(dsns) != 2:
            raise ValueError("the XA baseline splits accounts over exactly two databases")
        self.dsns = dsns
        self.seed = seed

    async def setup(self, accounts: list[dict], funding: int) -> None:
        for rem, dsn in enumerate(self.dsns):
            if await check_prepared_transactions(dsn) <= 0:
                raise RuntimeError(f"{dsn}: max_prepared_transactions is 0; PREPARE TRANSACTION is disabled")
        await asyncio.gather(*(load_schema(dsn, accounts, funding, 2, rem) for rem, dsn in enumerate(self.dsns)))

    async def connect(self, index: int) -> TwoPhaseWorker:
        conns = [await _connect(dsn, "read committed") for dsn in self.dsns]
        return TwoPhaseWorker(conns, index, random.Random(self.seed * 1000 + index))


class TwoPhaseWorker:
    _gids = itertools.count(1)

    def __init__(self, conns: list[psycopg.AsyncConnection], index: int, rng: random.Random) -> None:
        self.conns = conns
        self.index = index
        self.rng = rng
        self.prepared = 0
        self.one_phase = 0

    async def run(self, group: list[dict]) -> Outcome:
        legs = Legs.of(group)
        outcome = Outcome([])
        dbs = legs.databases(2)
        for attempt in range(ATTEMPTS_MAX):
            try:
                if len(dbs) == 1:
                    outcome.codes = await self._one_phase(legs, dbs[0])
                else:
                    outcome.codes = await self._two_phase(legs)
                return outcome
            except psycopg.Error as exc:
                kind = RETRYABLE.get(exc.sqlstate or "")
                if kind is None:
                    raise
                outcome.retries[kind] += 1
                await _backoff(self.rng, attempt)
        raise RuntimeError(f"transfer {legs.ids[0]} failed {ATTEMPTS_MAX} times: {dict(outcome.retries)}")

    async def _one_phase(self, legs: Legs, db: int) -> list[str]:
        self.one_phase += 1
        row = await (await self.conns[db].execute(_APPLY, legs.params(2, db, _now_ms()))).fetchone()
        return [c if c != "none" else "ok" for c in row[0]]

    async def _two_phase(self, legs: Legs) -> list[str]:
        gid = f"ob{os.getpid()}_{self.index}_{next(self._gids)}"
        now_ms = _now_ms()  # one clock reading for both branches: they agree on pending expiry
        maybe_prepared = False
        try:
            branches = []
            for db, conn in enumerate(self.conns):  # database order: no waits-for cycle across servers
                await conn.execute("BEGIN")
                branches.append((await (await conn.execute(_APPLY, legs.params(2, db, now_ms))).fetchone())[0])
            codes, commit = merge_branches(branches)
            if not commit:
                await asyncio.gather(*(c.execute("ROLLBACK") for c in self.conns))
                return codes
            maybe_prepared = True
            await asyncio.gather(*(c.execute(sql.SQL("PREPARE TRANSACTION {}").format(sql.Literal(f"{gid}_{db}")))
                                   for db, c in enumerate(self.conns)))
        except BaseException:
            await self._abort(gid, maybe_prepared)
            raise
        # Both branches voted yes: the decision is commit, so commit is retried until it holds.
        await asyncio.gather(*(_until_done(c, sql.SQL("COMMIT PREPARED {}").format(sql.Literal(f"{gid}_{db}")))
                               for db, c in enumerate(self.conns)))
        self.prepared += 1
        return codes

    async def _abort(self, gid: str, maybe_prepared: bool) -> None:
        """Undo whatever an interrupted attempt left open: a transaction, or a prepare on one side only."""
        for db, conn in enumerate(self.conns):
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                await conn.execute("ROLLBACK")
            branch = f"{gid}_{db}"  # one global id per branch: the two databases share a server
            if maybe_prepared:
                rows = await conn.execute("SELECT 1 FROM pg_prepared_xacts WHERE gid = %s", (branch,))
                if await rows.fetchone():
                    await conn.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(branch)))

    async def close(self) -> None:
        for conn in self.conns:
            await conn.close()


async def _until_done(conn: psycopg.AsyncConnection, stmt: sql.Composable) -> None:
    for attempt in range(ATTEMPTS_MAX):
        try:
            await conn.execute(stmt)
            return
        except psycopg.OperationalError:
            await asyncio.sleep(min(BACKOFF_S_MAX, 0.001 * 2**attempt))
    raise RuntimeError(f"{stmt.as_string(conn)} did not succeed in {ATTEMPTS_MAX} attempts")


def merge_branches(branches: list[list[str]]) -> tuple[list[str], bool]:
    """Per-leg codes from every branch -> (the transfer's codes, whether to commit).

    A branch answers 'none' for a leg it holds no side of.  The group commits
    only if every branch agrees that every leg is 'ok', or that it already
    `exists` (then it wrote nothing).
    """
    codes: list[str] = []
    commit = True
    for per_leg in zip(*branches):
        seen = [c for c in per_leg if c != "none"]
        real = [c for c in seen if _failed(c) and c != "linked_event_failed"]
        if real:
            codes.append(real[0])
        elif "linked_event_failed" in seen:
            codes.append("linked_event_failed")
        elif "exists" in seen:
            codes.append("exists")
            commit = commit and all(c == "exists" for c in seen)
        else:
            codes.append("ok")
    if any(_failed(c) for c in codes):
        commit = False
        if len(codes) > 1:
            codes = [c if _failed(c) and c != "linked_event_failed" else "linked_event_failed" for c in codes]
    return codes, commit


async def _backoff(rng: random.Random, attempt: int) -> None:
    """Full jitter: contention clears fastest when retriers spread out."""
    await asyncio.sleep(rng.uniform(0, min(BACKOFF_S_MAX, 0.001 * 2**attempt)))
