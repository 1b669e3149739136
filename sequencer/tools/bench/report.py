"""The bench's report: ratios, the targets table, the printed tables and the plots.

Role: driver (tools); part of `ordo bench`.
"""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

from rich.table import Table

from sequencer.tools.bench.constants import (
    TARGET_E2E_TPS,
    TARGET_MONOLITH_RATIO,
    TARGET_P99_MS,
    TARGET_SEQUENCER_IPS,
    TARGET_SKEW_SPREAD,
    console,
)


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


