"""A PostgreSQL shard: `ShardProxy` over psycopg 3 and an async connection pool.

Role: driver (a store).

Owned here: the shard's tables, the SQL that writes an epoch's effects in one
transaction and the snapshot reads at `at_epoch`.  Callers: the runner
(`apply`, the `load_*` preloads), the API (`read_*` at the watermark W) and
`ordo verify` (`dump`, `walk_chain`).  It must behave exactly
like `proxies/memory.py`, the dict model; `tests/test_proxy_postgres.py` runs
the shared contract suite against a real server to check that.

Layout.  Every shard lives in its own schema (default `ordo_<name>`), so
several shards can share one database.  Balances are versioned by epoch, one
row per (account, epoch) that touched the account, next to a static
`accounts` row; postings carry their hash chain (`prev_hash`, `hash`); the
`meta` row holds `applied_epoch`.  Every number is a BIGINT: ids, amounts
and balances are 0..2**63-1 by contract, and CHECK constraints refuse
negatives, so a row the contract forbids cannot be stored silently.  The
tables are created on `open()` if missing (idempotent DDL).

Writes.  `apply` runs in ONE transaction: it locks the `meta` row
(`SELECT ... FOR UPDATE`), runs `check_batches` against the locked
`applied_epoch`, then writes every table of every batch with ONE statement
whose data-modifying CTEs each `INSERT ... SELECT FROM unnest(arrays)`, and
moves `applied_epoch` in that same statement.  Four round trips per call
(BEGIN, lock, write, COMMIT) whatever the size of the batches.  Replaying an
applied epoch finds it at or below `applied_epoch`, writes nothing and
returns 0.  A key written twice (an account, a balance version, a posting,
a transfer record, a resolution, a result) is refused, as in the SQLite
shard, where the dict model would silently overwrite: the state machine
never does it, so it can only be a bug.

Measured for one epoch of 200 transfers (400 postings, 400 balance
versions, 200 transfer records, 200 results; 100k accounts; fsync on) on a
shared, busy 2-core machine, the strategies interleaved epoch by epoch,
median per apply: this statement 26 ms; the same INSERTs as 7 pipelined
statements 29 ms, or as 7 sequential ones 31 ms; COPY (binary) 36 ms;
`executemany` 74 ms; one round trip per row ~590 ms.  With the machine
nearly idle this statement took about 11 ms: 0.3 ms BEGIN and lock, 1 ms to
pack the arrays, 8 ms of server work, 1 ms COMMIT.  Packing the arrays here
(`_pack`) matters as much as the statement's shape: the same statement with
psycopg's own list adaptation took 34 ms (binary) and 52 ms (text).

Reads.  Every read takes `at_epoch` and sees the newest balance version at or
below it, found per id by a backward primary-key scan (LATERAL ... LIMIT 1),
so a hot account's thousands of versions cost nothing; ids travel as one
int8[] parameter (`= ANY`, `unnest`), never one query per id.  `walk_chain`
walks an account's hash chain in SQL, link by link (seq + 1 and prev_hash =
the previous hash), for `ordo verify`.

Errors.  Refused or lost connections, a server shutting down (even in the
middle of a transaction) and pool timeouts are `StoreUnavailable`; the
runner retries with backoff.  After a lost connection the shard first makes
one fresh connection outside the pool: while the server is down every call
fails at once with libpq's reason; once it answers, the shard replaces its
pool (whose connections all died) and carries on, so the first call after a
restart succeeds.  If the connection breaks during COMMIT the outcome is
unknown, which is why a retry is safe: the guard makes it write nothing if
the first attempt landed.  A row the database refuses (a CHECK, a duplicate
key, a number beyond BIGINT) is an `InvariantViolation`: the executor
produced something the contract forbids, and retrying cannot help.
"""

from __future__ import annotations

import asyncio
import functools
import re
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from typing import Any, TypeVar

import msgspec
import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.adapt import Dumper
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import Format

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

#: Version of the table layout below, stored in `meta`; a shard written by a
#: different layout is refused at `open()` rather than misread.
SCHEMA_VERSION = 1

#: Connections per shard.  The runner applies one batch per shard at a time
#: and the API's reads are short, so a handful covers the concurrency; every
#: connection is a server process, so the bound matters when many shards
#: share one server (PostgreSQL's default `max_connections` is 100).
POOL_MAX_DEFAULT = 4
#: How long a call waits for a pooled connection before it reports the store
#: unavailable.  Short, because the runner retries with its own backoff and a
#: stuck call must not hide an outage for minutes.
ACQUIRE_TIMEOUT_S_DEFAULT = 5.0
#: libpq's `connect_timeout` (whole seconds, libpq's minimum is 2).
CONNECT_TIMEOUT_S_DEFAULT = 3
#: Server-side bound on one statement.  An epoch's write is a few thousand
#: rows and takes milliseconds; a statement running this long is stuck behind
#: something (a lock, a dying disk) and is better failed and retried.
STATEMENT_TIMEOUT_MS_DEFAULT = 30_000
#: Client-side bound on one call, beyond the server's statement timeout: a
#: server that hangs without closing its sockets (stopped, swapping) never
#: sends the statement timeout's error, and only the client can give up.
CALL_TIMEOUT_MARGIN_S = 5.0
#: Postings fetched per round trip while walking a hash chain: bounds the
#: memory `walk_chain` holds for an account with millions of postings.
CHAIN_PAGE_SIZE = 5_000
#: PostgreSQL truncates identifiers longer than this (NAMEDATALEN - 1).
IDENTIFIER_BYTES_MAX = 63

# Column lists, in the field order of the row types they load into, so that
# `Account(*row)` and `Posting(*row)` are correct; checked at import below.
_ACCOUNT_FIELDS = (
    "id", "ledger", "code", "flags", "user_data", "created_epoch",
    "debits_pending", "debits_posted", "credits_pending", "credits_posted", "seq", "head_hash", "epoch",
)
#: The fields of an account that never change: its `accounts` row.
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
    if _struct.__struct_fields__ != _fields:  # a contract change must reach this file's SQL
        raise ImportError(f"proxies.postgres: {_struct.__name__} fields changed to {_struct.__struct_fields__}")


def default_schema(name: str) -> str:
    """`ordo_<name>`, lower-cased, with anything but [a-z0-9_] replaced by `_`."""
    return ("ordo_" + re.sub(r"[^a-z0-9_]", "_", name.lower()))[:IDENTIFIER_BYTES_MAX]


# ---------------------------------------------------------------------- SQL
#
# Templates use `{s}` for the quoted schema; `_Sql` formats them once per shard.

_DDL = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.meta (
    one             boolean PRIMARY KEY DEFAULT true CHECK (one),
    shard           text    NOT NULL,
    schema_version  integer NOT NULL,
    applied_epoch   bigint  NOT NULL CONSTRAINT applied_epoch_u63 CHECK (applied_epoch >= 0)
);
CREATE TABLE IF NOT EXISTS {s}.accounts (
    id              bigint PRIMARY KEY CONSTRAINT account_id_u63 CHECK (id >= 0),
    ledger          bigint NOT NULL CONSTRAINT account_ledger_u63 CHECK (ledger >= 0),
    code            bigint NOT NULL CONSTRAINT account_code_u63 CHECK (code >= 0),
    flags           bigint NOT NULL CONSTRAINT account_flags_u63 CHECK (flags >= 0),
    user_data       bigint NOT NULL CONSTRAINT account_user_data_u63 CHECK (user_data >= 0),
    created_epoch   bigint NOT NULL CONSTRAINT account_created_epoch_u63 CHECK (created_epoch >= 0)
);
CREATE TABLE IF NOT EXISTS {s}.balances (
    account_id      bigint NOT NULL,
    epoch           bigint NOT NULL CONSTRAINT balance_epoch_u63 CHECK (epoch >= 0),
    debits_pending  bigint NOT NULL CONSTRAINT balance_debits_pending_u63 CHECK (debits_pending >= 0),
    debits_posted   bigint NOT NULL CONSTRAINT balance_debits_posted_u63 CHECK (debits_posted >= 0),
    credits_pending bigint NOT NULL CONSTRAINT balance_credits_pending_u63 CHECK (credits_pending >= 0),
    credits_posted  bigint NOT NULL CONSTRAINT balance_credits_posted_u63 CHECK (credits_posted >= 0),
    seq             bigint NOT NULL CONSTRAINT balance_seq_u63 CHECK (seq >= 0),
    head_hash       bytea  NOT NULL,
    PRIMARY KEY (account_id, epoch)
);
CREATE TABLE IF NOT EXISTS {s}.postings (
    account_id      bigint NOT NULL,
    seq             bigint NOT NULL CONSTRAINT posting_seq_u63 CHECK (seq >= 0),
    epoch           bigint NOT NULL CONSTRAINT posting_epoch_u63 CHECK (epoch >= 0),
    hlc             bigint NOT NULL CONSTRAINT posting_hlc_u63 CHECK (hlc >= 0),
    transfer_id     bigint NOT NULL CONSTRAINT posting_transfer_id_u63 CHECK (transfer_id >= 0),
    kind            text   NOT NULL,
    amount          bigint NOT NULL CONSTRAINT posting_amount_u63 CHECK (amount >= 0),
    debits_pending  bigint NOT NULL CONSTRAINT posting_debits_pending_u63 CHECK (debits_pending >= 0),
    debits_posted   bigint NOT NULL CONSTRAINT posting_debits_posted_u63 CHECK (debits_posted >= 0),
    credits_pending bigint NOT NULL CONSTRAINT posting_credits_pending_u63 CHECK (credits_pending >= 0),
    credits_posted  bigint NOT NULL CONSTRAINT posting_credits_posted_u63 CHECK (credits_posted >= 0),
    prev_hash       bytea  NOT NULL,
    hash            bytea  NOT NULL,
    PRIMARY KEY (account_id, seq)
);
CREATE TABLE IF NOT EXISTS {s}.transfers (
    id                bigint PRIMARY KEY CONSTRAINT transfer_id_u63 CHECK (id >= 0),
    debit_account_id  bigint NOT NULL CONSTRAINT transfer_debit_account_id_u63 CHECK (debit_account_id >= 0),
    credit_account_id bigint NOT NULL CONSTRAINT transfer_credit_account_id_u63 CHECK (credit_account_id >= 0),
    amount            bigint NOT NULL CONSTRAINT transfer_amount_u63 CHECK (amount >= 0),
    ledger            bigint NOT NULL CONSTRAINT transfer_ledger_u63 CHECK (ledger >= 0),
    code              bigint NOT NULL CONSTRAINT transfer_code_u63 CHECK (code >= 0),
    flags             bigint NOT NULL CONSTRAINT transfer_flags_u63 CHECK (flags >= 0),
    pending_id        bigint NOT NULL CONSTRAINT transfer_pending_id_u63 CHECK (pending_id >= 0),
    timeout_ms        bigint NOT NULL CONSTRAINT transfer_timeout_ms_u63 CHECK (timeout_ms >= 0),
    user_data         bigint NOT NULL CONSTRAINT transfer_user_data_u63 CHECK (user_data >= 0),
    result            text   NOT NULL,
    epoch             bigint NOT NULL CONSTRAINT transfer_epoch_u63 CHECK (epoch >= 0),
    hlc               bigint NOT NULL CONSTRAINT transfer_hlc_u63 CHECK (hlc >= 0),
    expires_at_ms     bigint NOT NULL CONSTRAINT transfer_expires_at_ms_u63 CHECK (expires_at_ms >= 0)
);
-- `load_open_pendings` scans only successful pending transfers with a timeout.
CREATE INDEX IF NOT EXISTS transfers_timed_pending ON {s}.transfers (id)
    WHERE expires_at_ms <> 0 AND result = 'ok';
CREATE TABLE IF NOT EXISTS {s}.resolutions (
    pending_id      bigint PRIMARY KEY CONSTRAINT resolution_pending_id_u63 CHECK (pending_id >= 0),
    kind            text   NOT NULL,
    amount          bigint NOT NULL CONSTRAINT resolution_amount_u63 CHECK (amount >= 0),
    epoch           bigint NOT NULL CONSTRAINT resolution_epoch_u63 CHECK (epoch >= 0),
    by_transfer_id  bigint NOT NULL CONSTRAINT resolution_by_transfer_id_u63 CHECK (by_transfer_id >= 0)
);
CREATE TABLE IF NOT EXISTS {s}.results (
    epoch           bigint NOT NULL CONSTRAINT result_epoch_u63 CHECK (epoch >= 0),
    idx             bigint NOT NULL CONSTRAINT result_idx_u63 CHECK (idx >= 0),
    id              bigint NOT NULL CONSTRAINT result_id_u63 CHECK (id >= 0),
    kind            text   NOT NULL,
    result          text   NOT NULL,
    PRIMARY KEY (epoch, idx)
);
"""


def _pg_type(field: str) -> str:
    """Every row field is a BIGINT except the hashes and the short strings."""
    if field in ("head_hash", "prev_hash", "hash"):
        return "bytea"
    if field in ("kind", "result"):
        return "text"
    if field == "new":
        return "boolean"
    return "bigint"


def _unnest(prefix: str, fields: Sequence[str]) -> str:
    """`unnest(%(p_a)b::bigint[], ...)`: one binary array parameter per column."""
    return "unnest(" + ", ".join(f"%({prefix}_{f})b::{_pg_type(f)}[]" for f in fields) + ")"


def _insert(table: str, prefix: str, fields: Sequence[str], columns: Sequence[str] | None = None) -> str:
    return f"INSERT INTO {{s}}.{table} ({', '.join(columns or fields)})\n    SELECT * FROM {_unnest(prefix, fields)}"


_BALANCE_COLUMNS = ("account_id", "epoch", *_ACCOUNT_FIELDS[6:12])

# A balance version must match the static `accounts` row of its account on
# every static field.  `apply` checks that in Python for accounts created by
# the same call (`b_new`: a CTE does not see what a sibling CTE inserts); the
# SQL checks the others with one primary-key lookup each (LATERAL ... LIMIT 1
# keeps the planner from hashing the whole accounts table instead).  A row
# that fails is not inserted, the count comes back short and `apply` refuses
# the call: a balance without its account would be invisible to every read.
_INSERT_BALANCES = f"""INSERT INTO {{s}}.balances ({', '.join(_BALANCE_COLUMNS)})
    SELECT u.id, u.epoch, {', '.join('u.' + f for f in _ACCOUNT_FIELDS[6:12])}
    FROM {_unnest("b", (*_ACCOUNT_FIELDS, "new"))} AS u({', '.join(_ACCOUNT_FIELDS)}, new)
    LEFT JOIN LATERAL (SELECT * FROM {{s}}.accounts a WHERE a.id = u.id LIMIT 1) AS a ON true
    WHERE u.new
       OR ({', '.join('a.' + f for f in _STATIC_FIELDS[1:])}) = ({', '.join('u.' + f for f in _STATIC_FIELDS[1:])})
    RETURNING 1"""

# One statement writes every table of every batch, and moves `applied_epoch`.
# Each CTE inserts the rows of one table from parallel arrays (one binary
# array parameter per column, one element per row).  PostgreSQL runs every
# data-modifying CTE exactly once, whether or not the final SELECT reads it;
# only the two counts `apply` checks are returned.
_WRITE = f"""WITH
new_accounts AS ({_insert("accounts", "a", _STATIC_FIELDS)}),
new_balances AS ({_INSERT_BALANCES}),
new_postings AS ({_insert("postings", "p", _POSTING_FIELDS)}),
new_transfers AS ({_insert("transfers", "t", (*_TRANSFER_FIELDS, *_RECORD_FIELDS[1:]))}),
new_resolutions AS ({_insert("resolutions", "r", _RESOLUTION_FIELDS)}),
new_results AS ({_insert("results", "e", _RESULT_FIELDS, ("epoch", "idx", "id", "kind", "result"))}),
moved AS (
    UPDATE {{s}}.meta SET applied_epoch = %(to_epoch)s WHERE applied_epoch = %(from_epoch)s
    RETURNING 1)
SELECT (SELECT count(*) FROM new_balances), (SELECT count(*) FROM moved)
"""

_ACCOUNT_COLUMNS = """a.id, a.ledger, a.code, a.flags, a.user_data, a.created_epoch,
    b.debits_pending, b.debits_posted, b.credits_pending, b.credits_posted, b.seq, b.head_hash, b.epoch"""

# The newest balance version at or below `at_epoch`, found per id by a
# backward scan of the (account_id, epoch) primary key: O(log n) however many
# versions a hot account has, where DISTINCT ON would read them all.  Both
# lookups are LATERAL ... LIMIT 1 so that they stay index probes per id.
_LOAD_ACCOUNTS = """
SELECT {cols} FROM unnest(%b::bigint[]) AS q(id)
CROSS JOIN LATERAL (SELECT * FROM {s}.accounts a WHERE a.id = q.id LIMIT 1) AS a
CROSS JOIN LATERAL (
    SELECT * FROM {s}.balances b WHERE b.account_id = q.id AND b.epoch <= %s ORDER BY b.epoch DESC LIMIT 1
) AS b
"""

_DUMP_ACCOUNTS = """
SELECT {cols} FROM {s}.accounts a
CROSS JOIN LATERAL (
    SELECT * FROM {s}.balances b WHERE b.account_id = a.id AND b.epoch <= %s ORDER BY b.epoch DESC LIMIT 1
) AS b
ORDER BY a.id
"""

# One page of an account's hash chain, walked link by link: each step takes
# the posting whose seq is one more AND whose prev_hash is the previous
# posting's hash, so the walk stops at the first broken link.  `depth` bounds
# a page; the next page starts from the last link of this one.
_WALK_CHAIN = """
WITH RECURSIVE chain AS (
    SELECT p.*, 1 AS depth FROM {s}.postings p
    WHERE p.account_id = %(account_id)s AND p.seq = %(seq)s AND p.epoch <= %(at_epoch)s
      AND (%(prev_hash)s::bytea IS NULL OR p.prev_hash = %(prev_hash)s::bytea)
  UNION ALL
    SELECT p.*, c.depth + 1 FROM chain c
    JOIN {s}.postings p ON p.account_id = c.account_id AND p.seq = c.seq + 1 AND p.prev_hash = c.hash
    WHERE p.epoch <= %(at_epoch)s AND c.depth < %(limit)s AND c.seq < 9223372036854775807  -- no overflow
)
SELECT {cols} FROM chain ORDER BY seq
"""

_TRANSFER_COLUMNS = """id, debit_account_id, credit_account_id, amount, ledger, code, flags, pending_id,
    timeout_ms, user_data, result, epoch, hlc, expires_at_ms"""
_POSTING_COLUMNS = ", ".join(_POSTING_FIELDS)


class _Sql:
    """Every statement of one shard, with its schema quoted in once."""

    def __init__(self, schema: str) -> None:
        s = sql.Identifier(schema).as_string()
        self.ddl = _DDL.format(s=s)
        self.init_meta = (
            f"INSERT INTO {s}.meta (shard, schema_version, applied_epoch) VALUES (%s, %s, 0) ON CONFLICT DO NOTHING"
        )
        self.read_meta = f"SELECT shard, schema_version, applied_epoch FROM {s}.meta"
        self.lock_meta = f"SELECT applied_epoch FROM {s}.meta FOR UPDATE"
        self.write = _WRITE.format(s=s)
        self.load_accounts = _LOAD_ACCOUNTS.format(s=s, cols=_ACCOUNT_COLUMNS)
        self.load_transfers = (
            f"SELECT {_TRANSFER_COLUMNS} FROM {s}.transfers WHERE id = ANY(%b::bigint[]) AND epoch <= %s"
        )
        self.load_resolutions = (
            f"SELECT pending_id, kind, amount, epoch, by_transfer_id FROM {s}.resolutions"
            f" WHERE pending_id = ANY(%b::bigint[]) AND epoch <= %s"
        )
        self.load_open_pendings = (
            f"SELECT {_TRANSFER_COLUMNS} FROM {s}.transfers t"
            f" WHERE t.expires_at_ms <> 0 AND t.result = 'ok' AND t.epoch <= %s"
            f" AND NOT EXISTS (SELECT 1 FROM {s}.resolutions r WHERE r.pending_id = t.id AND r.epoch <= %s)"
            f" ORDER BY t.id"
        )
        self.read_postings = (
            f"SELECT {_POSTING_COLUMNS} FROM {s}.postings"
            f" WHERE account_id = %s AND seq > %s AND epoch <= %s ORDER BY seq LIMIT %s"
        )
        self.walk_chain = _WALK_CHAIN.format(s=s, cols=_POSTING_COLUMNS)
        self.read_results = f"SELECT epoch, idx, id, kind, result FROM {s}.results WHERE epoch = %s ORDER BY idx"
        self.dump_accounts = _DUMP_ACCOUNTS.format(s=s, cols=_ACCOUNT_COLUMNS)
        self.dump_postings = f"SELECT {_POSTING_COLUMNS} FROM {s}.postings WHERE epoch <= %s ORDER BY account_id, seq"
        self.dump_transfers = f"SELECT {_TRANSFER_COLUMNS} FROM {s}.transfers WHERE epoch <= %s ORDER BY id"
        self.dump_resolutions = (
            f"SELECT pending_id, kind, amount, epoch, by_transfer_id FROM {s}.resolutions"
            f" WHERE epoch <= %s ORDER BY pending_id"
        )
        self.dump_results = f"SELECT epoch, idx, id, kind, result FROM {s}.results WHERE epoch <= %s ORDER BY epoch, idx"


# ----------------------------------------------------------------- row codecs


# Array parameters are encoded here, straight into PostgreSQL's binary array
# format, instead of by psycopg's generic list adapter: that one calls a
# Python dumper per element and took ~7 ms (binary) or ~19 ms (text) of the
# client's CPU for an epoch of 200 transfers, more than the server spends
# inserting it.  Packed here, the whole epoch takes about 1 ms.

_I32 = struct.Struct(">i")
_ARRAY_HEADER = struct.Struct(">iiiii")  # ndim, has_nulls, element oid, length, lower bound
_ELEMENT_OID = {"bigint": 20, "bytea": 17, "text": 25, "boolean": 16}
_ARRAY_OID = {"bigint": 1016, "bytea": 1001, "text": 1009, "boolean": 1000}
_BOOLEANS = (b"\x00\x00\x00\x01\x00", b"\x00\x00\x00\x01\x01")


class _Packed:
    """One column, already in PostgreSQL's binary array format."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


#: int8 elements packed per `struct.pack` call.  Chunking bounds what the
#: struct cache holds (a compiled format per distinct length, ~50 KB at this
#: size) however large a catch-up batch gets; bigger chunks gain nothing.
_INT8_CHUNK = 1024


@functools.lru_cache(maxsize=64)
def _int8_elements(n: int) -> struct.Struct:
    """n elements of an int8 array: each a 4-byte length (8), then a big-endian int64."""
    return struct.Struct(">" + "iq" * n)


def _pack_int8(values: Sequence[int]) -> bytes:
    """A C call per 1024 values.  Raises struct.error for a value outside -2**63..2**63-1."""
    interleaved = [8] * (2 * len(values))
    interleaved[1::2] = values
    step = 2 * _INT8_CHUNK
    return b"".join(
        _int8_elements(len(interleaved[i : i + step]) // 2).pack(*interleaved[i : i + step])
        for i in range(0, len(interleaved), step)
    )


def _pack(pg_type: str, values: Sequence[Any]) -> _Packed:
    oid = _ELEMENT_OID[pg_type]
    if not values:
        return _PACKED_CLASS[pg_type](struct.pack(">iii", 0, 0, oid))
    header = _ARRAY_HEADER.pack(1, 0, oid, len(values), 1)
    if pg_type == "bigint":
        body = _pack_int8(values)
    elif pg_type == "boolean":
        body = b"".join([_BOOLEANS[bool(v)] for v in values])
    elif pg_type == "bytea":
        body = b"".join([_I32.pack(len(v)) + v for v in values])
    else:  # text: a handful of distinct codes ("debit", "ok", ...), each encoded once
        encoded = {v: _I32.pack(len(v.encode())) + v.encode() for v in set(values)}
        body = b"".join([encoded[v] for v in values])
    return _PACKED_CLASS[pg_type](header + body)


def _packed_type(pg_type: str) -> tuple[type[_Packed], type[Dumper]]:
    packed = type(f"_Packed_{pg_type}", (_Packed,), {"__slots__": ()})

    class _PackedDumper(Dumper):
        format = Format.BINARY
        oid = _ARRAY_OID[pg_type]

        def dump(self, obj: _Packed) -> bytes:
            return obj.data

    return packed, _PackedDumper


_PACKED_CLASS: dict[str, type[_Packed]] = {}
#: Adapters of every shard connection: psycopg's defaults plus the packed arrays.
_ADAPTERS = psycopg.adapt.AdaptersMap(psycopg.adapters)
for _pg_type_name in _ARRAY_OID:
    _PACKED_CLASS[_pg_type_name], _dumper = _packed_type(_pg_type_name)
    _ADAPTERS.register_dumper(_PACKED_CLASS[_pg_type_name], _dumper)


def _columns(rows: Sequence[Any], fields: Sequence[str], prefix: str, skip: int = 0) -> dict[str, _Packed]:
    """Transpose rows into one packed array per field, keyed `<prefix>_<field>`.

    `fields` are the row type's fields from position `skip` on, in order.
    """
    columns = list(zip(*map(msgspec.structs.astuple, rows)))[skip:] if rows else [()] * len(fields)
    return {f"{prefix}_{f}": _pack(_pg_type(f), column) for f, column in zip(fields, columns)}


def _write_params(todo: Sequence[ShardBatch], from_epoch: int) -> dict[str, Any]:
    """The arrays `_WRITE` takes: every row of every batch, per column."""
    accounts = [a for b in todo for a in b.accounts]
    balances = [a for b in todo for a in b.balances]
    records = [r for b in todo for r in b.transfers]
    params: dict[str, Any] = {"from_epoch": from_epoch, "to_epoch": todo[-1].epoch}
    params.update(_columns(accounts, _STATIC_FIELDS, "a"))
    params.update(_columns(balances, _ACCOUNT_FIELDS, "b"))
    params["b_new"] = _pack("boolean", _created_here(accounts, balances))
    params.update(_columns([p for b in todo for p in b.postings], _POSTING_FIELDS, "p"))
    params.update(_columns([r.transfer for r in records], _TRANSFER_FIELDS, "t"))
    params.update(_columns(records, _RECORD_FIELDS[1:], "t", skip=1))
    params.update(_columns([r for b in todo for r in b.resolutions], _RESOLUTION_FIELDS, "r"))
    params.update(_columns([r for b in todo for r in b.results], _RESULT_FIELDS, "e"))
    return params


def _created_here(accounts: Sequence[Account], balances: Sequence[Account]) -> list[bool]:
    """For each balance version: is its account created by this same call?

    If so, its static fields must be the new account's (checked here, since
    the SQL cannot see that row yet); the others are checked by `_WRITE`.
    """
    statics = {a.id: _statics(a) for a in accounts}
    created = []
    for balance in balances:
        static = statics.get(balance.id)
        if static is not None and static != _statics(balance):
            raise InvariantViolation(f"balance version of account {balance.id} has other static fields than the account")
        created.append(static is not None)
    return created


def _statics(account: Account) -> tuple[int, ...]:
    return tuple(getattr(account, f) for f in _STATIC_FIELDS)


T = TypeVar("T")


def _ids(ids: Collection[int]) -> _Packed:
    """Ids as one int8[] parameter.  Ids outside 0..2**63-1 cannot be stored, so they find nothing."""
    return _pack("bigint", [i for i in ids if 0 <= i <= U63_MAX])


def _bound(value: int) -> int:
    """An epoch, seq or limit clamped to BIGINT: `at_epoch=10**30` means "everything", as in memory."""
    return max(-U63_MAX, min(value, U63_MAX))


async def _one(conn: psycopg.AsyncConnection, query: str, params: Any = None) -> tuple:
    row = await (await conn.execute(query, params)).fetchone()
    if row is None:  # every query passed here returns exactly one row by construction
        raise InvariantViolation(f"expected one row from: {query.split(chr(10))[0][:80]}")
    return row


def _account(row: tuple) -> Account:
    account = Account(*row)
    check_account(account)  # STYLE 6: check a row again after reading it back
    return account


def _record(row: tuple) -> TransferRecord:
    return TransferRecord(CreateTransfer(*row[:10]), *row[10:])


# ---------------------------------------------------------------------- shard


class PostgresShard(ShardProxy):
    """One shard in one PostgreSQL schema.  See the module docstring."""

    def __init__(
        self,
        name: str,
        dsn: str,
        schema: str | None = None,
        pool_max: int = POOL_MAX_DEFAULT,
        acquire_timeout_s: float = ACQUIRE_TIMEOUT_S_DEFAULT,
        connect_timeout_s: int = CONNECT_TIMEOUT_S_DEFAULT,
        statement_timeout_ms: int = STATEMENT_TIMEOUT_MS_DEFAULT,
        call_timeout_s: float | None = None,
    ) -> None:
        self.name = name
        self.dsn = dsn
        self.schema = schema if schema is not None else default_schema(name)
        if not self.schema or len(self.schema.encode()) > IDENTIFIER_BYTES_MAX:
            raise ConfigError(f"postgres shard {name}: schema name {self.schema!r} must be 1..63 bytes")
        if pool_max < 1:
            raise ConfigError(f"postgres shard {name}: pool_max must be at least 1, not {pool_max}")
        try:
            self._dsn_options = conninfo_to_dict(dsn).get("options", "")
        except psycopg.ProgrammingError as exc:
            raise ConfigError(f"postgres shard {name}: malformed dsn: {exc}") from None
        self.pool_max = pool_max
        self.acquire_timeout_s = acquire_timeout_s
        self.connect_timeout_s = max(2, int(connect_timeout_s))  # libpq treats 1 as 2
        self.statement_timeout_ms = statement_timeout_ms
        self.call_timeout_s = (
            call_timeout_s if call_timeout_s is not None else statement_timeout_ms / 1000 + CALL_TIMEOUT_MARGIN_S
        )
        self._sql = _Sql(self.schema)
        self._pool: psycopg_pool.AsyncConnectionPool | None = None
        #: Set when a connection died or none could be had: the next call
        #: first checks that the server answers, then starts a fresh pool.
        self._suspect = False
        self._renewing = asyncio.Lock()
        self._probe_failed: tuple[float, StoreUnavailable] | None = None  # (when, what it said)
        self._retired: set[asyncio.Task] = set()

    def __repr__(self) -> str:
        return f"PostgresShard({self.name!r}, schema={self.schema!r})"

    # -- lifecycle -------------------------------------------------------------

    def _connect_kwargs(self) -> dict[str, Any]:
        return {
            # Autocommit: a read is one statement, hence one snapshot; `apply`
            # and `dump` open their transactions explicitly.
            "autocommit": True,
            "context": _ADAPTERS,
            "connect_timeout": self.connect_timeout_s,
            "application_name": f"ordo-{self.name}"[:IDENTIFIER_BYTES_MAX],
            "options": f"{self._dsn_options} -c statement_timeout={int(self.statement_timeout_ms)}".strip(),
            # A peer that vanishes without closing the socket (a partition, a
            # killed VM) is noticed in seconds, not after the kernel's two hours.
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
            "tcp_user_timeout": 10_000,
        }

    def _new_pool(self) -> psycopg_pool.AsyncConnectionPool:
        # No `check` callback: it would cost a round trip per call.  A dead
        # connection is noticed by the call that uses it, and `_run` recovers.
        return psycopg_pool.AsyncConnectionPool(
            self.dsn,
            kwargs=self._connect_kwargs(),
            min_size=1,
            max_size=self.pool_max,
            open=False,
            timeout=self.acquire_timeout_s,
            name=f"ordo-{self.name}",
        )

    async def open(self) -> None:
        if self._pool is not None:
            return
        await self._probe("open")  # fails at once, with libpq's reason, if nothing answers
        pool = self._new_pool()
        try:
            await pool.open(wait=True, timeout=self.acquire_timeout_s)
        except psycopg.OperationalError as exc:
            await pool.close()
            raise self._unavailable("open", exc) from exc
        self._pool, self._suspect = pool, False
        try:
            await self._run("create schema", self._create_schema)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        if self._retired:
            await asyncio.gather(*self._retired, return_exceptions=True)

    async def _create_schema(self, conn: psycopg.AsyncConnection) -> None:
        async with conn.transaction():
            # Two processes opening the same shard at once would race on
            # CREATE ... IF NOT EXISTS; the advisory lock serializes them.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("ordo:" + self.schema,))
            await conn.execute(self._sql.ddl)
            await conn.execute(self._sql.init_meta, (self.name, SCHEMA_VERSION))
            shard, version, _ = await _one(conn, self._sql.read_meta)
        if shard != self.name:
            raise ConfigError(f"postgres schema {self.schema} holds shard {shard!r}, not {self.name!r}")
        if version != SCHEMA_VERSION:
            raise ConfigError(
                f"postgres shard {self.name}: schema {self.schema} has layout version {version}, "
                f"this build reads version {SCHEMA_VERSION}"
            )

    # -- connections and errors ----------------------------------------------

    def _unavailable(self, what: str, exc: BaseException) -> StoreUnavailable:
        text = str(exc).strip()
        detail = " ".join(text.split()) if text else type(exc).__name__
        return StoreUnavailable(f"postgres shard {self.name} (schema {self.schema}): {what} failed: {detail}")

    async def _probe(self, what: str) -> None:
        """Connect once, outside the pool: raises StoreUnavailable within `connect_timeout_s`."""
        try:
            conn = await psycopg.AsyncConnection.connect(self.dsn, **self._connect_kwargs())
        except (psycopg.OperationalError, OSError) as exc:
            raise self._unavailable(what, exc) from exc
        await conn.close()

    async def _probe_shared(self, what: str, waiting_since: float) -> None:
        """`_probe`, except that callers queued behind a failed probe share its failure.

        Without that, on a network that drops packets silently, N queued
        callers would each wait out connect_timeout_s in turn.
        """
        failed = self._probe_failed
        if failed is not None and failed[0] >= waiting_since:
            cause = str(failed[1]).split(" failed: ", 1)[-1]
            raise StoreUnavailable(f"postgres shard {self.name} (schema {self.schema}): {what} failed: {cause}")
        try:
            await self._probe(what)
        except StoreUnavailable as exc:
            self._probe_failed = (time.monotonic(), exc)
            raise
        self._probe_failed = None

    async def _usable_pool(self, what: str) -> psycopg_pool.AsyncConnectionPool:
        """The pool, renewed first if the last call found the server gone.

        A pool that lived through an outage holds dead connections and
        reconnection attempts backing off for seconds; a fresh one connects
        at once.  The old pool is closed in the background: connections
        other calls still use are closed as they come back.
        """
        if self._pool is None:
            raise StoreUnavailable(f"postgres shard {self.name}: {what} before open() (or after close())")
        if self._suspect:
            waiting_since = time.monotonic()
            async with self._renewing:
                if self._suspect and self._pool is not None:
                    await self._probe_shared(what, waiting_since)
                    old, self._pool = self._pool, self._new_pool()
                    await self._pool.open(wait=False)
                    self._suspect = False
                    task = asyncio.create_task(old.close(timeout=self.acquire_timeout_s))
                    self._retired.add(task)
                    task.add_done_callback(self._retired.discard)
        if self._pool is None:
            raise StoreUnavailable(f"postgres shard {self.name}: closed during {what}")
        return self._pool

    async def _run(self, what: str, work: Callable[[psycopg.AsyncConnection], Awaitable[T]]) -> T:
        """`work` on a pooled connection, with psycopg's errors mapped to ordo's.

        A connection found dead (the server restarted while it idled in the
        pool) marks the pool suspect, and `work` runs once more if a fresh
        connection succeeds.  That is safe for `apply` too: if the first
        run's COMMIT landed before the connection died, the guard makes the
        second run write nothing.
        """
        for attempt in (1, 2):
            pool = await self._usable_pool(what)
            lost = False
            try:
                async with pool.connection() as conn:
                    try:
                        async with asyncio.timeout(self.call_timeout_s):
                            return await work(conn)
                    except (psycopg.OperationalError, psycopg.InterfaceError, TimeoutError):
                        lost = conn.broken or conn.closed
                        raise
            except (psycopg.IntegrityError, psycopg.DataError) as exc:
                # The database refused a row the contract forbids: retrying
                # the same batch cannot succeed, and it must not be skipped.
                message = exc.diag.message_primary or str(exc)
                constraint = f" ({exc.diag.constraint_name})" if exc.diag.constraint_name else ""
                raise InvariantViolation(
                    f"postgres shard {self.name}: {what} refused by the database: {message}{constraint}"
                ) from exc
            except psycopg_pool.PoolClosed as exc:
                if self._pool is pool or attempt == 2:  # closed by close(), not renewed under us
                    raise self._unavailable(what, exc) from exc
            except psycopg_pool.PoolTimeout as exc:
                # No connection within acquire_timeout_s: the server is down
                # (the probe says why) or every connection is busy.
                self._suspect = True
                await self._probe(what)
                raise self._unavailable(what, exc) from exc
            except TimeoutError as exc:
                self._suspect = True  # the server stopped answering: check it before the next call
                raise self._unavailable(what, TimeoutError(f"no answer within {self.call_timeout_s:g} s")) from exc
            except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as exc:
                self._suspect = self._suspect or lost
                if not lost or attempt == 2:
                    raise self._unavailable(what, exc) from exc
            except psycopg.Error as exc:
                # Anything else the server reports (a dropped table, a
                # corrupt page) is the store's trouble, not the batch's:
                # the runner logs it and retries.
                raise self._unavailable(what, exc) from exc
        raise InvariantViolation(f"postgres shard {self.name}: {what} neither returned nor raised")

    # -- writes ------------------------------------------------------------------

    async def applied_epoch(self) -> int:
        async def read(conn: psycopg.AsyncConnection) -> int:
            return (await _one(conn, self._sql.read_meta))[2]

        return await self._run("read applied_epoch", read)

    # TLA+: Ordo!ShardApply -- effects and applied_epoch in one transaction.
    async def apply(self, batches: Sequence[ShardBatch]) -> int:
        if not batches:
            return 0

        async def write(conn: psycopg.AsyncConnection) -> int:
            async with conn.transaction():
                (applied,) = await _one(conn, self._sql.lock_meta)
                todo = check_batches(applied, batches, self.name)
                if todo:
                    await self._write(conn, todo, applied)
            return len(todo)

        return await self._run(f"apply epochs {batches[0].epoch}..{batches[-1].epoch}", write)

    async def _write(self, conn: psycopg.AsyncConnection, todo: Sequence[ShardBatch], applied: int) -> None:
        """Every row of `todo` and the new `applied_epoch`: one statement, one round trip."""
        try:
            params = _write_params(todo, applied)
        except (struct.error, UnicodeEncodeError, TypeError, AttributeError) as exc:
            raise InvariantViolation(
                f"postgres shard {self.name}: a row in epochs {todo[0].epoch}..{todo[-1].epoch} "
                f"does not fit its column (BIGINT is -2**63..2**63-1, hashes bytes, codes str): {exc}"
            ) from exc
        balances_written, moved = await _one(conn, self._sql.write, params)
        balances_given = sum(len(b.balances) for b in todo)
        if balances_written != balances_given:
            raise InvariantViolation(
                f"postgres shard {self.name}: {balances_given - balances_written} balance versions in "
                f"epochs {todo[0].epoch}..{todo[-1].epoch} name no account with the same static fields"
            )
        if moved != 1:  # cannot happen under the row lock; checked because it must not
            raise InvariantViolation(f"postgres shard {self.name}: applied_epoch moved during apply")

    # -- preload and reads -------------------------------------------------------

    async def _rows(self, what: str, query: str, params: Sequence[Any]) -> list[tuple]:
        async def read(conn: psycopg.AsyncConnection) -> list[tuple]:
            return await (await conn.execute(query, params)).fetchall()

        return await self._run(what, read)

    async def load_accounts(self, ids: Collection[int], at_epoch: int) -> dict[int, Account]:
        if not ids:
            return {}
        rows = await self._rows("load accounts", self._sql.load_accounts, (_ids(ids), _bound(at_epoch)))
        return {row[0]: _account(row) for row in rows}

    async def load_transfers(self, ids: Collection[int], at_epoch: int) -> dict[int, TransferRecord]:
        if not ids:
            return {}
        rows = await self._rows("load transfers", self._sql.load_transfers, (_ids(ids), _bound(at_epoch)))
        return {row[0]: _record(row) for row in rows}

    async def load_resolutions(self, pending_ids: Collection[int], at_epoch: int) -> dict[int, Resolution]:
        if not pending_ids:
            return {}
        params = (_ids(pending_ids), _bound(at_epoch))
        rows = await self._rows("load resolutions", self._sql.load_resolutions, params)
        return {row[0]: Resolution(*row) for row in rows}

    async def load_open_pendings(self, at_epoch: int) -> list[TransferRecord]:
        rows = await self._rows("load open pendings", self._sql.load_open_pendings, (_bound(at_epoch),) * 2)
        return [_record(row) for row in rows]

    async def read_postings(self, account_id: int, at_epoch: int, after_seq: int = 0, limit: int = 100) -> list[Posting]:
        if limit <= 0 or not 0 <= account_id <= U63_MAX:
            return []
        params = (account_id, _bound(after_seq), _bound(at_epoch), _bound(limit))
        rows = await self._rows("read postings", self._sql.read_postings, params)
        return [Posting(*row) for row in rows]

    async def read_results(self, epoch: int) -> list[EventResult]:
        if not 0 <= epoch <= U63_MAX:
            return []
        rows = await self._rows("read results", self._sql.read_results, (epoch,))
        return [EventResult(*row) for row in rows]

    async def dump(self, at_epoch: int) -> ShardDump:
        async def read(conn: psycopg.AsyncConnection) -> list[list[tuple]]:
            # One snapshot for the five queries.  Reads at `at_epoch` are
            # stable anyway (rows are versioned), but a dump is evidence.
            async with conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                return [
                    await (await conn.execute(query, (_bound(at_epoch),))).fetchall()
                    for query in (self._sql.dump_accounts, self._sql.dump_postings, self._sql.dump_transfers,
                                  self._sql.dump_resolutions, self._sql.dump_results)
                ]

        accounts, postings, transfers, resolutions, results = await self._run("dump", read)
        return ShardDump(
            shard=self.name,
            at_epoch=at_epoch,
            accounts=[_account(row) for row in accounts],
            postings=[Posting(*row) for row in postings],
            transfers=[_record(row) for row in transfers],
            resolutions=[Resolution(*row) for row in resolutions],
            results=[EventResult(*row) for row in results],
        )

    # -- hash chains (ordo verify) ---------------------------------------------

    async def walk_chain(self, account_id: int, at_epoch: int) -> AsyncIterator[Posting]:
        """The postings of `account_id` visible at `at_epoch`, walked along the chain from seq 1.

        The walk happens in SQL (`_WALK_CHAIN`): every posting yielded links
        to the one before it by seq and by hash, and the walk stops at the
        first link that does not.  `CHAIN_PAGE_SIZE` postings per query keep
        memory bounded on long chains.  Hashes are recomputed by the caller
        (`executor/verify.py: verify_account_chain`), since only the executor knows how.
        """
        if not 0 <= account_id <= U63_MAX:
            return
        params = {"account_id": account_id, "seq": 1, "at_epoch": _bound(at_epoch),
                  "prev_hash": None, "limit": CHAIN_PAGE_SIZE}
        while True:
            page = [Posting(*row) for row in await self._rows("walk hash chain", self._sql.walk_chain, params)]
            for posting in page:
                yield posting
            if len(page) < CHAIN_PAGE_SIZE:
                return
            params.update(seq=page[-1].seq + 1, prev_hash=page[-1].hash)
