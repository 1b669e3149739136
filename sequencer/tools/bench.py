"""`ordo bench`: throughput and latency of a cluster, against two PostgreSQL baselines.

Owned here: load generation through the HTTP API (a closed loop of N clients
sending batches, and an open loop at a fixed rate), the measurements
(applied transfers/s, ack latency percentiles, a per-stage breakdown from a
sample of requests, CPU seconds per process), the sweep over zipf skew, the
targets table, and the results directory (`results.json` and PNG plots).
The baselines live in `sequencer/tools/baselines.py`; this module drives them with
the same closed loop.  Called by `ordo bench` (`sequencer/tools/cli.py`) and by
`tests/test_bench.py`.

One seed reproduces a run (STYLE 2).  Accounts and transfers come from
`--seed`; every system under test replays the same `GroupTape` from its
start, so ordo and the baselines see the same transfers in the same order.
Targets are reported, never asserted: a 2-core machine shared with the
clients is noisy, and a benchmark that fails on noise teaches nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import math
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sequencer.client import OrdoClient
from sequencer.tools.cluster import LocalCluster, write_cluster_config
from sequencer.errors import ConfigError
from sequencer.tools.stats import percentiles
from sequencer.types import ACK_OK, hlc_ms
from sequencer.limits import BATCH_EVENTS_MAX
from sequencer.tools.workload import Mix, Workload

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


# ------------------------------------------------------------------ workload


class BenchWorkload(Workload):
    """`Workload` plus a cross-shard knob and an endless stream of event groups.

    With the embedded directory an account lives on shard `id % shards`; a
    pair on the same shard touches one store, a pair on two shards makes the
    executor push to both.  `cross_shard` is the share of pairs drawn across
    shards (None keeps `Workload`'s choice: whatever the draw gives).
    """

    def __init__(self, seed: int, accounts: int, mix: Mix, shards: int = 2, cross_shard: float | None = None,
                 tape_index: int | None = None) -> None:
        super().__init__(seed, accounts, mix)
        self.shards = shards
        self.cross_shard = cross_shard
        self._on_shard = {r: [a for a in self.account_ids if a % shards == r] for r in range(shards)}
        if tape_index is not None:
            self._ids = itertools.count(seed * 10**9 + (tape_index + 1) * TAPE_IDS_SPAN + 1)

    def _pair(self) -> tuple[int, int]:
        if self.cross_shard is None or self.shards < 2:
            return super()._pair()
        a = self._pick()
        cross = self.rng.random() < self.cross_shard
        for _ in range(PAIR_TRIES_MAX):
            b = self._pick()
            if b != a and (a % self.shards != b % self.shards) == cross:
                return a, b
        side = (a + 1) % self.shards if cross else a % self.shards
        candidates = [x for x in self._on_shard[side] if x != a] or [x for x in self.account_ids if x != a]
        return a, self.rng.choice(candidates)

    def accounts_list(self) -> list[dict]:
        return [a for batch in self.account_batches(BATCH_EVENTS_MAX) for a in batch]

    def groups(self) -> Iterator[list[dict]]:
        """One transfer or one linked chain at a time, for ever (as `transfer_batches` draws them)."""
        while True:
            group = self._event_group()
            yield group
            self._sent.extend(g for g in group if not g.get("flags"))
            if len(self._sent) > 10_000:
                del self._sent[: len(self._sent) - 10_000]


class GroupTape:
    """The groups of one workload, drawn once and replayed to every system."""

    def __init__(self, workload: BenchWorkload) -> None:
        self._draw = workload.groups()
        self.groups: list[list[dict]] = []
        self.ends: list[int] = []  # events in groups[0..i]
        self.events = 0

    def fill(self, events: int) -> None:
        while self.events < events:
            group = next(self._draw)
            self.groups.append(group)
            self.events += len(group)
            self.ends.append(self.events)

    def ensure(self, cursor: TapeCursor, events: int) -> None:
        """Draw `events` beyond the cursor now, so that no run draws while it is measured.

        Drawing costs ~12 us per event in the bench process, which shares the
        machine with the cluster: at 30k intents/s, drawing on the fly took a
        third of the client's CPU.
        """
        done = self.ends[cursor.index - 1] if 0 < cursor.index <= len(self.ends) else 0
        self.fill(done + events)

    def group(self, index: int) -> list[dict]:
        while index >= len(self.groups):
            self.fill(self.events + 1)
        return self.groups[index]

    def cursor(self, start: int = 0) -> TapeCursor:
        return TapeCursor(self, start)

    def digest(self, start: int, groups: int = TAPE_DIGEST_GROUPS) -> str:
        """A fingerprint of the transfers from `start` on: equal digests, equal transfers."""
        h = hashlib.sha256()
        for i in range(start, start + groups):
            h.update(json.dumps(self.group(i), sort_keys=True).encode())
        return h.hexdigest()[:16]


class TapeCursor:
    """One reader of a tape; units are groups (baselines) or batches of whole groups (ordo)."""

    def __init__(self, tape: GroupTape, start: int = 0) -> None:
        self.tape = tape
        self.index = start

    def next_group(self) -> list[dict]:
        group = self.tape.group(self.index)
        self.index += 1
        return group

    def next_batch(self, size: int) -> list[dict]:
        batch = list(self.next_group())
        while len(batch) + len(self.tape.group(self.index)) <= size:
            batch.extend(self.next_group())
        return batch


# -------------------------------------------------------------- measurement


def cdf_points(values: list[float], points: int = CDF_POINTS) -> list[list[float]]:
    """[latency, fraction at or below] at evenly spaced fractions, plus the tail (p99 .. max)."""
    if not values:
        return []
    ordered = sorted(values)
    n = len(ordered)
    fractions = [i / points for i in range(1, points)] + [0.99, 0.995, 0.999, 0.9995, 0.9999]
    idx = sorted({min(n - 1, max(0, math.ceil(f * n) - 1)) for f in fractions} | {0, n - 1})
    return [[round(ordered[i], 3), round((i + 1) / n, 5)] for i in idx]


@dataclass
class Window:
    """The measured interval: after the warm-up, until the deadline (monotonic seconds)."""

    begin: float
    start: float
    end: float

    @classmethod
    def from_now(cls, warmup_s: float, duration_s: float) -> Window:
        now = time.monotonic()
        return cls(now, now + warmup_s, now + warmup_s + duration_s)

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def counts(self, t: float) -> bool:
        return self.start <= t <= self.end


@dataclass
class Recorder:
    """What one run measured; units are requests (ordo) or transactions (baselines)."""

    window: Window
    latencies_ms: list[float] = field(default_factory=list)
    events: int = 0
    units: int = 0
    events_total: int = 0
    inflight: int = 0
    dropped: int = 0
    results: Counter = field(default_factory=Counter)
    retries: Counter = field(default_factory=Counter)
    stages_ms: dict[str, list[float]] = field(default_factory=lambda: {
        "api_to_stamp": [], "stamp_to_commit": [], "api_to_commit": [], "commit_to_applied": []})
    timeline: list[tuple[float, int]] = field(default_factory=list)
    other_cpu_s: float | None = None  # CPU used by processes not under test during the window
    epochs: int | None = None  # committed during the window (ordo only)
    applied_epochs: int | None = None  # by which W advanced during the window

    def record(self, t0: float, t1: float, codes: list[str]) -> None:
        self.events_total += len(codes)
        if not self.window.counts(t1):
            return
        self.latencies_ms.append((t1 - t0) * 1000)
        self.events += len(codes)
        self.units += 1
        self.results.update(codes)

    def count_only(self, t1: float, codes: list[str]) -> None:
        """Events of a sampled request: throughput, not the ack-latency distribution."""
        self.events_total += len(codes)
        if self.window.counts(t1):
            self.events += len(codes)
            self.results.update(codes)

    @property
    def throughput(self) -> float:
        return self.events / self.window.seconds if self.window.seconds > 0 else 0.0

    def summary(self) -> dict:
        return {
            "measured_s": round(self.window.seconds, 3),
            "transfers": self.events,
            "requests": self.units,
            "throughput_tps": round(self.throughput, 1),
            "latency_ms": _rounded(percentiles(self.latencies_ms)),
            "latency_cdf_ms": cdf_points(self.latencies_ms),
            "results": dict(self.results.most_common()),
            "retries": dict(self.retries),
            "dropped": self.dropped,
            **({"epochs_per_s": round(self.epochs / self.window.seconds, 1),
                "applied_epochs_per_s": round(self.applied_epochs / self.window.seconds, 1),
                "intents_per_epoch": round(self.events / self.epochs, 1) if self.epochs else None}
               if self.epochs is not None else {}),
            "timeline": [[round(t, 2), n] for t, n in self.timeline],
        }


def _rounded(d: dict) -> dict:
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in d.items()}


# ----------------------------------------------------------------------- CPU

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, children: bool = False) -> float | None:
    """utime+stime of a process (all its threads), and of its reaped children if asked."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the name may hold spaces; fields after it are fixed
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / _CLK_TCK


def process_tree(root: int) -> list[int]:
    """`root` and its live children (PostgreSQL's backends are the postmaster's children)."""
    kids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        if int(raw[raw.rindex(")") + 2 :].split()[1]) == root:
            kids.append(int(entry.name))
    return [root, *kids]


def machine_busy_seconds() -> float:
    """CPU seconds this machine spent busy, all processes (the first line of /proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK


class CpuMeter:
    """CPU seconds per component between `start()` and `stop()`, and what the rest of the machine used.

    "other" is every process not under test (a concurrent build, a test
    run): when it is large, the run shared the machine and its numbers are low.
    """

    def __init__(self, components: dict[str, int], trees: dict[str, int] | None = None) -> None:
        self.components = components  # label -> pid
        self.trees = trees or {}  # label -> root pid of a tree (postgres)
        self._before: dict[str, float] = {}
        self._machine_before = 0.0
        self.other_s: float | None = None

    def _read(self) -> dict[str, float]:
        out = {}
        for label, pid in self.components.items():
            value = cpu_seconds(pid)
            if value is not None:
                out[label] = value
        for label, root in self.trees.items():
            # Reaped backends' time lands in the postmaster's cutime; live ones are read directly.
            total = cpu_seconds(root, children=True) or 0.0
            total += sum(cpu_seconds(pid) or 0.0 for pid in process_tree(root)[1:])
            out[label] = total
        return out

    def start(self) -> None:
        self._before = self._read()
        self._machine_before = machine_busy_seconds()

    def stop(self) -> dict[str, float]:
        machine = machine_busy_seconds() - self._machine_before
        after = self._read()
        out = {k: round(after[k] - self._before[k], 3) for k in after if k in self._before}
        self.other_s = round(max(0.0, machine - sum(out.values())), 3)
        return out


# ------------------------------------------------------------------- display


class LiveView:
    """A live line per run: elapsed, transfers, rate over the last tick, p99 so far, in flight."""

    def __init__(self, label: str, rec: Recorder, quiet: bool) -> None:
        self.label = label
        self.rec = rec
        self.quiet = quiet
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=12), TimeElapsedColumn(),
                                 TextColumn("{task.fields[stats]}"), console=console, transient=False,
                                 disable=quiet)
        self._task = None
        self._ticker: asyncio.Task | None = None

    async def __aenter__(self) -> LiveView:
        w = self.rec.window
        self.progress.start()
        self._task = self.progress.add_task(self.label, total=w.end - w.begin, stats="")
        self._ticker = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc) -> None:
        self._ticker.cancel()
        self._refresh(time.monotonic(), self.rec.events_total)
        self.progress.stop()

    async def _tick(self) -> None:
        last_t, last_n = time.monotonic(), 0
        while True:
            await asyncio.sleep(TICK_S)
            now, done = time.monotonic(), self.rec.events_total
            self.rec.timeline.append((now - self.rec.window.begin, done))
            rate = (done - last_n) / max(1e-9, now - last_t)
            last_t, last_n = now, done
            self._refresh(now, done, rate)

    def _refresh(self, now: float, done: int, rate: float | None = None) -> None:
        rec = self.rec
        lat = rec.latencies_ms[-2000:]
        p99 = percentiles(lat)["p99"] if lat else None
        phase = "warm" if now < rec.window.start else "meas"
        stats = (f"{phase} {done:>8,} tx " + (f"{rate:>7,.0f}/s " if rate is not None else "")
                 + (f"p99 {p99:,.0f}ms " if p99 is not None else "") + f"fly {rec.inflight}"
                 + (f" retry {sum(rec.retries.values()):,}" if rec.retries else ""))
        self.progress.update(self._task, completed=min(now, rec.window.end) - rec.window.begin, stats=stats)


# ------------------------------------------------------------------- drivers

Send = Callable[[list[dict]], Awaitable[None]]


async def closed_loop(workers: list[Callable[[], Awaitable[None]]], rec: Recorder) -> None:
    """N clients, each sending its next unit as soon as the previous one is acknowledged."""

    async def loop(step: Callable[[], Awaitable[None]]) -> None:
        while time.monotonic() < rec.window.end:
            rec.inflight += 1
            try:
                await step()
            finally:
                rec.inflight -= 1

    await asyncio.gather(*(loop(w) for w in workers))


async def open_loop(step: Callable[[float], Awaitable[None]], rate_units_s: float, rec: Recorder, seed: int) -> None:
    """Units arrive as a Poisson process at `rate_units_s`, whether or not earlier ones are done.

    Latency counts from each unit's *scheduled* arrival, so a stalled cluster
    shows up as latency instead of silently slowing the arrivals down
    (coordinated omission).
    """
    rng = random.Random(seed)
    tasks: set[asyncio.Task] = set()
    due = time.monotonic()
    while due < rec.window.end:
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if rec.inflight >= OPEN_INFLIGHT_MAX:
            rec.dropped += 1
        else:
            task = asyncio.create_task(_tracked(step, due, rec))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        due += rng.expovariate(rate_units_s)
    if tasks:
        await asyncio.gather(*tasks)


async def _tracked(step: Callable[[float], Awaitable[None]], due: float, rec: Recorder) -> None:
    rec.inflight += 1
    try:
        await step(due)
    finally:
        rec.inflight -= 1


class OrdoSender:
    """Sends tape batches to ordo and records latencies, results and the stage sample."""

    def __init__(self, client: OrdoClient, cursor: TapeCursor, batch: int, rec: Recorder, ack: str = "applied",
                 sample_stages: bool = True) -> None:
        self.client = client
        self.cursor = cursor
        self.batch = batch
        self.rec = rec
        self.ack = ack
        self.sample_stages = sample_stages
        self._requests = itertools.count()

    async def step(self, scheduled: float | None = None) -> None:
        batch = self.cursor.next_batch(self.batch)
        if self.sample_stages and next(self._requests) % STAGE_SAMPLE_EVERY == 0:
            await self._sampled(batch)
            return
        t0 = scheduled if scheduled is not None else time.monotonic()
        wall0 = time.time() * 1000 - (time.monotonic() - t0) * 1000
        reply = await self.client.create_transfers(batch, ack=self.ack)
        t1 = time.monotonic()
        self.rec.record(t0, t1, [r["result"] for r in reply["results"]])
        if self.ack == "committed" and self.rec.window.counts(t1):  # every reply carries its stamp
            wall1, stamp = time.time() * 1000, hlc_ms(reply["hlc"])
            self.rec.stages_ms["api_to_stamp"].append(max(0.0, stamp - wall0))
            self.rec.stages_ms["stamp_to_commit"].append(max(0.0, wall1 - stamp))
            self.rec.stages_ms["api_to_commit"].append((t1 - t0) * 1000)

    async def _sampled(self, batch: list[dict]) -> None:
        """`ack=committed`, then a read at the reply's HLC: API -> stamp -> commit -> applied."""
        wall0, t0 = time.time() * 1000, time.monotonic()
        reply = await self.client.create_transfers(batch, ack="committed")
        wall1, t1 = time.time() * 1000, time.monotonic()
        status, body = await self.client.get(f"/v1/accounts/{batch[0]['debit_account_id']}",
                                             {"after": str(reply["hlc"])})
        t2 = time.monotonic()
        self.rec.count_only(t2, [r["result"] for r in reply["results"]])  # "committed": outcome not read
        if not self.rec.window.counts(t2) or status not in (200, 404):
            return
        stamp = hlc_ms(reply["hlc"])
        stages = self.rec.stages_ms
        stages["api_to_stamp"].append(max(0.0, stamp - wall0))
        stages["stamp_to_commit"].append(max(0.0, wall1 - stamp))
        stages["api_to_commit"].append((t1 - t0) * 1000)
        stages["commit_to_applied"].append((t2 - t1) * 1000)


def baseline_workers(conns: list, cursor: TapeCursor, rec: Recorder) -> list[Callable[[], Awaitable[None]]]:
    def make(conn) -> Callable[[], Awaitable[None]]:
        async def step() -> None:
            group = cursor.next_group()
            t0 = time.monotonic()
            outcome = await conn.run(group)
            t1 = time.monotonic()
            rec.record(t0, t1, outcome.codes)
            if rec.window.counts(t1):
                rec.retries.update(outcome.retries)

        return step

    return [make(c) for c in conns]


# ------------------------------------------------------------ systems under test


def start_postgres():
    """A PostgreSQL server from the harness (`proxies/servers`): initdb in a temp dir, a free port."""
    from proxies.servers import PostgresServer  # deferred: the embedded default needs no server

    return PostgresServer.start()


def drop_database(pg, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


class BenchCluster:
    """The ordo cluster under test: one the bench starts (`LocalCluster`), or one it is pointed at (`--url`)."""

    def __init__(self, args: argparse.Namespace, pg, index: int) -> None:
        self.args = args
        self.pg = pg
        self.index = index
        self.external = list(args.url or [])
        self.root: Path | None = None
        self.local: LocalCluster | None = None

    @property
    def urls(self) -> list[str]:
        return self.external or self.local.urls

    def client(self, seed: int) -> OrdoClient:
        if self.local is not None:
            return self.local.client(seed)
        token = os.environ.get("ORDO_API_KEY")
        if not token:
            raise ConfigError("--url needs an operator API key in the environment variable ORDO_API_KEY")
        return OrdoClient(self.external, seed=seed, token=token)

    def start(self) -> None:
        if self.external:
            return
        self.root = Path(tempfile.mkdtemp(prefix="ordo-bench-"))
        self.local = LocalCluster(self._write_config())
        self.local.start()

    def _write_config(self) -> Path:
        shards = {f"s{i}": {"store": "sqlite", "path": str(self.root / f"shard{i}.sqlite")}
                  for i in range(self.args.shards)}
        if self.args.stores == "postgres":
            database = f"ordo_bench_{os.getpid()}_{self.index}"
            self.pg.create_database(database)
            shards = {f"s{i}": {"store": "postgres", "dsn": self.pg.dsn(database), "schema": f"ordo_s{i}"}
                      for i in range(self.args.shards)}
        return write_cluster_config(self.root, shards)

    def cpu_meter(self, leader: str | None) -> CpuMeter:
        components = {"bench client": os.getpid()}
        trees = {"postgres": self.pg.pid} if self.pg is not None and self.args.stores == "postgres" else {}
        if self.local is not None:
            for node_id, proc in self.local.nodes.items():
                role = " (leader)" if leader == self.local.config.node(node_id).url else ""
                components[f"node{node_id}{role}"] = proc.pid
            for index, proc in self.local.executors.items():
                components[f"executor{index}"] = proc.pid
        return CpuMeter(components, trees)

    def pids(self, leader: str | None) -> dict[str, int]:
        if self.local is None:
            return {}
        out = {f"executor{i}": p.pid for i, p in self.local.executors.items()}
        for node_id, proc in self.local.nodes.items():
            if self.local.config.node(node_id).url == leader:
                out[f"node{node_id}-leader"] = proc.pid
        return out

    def executor_log_tail(self, marker: str = "stages:", lines: int = 2) -> list[str]:
        """The executor's own stage timings (cumulative, every 5 s), as it logged them."""
        if self.local is None:
            return []
        path = self.local.logs / "executor0.log"
        found = [line.strip() for line in path.read_text(errors="replace").splitlines() if marker in line]
        return found[-lines:]

    def kill_executor(self) -> bool:
        if self.local is None:
            return False
        self.local.kill_executor()
        return True

    def stop(self) -> None:
        if self.local is not None:
            self.local.stop()
            if self.args.keep:
                console.print(f"cluster data and logs kept in {self.root}")
            else:
                shutil.rmtree(self.root, ignore_errors=True)
        if self.pg is not None and self.args.stores == "postgres" and not self.external:
            drop_database(self.pg, f"ordo_bench_{os.getpid()}_{self.index}")


async def setup_accounts(client: OrdoClient, accounts: list[dict], funding: list[list[dict]]) -> None:
    sem = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def send(kind: str, batch: list[dict]) -> None:
        async with sem:
            reply = await client.submit(kind, batch)
        bad = [r for r in reply["results"] if r["result"] not in ACK_OK]
        if bad:
            raise RuntimeError(f"{kind} setup failed: {bad[:3]}")

    await asyncio.gather(*(send("accounts", accounts[i : i + BATCH_EVENTS_MAX])
                           for i in range(0, len(accounts), BATCH_EVENTS_MAX)))
    await asyncio.gather(*(send("transfers", b) for b in funding))


Probe = Callable[[], Awaitable[dict | None]]


async def measured(rec: Recorder, meter: CpuMeter | None, body: Awaitable[None], label: str, quiet: bool,
                   profiler: Profiler | None = None, probe: Probe | None = None) -> dict[str, float]:
    """Run `body` under the live view; CPU, the profile and the log probe cover exactly the measured window."""
    cpu: dict[str, float] = {}

    async def meter_window() -> None:
        await asyncio.sleep(max(0.0, rec.window.start - time.monotonic()))
        if profiler is not None:
            profiler.start(rec.window.seconds)
        if meter is not None:
            meter.start()
        before = await probe() if probe else None
        await asyncio.sleep(max(0.0, rec.window.end - time.monotonic()))
        if meter is not None:
            cpu.update(meter.stop())
            rec.other_cpu_s = meter.other_s
        after = await probe() if probe else None
        if before and after:
            rec.epochs = after["last_epoch"] - before["last_epoch"]
            rec.applied_epochs = after["watermark"] - before["watermark"]

    metering = asyncio.create_task(meter_window())
    async with LiveView(label, rec, quiet):
        await body
    await metering
    return cpu


def _run_summary(system: str, mode: str, zipf: float, rec: Recorder, cpu: dict[str, float], **extra) -> dict:
    out = {"system": system, "mode": mode, "zipf": zipf, **extra, **rec.summary()}
    if any(rec.stages_ms.values()):
        out["stages_ms"] = {k: _rounded(percentiles(v)) for k, v in rec.stages_ms.items()}
    if cpu:
        total = sum(cpu.values())
        out["cpu_s"] = cpu
        out["cpu_s_total"] = round(total, 3)
        out["cores_used"] = round(total / rec.window.seconds, 2)
        out["cpu_ms_per_1k_transfers"] = round(total * 1000 / max(1, rec.events) * 1000, 1)
        out["other_cpu_s"] = rec.other_cpu_s  # not under test: high means the machine was shared
    return out


# ---------------------------------------------------------------- profiling


class Profiler:
    """py-spy `record` of the leader and the executor during one measured window."""

    def __init__(self, pids: dict[str, int], out: Path) -> None:
        self.pids = pids
        self.out = out
        self.procs: dict[str, subprocess.Popen] = {}
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.exe = exe if Path(exe).exists() else None

    def start(self, seconds: float) -> None:
        if self.exe is None:
            console.print("[yellow]py-spy not found; no profile (pip install py-spy)[/]")
            return
        for label, pid in self.pids.items():
            path = self.out / f"profile-{label}.txt"
            self.procs[label] = subprocess.Popen(
                [self.exe, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))), "--rate", "250",
                 "--format", "raw", "--nonblocking", "--output", str(path)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def finish(self) -> dict[str, dict]:
        report = {}
        for label, proc in self.procs.items():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            path = self.out / f"profile-{label}.txt"
            if path.exists():
                report[label] = {"file": path.name, **top_functions(path.read_text())}
        return report


def top_functions(collapsed: str, limit: int = 40) -> dict:
    """Self and inclusive shares per function from py-spy's collapsed stacks ("f1;f2;f3 count")."""
    own: Counter = Counter()
    total: Counter = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        # "func (path/file.py:line)" -> "func (path/file.py)": one row per function, not per line.
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if frames:
            own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    pct = lambda c: round(100 * c / samples, 1) if samples else 0.0  # noqa: E731
    return {"samples": samples,
            "self": [[f, pct(c)] for f, c in own.most_common(limit)],
            "inclusive": [[f, pct(c)] for f, c in total.most_common(limit)]}


# ----------------------------------------------------------------- the runs


def _mix(args: argparse.Namespace, zipf: float) -> Mix:
    return Mix(linked=args.linked, two_phase=args.two_phase, duplicate=args.duplicate, failing=args.failing,
               zipf_s=zipf)


class Bench:
    def __init__(self, args: argparse.Namespace, seed: int, out: Path, pg=None) -> None:
        self.args = args
        self.seed = seed
        self.out = out
        self.phases = set(args.phases.split(","))
        self.zipfs = sorted(set(args.sweep_zipf or []) | {args.zipf})
        self.runs: list[dict] = []
        self.notes: list[str] = []
        self.profile: dict = {}
        self.pg = pg  # a running PostgresServer (the tests' fixture), or None: started here if needed
        self._own_pg = False
        setup = BenchWorkload(seed, args.accounts, Mix(), args.shards)
        self.accounts = setup.accounts_list()  # the bank first, then every account with its seeded flags
        self.funding = setup.funding_batches(BATCH_EVENTS_MAX, FUNDING_AMOUNT)

    def _window(self) -> Window:
        return Window.from_now(self.args.warmup, self.args.duration)

    def _draw_ahead(self, cursor: TapeCursor, rate_tps: float) -> None:
        """Draw enough transfers for one run at `rate_tps` (with margin) before it starts."""
        seconds = self.args.warmup + self.args.duration
        cursor.tape.ensure(cursor, max(self.args.prefill, int(rate_tps * seconds * DRAW_AHEAD_MARGIN)))

    def _peak(self) -> float:
        return max((r["throughput_tps"] for r in self.runs if r["system"] == "ordo" and r["mode"] == "closed"),
                   default=0.0)

    async def run(self) -> None:
        needs_pg = self.args.stores == "postgres" or bool(self.phases & {"monolith", "xa"})
        if needs_pg and self.pg is None:
            self._start_pg()
        try:
            for index, zipf in enumerate(self.zipfs):
                tape = GroupTape(BenchWorkload(self.seed, self.args.accounts, _mix(self.args, zipf), self.args.shards,
                                               self.args.cross_shard, tape_index=index))
                tape.fill(self.args.prefill)
                if self.phases & {"closed", "open", "sequencer"}:
                    await self.run_ordo(index, zipf, tape)
                for system in ("monolith", "xa"):
                    if system in self.phases and self.pg is not None:
                        await self.run_baseline(system, zipf, tape)
        finally:
            if self._own_pg:
                self.pg.close()

    def _start_pg(self) -> None:
        try:
            self.pg = start_postgres()
            self._own_pg = True
        except Exception as exc:  # no server binaries: the baselines cannot run; ordo on SQLite still can
            if self.args.stores == "postgres":
                raise
            self.notes.append(f"baselines skipped: PostgreSQL could not start ({type(exc).__name__}: {exc})")
            console.print(f"[yellow]{self.notes[-1]}[/]")

    async def run_ordo(self, index: int, zipf: float, tape: GroupTape) -> None:
        cluster = BenchCluster(self.args, self.pg, index)
        started = time.monotonic()
        cluster.start()
        try:
            async with cluster.client(self.seed) as client:
                leader = await client.wait_for_leader()
                await setup_accounts(client, self.accounts, self.funding)
                console.print(f"[bold]ordo[/] zipf={zipf}: cluster ready in {time.monotonic() - started:.1f} s "
                              f"(leader {leader}, {len(self.accounts):,} accounts funded)")
                cursor = tape.cursor()
                main = zipf == self.args.zipf
                if "closed" in self.phases:
                    await self._ordo_closed(client, cluster, leader, zipf, cursor, profile=main and self.args.profile)
                if main and "open" in self.phases:
                    await self._ordo_open(client, cluster, leader, zipf, cursor)
                if main and "sequencer" in self.phases:
                    await self._sequencer_only(client, cluster, leader, zipf, cursor)
                if cluster.local is not None:
                    cluster.local.check_alive()
        finally:
            cluster.stop()

    async def _ordo_closed(self, client, cluster, leader, zipf, cursor, profile: bool) -> None:
        a = self.args
        rec = Recorder(self._window())
        sender = OrdoSender(client, cursor, a.batch, rec)
        profiler = Profiler(cluster.pids(leader), self.out) if profile else None
        self._draw_ahead(cursor, max(self._peak(), CLOSED_TPS_GUESS))
        retries0 = client.stats.retries
        tape = {"tape_start": cursor.index, "tape_digest": cursor.tape.digest(cursor.index)}
        cpu = await measured(rec, cluster.cpu_meter(leader), closed_loop([sender.step] * a.clients, rec),
                             f"ordo closed zipf={zipf}", a.quiet, profiler, lambda: client.health(leader))
        if profiler is not None:
            self.profile = profiler.finish()
        rec.retries["client"] = client.stats.retries - retries0
        self.runs.append(_run_summary("ordo", "closed", zipf, rec, cpu, clients=a.clients, batch=a.batch,
                                      stores=self._stores(), ack="applied", **tape,
                                      executor_log=cluster.executor_log_tail()))

    async def _ordo_open(self, client, cluster, leader, zipf, cursor) -> None:
        a = self.args
        peak = self._find("ordo", "closed", zipf)
        rate = a.rate or (0.5 * peak["throughput_tps"] if peak else None)
        if not rate:
            self.notes.append("open loop skipped: no --rate and no closed-loop peak to halve")
            return
        self._draw_ahead(cursor, rate)
        per_batch = _mean_batch(cursor, a.open_batch)
        rec = Recorder(self._window())
        sender = OrdoSender(client, cursor, a.open_batch, rec)
        body = open_loop(sender.step, rate / per_batch, rec, self.seed)
        cpu = await measured(rec, cluster.cpu_meter(leader), body, f"ordo open {rate:,.0f}/s", a.quiet,
                             probe=lambda: client.health(leader))
        self.runs.append(_run_summary("ordo", "open", zipf, rec, cpu, offered_tps=round(rate, 1),
                                      batch=a.open_batch, half_peak=a.rate is None, stores=self._stores(),
                                      ack="applied"))

    async def _sequencer_only(self, client, cluster, leader, zipf, cursor) -> None:
        a = self.args
        if not cluster.kill_executor():
            self.notes.append("sequencer-only skipped: the executor of an external cluster cannot be stopped")
            return
        self._draw_ahead(cursor, max(SEQUENCER_SPEEDUP_GUESS * self._peak(), SEQUENCER_TPS_GUESS))
        rec = Recorder(self._window())
        sender = OrdoSender(client, cursor, a.batch, rec, ack="committed", sample_stages=False)
        cpu = await measured(rec, cluster.cpu_meter(leader), closed_loop([sender.step] * a.clients, rec),
                             "ordo sequencer only", a.quiet, probe=lambda: client.health(leader))
        summary = _run_summary("ordo", "sequencer_only", zipf, rec, cpu, clients=a.clients, batch=a.batch,
                               ack="committed")
        summary["intents_per_s"] = summary["throughput_tps"]
        self.runs.append(summary)

    async def run_baseline(self, system: str, zipf: float, tape: GroupTape) -> None:
        from sequencer.tools.baselines import Monolith, TwoPhase

        a = self.args
        if system == "monolith":
            self.pg.create_database("bench_monolith")
            target = Monolith(self.pg.dsn("bench_monolith"), self.seed)
        else:
            for db in ("bench_xa_a", "bench_xa_b"):
                self.pg.create_database(db)
            target = TwoPhase([self.pg.dsn("bench_xa_a"), self.pg.dsn("bench_xa_b")], self.seed)
        await target.setup(self.accounts, FUNDING_AMOUNT)
        conns = [await target.connect(i) for i in range(a.baseline_clients)]
        try:
            rec = Recorder(self._window())
            meter = CpuMeter({"bench client": os.getpid()}, {"postgres": self.pg.pid})
            body = closed_loop(baseline_workers(conns, tape.cursor(), rec), rec)
            cpu = await measured(rec, meter, body, f"{system} zipf={zipf}", a.quiet)
        finally:
            for conn in conns:
                await conn.close()
        extra = {"tape_start": 0, "tape_digest": tape.digest(0)}
        if system == "xa":
            extra |= {"two_phase_commits": sum(c.prepared for c in conns),
                      "one_phase_commits": sum(c.one_phase for c in conns)}
        self.runs.append(_run_summary(system, "closed", zipf, rec, cpu, clients=a.baseline_clients, **extra))

    def _stores(self) -> str:
        return "external" if self.args.url else self.args.stores

    def _find(self, system: str, mode: str, zipf: float) -> dict | None:
        for run in self.runs:
            if run["system"] == system and run["mode"] == mode and run["zipf"] == zipf:
                return run
        return None


def _mean_batch(cursor: TapeCursor, size: int, batches: int = 200) -> float:
    probe = TapeCursor(cursor.tape, cursor.index)
    return sum(len(probe.next_batch(size)) for _ in range(batches)) / batches


# ------------------------------------------------------------------- report


def ratios(runs: list[dict]) -> dict[str, dict[str, float]]:
    """ordo's closed-loop throughput over each baseline's, per zipf."""
    ordo = {r["zipf"]: r["throughput_tps"] for r in runs if r["system"] == "ordo" and r["mode"] == "closed"}
    out: dict[str, dict[str, float]] = {}
    for run in runs:
        if run["system"] in ("monolith", "xa") and run["zipf"] in ordo and run["throughput_tps"] > 0:
            out.setdefault(f"ordo_vs_{run['system']}", {})[str(run["zipf"])] = round(
                ordo[run["zipf"]] / run["throughput_tps"], 2)
    return out


def targets(runs: list[dict], ratio: dict, stores: str) -> list[dict]:
    def find(system: str, mode: str, zipf: float | None = None) -> dict | None:
        return next((r for r in runs if r["system"] == system and r["mode"] == mode
                     and (zipf is None or r["zipf"] == zipf)), None)

    rows = []
    closed = [r for r in runs if r["system"] == "ordo" and r["mode"] == "closed"]
    peak = max((r["throughput_tps"] for r in closed), default=None)
    on_pg = stores == "postgres"
    peak_zipf = next((r["zipf"] for r in closed if r["throughput_tps"] == peak), None)
    rows.append(_target("end-to-end into PostgreSQL", f">= {TARGET_E2E_TPS:,} transfers/s", peak,
                        (peak >= TARGET_E2E_TPS) if peak is not None and on_pg else None,
                        f"{peak:,.0f} transfers/s (best closed loop, zipf {peak_zipf:g})"
                        + ("" if on_pg else f" ({stores} stores)") if peak else None))
    seq = find("ordo", "sequencer_only")
    value = seq["intents_per_s"] if seq else None
    rows.append(_target("sequencer only (log commit, no execution)", f">= {TARGET_SEQUENCER_IPS:,} intents/s", value,
                        value >= TARGET_SEQUENCER_IPS if value is not None else None,
                        f"{value:,.0f} intents/s" if value is not None else None))
    mono = ratio.get("ordo_vs_monolith", {}).get("0.99")
    rows.append(_target("ordo vs monolith at zipf 0.99", f">= {TARGET_MONOLITH_RATIO:g}x", mono,
                        mono >= TARGET_MONOLITH_RATIO if mono is not None else None,
                        f"{mono:.2f}x" if mono is not None else None))
    uniform, hot = find("ordo", "closed", 0.0), find("ordo", "closed", 1.2)
    spread = None
    if uniform and hot:
        # (best - worst) / best over every skew measured from uniform to 1.2
        points = [r["throughput_tps"] for r in closed if 0.0 <= r["zipf"] <= 1.2]
        spread = (max(points) - min(points)) / max(points) if max(points) > 0 else None
    rows.append(_target("throughput, uniform to zipf 1.2", f"within {TARGET_SKEW_SPREAD:.0%}", spread,
                        spread <= TARGET_SKEW_SPREAD if spread is not None else None,
                        f"{uniform['throughput_tps']:,.0f} -> {hot['throughput_tps']:,.0f}/s, "
                        f"spread {spread:.0%} of the best point" if spread is not None else None))
    open_run = find("ordo", "open")
    p99 = open_run["latency_ms"]["p99"] if open_run else None
    label = "at half peak" if open_run and open_run.get("half_peak") else "at --rate"
    rows.append(_target(f"p99 ack latency {label} (open loop)", f"<= {TARGET_P99_MS:g} ms", p99,
                        p99 <= TARGET_P99_MS if p99 is not None else None,
                        f"{p99:,.1f} ms at {open_run['offered_tps']:,.0f}/s offered" if p99 is not None else None))
    return rows


def _target(name: str, goal: str, value, met: bool | None, shown: str | None) -> dict:
    return {"target": name, "goal": goal, "measured": value, "measured_text": shown or "not measured",
            "met": met}


def print_report(report: dict) -> None:
    runs = Table(title="runs")
    for col in ("system", "mode", "zipf", "transfers/s", "p50 ms", "p95 ms", "p99 ms", "p99.9 ms", "retries",
                "cores", "other"):
        runs.add_column(col, justify="left" if col in ("system", "mode") else "right")
    for r in report["runs"]:
        lat = r["latency_ms"]
        fmt = lambda v: "-" if v is None else f"{v:,.1f}"  # noqa: E731
        runs.add_row(r["system"], r["mode"], f"{r['zipf']:g}", f"{r['throughput_tps']:,.0f}", fmt(lat["p50"]),
                     fmt(lat["p95"]), fmt(lat["p99"]), fmt(lat["p999"]), f"{sum(r['retries'].values()):,}",
                     f"{r.get('cores_used', '-')}",
                     "-" if r.get("other_cpu_s") is None else f"{r['other_cpu_s'] / r['measured_s']:.2f}")
    console.print(runs)
    for r in report["runs"]:
        if "stages_ms" in r:
            stages = Table(title=f"ordo stages, {r['mode']} zipf={r['zipf']:g} (sampled requests, ms)")
            for col in ("stage", "p50", "p95", "p99"):
                stages.add_column(col, justify="right" if col != "stage" else "left")
            for name, p in r["stages_ms"].items():
                stages.add_row(name, *(("-" if p[k] is None else f"{p[k]:,.1f}") for k in ("p50", "p95", "p99")))
            console.print(stages)
        if "cpu_s" in r and r["system"] == "ordo" and r["mode"] == "closed" and r["zipf"] == report["meta"]["zipf"]:
            cpu = Table(title=f"CPU seconds over {r['measured_s']:.0f} s, ordo closed zipf={r['zipf']:g}")
            cpu.add_column("process")
            cpu.add_column("CPU s", justify="right")
            for name, secs in sorted(r["cpu_s"].items(), key=lambda kv: -kv[1]):
                cpu.add_row(name, f"{secs:.2f}")
            console.print(cpu)
    table = Table(title="targets (reported, never asserted)")
    for col in ("target", "goal", "measured", ""):
        table.add_column(col)
    for t in report["targets"]:
        verdict = {True: "[green]met[/]", False: "[red]missed[/]", None: "n/a"}[t["met"]]
        table.add_row(t["target"], t["goal"], t["measured_text"], verdict)
    console.print(table)
    for note in report["notes"]:
        console.print(f"[yellow]note:[/] {note}")


def write_plots(report: dict, out: Path) -> dict[str, str]:
    """The plots, from results.json alone (so `--replot` can redraw an old run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, main = report["runs"], report["meta"]["zipf"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for system, style in (("ordo", "o-"), ("monolith", "s--"), ("xa", "^:")):
        points = sorted((r["zipf"], r["throughput_tps"]) for r in runs if r["system"] == system and r["mode"] == "closed")
        if points:
            ax.plot(*zip(*points), style, label=system)
    ax.set_xlabel("zipf skew s (0 = uniform)")
    ax.set_ylabel("applied transfers/s")
    ax.set_title(f"throughput vs skew, closed loop ({report['meta']['stores']} stores)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "throughput_vs_zipf.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in runs:
        if r["zipf"] != main or not r["latency_cdf_ms"]:
            continue
        latency, fraction = zip(*r["latency_cdf_ms"])
        unit = "per request" if r["system"] == "ordo" else "per transaction"
        label = {"closed": f"{r['system']} closed, {unit}", "open": f"ordo open {r.get('offered_tps', 0):,.0f}/s",
                 "sequencer_only": "ordo sequencer only (ack=committed)"}[r["mode"]]
        ax.plot(latency, fraction, label=label, linestyle="-" if r["system"] == "ordo" else "--")
    ax.set_xscale("log")
    ax.set_xlabel("ack latency (ms, log scale)")
    ax.set_ylabel("fraction acknowledged")
    ax.set_title(f"latency CDF at zipf {main:g}")
    ax.grid(alpha=0.3, which="both")
    if ax.lines:
        ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "latency_cdf.png", dpi=120)
    plt.close(fig)
    return {"throughput_vs_zipf": "throughput_vs_zipf.png", "latency_cdf": "latency_cdf.png"}


def machine() -> dict:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError):
        mem_gb = round(int(Path("/proc/meminfo").read_text().split()[1]) / 2**20, 1)
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem_gb, "kernel": platform.release(),
            "python": platform.python_version()}


async def run_bench(args: argparse.Namespace, pg=None) -> int:
    """`ordo bench`; `pg` is a running PostgresServer to use instead of starting one."""
    if args.replot:
        report = json.loads(Path(args.replot).read_text())
        report["plots"] = write_plots(report, Path(args.replot).parent)
        print_report(report)
        return 0
    seed = args.seed if args.seed is not None else random.randrange(1, 10**6)
    out = Path(args.out) if args.out else Path("results") / datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    if args.url:
        args.stores = "external"
    console.print(f"[bold]ordo bench[/] seed={seed} stores={args.stores} accounts={args.accounts:,} "
                  f"zipf={args.zipf} sweep={args.sweep_zipf} clients={args.clients} batch={args.batch} "
                  f"duration={args.duration}s -> {out}  (reproduce with --seed {seed})")
    bench = Bench(args, seed, out, pg)
    load_before = os.getloadavg()
    await bench.run()
    ratio = ratios(bench.runs)
    for r in bench.runs:
        if r.get("other_cpu_s") is not None and r["other_cpu_s"] / r["measured_s"] > SHARED_CORES_MAX:
            bench.notes.append(f"{r['system']} {r['mode']} zipf={r['zipf']:g}: processes outside the bench used "
                               f"{r['other_cpu_s'] / r['measured_s']:.2f} cores meanwhile; its numbers are low")
    report = {
        "meta": {"seed": seed, "started": datetime.now().isoformat(timespec="seconds"), "machine": machine(),
                 "loadavg_before": [round(x, 2) for x in load_before],
                 "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                 "stores": args.stores, "zipf": args.zipf, "sweep_zipf": bench.zipfs,
                 "command": "ordo " + " ".join(sys.argv[1:]) if sys.argv[0].endswith(("ordo", "cli.py")) else None,
                 "args": {k: v for k, v in vars(args).items() if k != "func"}},
        "runs": bench.runs,
        "ratios": ratio,
        "targets": targets(bench.runs, ratio, args.stores),
        "profile": bench.profile,
        "notes": bench.notes,
    }
    report["plots"] = write_plots(report, out)
    (out / "results.json").write_text(json.dumps(report, indent=2, default=str))
    print_report(report)
    console.print(f"results: {out / 'results.json'}; plots: {', '.join(str(out / p) for p in report['plots'].values())}")
    return 0


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """`ordo bench`'s knobs (the subparser itself is built in sequencer/tools/cli.py)."""
    p.add_argument("--url", action="append",
                   help="bench a running cluster at this API URL (repeat per replica; operator key in ORDO_API_KEY)")
    p.add_argument("--stores", choices=("sqlite", "postgres"), default="sqlite",
                   help="shards of the cluster the bench starts: embedded SQLite (default) or PostgreSQL")
    p.add_argument("--shards", type=int, default=2, help="shards of the cluster the bench starts (default 2)")
    p.add_argument("--clients", type=int, default=64, help="closed loop: concurrent clients (default 64)")
    p.add_argument("--batch", type=int, default=BATCH_EVENTS_MAX,
                   help=f"transfers per request (default and max {BATCH_EVENTS_MAX})")
    p.add_argument("--rate", type=float, default=None,
                   help="open loop: offered transfers/s (default: half the closed-loop peak)")
    p.add_argument("--open-batch", type=int, default=10, help="open loop: transfers per request (default 10)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per run (default 10)")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each run (default 2)")
    p.add_argument("--seed", type=int, default=None, help="workload seed (default: random, printed)")
    p.add_argument("--accounts", type=int, default=10_000, help="accounts (default 10000)")
    p.add_argument("--zipf", type=float, default=0.99, help="skew of account choice: 0 uniform .. 1.2 hot (default 0.99)")
    p.add_argument("--sweep-zipf", type=_floats, default=None, metavar="S,S,...",
                   help="closed-loop throughput at each skew, e.g. 0,0.6,0.99,1.2")
    p.add_argument("--cross-shard", type=float, default=0.5, help="share of transfers across two shards (default 0.5)")
    p.add_argument("--linked", type=float, default=0.10, help="share of linked chains (default 0.10)")
    p.add_argument("--two-phase", type=float, default=0.10, help="share of pending/post/void (default 0.10)")
    p.add_argument("--duplicate", type=float, default=0.03, help="share of resubmitted ids (default 0.03)")
    p.add_argument("--failing", type=float, default=0.05, help="share of transfers that must fail (default 0.05)")
    p.add_argument("--phases", default="closed,open,sequencer,monolith,xa",
                   help="runs to do (default closed,open,sequencer,monolith,xa)")
    p.add_argument("--baseline-clients", type=int, default=32,
                   help="baselines' concurrent clients, one transaction each (default 32)")
    p.add_argument("--prefill", type=int, default=50_000, help="transfers drawn before the first run (default 50000)")
    p.add_argument("--profile", action="store_true", help="py-spy the leader and the executor during the main run")
    p.add_argument("--out", default=None, help="results directory (default results/<timestamp>/)")
    p.add_argument("--keep", action="store_true", help="keep each cluster's data directory and logs")
    p.add_argument("--quiet", action="store_true", help="no live display")
    p.add_argument("--replot", metavar="RESULTS_JSON", help="redraw the plots and tables of an earlier run, then exit")


PHASES = ("closed", "open", "sequencer", "monolith", "xa")


def normalize(args: argparse.Namespace) -> argparse.Namespace:
    unknown = set(args.phases.split(",")) - set(PHASES)
    if unknown:
        raise ConfigError(f"--phases: unknown {', '.join(sorted(unknown))}; choose from {', '.join(PHASES)}")
    args.batch = max(1, min(args.batch, BATCH_EVENTS_MAX))
    args.open_batch = max(1, min(args.open_batch, BATCH_EVENTS_MAX))
    return args
