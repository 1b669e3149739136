"""The SQLite shard: the embedded default store, one file per shard.

Role: driver (a store).

Owned here: the SQLite schema, the atomic and idempotent `apply`, and the
snapshot reads at an epoch.  Callers: the runner (apply, preload, recovery),
the API (reads at W) and `ordo verify` (dumps), all through `ShardProxy`.
It must behave exactly like `proxies.memory.MemoryShard`; the shared suite
`tests/proxy_contract.py` checks that.

Storage:

* Every row is typed columns in `STRICT` tables, so SQLite itself refuses a
  value of the wrong type.  Rows are only ever inserted, never updated
  (except the one `shard` row): balances are versioned by epoch, and a read
  at `at_epoch` takes the newest version `<= at_epoch`.  Plain `INSERT`
  (not `OR REPLACE`) means that writing a key twice is an `IntegrityError`,
  reported as `InvariantViolation`: exactly-once, checked by the store.
* `apply` is one `BEGIN IMMEDIATE ... COMMIT` for every batch it is given:
  the `applied_epoch` guard is read inside that transaction and updated in
  it, so an epoch's rows and the marker that says they exist commit together.
* WAL mode: readers see the last committed snapshot and never block the
  writer.  Reads go through their own connection; each read runs in one read
  transaction, so a dump never mixes two commits.

Threads: sqlite3 connections are blocking and not safe to share, so each of
the two connections lives on its own single-thread executor and is only ever
touched from that thread.  The event loop just awaits futures.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import msgspec

from proxies.base import ShardDump, ShardProxy, check_account, check_batches
from sequencer.errors import ConfigError, InvariantViolation, StoreUnavailable
from sequencer.types import Account, CreateTransfer, EventResult, Posting, Resolution, ShardBatch, TransferRecord

T = TypeVar("T")

#: Bumped whenever the tables below change; a file with another version is refused.
SCHEMA_VERSION = 1
#: STRICT tables (typed columns enforced by SQLite) arrived in 3.37.0 (2021).
SQLITE_VERSION_MIN = (3, 37, 0)
#: How long a statement waits for a lock held by another process (a backup, a
#: second executor started by mistake) before the shard reports itself
#: unavailable.  The runner retries with backoff, so this only needs to ride
#: out a WAL checkpoint or a short backup step, not a long outage.
BUSY_TIMEOUT_MS = 5_000
#: Ids bound per `IN (...)` statement.  SQLite allows 32766 variables; 512
#: covers a whole preload of a typical epoch in one statement, and chunks are
#: padded to a power of two so the statement cache holds few shapes.
IN_CHUNK_MAX = 512
#: Page cache per connection, in KiB (SQLite's default is 2 MiB).  Every
#: apply and preload walks the primary-key indexes of balances and postings
#: at random accounts; 32 MiB keeps those indexes resident for about a
#: million balance versions, and the OS page cache backs the rest.
CACHE_KIB = 32 * 1024
#: Static fields of accounts kept by the writer, so the check before each
#: apply rarely needs a query.  Static fields never change, so an entry never
#: goes stale; at ~200 bytes an entry this caps the cache near 20 MiB, and a
#: full cache is simply dropped and refilled.
STATICS_CACHE_MAX = 100_000
#: WAL pages after which a commit checkpoints them into the database file
#: (SQLite's default is 1000, 4 MiB).  An epoch of 200 transfers dirties a
#: few hundred pages, mostly the same hot index pages again; checkpointing
#: every 16 MiB copies each of those once per few dozen epochs instead of
#: once per few, which measured ~15% less CPU per apply.  The price: a WAL up
#: to 16 MiB to replay when the file is opened after a crash.
WAL_AUTOCHECKPOINT_PAGES = 4000
#: The WAL is truncated back to this size after a checkpoint resets it, so a
#: burst does not leave a large file behind.
JOURNAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
#: SQLite's default page size; fixed here because the two limits above are related through it.
PAGE_BYTES = 4096
if WAL_AUTOCHECKPOINT_PAGES * PAGE_BYTES > JOURNAL_SIZE_LIMIT_BYTES:
    # otherwise every checkpoint cycle would truncate the WAL and grow it again
    raise ConfigError("sqlite: the WAL checkpoint threshold exceeds the WAL size limit")

# synchronous=FULL: with WAL, SQLite fsyncs the WAL on every commit, so an
# apply that returned survives power loss and OS crashes, not only a killed
# process.  NORMAL would fsync only at checkpoints: consistent, but the last
# commits could vanish after a power cut, and the runner would already have
# acknowledged those transfers (DESIGN "no acknowledged transfer is lost").
# Measured (2 shards, 200-transfer epochs, 2-core VM whose fsync takes
# ~0.2 ms): FULL costs the same CPU as NORMAL within noise, ~11 ms per epoch
# at one epoch per apply and ~5.5 ms at 16.  On a disk with slow fsync the
# runner's group commit (many epochs per apply when behind) amortises it.
SYNCHRONOUS = "FULL"

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS shard (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        name TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        applied_epoch INTEGER NOT NULL
    ) STRICT""",
    # the static part of an account, written once when it is created
    """CREATE TABLE IF NOT EXISTS accounts (
        id INTEGER PRIMARY KEY,
        ledger INTEGER NOT NULL, code INTEGER NOT NULL, flags INTEGER NOT NULL,
        user_data INTEGER NOT NULL, created_epoch INTEGER NOT NULL
    ) STRICT""",
    # One version per account per epoch that touched it.  Balances and
    # postings are rowid tables on purpose: rows land in apply order on a few
    # fresh pages, and only the primary key's small index entries go where
    # the (random) account ids put them.  Clustered by account (WITHOUT
    # ROWID) every touched account dirtied a page of 60-byte rows instead;
    # over 1200 epochs of 200 transfers that cost ~1.6x the CPU per apply.
    """CREATE TABLE IF NOT EXISTS balances (
        account_id INTEGER NOT NULL, epoch INTEGER NOT NULL,
        debits_pending INTEGER NOT NULL, debits_posted INTEGER NOT NULL,
        credits_pending INTEGER NOT NULL, credits_posted INTEGER NOT NULL,
        seq INTEGER NOT NULL, head_hash BLOB NOT NULL,
        PRIMARY KEY (account_id, epoch)
    ) STRICT""",
    """CREATE TABLE IF NOT EXISTS postings (
        account_id INTEGER NOT NULL, seq INTEGER NOT NULL, epoch INTEGER NOT NULL,
        hlc INTEGER NOT NULL, transfer_id INTEGER NOT NULL, kind TEXT NOT NULL, amount INTEGER NOT NULL,
        debits_pending INTEGER NOT NULL, debits_posted INTEGER NOT NULL,
        credits_pending INTEGER NOT NULL, credits_posted INTEGER NOT NULL,
        prev_hash BLOB NOT NULL, hash BLOB NOT NULL,
        PRIMARY KEY (account_id, seq)
    ) STRICT""",
    # the CreateTransfer fields, then where and how it was executed
    """CREATE TABLE IF NOT EXISTS transfers (
        id INTEGER PRIMARY KEY,
        debit_account_id INTEGER NOT NULL, credit_account_id INTEGER NOT NULL, amount INTEGER NOT NULL,
        ledger INTEGER NOT NULL, code INTEGER NOT NULL, flags INTEGER NOT NULL, pending_id INTEGER NOT NULL,
        timeout_ms INTEGER NOT NULL, user_data INTEGER NOT NULL,
        result TEXT NOT NULL, epoch INTEGER NOT NULL, hlc INTEGER NOT NULL, expires_at_ms INTEGER NOT NULL
    ) STRICT""",
    # `load_open_pendings` scans only the pendings with a timeout, not every transfer
    """CREATE INDEX IF NOT EXISTS transfers_timed_pendings ON transfers (id)
        WHERE expires_at_ms != 0 AND result = 'ok'""",
    """CREATE TABLE IF NOT EXISTS resolutions (
        pending_id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL, amount INTEGER NOT NULL, epoch INTEGER NOT NULL, by_transfer_id INTEGER NOT NULL
    ) STRICT""",
    """CREATE TABLE IF NOT EXISTS results (
        epoch INTEGER NOT NULL, idx INTEGER NOT NULL,
        id INTEGER NOT NULL, kind TEXT NOT NULL, result TEXT NOT NULL,
        PRIMARY KEY (epoch, idx)
    ) STRICT, WITHOUT ROWID""",
)

# Column lists in the order of the msgspec structs' fields, so a row is
# built with `Struct(*row)` and written with `astuple(struct)`.
_ACCOUNT_COLUMNS = (
    "a.id, a.ledger, a.code, a.flags, a.user_data, a.created_epoch, b.debits_pending, b.debits_posted, "
    "b.credits_pending, b.credits_posted, b.seq, b.head_hash, b.epoch"
)
_ACCOUNT_FROM = (
    "FROM accounts a JOIN balances b ON b.account_id = a.id "
    "AND b.epoch = (SELECT max(epoch) FROM balances WHERE account_id = a.id AND epoch <= ?)"
)
_POSTING_COLUMNS = (
    "account_id, seq, epoch, hlc, transfer_id, kind, amount, debits_pending, debits_posted, "
    "credits_pending, credits_posted, prev_hash, hash"
)
_TRANSFER_COLUMNS = (
    "id, debit_account_id, credit_account_id, amount, ledger, code, flags, pending_id, timeout_ms, user_data, "
    "result, epoch, hlc, expires_at_ms"
)
_RESOLUTION_COLUMNS = "pending_id, kind, amount, epoch, by_transfer_id"
_RESULT_COLUMNS = "epoch, idx, id, kind, result"
_STATIC_FIELDS = ("ledger", "code", "flags", "user_data", "created_epoch")  # as `_static` orders them

_INSERTS = {
    "accounts": "INSERT INTO accounts VALUES (?, ?, ?, ?, ?, ?)",
    "balances": "INSERT INTO balances VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "postings": f"INSERT INTO postings ({_POSTING_COLUMNS}) VALUES ({', '.join('?' * 13)})",
    "transfers": f"INSERT INTO transfers ({_TRANSFER_COLUMNS}) VALUES ({', '.join('?' * 14)})",
    "resolutions": f"INSERT INTO resolutions ({_RESOLUTION_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
    "results": f"INSERT INTO results ({_RESULT_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
}

_astuple = msgspec.structs.astuple


# ------------------------------------------------------------- row codecs


def _rows(batches: Sequence[ShardBatch]) -> dict[str, list[tuple]]:
    """Every row of `batches` as parameter tuples, per table, in column order."""
    return {
        "accounts": [(a.id, a.ledger, a.code, a.flags, a.user_data, a.created_epoch)
                     for b in batches for a in b.accounts],
        "balances": [(a.id, a.epoch, a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted,
                      a.seq, a.head_hash) for b in batches for a in b.balances],
        "postings": [_astuple(p) for b in batches for p in b.postings],
        "transfers": [(*_astuple(r.transfer), r.result, r.epoch, r.hlc, r.expires_at_ms)
                      for b in batches for r in b.transfers],
        "resolutions": [_astuple(r) for b in batches for r in b.resolutions],
        "results": [_astuple(r) for b in batches for r in b.results],
    }


def _account(row: tuple) -> Account:
    account = Account(*row)
    check_account(account)  # STYLE 6: check a row again after reading it back
    return account


def _static(account: Account) -> tuple:
    return (account.ledger, account.code, account.flags, account.user_data, account.created_epoch)


def _transfer(row: tuple) -> TransferRecord:
    return TransferRecord(CreateTransfer(*row[:10]), *row[10:])


def _chunks(ids: Collection[int]) -> Iterator[list[int]]:
    """`ids` in chunks of at most IN_CHUNK_MAX, each padded to a power of two.

    Padding repeats the last id (IN ignores duplicates), so a preload of 37
    ids and one of 50 share the 64-placeholder statement in the cache.
    """
    unique = sorted(set(ids))
    for start in range(0, len(unique), IN_CHUNK_MAX):
        chunk = unique[start:start + IN_CHUNK_MAX]
        size = 1 << (len(chunk) - 1).bit_length()
        yield chunk + [chunk[-1]] * (size - len(chunk))


def _placeholders(n: int) -> str:
    return ", ".join("?" * n)


# ----------------------------------------------------------------- shard


class SqliteShard(ShardProxy):
    def __init__(self, name: str, path: str) -> None:
        self.name = name
        self.path = str(path)
        self._writer: sqlite3.Connection | None = None  # only touched on _write_thread
        self._reader: sqlite3.Connection | None = None  # only touched on _read_thread
        self._write_thread: ThreadPoolExecutor | None = None
        self._read_thread: ThreadPoolExecutor | None = None
        self._statics: dict[int, tuple] = {}  # committed accounts' static fields; writer thread only

    def __repr__(self) -> str:
        return f"SqliteShard({self.name!r}, {self.path!r})"

    # -- threads and errors ------------------------------------------------

    async def _run(self, pool: ThreadPoolExecutor | None, fn: Callable[..., T], *args: Any) -> T:
        if pool is None:
            raise StoreUnavailable(f"sqlite shard {self.name} ({self.path}) is not open; call open() first")
        loop = asyncio.get_running_loop()
        # If the awaiting task is cancelled the thread still finishes its
        # transaction (commit or rollback); the runner's retry is idempotent.
        return await loop.run_in_executor(pool, functools.partial(self._guarded, fn, *args))

    def _guarded(self, fn: Callable[..., T], *args: Any) -> T:
        """Map sqlite3's exceptions onto ordo's: what the caller should do next."""
        where = f"sqlite shard {self.name} ({self.path})"
        try:
            return fn(*args)
        except sqlite3.IntegrityError as exc:
            raise InvariantViolation(f"{where}: a row was written twice or is malformed: {exc}") from exc
        except OverflowError as exc:  # a Python int beyond SQLite's signed 64 bits
            raise InvariantViolation(f"{where}: a value does not fit 64 bits: {exc}") from exc
        except sqlite3.OperationalError as exc:  # locked, busy, I/O error, cannot open
            raise StoreUnavailable(f"{where} is unavailable: {exc}") from exc
        except sqlite3.DatabaseError as exc:  # corrupt, or not a database at all
            raise StoreUnavailable(f"{where} is damaged or is not an ordo shard file: {exc}") from exc

    def _connect(self, query_only: bool) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; we BEGIN and COMMIT ourselves.
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        conn.execute(f"PRAGMA page_size={PAGE_BYTES}")  # only takes effect on a new file
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            conn.close()
            raise StoreUnavailable(f"sqlite shard {self.name} ({self.path}): WAL mode refused (got {mode!r})")
        conn.execute(f"PRAGMA synchronous={SYNCHRONOUS}")
        conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT_BYTES}")
        conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        if query_only:
            conn.execute("PRAGMA query_only=1")
        return conn

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        if sqlite3.sqlite_version_info < SQLITE_VERSION_MIN:
            raise ConfigError(
                f"sqlite shard {self.name}: SQLite {sqlite3.sqlite_version} is too old; ordo needs "
                f"{'.'.join(map(str, SQLITE_VERSION_MIN))} or newer for STRICT tables"
            )
        if self._write_thread is not None:
            return
        self._write_thread = ThreadPoolExecutor(1, thread_name_prefix=f"sqlite-{self.name}-write")
        self._read_thread = ThreadPoolExecutor(1, thread_name_prefix=f"sqlite-{self.name}-read")
        try:
            await self._run(self._write_thread, self._open_writer)
            await self._run(self._read_thread, self._open_reader)
        except BaseException:
            await self.close()
            raise

    def _open_writer(self) -> None:
        conn = self._connect(query_only=False)
        try:
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute("INSERT OR IGNORE INTO shard VALUES (0, ?, ?, 0)", (self.name, SCHEMA_VERSION))
            name, version = conn.execute("SELECT name, schema_version FROM shard").fetchone()
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        if name != self.name or version != SCHEMA_VERSION:
            conn.close()
            raise ConfigError(
                f"sqlite file {self.path} holds shard {name!r} (schema {version}); this is shard "
                f"{self.name!r} (schema {SCHEMA_VERSION}): check the directory's paths"
            )
        self._writer = conn

    def _open_reader(self) -> None:
        self._reader = self._connect(query_only=True)

    async def close(self) -> None:
        for pool, attr in ((self._write_thread, "_writer"), (self._read_thread, "_reader")):
            if pool is not None:
                await asyncio.get_running_loop().run_in_executor(pool, self._close_conn, attr)
                pool.shutdown(wait=True)
        self._write_thread = self._read_thread = None

    def _close_conn(self, attr: str) -> None:
        conn = getattr(self, attr)
        setattr(self, attr, None)
        if conn is not None:
            conn.close()

    # -- apply -------------------------------------------------------------

    async def applied_epoch(self) -> int:
        return await self._run(self._read_thread, self._read, self._applied)

    @staticmethod
    def _applied(conn: sqlite3.Connection) -> int:
        return conn.execute("SELECT applied_epoch FROM shard").fetchone()[0]

    # TLA+: Ordo!ShardApply -- effects and applied_epoch in one transaction.
    async def apply(self, batches: Sequence[ShardBatch]) -> int:
        if not batches:
            return 0
        return await self._run(self._write_thread, self._apply_sync, list(batches))

    def _apply_sync(self, batches: list[ShardBatch]) -> int:
        conn = self._writer
        # IMMEDIATE takes the write lock now, so the guard below reads the
        # applied_epoch that this very transaction will advance.
        conn.execute("BEGIN IMMEDIATE")
        try:
            todo = check_batches(self._applied(conn), batches, self.name)
            statics = self._check_statics(conn, todo)
            if todo:
                self._write_rows(conn, todo)
                conn.execute("UPDATE shard SET applied_epoch = ? WHERE id = 0", (todo[-1].epoch,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # some errors (disk full) have already rolled back
                conn.execute("ROLLBACK")
            raise
        # only now: a rolled-back account must not be taken as existing
        if len(self._statics) + len(statics) > STATICS_CACHE_MAX:
            self._statics.clear()
        self._statics.update(statics)
        return len(todo)

    def _write_rows(self, conn: sqlite3.Connection, batches: Sequence[ShardBatch]) -> None:
        """Insert every row of `batches`, one executemany per table (tests override this to inject faults)."""
        for table, rows in _rows(batches).items():
            if rows:
                conn.executemany(_INSERTS[table], rows)

    def _check_statics(self, conn: sqlite3.Connection, batches: Sequence[ShardBatch]) -> dict[int, tuple]:
        """A balance version must repeat its account's static fields; returns the statics checked.

        Reads join each balance version with the account's one static row, so
        a version whose ledger, code, flags, user_data or created_epoch
        differed would read back differently from the memory model, which
        keeps the fields of every version.  Refuse it instead.
        """
        statics = {a.id: _static(a) for b in batches for a in b.accounts}
        unknown = {a.id for b in batches for a in b.balances} - statics.keys()
        for account_id in list(unknown):
            if (cached := self._statics.get(account_id)) is not None:
                statics[account_id] = cached
                unknown.discard(account_id)
        for chunk in _chunks(unknown):
            sql = f"SELECT id, {', '.join(_STATIC_FIELDS)} FROM accounts WHERE id IN ({_placeholders(len(chunk))})"
            for row in conn.execute(sql, chunk):
                statics[row[0]] = row[1:]
        for batch in batches:
            for version in batch.balances:
                static = statics.get(version.id)
                if static is None:
                    raise InvariantViolation(f"shard {self.name}: balance of account {version.id}, which was never created")
                if _static(version) != static:
                    raise InvariantViolation(f"shard {self.name}: account {version.id} changed its static fields")
        return statics

    # -- reads -------------------------------------------------------------

    def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(conn, *args)` in one read transaction: one WAL snapshot for all its statements."""
        conn = self._reader
        conn.execute("BEGIN")
        try:
            return fn(conn, *args)
        finally:
            conn.execute("COMMIT")

    async def _query(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._run(self._read_thread, self._read, fn, *args)

    async def load_accounts(self, ids: Collection[int], at_epoch: int) -> dict[int, Account]:
        return await self._query(_load_accounts, list(ids), at_epoch)

    async def load_transfers(self, ids: Collection[int], at_epoch: int) -> dict[int, TransferRecord]:
        return await self._query(_load_transfers, list(ids), at_epoch)

    async def load_resolutions(self, pending_ids: Collection[int], at_epoch: int) -> dict[int, Resolution]:
        return await self._query(_load_resolutions, list(pending_ids), at_epoch)

    async def load_open_pendings(self, at_epoch: int) -> list[TransferRecord]:
        return await self._query(_load_open_pendings, at_epoch)

    async def read_postings(self, account_id: int, at_epoch: int, after_seq: int = 0, limit: int = 100) -> list[Posting]:
        return await self._query(_read_postings, account_id, at_epoch, after_seq, limit)

    async def read_results(self, epoch: int) -> list[EventResult]:
        return await self._query(_read_results, epoch)

    async def dump(self, at_epoch: int) -> ShardDump:
        return await self._query(_dump, self.name, at_epoch)


# ------------------------------------------------- queries (reader thread)
# Pure functions of a connection, run inside `SqliteShard._read`.


def _load_accounts(conn: sqlite3.Connection, ids: list[int], at_epoch: int) -> dict[int, Account]:
    found: dict[int, Account] = {}
    for chunk in _chunks(ids):
        sql = f"SELECT {_ACCOUNT_COLUMNS} {_ACCOUNT_FROM} WHERE a.id IN ({_placeholders(len(chunk))})"
        for row in conn.execute(sql, (at_epoch, *chunk)):
            found[row[0]] = _account(row)
    return found


def _load_transfers(conn: sqlite3.Connection, ids: list[int], at_epoch: int) -> dict[int, TransferRecord]:
    found: dict[int, TransferRecord] = {}
    for chunk in _chunks(ids):
        sql = f"SELECT {_TRANSFER_COLUMNS} FROM transfers WHERE epoch <= ? AND id IN ({_placeholders(len(chunk))})"
        for row in conn.execute(sql, (at_epoch, *chunk)):
            found[row[0]] = _transfer(row)
    return found


def _load_resolutions(conn: sqlite3.Connection, ids: list[int], at_epoch: int) -> dict[int, Resolution]:
    found: dict[int, Resolution] = {}
    for chunk in _chunks(ids):
        sql = (f"SELECT {_RESOLUTION_COLUMNS} FROM resolutions "
               f"WHERE epoch <= ? AND pending_id IN ({_placeholders(len(chunk))})")
        for row in conn.execute(sql, (at_epoch, *chunk)):
            found[row[0]] = Resolution(*row)
    return found


def _load_open_pendings(conn: sqlite3.Connection, at_epoch: int) -> list[TransferRecord]:
    # The first two terms repeat the partial index's WHERE, so the planner uses it.
    sql = (
        f"SELECT {_TRANSFER_COLUMNS} FROM transfers t "
        "WHERE t.expires_at_ms != 0 AND t.result = 'ok' AND t.epoch <= ? "
        "AND NOT EXISTS (SELECT 1 FROM resolutions r WHERE r.pending_id = t.id AND r.epoch <= ?) "
        "ORDER BY t.id"
    )
    return [_transfer(row) for row in conn.execute(sql, (at_epoch, at_epoch))]


def _read_postings(conn: sqlite3.Connection, account_id: int, at_epoch: int, after_seq: int, limit: int) -> list[Posting]:
    sql = (f"SELECT {_POSTING_COLUMNS} FROM postings WHERE account_id = ? AND seq > ? AND epoch <= ? "
           "ORDER BY seq LIMIT ?")
    return [Posting(*row) for row in conn.execute(sql, (account_id, after_seq, at_epoch, limit))]


def _read_results(conn: sqlite3.Connection, epoch: int) -> list[EventResult]:
    sql = f"SELECT {_RESULT_COLUMNS} FROM results WHERE epoch = ? ORDER BY idx"
    return [EventResult(*row) for row in conn.execute(sql, (epoch,))]


def _dump(conn: sqlite3.Connection, name: str, at_epoch: int) -> ShardDump:
    def rows(sql: str) -> list[tuple]:
        return conn.execute(sql, (at_epoch,)).fetchall()

    return ShardDump(
        shard=name,
        at_epoch=at_epoch,
        accounts=[_account(r) for r in rows(f"SELECT {_ACCOUNT_COLUMNS} {_ACCOUNT_FROM} ORDER BY a.id")],
        postings=[Posting(*r) for r in rows(
            f"SELECT {_POSTING_COLUMNS} FROM postings WHERE epoch <= ? ORDER BY account_id, seq")],
        transfers=[_transfer(r) for r in rows(f"SELECT {_TRANSFER_COLUMNS} FROM transfers WHERE epoch <= ? ORDER BY id")],
        resolutions=[Resolution(*r) for r in rows(
            f"SELECT {_RESOLUTION_COLUMNS} FROM resolutions WHERE epoch <= ? ORDER BY pending_id")],
        results=[EventResult(*r) for r in rows(
            f"SELECT {_RESULT_COLUMNS} FROM results WHERE epoch <= ? ORDER BY epoch, idx")],
    )
