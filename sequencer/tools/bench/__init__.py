"""`ordo bench`: throughput and latency of a cluster, against two PostgreSQL baselines.

Role: driver (tools).  Owned here: the command's arguments and `run_bench`,
which runs the parts in order and writes the results directory
(`results.json` and PNG plots).  The parts:

* `tape`: the seeded workload, drawn ahead into a tape every system replays;
* `measure`: the measured window, latency and stage recorders, CPU per process;
* `drive`: the closed and open loops, the cluster under test, the profiler,
  and `Bench`, which runs ordo and the baselines over the sweep of skews;
* `report`: ratios, the targets table, the printed tables and the plots;
* `baselines`: the PostgreSQL SERIALIZABLE monolith and XA/2PC.

Called by `ordo bench` (`sequencer/tools/cli.py`) and by `tests/test_bench.py`.

One seed reproduces a run (STYLE 2).  Accounts and transfers come from
`--seed`; every system under test replays the same `GroupTape` from its
start, so ordo and the baselines see the same transfers in the same order.
Targets are reported, never asserted: a 2-core machine shared with the
clients is noisy, and a benchmark that fails on noise teaches nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from datetime import datetime
from pathlib import Path

from sequencer.errors import ConfigError
from sequencer.limits import BATCH_EVENTS_MAX
from sequencer.tools.bench.constants import SHARED_CORES_MAX, console
from sequencer.tools.bench.drive import Bench, top_functions
from sequencer.tools.bench.report import machine, print_report, ratios, targets, write_plots
from sequencer.tools.bench.tape import BenchWorkload, GroupTape


__all__ = ["BenchWorkload", "GroupTape", "add_arguments", "normalize", "run_bench", "top_functions"]


async def run_bench(args: argparse.Namespace, pg=None) -> int:
    """`ordo bench`; `pg` is a running PostgresServer to use instead of starting one."""
    if args.replot:
        try:
            report = json.loads(Path(args.replot).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--replot: cannot read {args.replot} as results JSON ({exc})") from None
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
    for name in ("duration", "warmup"):
        value = getattr(args, name, None)
        if value is not None and not (value > 0 if name == "duration" else value >= 0):
            raise ConfigError(f"--{name} must be {'above' if name == 'duration' else 'at least'} 0 seconds, not {value}")
    if getattr(args, "accounts", 2) < 2:
        raise ConfigError(f"--accounts must be at least 2 (a transfer needs two accounts), not {args.accounts}")
    if args.replot and not Path(args.replot).is_file():
        raise ConfigError(f"--replot: no results file {args.replot}; pass the results.json of an earlier run")
    args.batch = max(1, min(args.batch, BATCH_EVENTS_MAX))
    args.open_batch = max(1, min(args.open_batch, BATCH_EVENTS_MAX))
    return args

