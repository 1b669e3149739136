"""The PostgreSQL shard against a real server started by the harness.

The shared contract suite (`tests/proxy_contract.py`) runs first: the store
must return what the dict model returns; its mid-write failure is a backend
that kills itself from a row trigger.  The tests after it cover what only a
real server can show: a CHECK constraint failing in the second of three
batches, rows the database refuses, replays after reopening and from
concurrent callers, 63-bit extremes, the hash chain walked in SQL, the
server stopped under a transaction and restarted under the same proxy, and
the time one epoch of 200 transfers takes.

Every shard gets a fresh schema in one database, dropped at teardown.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import statistics
import time

import msgspec
import psycopg
import pytest

from executor.verify import verify_account_chain
from psycopg import sql

from proxies import postgres
from proxies.memory import MemoryShard
from proxies.postgres import PostgresShard, default_schema
from sequencer.errors import ConfigError, InvariantViolation, StoreUnavailable
from sequencer.types import CreateAccount, CreateTransfer
from tests.proxy_contract import (
    A,
    EPOCH_ALL,
    ContractTests,
    assert_dumps_equal,
    execute,
    extreme_batch,
    memory_after,
    scenario_batches,
    scripted_epochs,
)

pytestmark = pytest.mark.servers

DATABASE = "ordo_proxy_test"
_schemas = itertools.count()


@pytest.fixture(scope="module")
def dsn(postgres_server) -> str:
    postgres_server.create_database(DATABASE)
    return postgres_server.dsn(DATABASE)


def _drop_schemas(dsn: str, schemas: list[str]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
async def make_shard(dsn):
    """async (name, **options) -> an opened PostgresShard in a fresh schema; closed and dropped after."""
    shards: list[PostgresShard] = []

    async def make(name: str, **options) -> PostgresShard:
        schema = options.pop("schema", None) or f"t{next(_schemas)}_{default_schema(name)}"
        shard = PostgresShard(name, options.pop("dsn", dsn), schema=schema, **options)
        await shard.open()
        shards.append(shard)
        return shard

    yield make
    for shard in shards:
        await shard.close()
    _drop_schemas(dsn, sorted({s.schema for s in shards}))


def _kill_backend_on(dsn: str, schema: str, fail_epoch: int) -> None:
    """Make the server kill the writing backend while it inserts epoch `fail_epoch`'s results.

    A real crash in the middle of a write: the backend that runs `apply`
    terminates itself from a row trigger, after other rows of the same
    statement (and earlier epochs of the same call) are already written.
    """
    s = sql.Identifier(schema)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("""
            CREATE FUNCTION {s}.die() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_terminate_backend(pg_backend_pid());
                PERFORM pg_sleep(5);  -- the termination lands at the next interrupt check
                RETURN NEW;
            END $$""").format(s=s))
        conn.execute(sql.SQL("""
            CREATE TRIGGER die BEFORE INSERT ON {s}.results
            FOR EACH ROW WHEN (NEW.epoch = {epoch}) EXECUTE FUNCTION {s}.die()""").format(
            s=s, epoch=sql.Literal(fail_epoch)))


class TestPostgresContract(ContractTests):
    @pytest.fixture
    async def shard_factory(self, make_shard):
        return make_shard

    @pytest.fixture
    async def faulty_shard_factory(self, make_shard, dsn):
        async def make(name: str, fail_epoch: int) -> PostgresShard:
            shard = await make_shard(name)
            _kill_backend_on(dsn, shard.schema, fail_epoch)
            return shard

        return make


# ------------------------------------------------------------------ atomicity


async def test_check_violation_in_second_batch_writes_nothing(make_shard) -> None:
    """Epoch 1 passes every check; epoch 2 carries a posting the CHECK refuses."""
    shard, batches = await make_shard("s0"), scenario_batches()
    negative = msgspec.structs.replace(batches[1].postings[-1], amount=-1)
    bad = msgspec.structs.replace(batches[1], postings=[*batches[1].postings[:-1], negative])
    with pytest.raises(InvariantViolation, match="posting_amount_u63"):
        await shard.apply([batches[0], bad, batches[2]])
    assert await shard.applied_epoch() == 0
    assert_dumps_equal(await shard.dump(EPOCH_ALL), await MemoryShard("s0").dump(EPOCH_ALL))
    assert await shard.apply(batches) == len(batches)


async def test_killed_backend_mid_write_is_unavailable_then_recovers(make_shard, dsn) -> None:
    shard, batches = await make_shard("s0"), scenario_batches()
    _kill_backend_on(dsn, shard.schema, 3)
    with pytest.raises(StoreUnavailable, match="shard s0"):
        await shard.apply(batches)
    assert await shard.applied_epoch() == 0
    assert await shard.apply(batches[:2]) == 2  # a fresh pool, the trigger does not fire before epoch 3
    assert_dumps_equal(await shard.dump(EPOCH_ALL), await (await memory_after("s0", batches[:2])).dump(EPOCH_ALL))


async def test_balance_without_its_account_is_refused(make_shard) -> None:
    """A balance version whose account this shard does not hold would be invisible to reads."""
    shard, batches = await make_shard("s0"), scenario_batches()
    await shard.apply(batches[:1])
    stranger = msgspec.structs.replace(batches[1].balances[0], id=10**6)
    bad = msgspec.structs.replace(batches[1], balances=[*batches[1].balances, stranger])
    with pytest.raises(InvariantViolation, match="static fields"):
        await shard.apply([bad])
    changed = msgspec.structs.replace(batches[1].balances[0], code=batches[1].balances[0].code + 1)
    bad = msgspec.structs.replace(batches[1], balances=[changed, *batches[1].balances[1:]])
    with pytest.raises(InvariantViolation, match="static fields"):
        await shard.apply([bad])
    assert await shard.applied_epoch() == 1
    assert await shard.apply(batches[1:]) == len(batches) - 1


async def test_duplicate_posting_is_refused(make_shard) -> None:
    shard, batches = await make_shard("s0"), scenario_batches()
    await shard.apply(batches[:2])
    again = msgspec.structs.replace(batches[2], postings=[*batches[2].postings, msgspec.structs.replace(
        batches[1].postings[0], epoch=3)])
    with pytest.raises(InvariantViolation):
        await shard.apply([again])
    assert await shard.applied_epoch() == 2


# --------------------------------------------------------------- idempotency


async def test_replay_after_reopen_is_a_noop(make_shard, dsn) -> None:
    """The guard lives in the database, not in the proxy object."""
    shard, batches = await make_shard("s0"), scenario_batches()
    assert await shard.apply(batches) == len(batches)
    before = await shard.dump(EPOCH_ALL)
    again = await make_shard("s0", schema=shard.schema)
    assert await again.apply(batches) == 0
    assert await again.apply(batches[2:4]) == 0
    assert_dumps_equal(await again.dump(EPOCH_ALL), before)


async def test_concurrent_replays_apply_once(make_shard) -> None:
    shard, batches = await make_shard("s0", pool_max=4), scenario_batches()
    counts = await asyncio.gather(*(shard.apply(batches) for _ in range(4)))
    assert sorted(counts) == [0, 0, 0, len(batches)]
    assert_dumps_equal(await shard.dump(EPOCH_ALL), await (await memory_after("s0", batches)).dump(EPOCH_ALL))


# ---------------------------------------------------------------- extremes


async def test_63_bit_extremes_round_trip_through_every_read(make_shard) -> None:
    shard, batch = await make_shard("s0"), extreme_batch()
    await shard.apply([batch])
    account = batch.accounts[0]
    assert await shard.load_accounts([account.id, 2**63 - 1, 0], 2**63 - 1) == {account.id: account}
    assert await shard.read_postings(account.id, 2**63 - 1, after_seq=0, limit=2**63 - 1) == batch.postings
    # the hand-made postings do not link (seq 1, then 2**63-1): the walk stops after the first
    assert [p async for p in shard.walk_chain(account.id, 2**63 - 1)] == batch.postings[:1]
    assert (await shard.dump(2**63 - 1)).digest() == (await (await memory_after("s0", [batch])).dump(2**63 - 1)).digest()


async def test_values_outside_their_columns_are_refused(make_shard) -> None:
    shard, batch = await make_shard("s0"), extreme_batch()
    record = batch.transfers[0]
    huge = msgspec.structs.replace(record, transfer=msgspec.structs.replace(record.transfer, user_data=2**63))
    text_hash = msgspec.structs.replace(batch.postings[0], hash="not bytes")
    negative = msgspec.structs.replace(batch.resolutions[0], amount=-1)
    for bad in (
        msgspec.structs.replace(batch, transfers=[huge]),
        msgspec.structs.replace(batch, postings=[text_hash, *batch.postings[1:]]),
        msgspec.structs.replace(batch, resolutions=[negative]),
    ):
        with pytest.raises(InvariantViolation):
            await shard.apply([bad])
    assert await shard.applied_epoch() == 0
    assert await shard.apply([batch]) == 1


async def test_out_of_range_arguments_read_like_memory(make_shard) -> None:
    """Ids, epochs and limits beyond BIGINT are clamped or find nothing, as in the dict model."""
    shard, batches = await make_shard("s0"), scenario_batches()
    await shard.apply(batches)
    want = await memory_after("s0", batches)
    huge = 10**30
    calls = [
        lambda s: s.load_accounts([A, -1, 2**63, huge], huge),
        lambda s: s.load_transfers([10, 12, -5, 2**64], huge),
        lambda s: s.load_resolutions([12, 13, -1, huge], huge),
        lambda s: s.load_open_pendings(-huge),
        lambda s: s.read_postings(A, huge, after_seq=-huge, limit=huge),
        lambda s: s.read_postings(2**64 + A, huge),
        lambda s: s.read_postings(-A, huge),
        lambda s: s.read_results(huge),
        lambda s: s.read_results(-1),
    ]
    for i, call in enumerate(calls):
        assert await call(shard) == await call(want), f"call {i}"
    assert_dumps_equal(await shard.dump(2**64 - 1), await want.dump(2**64 - 1))


# --------------------------------------------------------------- hash chains


async def test_verify_chain_walks_every_account(make_shard) -> None:
    shard, batches = await make_shard("s0"), scenario_batches()
    await shard.apply(batches)
    dump = await shard.dump(EPOCH_ALL)
    lengths = {a.id: await verify_account_chain(shard, a.id, EPOCH_ALL) for a in dump.accounts}
    assert lengths[A] == 6
    assert lengths == {a.id: a.seq for a in dump.accounts}
    assert await verify_account_chain(shard, A, 2) == 1


async def test_walk_chain_pages_along_the_links(make_shard, monkeypatch) -> None:
    shard, batches = await make_shard("s0"), scenario_batches()
    await shard.apply(batches)
    monkeypatch.setattr(postgres, "CHAIN_PAGE_SIZE", 2)
    walked = [p async for p in shard.walk_chain(A, EPOCH_ALL)]
    assert walked == await shard.read_postings(A, EPOCH_ALL)
    assert [p.seq for p in walked] == [1, 2, 3, 4, 5, 6]
    assert [p.seq async for p in shard.walk_chain(A, 3)] == [1, 2, 3]
    assert await verify_account_chain(shard, A, EPOCH_ALL) == 6


async def test_walk_chain_stops_at_a_broken_link(make_shard, dsn) -> None:
    shard, batches = await make_shard("s0"), scenario_batches()
    await shard.apply(batches)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("UPDATE {}.postings SET prev_hash = %s WHERE account_id = %s AND seq = 4").format(
            sql.Identifier(shard.schema)), (b"\x00" * 32, A))
    assert [p.seq async for p in shard.walk_chain(A, EPOCH_ALL)] == [1, 2, 3]
    with pytest.raises(InvariantViolation, match=f"account {A} chain breaks after posting 3"):
        await verify_account_chain(shard, A, EPOCH_ALL)


async def test_verify_chain_names_a_tampered_link(make_shard, dsn) -> None:
    shard, batches = await make_shard("s0"), scenario_batches()
    await shard.apply(batches)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("UPDATE {}.postings SET amount = amount + 1 WHERE account_id = %s AND seq = 2").format(
            sql.Identifier(shard.schema)), (A,))
    with pytest.raises(InvariantViolation, match=f"account {A} posting 2: hash"):
        await verify_account_chain(shard, A, EPOCH_ALL)
    assert await verify_account_chain(shard, A, 2) == 1  # its first link, from epoch 2, is intact


# ------------------------------------------------------------------- schemas


async def test_shards_share_a_database_in_separate_schemas(make_shard) -> None:
    batches = scenario_batches()
    first = await make_shard("s0")
    second = await make_shard("s0")  # same shard name, another schema: independent state
    await first.apply(batches)
    assert await second.applied_epoch() == 0
    assert (await second.dump(EPOCH_ALL)).accounts == []


async def test_schema_of_another_shard_is_refused(make_shard) -> None:
    shard = await make_shard("s0")
    with pytest.raises(ConfigError, match="holds shard 's0'"):
        await make_shard("s1", schema=shard.schema)


def test_default_schema_is_a_safe_identifier() -> None:
    assert default_schema("s0") == "ordo_s0"
    assert default_schema("EU-West.1") == "ordo_eu_west_1"
    assert len(default_schema("x" * 100)) == 63


# --------------------------------------------------------------- outages

#: How long a call may take to report an outage.  With the server gone a
#: fresh connection is refused at once; the bound leaves room for a loaded
#: CI machine and for libpq's connect_timeout on a silent network.
OUTAGE_REPORT_S_MAX = 8.0
#: How long the harness's restarted server may take to accept connections.
RESTART_S_MAX = 60.0


def _server_accepts(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


async def _wait_until_accepting(dsn: str) -> None:
    started = time.monotonic()
    while not await asyncio.to_thread(_server_accepts, dsn):
        assert time.monotonic() - started < RESTART_S_MAX, "the restarted server does not accept connections"
        await asyncio.sleep(0.2)


async def _a_session_waits_on_a_lock(conn) -> bool:
    cursor = await conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
    return (await cursor.fetchone())[0] > 0


async def test_outage_is_reported_promptly_and_the_same_proxy_recovers(make_shard, postgres_server, dsn) -> None:
    """Stop the server under a shard that holds idle connections and one blocked mid-transaction."""
    batches = scenario_batches()
    shard = await make_shard("s0", pool_max=4)
    await shard.apply(batches[:2])
    await asyncio.gather(*(shard.applied_epoch() for _ in range(8)))  # several idle pooled connections
    # Another session holds the meta row, so the next apply waits inside its
    # transaction (on SELECT ... FOR UPDATE) when the server shuts down.
    holder = await psycopg.AsyncConnection.connect(dsn)
    try:
        await holder.execute(sql.SQL("SELECT 1 FROM {}.meta FOR UPDATE").format(sql.Identifier(shard.schema)))
        blocked = asyncio.create_task(shard.apply(batches[2:3]))
        started = time.monotonic()
        while not await _a_session_waits_on_a_lock(holder):  # the apply is now inside its transaction
            assert not blocked.done() and time.monotonic() - started < RESTART_S_MAX, "the apply never blocked"
            await asyncio.sleep(0.05)
        await asyncio.to_thread(postgres_server.stop)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="shard s0"):
            await blocked
        assert time.monotonic() - started < OUTAGE_REPORT_S_MAX
        calls = {
            "apply": lambda: shard.apply(batches[2:3]),
            "applied_epoch": shard.applied_epoch,
            "load_accounts": lambda: shard.load_accounts([A], 2),
            "read_postings": lambda: shard.read_postings(A, 2),
            "dump": lambda: shard.dump(EPOCH_ALL),
        }
        for name, call in calls.items():
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="shard s0.*(refused|connect|closed|terminat|shut)"):
                await call()
            assert time.monotonic() - started < OUTAGE_REPORT_S_MAX, f"{name} took too long to report the outage"
    finally:
        await holder.close()
        await asyncio.to_thread(postgres_server.ensure_running)  # the session's other tests need it
    await _wait_until_accepting(dsn)
    # The very first call through the same proxy succeeds: it finds the
    # server back and replaces the pool whose connections died.
    assert await shard.applied_epoch() == 2
    assert await shard.apply(batches) == len(batches) - 2
    assert_dumps_equal(await shard.dump(EPOCH_ALL), await (await memory_after("s0", batches)).dump(EPOCH_ALL))


async def test_restart_while_idle_is_invisible_to_the_next_call(make_shard, postgres_server, dsn) -> None:
    shard, batches = await make_shard("s0"), scenario_batches()
    await shard.apply(batches[:1])
    await asyncio.gather(*(shard.applied_epoch() for _ in range(4)))
    try:
        await asyncio.to_thread(postgres_server.stop)
    finally:
        await asyncio.to_thread(postgres_server.ensure_running)
    await _wait_until_accepting(dsn)
    assert await shard.apply(batches[1:]) == len(batches) - 1  # the dead pooled connection is retried once, fresh


async def test_silent_server_is_unavailable_after_connect_timeout() -> None:
    """A port that accepts TCP connections but never says a word: libpq's connect_timeout ends the wait."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes handshakes; nobody ever reads
        port = silent.getsockname()[1]
        shard = PostgresShard("s0", f"host=127.0.0.1 port={port} dbname=x user=x", connect_timeout_s=2)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="open failed.*timeout"):
            await shard.open()
        assert time.monotonic() - started < OUTAGE_REPORT_S_MAX


async def test_unanswered_call_gives_up_after_call_timeout(make_shard) -> None:
    """A server that accepts but never answers: only the client-side bound ends the call."""
    shard = await make_shard("s0", call_timeout_s=1.0, statement_timeout_ms=0)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="no answer within 1 s"):
        await shard._run("sleep", lambda conn: conn.execute("SELECT pg_sleep(60)"))
    assert time.monotonic() - started < OUTAGE_REPORT_S_MAX
    assert await shard.applied_epoch() == 0


async def test_nothing_listening_is_unavailable_promptly() -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    shard = PostgresShard("s0", f"host=127.0.0.1 port={port} dbname=nothing user=nobody")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="open failed.*refused"):
        await shard.open()
    assert time.monotonic() - started < OUTAGE_REPORT_S_MAX
    with pytest.raises(StoreUnavailable, match="before open"):
        await shard.applied_epoch()


# -------------------------------------------------------------- performance

#: The brief's load: one epoch of ~200 transfers (~400 postings, ~400
#: balance versions, 200 transfer records, 200 results).  Enough accounts
#: that the 400 touches of an epoch are nearly all distinct.
TRANSFERS_PER_EPOCH = 200
ACCOUNTS = 20_000
MEASURED_EPOCHS = 20
#: Generous: a loaded CI machine must not fail this; the number we report is printed.
APPLY_S_MAX = 5.0


def _load_epochs(seed: int) -> list[list]:
    rng = random.Random(seed)
    epochs: list[list] = [[CreateAccount(i, 1, 1) for i in range(1, ACCOUNTS + 1)]]
    next_id = 0
    for _ in range(MEASURED_EPOCHS):
        epoch = []
        for _ in range(TRANSFERS_PER_EPOCH):
            debit, credit = rng.sample(range(1, ACCOUNTS + 1), 2)
            next_id += 1
            epoch.append(CreateTransfer(next_id, debit, credit, rng.randint(1, 1000), 1, 1))
        epochs.append(epoch)
    return epochs


async def test_apply_time_per_epoch(make_shard) -> None:
    batches = execute(scripted_epochs(_load_epochs(seed=7)), names=("s0",))["s0"]
    sizes = [len(b.postings) + len(b.balances) + len(b.transfers) + len(b.results) for b in batches[1:]]
    shard = await make_shard("s0")
    await shard.apply(batches[:1])  # the accounts
    times_ms = []
    for batch in batches[1:]:
        started = time.perf_counter()
        assert await shard.apply([batch]) == 1
        times_ms.append((time.perf_counter() - started) * 1000)
    print(f"postgres apply: {statistics.mean(sizes):.0f} rows/epoch, "
          f"median {statistics.median(times_ms):.1f} ms, max {max(times_ms):.1f} ms per epoch")
    assert max(times_ms) < APPLY_S_MAX * 1000
    want = await memory_after("s0", batches)
    assert_dumps_equal(await shard.dump(EPOCH_ALL), await want.dump(EPOCH_ALL))
