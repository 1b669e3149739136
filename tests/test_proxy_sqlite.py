"""The SQLite shard: the shared contract, plus what only a real file can show.

Beyond `tests/proxy_contract.py`: reopening keeps everything, the store's own
refusals (a key written twice, a file of another shard, a lock held too
long), readers that do not block the writer, and a crash test: a child
process applying epochs is SIGKILLed at a seeded moment, and the reopened
file must hold exactly epochs 1..N, equal to the memory model at N.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

import proxies.sqlite as sqlite_proxy
from proxies.memory import MemoryShard
from proxies.sqlite import SqliteShard
from sequencer.errors import ConfigError, InvariantViolation, StoreUnavailable
from sequencer.types import ShardBatch
from tests.proxy_contract import (
    EPOCH_ALL,
    ContractTests,
    assert_dumps_equal,
    execute,
    memory_after,
    random_epochs,
    scenario_batches,
    workload_seeds,
)

REPO = Path(__file__).resolve().parent.parent


class FaultyShard(SqliteShard):
    """Fails inside its transaction after writing part of epoch `fail_epoch`'s rows.

    The injected error is the one a failing disk gives (`OperationalError`),
    raised after the accounts, balances and postings of that epoch are in.
    """

    def __init__(self, name: str, path: str, fail_epoch: int) -> None:
        super().__init__(name, path)
        self.fail_epoch = fail_epoch

    def _write_rows(self, conn: sqlite3.Connection, batches) -> None:
        super()._write_rows(conn, [b for b in batches if b.epoch < self.fail_epoch])
        failing = [b for b in batches if b.epoch == self.fail_epoch]
        if failing:
            part = msgspec.structs.replace(failing[0], transfers=[], resolutions=[], results=[])
            super()._write_rows(conn, [part])
            raise sqlite3.OperationalError("injected fault: disk I/O error")
        super()._write_rows(conn, [b for b in batches if b.epoch > self.fail_epoch])


@pytest.fixture
async def opened(tmp_path):
    """Opens shards and closes them at teardown: `await opened(SqliteShard(...))`."""
    shards: list[SqliteShard] = []

    async def open_shard(shard: SqliteShard) -> SqliteShard:
        await shard.open()
        shards.append(shard)
        return shard

    yield open_shard
    for shard in shards:
        await shard.close()


class TestSqliteContract(ContractTests):
    @pytest.fixture
    def shard_factory(self, tmp_path, opened):
        count = iter(range(10**6))

        async def make(name: str) -> SqliteShard:
            return await opened(SqliteShard(name, str(tmp_path / f"{name}-{next(count)}.sqlite")))

        return make

    @pytest.fixture
    def faulty_shard_factory(self, tmp_path, opened):
        async def make(name: str, fail_epoch: int) -> SqliteShard:
            return await opened(FaultyShard(name, str(tmp_path / f"{name}-faulty.sqlite"), fail_epoch))

        return make


# ------------------------------------------------------------- the file


async def test_reopen_keeps_everything(tmp_path, opened) -> None:
    path, batches = str(tmp_path / "s0.sqlite"), scenario_batches()
    shard = SqliteShard("s0", path)
    await shard.open()
    await shard.apply(batches)
    before = await shard.dump(EPOCH_ALL)
    await shard.close()
    again = await opened(SqliteShard("s0", path))
    assert await again.applied_epoch() == len(batches)
    assert_dumps_equal(await again.dump(EPOCH_ALL), before)


async def test_wal_and_synchronous_full(tmp_path, opened) -> None:
    shard = await opened(SqliteShard("s0", str(tmp_path / "s0.sqlite")))

    def pragmas() -> tuple[str, int]:
        conn = shard._writer
        return conn.execute("PRAGMA journal_mode").fetchone()[0], conn.execute("PRAGMA synchronous").fetchone()[0]

    assert await shard._run(shard._write_thread, pragmas) == ("wal", 2)  # 2 = FULL


async def test_file_of_another_shard_is_refused(tmp_path, opened) -> None:
    path = str(tmp_path / "s0.sqlite")
    await (await opened(SqliteShard("s0", path))).close()
    with pytest.raises(ConfigError, match="holds shard 's0'"):
        await SqliteShard("s1", path).open()


async def test_missing_directory_is_store_unavailable(tmp_path) -> None:
    path = str(tmp_path / "no-such-dir" / "s0.sqlite")
    with pytest.raises(StoreUnavailable, match="no-such-dir"):
        await SqliteShard("s0", path).open()


async def test_not_a_database_is_store_unavailable(tmp_path) -> None:
    path = tmp_path / "s0.sqlite"
    path.write_bytes(b"this is not an sqlite file" * 1000)
    with pytest.raises(StoreUnavailable, match="not an ordo shard"):
        await SqliteShard("s0", str(path)).open()


async def test_unopened_shard_is_store_unavailable(tmp_path) -> None:
    with pytest.raises(StoreUnavailable, match="not open"):
        await SqliteShard("s0", str(tmp_path / "s0.sqlite")).applied_epoch()


async def test_write_lock_held_too_long_is_store_unavailable(tmp_path, opened, monkeypatch) -> None:
    monkeypatch.setattr(sqlite_proxy, "BUSY_TIMEOUT_MS", 100)
    path, batches = str(tmp_path / "s0.sqlite"), scenario_batches()
    shard = await opened(SqliteShard("s0", path))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        with pytest.raises(StoreUnavailable, match="locked"):
            await shard.apply(batches[:1])
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert await shard.apply(batches[:1]) == 1  # and it recovers once the lock is gone


# ------------------------------------------------------ store-level checks


async def test_row_written_twice_is_refused(tmp_path, opened) -> None:
    shard, batches = await opened(SqliteShard("s0", str(tmp_path / "s0.sqlite"))), scenario_batches()
    await shard.apply(batches[:2])
    stale = msgspec.structs.replace(batches[1].postings[0])  # (account, seq) already stored by epoch 2
    again = msgspec.structs.replace(batches[2], postings=[*batches[2].postings, msgspec.structs.replace(stale, epoch=3)])
    with pytest.raises(InvariantViolation, match="written twice"):
        await shard.apply([again])
    assert await shard.applied_epoch() == 2
    want = await memory_after("s0", batches[:2])
    assert_dumps_equal(await shard.dump(EPOCH_ALL), await want.dump(EPOCH_ALL))


async def test_balance_with_changed_static_fields_is_refused(tmp_path, opened) -> None:
    shard, batches = await opened(SqliteShard("s0", str(tmp_path / "s0.sqlite"))), scenario_batches()
    await shard.apply(batches[:1])
    version = batches[1].balances[0]
    changed = msgspec.structs.replace(batches[1], balances=[msgspec.structs.replace(version, code=9),
                                                            *batches[1].balances[1:]])
    with pytest.raises(InvariantViolation, match="static fields"):
        await shard.apply([changed])
    assert await shard.applied_epoch() == 1


async def test_balance_of_unknown_account_is_refused(tmp_path, opened) -> None:
    shard, batches = await opened(SqliteShard("s0", str(tmp_path / "s0.sqlite"))), scenario_batches()
    await shard.apply(batches[:1])
    ghost = msgspec.structs.replace(batches[1].balances[0], id=424242)
    with pytest.raises(InvariantViolation, match="never created"):
        await shard.apply([msgspec.structs.replace(batches[1], balances=[ghost])])


async def test_rolled_back_account_is_not_remembered(tmp_path, opened) -> None:
    """The writer caches static fields only after a commit."""
    batches = scenario_batches()
    shard = await opened(FaultyShard("s0", str(tmp_path / "s0.sqlite"), fail_epoch=1))
    with pytest.raises(StoreUnavailable, match="injected"):
        await shard.apply(batches[:1])
    shard.fail_epoch = 99
    orphan = msgspec.structs.replace(batches[0], accounts=[])  # balances of accounts never committed
    with pytest.raises(InvariantViolation, match="never created"):
        await shard.apply([orphan])


async def test_value_beyond_64_bits_is_refused(tmp_path, opened) -> None:
    shard, batches = await opened(SqliteShard("s0", str(tmp_path / "s0.sqlite"))), scenario_batches()
    await shard.apply(batches[:1])
    huge = msgspec.structs.replace(batches[1].postings[0], hlc=2**64)
    with pytest.raises(InvariantViolation, match="64 bits"):
        await shard.apply([msgspec.structs.replace(batches[1], postings=[huge])])
    assert await shard.applied_epoch() == 1


# ------------------------------------------------------------ concurrency


async def test_overlapping_applies_write_each_epoch_exactly_once(tmp_path, opened) -> None:
    """Stricter than the contract: one writer thread and the guard inside BEGIN IMMEDIATE."""
    shard, batches = await opened(SqliteShard("s0", str(tmp_path / "s0.sqlite"))), scenario_batches()
    counts = await asyncio.gather(shard.apply(batches[:3]), shard.apply(batches[:3]), shard.apply(batches[:4]))
    assert sorted(counts) == [0, 1, 3]


async def test_open_reader_does_not_block_the_writer(tmp_path, opened) -> None:
    path, batches = str(tmp_path / "s0.sqlite"), scenario_batches()
    shard = await opened(SqliteShard("s0", path))
    await shard.apply(batches[:1])
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT applied_epoch FROM shard").fetchone() == (1,)  # snapshot taken
    try:
        assert await shard.apply(batches[1:]) == len(batches) - 1
        # the old snapshot still sees epoch 1 only; a new read sees everything
        assert reader.execute("SELECT applied_epoch FROM shard").fetchone() == (1,)
        assert await shard.applied_epoch() == len(batches)
    finally:
        reader.execute("COMMIT")
        reader.close()


async def test_dumps_during_applies_see_whole_epochs(tmp_path, opened) -> None:
    """Reads racing the writer see a prefix of whole epochs, never part of one."""
    seed = workload_seeds()[0]
    print(f"reproduce with ORDO_SEED={seed}")
    batches = execute(random_epochs(seed, 40))["s0"]
    shard = await opened(SqliteShard("s0", str(tmp_path / "s0.sqlite")))
    # digest of "everything stored" -> the longest prefix of epochs with it
    # (an epoch with no rows on this shard leaves the digest unchanged)
    longest: dict[str, int] = {}
    for n in range(len(batches) + 1):
        longest[(await (await memory_after("s0", batches[:n])).dump(EPOCH_ALL)).digest()] = n

    async def writer() -> None:
        for batch in batches:
            await shard.apply([batch])

    async def reader() -> None:
        reads = 0
        while (applied := await shard.applied_epoch()) < len(batches):
            seen = longest.get((await shard.dump(EPOCH_ALL)).digest())
            assert seen is not None, f"a dump holds part of an epoch (ORDO_SEED={seed})"
            assert seen >= applied, f"a dump taken after epoch {applied} was applied lacks it (ORDO_SEED={seed})"
            reads += 1
        print(f"{reads} dumps raced the writer")

    await asyncio.gather(writer(), reader())


# --------------------------------------------------------------- crashes

_CHILD = r"""
import asyncio, random, sys
import msgspec
from proxies.sqlite import SqliteShard
from sequencer.types import ShardBatch

async def main(path, batches_path, seed):
    batches = msgspec.msgpack.decode(open(batches_path, "rb").read(), type=list[ShardBatch])
    shard = SqliteShard("s0", path)
    await shard.open()
    rng = random.Random(seed)
    start = await shard.applied_epoch()
    print("ready", start, flush=True)
    while start < len(batches):
        end = min(len(batches), start + rng.randint(1, 3))  # 1-3 epochs per apply
        await shard.apply(batches[start:end])
        print(end, flush=True)  # acknowledged: this epoch must survive the kill
        start = end
    await shard.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""

#: Kills per crash test: each one restarts from what the file holds.
CRASH_ROUNDS = 4
#: Epochs in the crash test's log: enough that every kill lands mid-run.
CRASH_EPOCHS = 150


def _run_child_until_killed(path: str, batches_path: str, rng: random.Random, total: int) -> tuple[int, int]:
    """Start the applier, SIGKILL it at a seeded moment; returns (epoch at start, last acked epoch)."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, path, batches_path, str(rng.randrange(2**32))],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    ready = child.stdout.readline().split()
    assert ready and ready[0] == "ready", f"child did not start: {ready}"
    start = acked = int(ready[1])
    kill_after = min(total, start + rng.randint(0, (total - start) // 3))  # acks to wait for
    while acked < kill_after:
        acked = int(child.stdout.readline())
    time.sleep(rng.uniform(0, 0.01))  # lands the kill at a seeded point of a later apply
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    for line in child.stdout.read().split():  # acks printed before the kill
        acked = int(line)
    return start, acked


async def test_sigkill_never_tears_an_epoch(tmp_path) -> None:
    seed = workload_seeds()[0]
    print(f"reproduce this crash test with ORDO_SEED={seed}")
    rng = random.Random(seed)
    batches = execute(random_epochs(seed, CRASH_EPOCHS))["s0"]
    batches_path = tmp_path / "batches.msgpack"
    batches_path.write_bytes(msgspec.msgpack.encode(batches))
    path = str(tmp_path / "s0.sqlite")
    for round_no in range(CRASH_ROUNDS):
        start, acked = _run_child_until_killed(path, str(batches_path), rng, len(batches))
        shard = SqliteShard("s0", path)
        await shard.open()
        try:
            applied = await shard.applied_epoch()
            context = f" (round {round_no}, ORDO_SEED={seed})"
            assert applied >= acked, f"acknowledged epoch {acked} lost: file holds {applied}{context}"
            want = await memory_after("s0", batches[:applied])
            assert_dumps_equal(await shard.dump(applied), await want.dump(applied), context)
            # nothing of a later epoch is in the file: no torn epoch
            assert_dumps_equal(await shard.dump(EPOCH_ALL), await want.dump(EPOCH_ALL), context)
        finally:
            await shard.close()
        print(f"round {round_no}: started at {start}, acked {acked}, file holds {applied}")
    # and a last run to the end picks up where the file stands
    subprocess.run([sys.executable, "-c", _CHILD, path, str(batches_path), "0"], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)
    shard = SqliteShard("s0", path)
    await shard.open()
    try:
        assert await shard.applied_epoch() == len(batches)
        want = await memory_after("s0", batches)
        assert_dumps_equal(await shard.dump(EPOCH_ALL), await want.dump(EPOCH_ALL), f" (ORDO_SEED={seed})")
    finally:
        await shard.close()
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    check.close()
