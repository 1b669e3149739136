"""Measuring a run: windows, latency and stage recorders, CPU per process.

Role: driver (tools); part of `ordo bench`.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sequencer.tools.stats import percentiles
from sequencer.tools.bench.constants import CDF_POINTS
from sequencer.tools.bench.report import machine


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
            "latency_ms": rounded(percentiles(self.latencies_ms)),
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


def rounded(d: dict) -> dict:
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


