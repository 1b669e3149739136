"""The bench's constants, each with its reason.

Role: driver (tools); part of `ordo bench`.
"""

from __future__ import annotations

import sys

from rich.console import Console


#: Piped output (CI logs, `| tee`) gets wide tables instead of rich's 80 columns.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)

#: Ids of one tape: tape k draws ids from seed*1e9 + (k+1)*1e8, so tapes
#: never collide with each other nor with the funding transfers (ids below
#: seed*1e9 + 1e8, one per account).
TAPE_IDS_SPAN = 10**8
#: Every this many ordo requests, one is sampled for the stage breakdown:
#: sent with `ack=committed`, then followed by a read at its HLC.  Often
#: enough for stable percentiles in a few seconds, rare enough that the
#: extra read does not change the load.
STAGE_SAMPLE_EVERY = 10
#: Draws of a partner account before falling back to a uniform choice on the
#: wanted shard (hot skew over a tiny account set can make a match rare).
PAIR_TRIES_MAX = 32
#: Open loop: requests in flight beyond this are counted as dropped rather
#: than sent, so that a saturated cluster cannot make the bench itself grow
#: without bound.  10k requests is far past any latency worth measuring.
OPEN_INFLIGHT_MAX = 10_000
#: Accounts and funding are created with this many requests in flight.
SETUP_CONCURRENCY = 8
#: How often the live display and the throughput timeline are refreshed.
TICK_S = 0.5
#: Points of each latency CDF stored in results.json (the plot uses all samples).
CDF_POINTS = 200
FUNDING_AMOUNT = 1_000_000
#: Transfers drawn before a run: its expected rate x its seconds x this.  A
#: run that outpaces the draw still works (it draws on the fly), but then
#: the client's drawing competes with the cluster for CPU.
DRAW_AHEAD_MARGIN = 1.3
#: Expected closed-loop rate before any run has measured one (transfers/s).
CLOSED_TPS_GUESS = 10_000
#: The sequencer alone, without execution, ran ~4x the end-to-end peak here,
#: and at least this many intents/s.
SEQUENCER_SPEEDUP_GUESS = 4
SEQUENCER_TPS_GUESS = 40_000
#: Groups fingerprinted per run in results.json, to show every system got the same transfers.
TAPE_DIGEST_GROUPS = 1000

#: Cores other processes may use during a run before the report flags it as shared.
SHARED_CORES_MAX = 0.25

TARGET_E2E_TPS = 50_000
TARGET_SEQUENCER_IPS = 100_000
TARGET_MONOLITH_RATIO = 10.0
TARGET_SKEW_SPREAD = 0.20
TARGET_P99_MS = 50.0


