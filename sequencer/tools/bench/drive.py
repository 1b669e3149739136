"""Driving the systems under test: closed and open loops, the cluster, the baselines, the runs.

Role: driver (tools); part of `ordo bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from sequencer.client import OrdoClient
from sequencer.tools.cluster import LocalCluster, write_cluster_config
from sequencer.errors import ConfigError
from sequencer.tools.stats import percentiles
from sequencer.types import ACK_OK, hlc_ms
from sequencer.limits import BATCH_EVENTS_MAX
from sequencer.tools.workload import Mix
from sequencer.tools.bench.constants import (
    CLOSED_TPS_GUESS,
    DRAW_AHEAD_MARGIN,
    FUNDING_AMOUNT,
    OPEN_INFLIGHT_MAX,
    SEQUENCER_SPEEDUP_GUESS,
    SEQUENCER_TPS_GUESS,
    SETUP_CONCURRENCY,
    STAGE_SAMPLE_EVERY,
    TICK_S,
    console,
)
from sequencer.tools.bench.tape import BenchWorkload, GroupTape, TapeCursor
from sequencer.tools.bench.measure import CpuMeter, Recorder, Window, rounded


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
        out["stages_ms"] = {k: rounded(percentiles(v)) for k, v in rec.stages_ms.items()}
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
        from sequencer.tools.bench.baselines import Monolith, TwoPhase

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


