"""Limits of the HTTP edge and of epoch sizing, each with its unit and its reason.

Owned here: every limit the trust boundary depends on, and the worst-case
encoded size of an intent, computed from an encoded max-valued intent rather
than guessed (a guessed 40 bytes per intent once let a valid request crash
the leader).  Relations between these and the configuration are checked at
import (below) and at config load (`ClusterConfig.check`).  Read by the API
(`sequencer/api.py`), the node (`sequencer/node.py`) and the config.
"""

from __future__ import annotations

import msgspec

from sequencer.batcher import EPOCH_BYTES_MAX_DEFAULT, EPOCH_ITEMS_MAX_DEFAULT
from sequencer.errors import InvariantViolation
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
#: An intent's index in its dependency group (indices are < epoch_items_max).
GROUP_INDEX_BYTES_MAX = len(_encode(EPOCH_ITEMS_MAX_DEFAULT - 1))
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


def _check_at_import() -> None:
    from sequencer import wire

    worst = request_bytes_max(wire.BATCH_EVENTS_MAX)
    if worst > epoch_budget_bytes(EPOCH_BYTES_MAX_DEFAULT):
        raise InvariantViolation(f"the largest request ({worst} bytes) does not fit the default epoch")
    if not HEADER_READ_TIMEOUT_MS < IDLE_TIMEOUT_MS:
        raise InvariantViolation("HEADER_READ_TIMEOUT_MS must be below IDLE_TIMEOUT_MS")


_check_at_import()
