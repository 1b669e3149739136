"""Every limit of ordo, once, with its unit and its reason (TigerBeetle's constants.zig).

Role: shared by every core and driver.

Owned here: the numbers that bound a queue, a batch, a buffer, a request or
a timeout, and the relations between them.  Derived values are computed, not
repeated: the worst-case encoded size of an intent comes from an encoded
max-valued intent (a guessed 40 bytes per intent once let a valid request
crash the leader).  The relations are functions (`check_*`), run on the
defaults at import and on the configured values at config load
(`sequencer/config.py`), so a bad combination fails before anything starts.
Every module reads its limits from here; the configuration's dataclasses
take their defaults from here.  The one exception is deliberate: a store's
own tuning (PostgreSQL's pool, Cassandra's batch shapes, SQLite's pragmas)
is defined once in its proxy, with its reason, because nothing else uses it
and it changes with the store, not with ordo.
"""

from __future__ import annotations

import msgspec

from sequencer.errors import ConfigError, InvariantViolation
from sequencer.types import (
    ACCOUNT_FLAGS_ALL,
    CODE_MAX,
    LEDGER_MAX,
    TIMEOUT_MS_MAX,
    TRANSFER_FLAGS_ALL,
    U63_MAX,
    CreateAccount,
    CreateTransfer,
)

# --------------------------------------------------------------- epochs

#: Calvin's epoch length: long enough to batch a burst into one Raft round
#: trip, short enough that it is a small part of a transfer's latency.
EPOCH_MS = 10
#: Largest epoch.  pysyncobj broke with a 64 KiB entry ("pickle data was
#: truncated") and 16 KiB entries under load caused leader churn with its
#: default timeouts (DESIGN.md).  12 KiB keeps a 25% margin under the size
#: that churned and holds the largest request (`check_request_fits`).
EPOCH_BYTES_MAX = 12 * 1024
#: Hard ceiling for any configured epoch: where pysyncobj's chunked
#: transmission broke.  The tighter 16 KiB depends on the Raft timeouts.
EPOCH_BYTES_CEILING = 64 * 1024
#: Most items (request batches) per epoch.  Items are at least tens of
#: bytes, so 12 KiB holds a few hundred; 1,024 never binds in normal
#: operation.  It bounds the per-epoch work if a caller passes tiny sizes,
#: and keeps one epoch's stamps far from the HLC's 65,536 per millisecond.
EPOCH_ITEMS_MAX = 1024

# ------------------------------------------------------------------ Raft

#: Election timeout range.  pysyncobj's defaults (0.4-1.4 s) churned
#: leaders on 2 loaded cores; 1.0-2.5 s still elects within ~3 s.
ELECTION_TIMEOUT_MS_MIN = 1000
ELECTION_TIMEOUT_MS_MAX = 2500
#: Heartbeat period: well under the election timeout (a quarter at most),
#: so a busy but healthy leader is never deposed.
APPEND_ENTRIES_PERIOD_MS = 100
#: How often pysyncobj's thread wakes up when idle.  Commands wake it at
#: once, so this bounds only timer resolution, not commit latency.
RAFT_TICK_MS = 5
#: One append_entries message: several epochs, never a split one, and under
#: the 64 KiB at which pysyncobj's chunked transmission broke.
APPEND_ENTRIES_BATCH_BYTES = 48 * 1024

# ------------------------------------------------------------- sequencer

#: Request batches waiting for the sequencer, per leader.  At 128 events
#: each this is ~32k intents, about a second of peak load: enough to absorb
#: a burst, small enough that a 429 tells clients to back off early.
QUEUE_BATCHES_MAX = 256
#: How long a request waits for its epoch to commit and apply before the
#: API gives up with 504 (the intent may still apply: retry with the same id).
ACK_TIMEOUT_MS = 30_000
#: A timestamp may be at most this far ahead of ours.  NTP keeps healthy
#: hosts within a few ms of each other, so half a second ahead means a
#: broken clock, and accepting it would drag every later timestamp of this
#: cluster that far into the future.
MAX_OFFSET_MS = 500
#: W poll period while requests wait: twice per 10 ms epoch, so W is seen
#: at most 5 ms late.  2 ms (one query per shard every 2 ms) put 21% of the
#: leader's CPU samples in psycopg's send under `ordo bench --profile`.
W_POLL_BUSY_MS = 5
#: W poll period when nobody waits (reads refresh W themselves).
W_POLL_IDLE_MS = 100
#: A node is not ready (`/readyz` 503) once W has stayed behind its log this
#: long.  The executor applies an epoch within tens of milliseconds and an
#: election takes about 3 s, so 5 s without progress means the executor or a
#: store is down or stuck.
READY_W_STALL_MS = 5_000
#: Epochs of results a node keeps for waiting requests: the requests of one
#: epoch all arrive within a few ms of each other, so a few hundred epochs
#: cover every waiter with room to spare.
RESULTS_EPOCHS_MAX = 256

# -------------------------------------------------------------- requests

#: Largest batch one request may carry.  A batch is never split across
#: epochs (a linked chain must be ordered as one unit), so the largest batch
#: must fit one epoch (`check_request_fits`).
BATCH_EVENTS_MAX = 128
#: Largest request body: 128 events of ~400 bytes of JSON each, with slack.
BODY_BYTES_MAX = 128 * 1024
#: Accounts one snapshot read (`GET /v1/accounts?ids=`) may ask for.
SNAPSHOT_IDS_MAX = 128
#: Postings returned per page of account history.
HISTORY_LIMIT_MAX = 1000
#: Epochs handed to an executor per /v1/log call, how long it may wait, and
#: the bytes one answer may hold (about 300 epochs of 12 KiB).
LOG_LIMIT_MAX = 256
LOG_WAIT_MS_MAX = 5_000
LOG_RESPONSE_BYTES_MAX = 4 * 1024 * 1024
#: How long one client submission keeps retrying before it gives up.  An
#: election takes a few seconds; a minute covers several back to back.
SUBMIT_DEADLINE_S = 60.0

# -------------------------------------------------------------- executor

#: Epochs fetched per /v1/log call: about 0.6 s of log at full rate.
FETCH_EPOCHS_MAX = 64
#: How long one /v1/log call may wait for new epochs.
FETCH_WAIT_MS = 1000
#: Batches a pusher may hold.  Past this the executor waits for the slowest
#: store instead of running ahead of it without bound (memory is finite).
PUSH_QUEUE_EPOCHS_MAX = 256
#: Largest group commit: 64 epochs, at most ~20k intents in one transaction.
COALESCE_EPOCHS_MAX = 64
#: Epochs a key stays in the executor's cache after it was last touched.
#: At ~100 epochs/s that is over a second of hot accounts (a Zipf workload
#: touches the same few again and again), while the cache of a long run
#: stays bounded by the keys of the last CACHE_EPOCHS epochs.
CACHE_EPOCHS = 128

# ------------------------------------------------------------ epoch sizing

_encode = msgspec.msgpack.encode

#: The largest encoding of any intent: every field at its maximum.
INTENT_BYTES_MAX = max(
    len(_encode(CreateTransfer(U63_MAX, U63_MAX, U63_MAX, U63_MAX, LEDGER_MAX, CODE_MAX, TRANSFER_FLAGS_ALL,
                               U63_MAX, TIMEOUT_MS_MAX, U63_MAX))),
    len(_encode(CreateAccount(U63_MAX, LEDGER_MAX, CODE_MAX, ACCOUNT_FLAGS_ALL, U63_MAX))),
)
#: An intent's HLC stamp: a packed timestamp is a uint64.
STAMP_BYTES_MAX = len(_encode(2**64 - 1))
#: The smallest encoding of any intent: every field at zero.
INTENT_BYTES_MIN = min(len(_encode(CreateAccount(0, 0, 0))), len(_encode(CreateTransfer(0, 0, 0, 0, 0, 0))))
#: An intent's index in its dependency group.  An epoch is under
#: EPOCH_BYTES_CEILING and every intent takes INTENT_BYTES_MIN of it, so
#: indices stay below 65,536: a uint16 (checked at import).
GROUP_INDEX_BYTES_MAX = len(_encode(2**16 - 1))
#: A group's array header, charged to every intent: at worst each intent is
#: its own group (fixarray, 1 byte); groups of 16 or more have a 3-byte
#: header shared by at least 16 intents.
GROUP_FRAME_BYTES_PER_INTENT = 1
#: What an intent adds to an epoch beyond its own encoding.
INTENT_OVERHEAD_BYTES = STAMP_BYTES_MAX + GROUP_INDEX_BYTES_MAX + GROUP_FRAME_BYTES_PER_INTENT
#: A submission's entry in the epoch's `bounds` (a uint16 while items < 65,536).
BOUND_BYTES_MAX = len(_encode(2**16 - 1))
#: The epoch's own framing: its array header, its number (uint64) and the
#: headers of its four arrays (stamps, intents, bounds, groups; array16 each).
EPOCH_FRAME_BYTES_MAX = 1 + len(_encode(2**64 - 1)) + 4 * 3


def request_bytes_max(events: int) -> int:
    """The most bytes a request of `events` intents can add to an epoch."""
    return events * (INTENT_BYTES_MAX + INTENT_OVERHEAD_BYTES) + BOUND_BYTES_MAX


def submission_bytes(encoded_list_bytes: int, events: int) -> int:
    """What one submission adds to an epoch, from the encoding of its intent list.

    Exact enough to pack epochs tightly (typical intents are half the
    maximum), and an upper bound: the list's own header is counted although
    the epoch does not repeat it.
    """
    return encoded_list_bytes + events * INTENT_OVERHEAD_BYTES + BOUND_BYTES_MAX


def epoch_budget_bytes(epoch_bytes_max: int) -> int:
    """What the batcher may fill: the epoch's limit less its own framing."""
    return epoch_bytes_max - EPOCH_FRAME_BYTES_MAX


# ---------------------------------------------------------------- HTTP edge

#: A new connection (or a keep-alive one that started a new request) must
#: deliver its request line and headers within this time, or it is closed.
#: Real clients send ~1 KiB of headers in one packet; 5 s covers a slow
#: mobile link with retransmits, and holds a slowloris socket only briefly.
HEADER_READ_TIMEOUT_MS = 5_000
#: A request body must arrive whole within this time, or the request gets
#: 408 and the connection is closed.  The largest body (BODY_BYTES_MAX,
#: 128 KiB) takes 8 s at 128 kbit/s.
BODY_READ_TIMEOUT_MS = 10_000
#: An idle keep-alive connection is closed after this.  Above the 15 s that
#: client pools (aiohttp's default) keep idle connections, so the client
#: closes first and never sends on a socket the server just closed.
IDLE_TIMEOUT_MS = 30_000
#: Open connections per node; past it a new connection gets 503 and is
#: closed.  Each connection costs a file descriptor and ~100 KiB of buffers
#: at worst; 1,000 stays under the usual 1,024-descriptor soft limit with
#: room for the stores, the Raft peers and the journals.
CONNECTIONS_MAX = 1_000
#: After answering a request whose body was not read (a 413, 415 or 401),
#: the server reads and discards what is still arriving for at most this
#: long before closing, so the client receives the answer rather than a
#: reset.  Short, because the bytes are raw: bodies are never inflated.
LINGER_MS = 1_000
#: Longest request line or header line, and most header lines: aiohttp's
#: defaults, which every real client stays far below.
HEADER_LINE_BYTES_MAX = 8_190
HEADERS_MAX = 64
#: Longest decimal integer accepted in a path or query (2**63 has 19 digits).
#: Checked before `int()`, which would otherwise spend quadratic time on
#: (and refuse, past 4,300 digits) an attacker's huge digit strings.
INT_DIGITS_MAX = 20


def check_raft_timing(append_entries_period_ms: int, election_timeout_ms_min: int,
                      election_timeout_ms_max: int) -> None:
    if not append_entries_period_ms * 4 <= election_timeout_ms_min:
        raise ConfigError("append_entries_period_ms must be at most a quarter of election_timeout_ms_min")
    if not election_timeout_ms_min < election_timeout_ms_max:
        raise ConfigError("election_timeout_ms_min must be below election_timeout_ms_max")


def check_epoch_bytes(epoch_bytes_max: int, append_entries_batch_bytes: int) -> None:
    if not 1 <= epoch_bytes_max < EPOCH_BYTES_CEILING:
        raise ConfigError(f"epoch_bytes_max must be in [1, 64 KiB) (pysyncobj breaks at 64 KiB), not {epoch_bytes_max}")
    if not epoch_bytes_max * 2 <= append_entries_batch_bytes < EPOCH_BYTES_CEILING:
        raise ConfigError("append_entries_batch_bytes must hold two epochs and stay below 64 KiB")


def check_request_fits(epoch_bytes_max: int) -> None:
    """The largest valid request, at its worst-case encoded size, must fit one epoch:
    a batch is never split (linked chains), so one that does not fit could never be sequenced."""
    need = request_bytes_max(BATCH_EVENTS_MAX) + EPOCH_FRAME_BYTES_MAX
    if need > epoch_bytes_max:
        raise ConfigError(
            f"epoch_bytes_max={epoch_bytes_max} cannot hold the largest request: {BATCH_EVENTS_MAX} max-valued "
            f"intents encode to {request_bytes_max(BATCH_EVENTS_MAX)} bytes plus {EPOCH_FRAME_BYTES_MAX} of epoch "
            f"framing; use at least {need}"
        )


def check_epoch_ms(epoch_ms: int, election_timeout_ms_min: int) -> None:
    if not 1 <= epoch_ms * 10 <= election_timeout_ms_min:
        raise ConfigError("epoch_ms must be at least 1 and at most a tenth of the election timeout")


def check_http(header_read_timeout_ms: int, idle_timeout_ms: int) -> None:
    if not header_read_timeout_ms < idle_timeout_ms:
        raise ConfigError("[http] header_read_timeout_ms must be below idle_timeout_ms")


def _check_at_import() -> None:
    if EPOCH_BYTES_CEILING // INTENT_BYTES_MIN >= 2**16:
        raise InvariantViolation("an epoch could hold 65,536 intents: GROUP_INDEX_BYTES_MAX is too small")
    try:
        check_raft_timing(APPEND_ENTRIES_PERIOD_MS, ELECTION_TIMEOUT_MS_MIN, ELECTION_TIMEOUT_MS_MAX)
        check_epoch_bytes(EPOCH_BYTES_MAX, APPEND_ENTRIES_BATCH_BYTES)
        check_request_fits(EPOCH_BYTES_MAX)
        check_epoch_ms(EPOCH_MS, ELECTION_TIMEOUT_MS_MIN)
        check_http(HEADER_READ_TIMEOUT_MS, IDLE_TIMEOUT_MS)
    except ConfigError as exc:
        raise InvariantViolation(f"the defaults in sequencer/limits.py break a relation: {exc}") from None


_check_at_import()
