"""An Apache Cassandra shard: `ShardProxy` over the DataStax driver (cassandra-driver 3.x).

Role: driver (a store).

Owned here: the shard's keyspace and tables, the statements that write an
epoch's effects and the snapshot reads at `at_epoch`.  Callers: the runner
(`apply`, the `load_*` preloads, `load_open_pendings` at recovery), the API
(`read_*` at the watermark W) and `ordo verify` (`dump`).  It must behave
exactly like `proxies/memory.py`, the dict model;
`tests/test_proxy_cassandra.py` runs the shared contract suite against a
real Cassandra 5 started by `proxies/servers` to check that.

Layout (query-first: one table per access path).  Every shard owns one
keyspace (default `ordo_<name>`), created with its tables by `open()`:

    meta          (one)                            applied_epoch, shard, schema_version
    accounts      (id)                             static fields, created_epoch
    balances      (account_id, epoch DESC)         full Account row of every version
    postings      (account_id, seq ASC)            the hash chain, with each posting's epoch
    transfers     (id)                             TransferRecord, with its epoch
    resolutions   (pending_id)                     Resolution, with its epoch
    results       (epoch, idx ASC)                 EventResult rows of one epoch
    pendings_open (bucket, transfer_id)            epoch, resolved_epoch: the index
                                                   `load_open_pendings` enumerates

"The latest version <= W" is `WHERE account_id = ? AND epoch <= ? LIMIT 1`,
one partition, first row.  A page of postings is one partition slice
`seq > ? LIMIT ?`; seq order is epoch order within an account, so the first
posting with epoch > W ends the page.  Reads by id set run one
single-partition query per id, concurrently (never `IN` over partitions,
which makes one coordinator fan out and wait for the slowest).  Only
`dump`, a verification tool, scans whole tables.  `load_open_pendings`, run
at executor recovery, reads the `PENDING_BUCKETS` partitions of
`pendings_open` instead of scanning `transfers`.

Writes.  An epoch's rows (~1,130 for 200 transfers) go out as UNLOGGED
batches, all in flight at once (up to `concurrency`): rows of one partition
key travel together, so an account's balance version, its postings and its
static row are one mutation; partitions are grouped by their replica
(token-aware routing sends each batch straight to it) and packed under the
server's warning limits (`BATCH_PARTITIONS_MAX`, `BATCH_BYTES_MAX`).
Batching is about round trips and commitlog syncs, not atomicity, which
comes from versioning as described next.  Measured on the test node:
~0.25-0.5 s per epoch packed, ~2 s as one statement per row.

Atomic visibility without transactions.  Cassandra has no multi-partition
atomic write, so an epoch's rows land one by one and a crash can leave part
of an epoch written.  Visibility therefore comes from versioning: every row
carries the epoch that wrote it (accounts by `created_epoch`), every read
filters `epoch <= at_epoch`, and `applied_epoch` is written LAST, after
every other write of the call succeeded.  Every read also clamps `at_epoch`
to this shard's `applied_epoch` (cached: it only grows), so even a read at
an epoch beyond it (`dump(10**9)`) never sees a partially written epoch.
Writes are idempotent: keys and values are deterministic functions of the
batch, so re-applying an epoch after a crash overwrites the partial rows
with identical cells.  Keys that are not versioned (transfer ids, pending
ids, account ids, result indices, posting seqs) are written once by the
state machine, in the epoch their row names; `apply` refuses a call that
would write one key twice, whose final value would depend on the order of
concurrent writes.

The applied_epoch guard.  `apply` reads `applied_epoch`, runs
`check_batches`, writes the rows and then `applied_epoch`.  That is a
read-then-write without a lightweight transaction (Paxos): each shard has
one writer, the executor that owns it (DESIGN "Scale-out"), so no Paxos
round per call is paid.  Overlapping applies can still happen (a retry
while the first attempt is in flight, or a second executor during a
hand-over), and they are harmless: both write identical rows, and
`applied_epoch` is written `USING TIMESTAMP <epoch>`, so Cassandra's
last-write-wins keeps the highest epoch whatever order the writes land in
(a stale writer can never move it back).  The price of that trick: the
`meta` row must never be deleted or overwritten with a wall-clock
timestamp; resetting a shard means dropping its keyspace.  A deployment
that wants the read-check-write itself to be exclusive (two writers must
not both *compute* an epoch) would use
`UPDATE meta SET applied_epoch = ? WHERE one = 1 IF applied_epoch = ?`
at SERIAL / LOCAL_SERIAL, one Paxos round per call.

Consistency.  Every statement, reads and writes alike, runs at
LOCAL_QUORUM; on the one-node test cluster (RF 1) that equals ONE.  With
RF 3 a quorum is 2, and a read quorum overlaps every write quorum (2 + 2 >
3), so a reader that saw `applied_epoch = e` at LOCAL_QUORUM also sees every
row written at LOCAL_QUORUM before it: read-your-writes, and the snapshot
at W is complete.  That is why `applied_epoch` must be read at the same
level as the rows: read at ONE, it could come from a replica that has the
new `applied_epoch` while a row read from another replica is still missing.
LOCAL_QUORUM keeps that promise inside one datacenter; readers in another
datacenter need EACH_QUORUM writes or QUORUM on both sides.  A write that
times out may still land on some replicas; it belongs to an epoch above
`applied_epoch`, so it stays invisible until the retry rewrites it.

Replication.  `replication_factor` gives SimpleStrategy, fine for one node
or one rack.  A multi-datacenter cluster passes `datacenters`
(`{"dc1": 3, "dc2": 3}`), which gives NetworkTopologyStrategy, and
`local_dc` names the datacenter whose replicas this process prefers.
Durability is the server's: with `commitlog_sync: periodic` an acknowledged
write can be lost if the machine (not the process) dies within the sync
period; production nodes run `batch` or `group` sync, or RF 3.

Errors.  No reachable host, timeouts, replicas unavailable and broken
connections are `StoreUnavailable` (the runner retries with backoff).  They
come promptly: a stopped server closes its sockets, the driver marks the
host down, and the next call fails at once with `NoHostAvailable`.  The
driver reconnects in the background with `RECONNECT_DELAY_S_MAX` as its
longest wait, so the same proxy object works again after the server
returns.  A statement the server refuses as invalid is an
`InvariantViolation`: a schema mismatch or a bug, which retrying cannot fix.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from cassandra import (
    ConsistencyLevel,
    DriverException,
    OperationTimedOut,
    ProtocolVersion,
    RequestExecutionException,
    RequestValidationException,
)
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable, Session
from cassandra.connection import ConnectionException
from cassandra.policies import DCAwareRoundRobinPolicy, ExponentialReconnectionPolicy, TokenAwarePolicy
from cassandra.query import BatchStatement, BatchType, BoundStatement, PreparedStatement, Statement, tuple_factory

from proxies.base import ShardDump, ShardProxy, check_account, check_batches
from sequencer.errors import ConfigError, InvariantViolation, StoreUnavailable
from sequencer.types import (
    U63_MAX,
    Account,
    CreateTransfer,
    EventResult,
    Posting,
    Resolution,
    ShardBatch,
    TransferRecord,
)

#: Version of the table layout below, stored in `meta`; a keyspace written by
#: a different layout is refused at `open()` rather than misread.
SCHEMA_VERSION = 1

#: Protocol v5 is the newest that both Cassandra 5.0 and driver 3.30 speak
#: (checksummed frames); a server that only speaks v4 is refused at connect.
PROTOCOL_VERSION = ProtocolVersion.V5
#: TCP connect bound per host.  Loopback or LAN: a healthy node accepts in
#: milliseconds, so 3 s is only ever reached when the node is gone.
CONNECT_TIMEOUT_S_DEFAULT = 3.0
#: Client-side bound on one request (one page).  A row write or point read
#: takes about a millisecond; the server's own write timeout is 2 s and its
#: read timeout 5 s, so 10 s only fires for a stuck connection.
REQUEST_TIMEOUT_S_DEFAULT = 10.0
#: Schema statements wait for schema agreement across nodes; one node
#: agrees at once, a loaded cluster can take seconds.
DDL_TIMEOUT_S = 60.0
#: Longest wait between two reconnection attempts to a down node.  The
#: driver's default grows to 10 minutes, which would keep a shard dark long
#: after its server returned; 2 s bounds that while costing little.
RECONNECT_DELAY_S_BASE = 0.2
RECONNECT_DELAY_S_MAX = 2.0
#: Idle connections are probed this often, so a silently dead node (no RST,
#: a network partition) is noticed within about twice this time.
HEARTBEAT_INTERVAL_S = 5
#: Requests in flight per call.  An epoch's writes pack into ~150 batches
#: and a preload is a few hundred point reads; 64 in flight keeps the node's
#: native-transport threads (128 by default) busy, leaves room for other
#: clients, and measured as fast as 128 or 512 on the test node.
CONCURRENCY_MAX = 64
#: Row writes travel in UNLOGGED batches of partitions that share a replica:
#: one request and one commitlog sync instead of one per row.  Measured on
#: the test node (commitlog_sync: batch): 1,130 rows as single statements
#: took ~2 s per epoch, packed in batches ~0.3 s.  Cassandra warns about an
#: unlogged batch over more than `unlogged_batch_across_partitions_warn_threshold`
#: partitions (default 10) ...
BATCH_PARTITIONS_MAX = 10
#: ... and about a multi-partition batch over `batch_size_warn_threshold`
#: (default 5 KiB; it fails at 50 KiB).  4 KiB keeps a margin for the
#: estimate in `_row_bytes`, which is within ~10% of the server's count.
BATCH_BYTES_MAX = 4_096
#: Statements per batch of ONE partition, which the size warning exempts
#: (an epoch's results share one partition): bounds one request's size.
BATCH_STATEMENTS_MAX = 256
#: The server's per-cell overhead in its batch size count (cell header and
#: clustering), measured: 20 balance rows of 13 cells count 7,800 bytes.
CELL_OVERHEAD_BYTES = 20
#: Statements are prepared by this many threads at `open()`: each is one
#: round trip, and 22 of them one after another take ~0.4 s.
PREPARE_THREADS = 8
#: Rows per page of a table scan (`dump`) or an index bucket read.
PAGE_ROWS = 5_000
#: Partitions of `pendings_open`.  Recovery reads all of them concurrently;
#: 16 keeps each partition at 1/16 of all timed pendings ever created while
#: staying a single round of 16 queries.
PENDING_BUCKETS = 16
#: Cassandra keyspace names are [A-Za-z0-9_]{1,48}.
KEYSPACE_CHARS_MAX = 48
#: The datacenter name Cassandra's SimpleSnitch and GossipingPropertyFileSnitch
#: report by default.
LOCAL_DC_DEFAULT = "datacenter1"

_KEYSPACE_RE = re.compile(r"[A-Za-z0-9_]{1,%d}" % KEYSPACE_CHARS_MAX)

# Column lists, in the field order of the row types they load into, so that
# `Account(*row)` and `Posting(*row)` are correct; checked at import below.
_ACCOUNT_FIELDS = (
    "id", "ledger", "code", "flags", "user_data", "created_epoch",
    "debits_pending", "debits_posted", "credits_pending", "credits_posted", "seq", "head_hash", "epoch",
)
_STATIC_FIELDS = _ACCOUNT_FIELDS[:6]
_POSTING_FIELDS = (
    "account_id", "seq", "epoch", "hlc", "transfer_id", "kind", "amount",
    "debits_pending", "debits_posted", "credits_pending", "credits_posted", "prev_hash", "hash",
)
_TRANSFER_FIELDS = (
    "id", "debit_account_id", "credit_account_id", "amount", "ledger", "code",
    "flags", "pending_id", "timeout_ms", "user_data",
)
_RECORD_FIELDS = ("transfer", "result", "epoch", "hlc", "expires_at_ms")
_RESOLUTION_FIELDS = ("pending_id", "kind", "amount", "epoch", "by_transfer_id")
_RESULT_FIELDS = ("epoch", "index", "id", "kind", "result")

for _struct, _fields in (
    (Account, _ACCOUNT_FIELDS),
    (Posting, _POSTING_FIELDS),
    (CreateTransfer, _TRANSFER_FIELDS),
    (TransferRecord, _RECORD_FIELDS),
    (Resolution, _RESOLUTION_FIELDS),
    (EventResult, _RESULT_FIELDS),
):
    if _struct.__struct_fields__ != _fields:  # a contract change must reach this file's CQL
        raise ImportError(f"proxies.cassandra: {_struct.__name__} fields changed to {_struct.__struct_fields__}")

#: Driver errors that mean "the store did not answer": retry later.
_UNAVAILABLE = (
    NoHostAvailable, OperationTimedOut, RequestExecutionException, ConnectionException, OSError,
)


def default_keyspace(name: str) -> str:
    """`ordo_<name>`, lower-cased, with anything but [a-z0-9_] replaced by `_`."""
    return ("ordo_" + re.sub(r"[^a-z0-9_]", "_", name.lower()))[:KEYSPACE_CHARS_MAX]


# ---------------------------------------------------------------------- CQL
#
# `{k}` is the keyspace; names are validated by `_KEYSPACE_RE`, so plain
# formatting is safe.  Every number is a bigint: ids, amounts and balances
# are 0..2**63-1 by contract, and Cassandra's bigint is a signed 64-bit int.

_TABLES = (
    """CREATE TABLE IF NOT EXISTS {k}.meta (
        one int PRIMARY KEY, shard text, schema_version int, applied_epoch bigint)""",
    """CREATE TABLE IF NOT EXISTS {k}.accounts (
        id bigint PRIMARY KEY, ledger bigint, code bigint, flags bigint, user_data bigint,
        created_epoch bigint)""",
    """CREATE TABLE IF NOT EXISTS {k}.balances (
        account_id bigint, epoch bigint, ledger bigint, code bigint, flags bigint, user_data bigint,
        created_epoch bigint, debits_pending bigint, debits_posted bigint, credits_pending bigint,
        credits_posted bigint, seq bigint, head_hash blob,
        PRIMARY KEY (account_id, epoch)) WITH CLUSTERING ORDER BY (epoch DESC)""",
    """CREATE TABLE IF NOT EXISTS {k}.postings (
        account_id bigint, seq bigint, epoch bigint, hlc bigint, transfer_id bigint, kind text,
        amount bigint, debits_pending bigint, debits_posted bigint, credits_pending bigint,
        credits_posted bigint, prev_hash blob, hash blob,
        PRIMARY KEY (account_id, seq)) WITH CLUSTERING ORDER BY (seq ASC)""",
    """CREATE TABLE IF NOT EXISTS {k}.transfers (
        id bigint PRIMARY KEY, debit_account_id bigint, credit_account_id bigint, amount bigint,
        ledger bigint, code bigint, flags bigint, pending_id bigint, timeout_ms bigint, user_data bigint,
        result text, epoch bigint, hlc bigint, expires_at_ms bigint)""",
    """CREATE TABLE IF NOT EXISTS {k}.resolutions (
        pending_id bigint PRIMARY KEY, kind text, amount bigint, epoch bigint, by_transfer_id bigint)""",
    """CREATE TABLE IF NOT EXISTS {k}.results (
        epoch bigint, idx bigint, id bigint, kind text, result text,
        PRIMARY KEY (epoch, idx)) WITH CLUSTERING ORDER BY (idx ASC)""",
    """CREATE TABLE IF NOT EXISTS {k}.pendings_open (
        bucket int, transfer_id bigint, epoch bigint, resolved_epoch bigint,
        PRIMARY KEY (bucket, transfer_id))""",
)

_TABLE_NAMES = tuple(re.search(r"\{k\}\.(\w+)", ddl).group(1) for ddl in _TABLES)

_BALANCE_COLUMNS = ", ".join(("account_id", *_ACCOUNT_FIELDS[1:]))
_POSTING_COLUMNS = ", ".join(_POSTING_FIELDS)
_TRANSFER_COLUMNS = ", ".join((*_TRANSFER_FIELDS, "result", "epoch", "hlc", "expires_at_ms"))
_RESOLUTION_COLUMNS = ", ".join(_RESOLUTION_FIELDS)
_RESULT_COLUMNS = "epoch, idx, id, kind, result"


def _insert(table: str, columns: str) -> str:
    marks = ", ".join("?" for _ in columns.split(", "))
    return f"INSERT INTO {{k}}.{table} ({columns}) VALUES ({marks})"


_STATEMENTS = {
    "read_meta": "SELECT applied_epoch, shard, schema_version FROM {k}.meta WHERE one = 1",
    "write_identity": "UPDATE {k}.meta SET shard = ?, schema_version = ? WHERE one = 1",
    # The cell's write timestamp is the epoch itself: the highest epoch wins (module docstring).
    "write_applied": "UPDATE {k}.meta USING TIMESTAMP ? SET applied_epoch = ? WHERE one = 1",
    "insert_account": _insert("accounts", ", ".join(_STATIC_FIELDS)),
    "insert_balance": _insert("balances", _BALANCE_COLUMNS),
    "insert_posting": _insert("postings", _POSTING_COLUMNS),
    "insert_transfer": _insert("transfers", _TRANSFER_COLUMNS),
    "insert_resolution": _insert("resolutions", _RESOLUTION_COLUMNS),
    "insert_result": _insert("results", _RESULT_COLUMNS),
    "insert_pending": "INSERT INTO {k}.pendings_open (bucket, transfer_id, epoch) VALUES (?, ?, ?)",
    "resolve_pending": "UPDATE {k}.pendings_open SET resolved_epoch = ? WHERE bucket = ? AND transfer_id = ?",
    "balance_at": f"SELECT {_BALANCE_COLUMNS} FROM {{k}}.balances WHERE account_id = ? AND epoch <= ? LIMIT 1",
    "transfer_by_id": f"SELECT {_TRANSFER_COLUMNS} FROM {{k}}.transfers WHERE id = ?",
    "resolution_by_id": f"SELECT {_RESOLUTION_COLUMNS} FROM {{k}}.resolutions WHERE pending_id = ?",
    "postings_page": f"SELECT {_POSTING_COLUMNS} FROM {{k}}.postings WHERE account_id = ? AND seq > ? LIMIT ?",
    "results_of_epoch": f"SELECT {_RESULT_COLUMNS} FROM {{k}}.results WHERE epoch = ?",
    "pendings_bucket": "SELECT transfer_id, epoch, resolved_epoch FROM {k}.pendings_open WHERE bucket = ?",
    # dump only: whole-table scans, paged
    "scan_balances_at": (
        f"SELECT {_BALANCE_COLUMNS} FROM {{k}}.balances WHERE epoch <= ? PER PARTITION LIMIT 1 ALLOW FILTERING"
    ),
    "scan_postings": f"SELECT {_POSTING_COLUMNS} FROM {{k}}.postings",
    "scan_transfers": f"SELECT {_TRANSFER_COLUMNS} FROM {{k}}.transfers",
    "scan_resolutions": f"SELECT {_RESOLUTION_COLUMNS} FROM {{k}}.resolutions",
    "scan_results": f"SELECT {_RESULT_COLUMNS} FROM {{k}}.results",
}


# ------------------------------------------------------------- rows <-> CQL


#: What the driver executes: a prepared statement with its parameters, or a batch.
_Query = Statement | PreparedStatement


class Write(NamedTuple):
    """One statement of an apply, tagged with the epoch whose row it writes."""

    epoch: int
    statement: PreparedStatement
    params: tuple


def _account(row: Sequence[Any]) -> Account:
    account = Account(*row)
    check_account(account)  # STYLE 6: check after reading, too
    return account


def _record(row: Sequence[Any]) -> TransferRecord:
    return TransferRecord(CreateTransfer(*row[:10]), *row[10:])


def _row_bytes(params: tuple) -> int:
    """Roughly what the server counts for one row in a batch (see CELL_OVERHEAD_BYTES)."""
    return sum((len(v) if isinstance(v, (bytes, str)) else 8) + CELL_OVERHEAD_BYTES for v in params)


def _describe(statement: Statement) -> str:
    """The statement's CQL up to its WHERE, for error messages."""
    if isinstance(statement, BatchStatement):
        return f"a batch of {len(statement)} row writes"
    query = statement.prepared_statement.query_string if isinstance(statement, BoundStatement) else (
        getattr(statement, "query_string", str(statement)))
    return query.split(" WHERE")[0].split(" VALUES")[0]


def _pending_bucket(transfer_id: int) -> int:
    return transfer_id % PENDING_BUCKETS


def _check_u63(values: Iterable[Any], what: str) -> None:
    """Cassandra has no CHECK constraints: refuse what the contract forbids before writing it."""
    for value in values:
        if type(value) is int and not 0 <= value <= U63_MAX:
            raise InvariantViolation(f"{what}: {value} is not an unsigned 63-bit integer")


def _check_keys(todo: Sequence[ShardBatch], shard: str) -> None:
    """Every unversioned key is written once per call, and every row belongs to its batch's epoch.

    Concurrent writes of one key would leave whichever landed last, and a row
    tagged with an older epoch would be visible before its epoch is applied.
    """
    seen: dict[str, set] = {t: set() for t in ("accounts", "postings", "transfers", "resolutions")}

    def once(table: str, key: Any) -> None:
        if key in seen[table]:
            raise InvariantViolation(f"shard {shard}: {table} key {key} written twice in one apply")
        seen[table].add(key)

    for batch in todo:
        balance_ids: set[int] = set()
        for account in batch.accounts:
            if account.created_epoch != batch.epoch:
                raise InvariantViolation(f"shard {shard}: account {account.id} created in {account.created_epoch}, "
                                         f"stored by epoch {batch.epoch}")
            once("accounts", account.id)
        for account in batch.balances:
            if account.id in balance_ids:
                raise InvariantViolation(f"shard {shard}: two versions of account {account.id} in epoch {batch.epoch}")
            balance_ids.add(account.id)
        for posting in batch.postings:
            once("postings", (posting.account_id, posting.seq))
        for record in batch.transfers:
            if record.epoch != batch.epoch:
                raise InvariantViolation(f"shard {shard}: transfer {record.transfer.id} of epoch {record.epoch} "
                                         f"in batch of epoch {batch.epoch}")
            once("transfers", record.transfer.id)
        for resolution in batch.resolutions:
            if resolution.epoch != batch.epoch:
                raise InvariantViolation(f"shard {shard}: resolution of {resolution.pending_id} at epoch "
                                         f"{resolution.epoch} in batch of epoch {batch.epoch}")
            once("resolutions", resolution.pending_id)
        indices = [result.index for result in batch.results]
        if len(set(indices)) != len(indices):
            raise InvariantViolation(f"shard {shard}: duplicate result index in epoch {batch.epoch}")
        for result in batch.results:
            if result.epoch != batch.epoch:
                raise InvariantViolation(f"shard {shard}: result {result.index} of epoch {result.epoch} "
                                         f"in batch of epoch {batch.epoch}")


def _new_batch() -> BatchStatement:
    batch = BatchStatement(batch_type=BatchType.UNLOGGED)
    batch.is_idempotent = True  # its rows are: a retry writes the same cells
    return batch


def _pack_partitions(partitions: Sequence[list[BoundStatement]]) -> list[BatchStatement]:
    """Greedy packing: at most BATCH_PARTITIONS_MAX partitions and BATCH_BYTES_MAX per batch.

    A partition too big for a shared batch gets batches of its own, which
    the server does not size-check (one partition is one mutation).
    """
    out: list[BatchStatement] = []
    batch, n_partitions, n_bytes = _new_batch(), 0, 0
    for rows in partitions:
        size = sum(_row_bytes(tuple(b.values)) for b in rows)
        if size > BATCH_BYTES_MAX:
            for start in range(0, len(rows), BATCH_STATEMENTS_MAX):
                alone = _new_batch()
                for bound in rows[start:start + BATCH_STATEMENTS_MAX]:
                    alone.add(bound)
                out.append(alone)
            continue
        if n_partitions == BATCH_PARTITIONS_MAX or n_bytes + size > BATCH_BYTES_MAX:
            out.append(batch)
            batch, n_partitions, n_bytes = _new_batch(), 0, 0
        for bound in rows:
            batch.add(bound)
        n_partitions, n_bytes = n_partitions + 1, n_bytes + size
    if n_partitions:
        out.append(batch)
    return out


# ------------------------------------------------------- the shared sessions


class _SharedSessions:
    """One driver `Cluster` and `Session` per contact point set, shared by every shard on it.

    The driver's guidance is one Cluster per application: each holds a
    control connection, a connection pool per node and an event-loop thread.
    Statements name their keyspace, so one session serves every shard's
    keyspace.  Reference-counted: the last shard to close shuts it down.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple, list] = {}  # key -> [cluster, session, refcount]

    def acquire(self, key: tuple, make: Any) -> Session:
        """Blocking (connects): call through `asyncio.to_thread`."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                cluster = make()
                try:
                    session = cluster.connect()
                except BaseException:
                    cluster.shutdown()
                    raise
                entry = self._entries[key] = [cluster, session, 0]
            entry[2] += 1
            return entry[1]

    def release(self, key: tuple) -> None:
        """Blocking (joins the driver's threads): call through `asyncio.to_thread`."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return
            entry[2] -= 1
            if entry[2] > 0:
                return
            del self._entries[key]
        entry[0].shutdown()


_SESSIONS = _SharedSessions()


# -------------------------------------------------------- asyncio <-> driver


def _settle(future: asyncio.Future, rows: list | None, exc: BaseException | None) -> None:
    if future.done():  # cancelled by the caller
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(rows)


def _submit(session: Session, statement: _Query, params: tuple | None) -> asyncio.Future:
    """Run one statement on the driver's I/O thread; every page of its rows resolves the future.

    The driver calls back on its own thread, so results cross into the event
    loop with `call_soon_threadsafe`.  Paging continues from the callback.
    """
    loop = asyncio.get_running_loop()
    out: asyncio.Future = loop.create_future()
    rows: list = []

    def deliver(result: list | None, exc: BaseException | None) -> None:
        try:
            loop.call_soon_threadsafe(_settle, out, result, exc)
        except RuntimeError:  # the loop closed while the request was in flight
            pass

    try:
        response = session.execute_async(statement, params)
    except Exception as exc:  # noqa: BLE001 - the driver raises synchronously when no host is up
        out.set_exception(exc)
        return out

    def on_page(page: list | None) -> None:
        try:
            rows.extend(page or ())  # writes answer with no rows at all
            if response.has_more_pages:
                response.start_fetching_next_page()
            else:
                deliver(rows, None)
        except Exception as exc:  # noqa: BLE001 - delivered to the awaiting coroutine, never lost
            deliver(None, exc)

    response.add_callbacks(on_page, lambda exc: deliver(None, exc))
    return out


# -------------------------------------------------------------------- proxy


class CassandraShard(ShardProxy):
    """One shard in one keyspace of a Cassandra cluster (see the module docstring)."""

    def __init__(
        self,
        name: str,
        hosts: list[str] | str = "127.0.0.1",
        port: int = 9042,
        keyspace: str | None = None,
        replication_factor: int = 1,
        datacenters: dict[str, int] | None = None,
        local_dc: str = LOCAL_DC_DEFAULT,
        connect_timeout_s: float = CONNECT_TIMEOUT_S_DEFAULT,
        request_timeout_s: float = REQUEST_TIMEOUT_S_DEFAULT,
        concurrency: int = CONCURRENCY_MAX,
        **unknown: Any,
    ) -> None:
        if unknown:  # a directory typo should name itself, not surface as a TypeError
            raise ConfigError(f"shard {name!r}: unknown cassandra option(s) {sorted(unknown)}; known: hosts, port, "
                              "keyspace, replication_factor, datacenters, local_dc, connect_timeout_s, "
                              "request_timeout_s, concurrency")
        self.name = name
        self.hosts = [h.strip() for h in hosts.split(",")] if isinstance(hosts, str) else list(hosts)
        self.port = int(port)
        self.keyspace = keyspace if keyspace is not None else default_keyspace(name)
        if not _KEYSPACE_RE.fullmatch(self.keyspace):
            raise ConfigError(f"shard {name!r}: keyspace {self.keyspace!r} is not [A-Za-z0-9_]{{1,48}}")
        if not self.hosts or not all(self.hosts):
            raise ConfigError(f"shard {name!r}: no Cassandra hosts given")
        if datacenters is not None and not all(int(rf) >= 1 for rf in datacenters.values()):
            raise ConfigError(f"shard {name!r}: every datacenter needs a replication factor >= 1")
        if int(replication_factor) < 1:
            raise ConfigError(f"shard {name!r}: replication_factor must be >= 1")
        if not 1 <= int(concurrency) <= 1024:  # 1024: far past what one node's transport threads serve
            raise ConfigError(f"shard {name!r}: concurrency must be 1..1024")
        self.replication_factor = int(replication_factor)
        self.datacenters = dict(datacenters) if datacenters is not None else None
        self.local_dc = local_dc
        self.connect_timeout_s = float(connect_timeout_s)
        self.request_timeout_s = float(request_timeout_s)
        self.concurrency = int(concurrency)
        self._session_key = (tuple(self.hosts), self.port, local_dc, self.connect_timeout_s, self.request_timeout_s)
        self._session: Session | None = None
        self._st: dict[str, PreparedStatement] = {}
        #: The highest `applied_epoch` read or written: it only grows, and
        #: every epoch at or below it is completely written.
        self._applied_seen = 0

    def __repr__(self) -> str:
        return f"CassandraShard({self.name!r}, {','.join(self.hosts)}:{self.port}, keyspace={self.keyspace})"

    # -- connection ------------------------------------------------------

    def _make_cluster(self) -> Cluster:
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=self.local_dc)),
            consistency_level=ConsistencyLevel.LOCAL_QUORUM,
            request_timeout=self.request_timeout_s,
            row_factory=tuple_factory,
        )
        return Cluster(
            contact_points=self.hosts,
            port=self.port,
            protocol_version=PROTOCOL_VERSION,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            connect_timeout=self.connect_timeout_s,
            control_connection_timeout=self.connect_timeout_s,
            reconnection_policy=ExponentialReconnectionPolicy(RECONNECT_DELAY_S_BASE, RECONNECT_DELAY_S_MAX),
            idle_heartbeat_interval=HEARTBEAT_INTERVAL_S,
            max_schema_agreement_wait=int(DDL_TIMEOUT_S),
        )

    def _replication(self) -> str:
        if self.datacenters:
            dcs = ", ".join(f"'{dc}': {int(rf)}" for dc, rf in sorted(self.datacenters.items()))
            return "{'class': 'NetworkTopologyStrategy', %s}" % dcs
        return "{'class': 'SimpleStrategy', 'replication_factor': %d}" % self.replication_factor

    def _open_blocking(self) -> None:
        session = _SESSIONS.acquire(self._session_key, self._make_cluster)
        try:
            k = self.keyspace
            if not self._schema_present(session):
                self._create_schema(session)
            with ThreadPoolExecutor(PREPARE_THREADS, thread_name_prefix="ordo-prepare") as pool:
                prepared = list(pool.map(lambda cql: session.prepare(cql.format(k=k)), _STATEMENTS.values()))
            for statement in prepared:
                statement.is_idempotent = True  # every write is a deterministic upsert: safe to retry
                statement.fetch_size = PAGE_ROWS
            self._st = dict(zip(_STATEMENTS, prepared))
            self._check_identity(session)
        except BaseException:
            _SESSIONS.release(self._session_key)
            raise
        self._session = session

    def _schema_present(self, session: Session) -> bool:
        """Whether the driver's schema metadata already shows every table.

        Skipping DDL when nothing is missing matters on a multi-node cluster:
        before Cassandra 5.1's transactional metadata, the same CREATE TABLE
        run concurrently on two coordinators can make two table ids.  The
        first `open()` of a shard should therefore come from one process
        (the executor, or `ordo up`); every later one only reads.
        """
        keyspace = session.cluster.metadata.keyspaces.get(self.keyspace)
        return keyspace is not None and set(_TABLE_NAMES) <= set(keyspace.tables)

    def _create_schema(self, session: Session) -> None:
        k = self.keyspace
        session.execute(f"CREATE KEYSPACE IF NOT EXISTS {k} WITH replication = {self._replication()}",
                        timeout=DDL_TIMEOUT_S)
        for ddl in _TABLES:
            session.execute(ddl.format(k=k), timeout=DDL_TIMEOUT_S)

    def _check_identity(self, session: Session) -> None:
        rows = session.execute(self._st["read_meta"]).all()
        if not rows or rows[0][1] is None:
            session.execute(self._st["write_identity"], (self.name, SCHEMA_VERSION))
            return
        applied, shard, version = rows[0]
        if shard != self.name:
            raise ConfigError(f"keyspace {self.keyspace} holds shard {shard!r}, not {self.name!r}")
        if version != SCHEMA_VERSION:
            raise ConfigError(f"keyspace {self.keyspace} has schema version {version}, this code {SCHEMA_VERSION}")
        self._applied_seen = max(self._applied_seen, applied or 0)

    async def open(self) -> None:
        if self._session is not None:
            return
        try:
            await asyncio.to_thread(self._open_blocking)
        except _UNAVAILABLE as exc:
            raise self._unavailable("open", exc) from exc
        except RequestValidationException as exc:
            raise ConfigError(f"{self!r}: the server refused the schema: {exc}") from exc

    async def close(self) -> None:
        if self._session is None:
            return
        self._session = None
        await asyncio.to_thread(_SESSIONS.release, self._session_key)

    def _unavailable(self, what: str, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(f"cassandra shard {self.name} ({','.join(self.hosts)}:{self.port}, "
                                f"keyspace {self.keyspace}): {what} failed: {type(exc).__name__}: {exc}")

    # -- statements --------------------------------------------------------

    async def _execute(self, key: str | _Query, params: tuple | None = ()) -> list:
        if self._session is None:
            raise StoreUnavailable(f"{self!r} is not open")
        statement = self._st[key] if isinstance(key, str) else key
        try:
            return await _submit(self._session, statement, params)
        except _UNAVAILABLE as exc:
            raise self._unavailable(_describe(statement), exc) from exc
        except RequestValidationException as exc:
            raise InvariantViolation(f"{self!r}: the server refused {_describe(statement)}: {exc}") from exc
        except DriverException as exc:
            raise self._unavailable(_describe(statement), exc) from exc

    async def _execute_all(self, calls: Sequence[tuple[str | _Query, tuple | None]]) -> list[list]:
        """Every call, at most `concurrency` in flight; waits for all, then raises the first failure.

        Waiting for the stragglers means no write of a failed apply lands
        after `apply` has returned.
        """
        window = asyncio.Semaphore(self.concurrency)

        async def one(key: str | _Query, params: tuple | None) -> list:
            async with window:
                return await self._execute(key, params)

        outcomes = await asyncio.gather(*(one(k, p) for k, p in calls), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return outcomes

    # -- apply -------------------------------------------------------------

    async def applied_epoch(self) -> int:
        rows = await self._execute("read_meta")
        applied = (rows[0][0] if rows else None) or 0
        if applied < self._applied_seen:
            raise InvariantViolation(f"{self!r}: applied_epoch went back from {self._applied_seen} to {applied}")
        self._applied_seen = applied
        return applied

    # TLA+: Ordo!ShardApply -- no transaction: idempotent rows, applied_epoch last (UpsertShards).
    async def apply(self, batches: Sequence[ShardBatch]) -> int:
        todo = check_batches(await self.applied_epoch(), batches, self.name)
        if not todo:
            return 0
        _check_keys(todo, self.name)
        writes = [write for batch in todo for write in self._writes(batch)]
        await self._write(writes)
        # Only now, with every row of every epoch in place, does the shard move on.
        await self._execute("write_applied", (todo[-1].epoch, todo[-1].epoch))
        self._applied_seen = max(self._applied_seen, todo[-1].epoch)
        return len(todo)

    async def _write(self, writes: Sequence[Write]) -> None:
        """Writes rows, packed into batches, all concurrently; a test subclass overrides this to fail part way."""
        await self._execute_all([(batch, None) for batch in self._pack(writes)])

    def _pack(self, writes: Sequence[Write]) -> list[BatchStatement]:
        """UNLOGGED batches of whole partitions that share a replica, within the server's warning limits.

        Rows of one partition key (an account's balance version, postings and
        static row; a transfer) stay together: one mutation, applied
        atomically on each replica.  Atomicity across partitions is not
        needed, and not promised: versioning hides partial epochs.
        """
        partitions: dict[Any, list[BoundStatement]] = {}
        for w in writes:
            bound = w.statement.bind(w.params)
            partitions.setdefault(bound.routing_key, []).append(bound)
        by_replica: dict[str, list[list[BoundStatement]]] = {}
        metadata = self._cluster_metadata()
        for key, rows in partitions.items():
            replicas = metadata.get_replicas(self.keyspace, key) if metadata is not None else []
            by_replica.setdefault(str(replicas[0].endpoint) if replicas else "", []).append(rows)
        batches: list[BatchStatement] = []
        for group in by_replica.values():
            batches.extend(_pack_partitions(group))
        return batches

    def _cluster_metadata(self) -> Any:
        return self._session.cluster.metadata if self._session is not None else None

    def _writes(self, batch: ShardBatch) -> list[Write]:
        """Every row of one batch as statements: deterministic keys and values (idempotent)."""
        st, e = self._st, batch.epoch
        out: list[Write] = []
        for a in batch.accounts:
            out.append(Write(e, st["insert_account"], (a.id, a.ledger, a.code, a.flags, a.user_data, a.created_epoch)))
        for a in batch.balances:
            out.append(Write(e, st["insert_balance"], (
                a.id, a.ledger, a.code, a.flags, a.user_data, a.created_epoch, a.debits_pending, a.debits_posted,
                a.credits_pending, a.credits_posted, a.seq, a.head_hash, a.epoch)))
        for p in batch.postings:
            out.append(Write(e, st["insert_posting"], (
                p.account_id, p.seq, p.epoch, p.hlc, p.transfer_id, p.kind, p.amount, p.debits_pending,
                p.debits_posted, p.credits_pending, p.credits_posted, p.prev_hash, p.hash)))
        for r in batch.transfers:
            t = r.transfer
            out.append(Write(e, st["insert_transfer"], (
                t.id, t.debit_account_id, t.credit_account_id, t.amount, t.ledger, t.code, t.flags, t.pending_id,
                t.timeout_ms, t.user_data, r.result, r.epoch, r.hlc, r.expires_at_ms)))
            if r.expires_at_ms and r.result == "ok":
                out.append(Write(e, st["insert_pending"], (_pending_bucket(t.id), t.id, r.epoch)))
        for s in batch.resolutions:
            out.append(Write(e, st["insert_resolution"], (s.pending_id, s.kind, s.amount, s.epoch, s.by_transfer_id)))
            out.append(Write(e, st["resolve_pending"], (s.epoch, _pending_bucket(s.pending_id), s.pending_id)))
        for x in batch.results:
            out.append(Write(e, st["insert_result"], (x.epoch, x.index, x.id, x.kind, x.result)))
        for w in out:
            _check_u63(w.params, f"shard {self.name} epoch {e} {w.statement.query_string.split('(')[0]}")
        return out

    # -- snapshot reads ------------------------------------------------------

    async def _visible(self, at_epoch: int) -> int:
        """`at_epoch` clamped to `applied_epoch`: rows above it may be a crashed apply's partial writes."""
        if at_epoch <= self._applied_seen:
            return at_epoch
        return min(at_epoch, await self.applied_epoch())

    async def load_accounts(self, ids: Collection[int], at_epoch: int) -> dict[int, Account]:
        at = await self._visible(at_epoch)
        return await self._accounts_at(sorted(set(ids)), at)

    async def _accounts_at(self, ids: Sequence[int], at: int) -> dict[int, Account]:
        if not ids or at <= 0:
            return {}
        pages = await self._execute_all([("balance_at", (i, at)) for i in ids])
        out = {}
        for account_id, rows in zip(ids, pages):
            if rows:
                account = _account(rows[0])
                if account.id != account_id or account.epoch > at:
                    raise InvariantViolation(f"{self!r}: asked for {account_id} at {at}, read {account}")
                out[account_id] = account
        return out

    async def load_transfers(self, ids: Collection[int], at_epoch: int) -> dict[int, TransferRecord]:
        return await self._transfers_at(sorted(set(ids)), await self._visible(at_epoch))

    async def _transfers_at(self, ids: Sequence[int], at: int) -> dict[int, TransferRecord]:
        if not ids or at <= 0:
            return {}
        pages = await self._execute_all([("transfer_by_id", (i,)) for i in ids])
        records = (_record(rows[0]) for rows in pages if rows)
        return {r.transfer.id: r for r in records if r.epoch <= at}

    async def load_resolutions(self, pending_ids: Collection[int], at_epoch: int) -> dict[int, Resolution]:
        return await self._resolutions_at(sorted(set(pending_ids)), await self._visible(at_epoch))

    async def _resolutions_at(self, ids: Sequence[int], at: int) -> dict[int, Resolution]:
        if not ids or at <= 0:
            return {}
        pages = await self._execute_all([("resolution_by_id", (i,)) for i in ids])
        resolutions = (Resolution(*rows[0]) for rows in pages if rows)
        return {r.pending_id: r for r in resolutions if r.epoch <= at}

    async def load_open_pendings(self, at_epoch: int) -> list[TransferRecord]:
        at = await self._visible(at_epoch)
        if at <= 0:
            return []
        buckets = await self._execute_all([("pendings_bucket", (b,)) for b in range(PENDING_BUCKETS)])
        # The index narrows the candidates; the records themselves decide, as in the dict model.
        candidates = sorted(
            transfer_id
            for rows in buckets
            for transfer_id, epoch, resolved_epoch in rows
            if epoch is not None and epoch <= at and (resolved_epoch is None or resolved_epoch > at)
        )
        records, resolutions = await asyncio.gather(
            self._transfers_at(candidates, at), self._resolutions_at(candidates, at)
        )
        return [
            r for _, r in sorted(records.items())
            if r.expires_at_ms and r.result == "ok" and r.transfer.id not in resolutions
        ]

    async def read_postings(
        self, account_id: int, at_epoch: int, after_seq: int = 0, limit: int = 100
    ) -> list[Posting]:
        at = await self._visible(at_epoch)
        if limit <= 0 or at <= 0 or after_seq >= U63_MAX:
            return []
        rows = await self._execute("postings_page", (account_id, max(after_seq, -1), limit))
        out: list[Posting] = []
        for row in rows:
            posting = Posting(*row)
            if posting.epoch > at:
                break  # seq order is epoch order: every later posting is later still
            if out and posting.epoch < out[-1].epoch:
                raise InvariantViolation(f"{self!r}: account {account_id} posting {posting.seq} goes back in epochs")
            out.append(posting)
        return out

    async def read_results(self, epoch: int) -> list[EventResult]:
        if epoch <= 0 or await self._visible(epoch) < epoch:
            return []
        rows = await self._execute("results_of_epoch", (epoch,))
        return [EventResult(*row) for row in rows]

    async def dump(self, at_epoch: int) -> ShardDump:
        at = await self._visible(at_epoch)
        balances, postings, transfers, resolutions, results = await self._execute_all([
            ("scan_balances_at", (max(at, 0),)),
            ("scan_postings", ()),
            ("scan_transfers", ()),
            ("scan_resolutions", ()),
            ("scan_results", ()),
        ])
        records = (_record(row) for row in transfers)
        return ShardDump(
            shard=self.name,
            at_epoch=at_epoch,
            accounts=sorted((_account(row) for row in balances if row[-1] <= at), key=lambda a: a.id),
            postings=sorted((Posting(*row) for row in postings if row[2] <= at), key=lambda p: (p.account_id, p.seq)),
            transfers=sorted((r for r in records if r.epoch <= at), key=lambda r: r.transfer.id),
            resolutions=sorted((Resolution(*row) for row in resolutions if row[3] <= at), key=lambda r: r.pending_id),
            results=sorted((EventResult(*row) for row in results if row[0] <= at), key=lambda r: (r.epoch, r.index)),
        )
