"""`ordo bench`: a few seconds of every run, checked for shape and sanity, never for speed.

The pure parts (workload knobs, percentiles, the 2PC vote merge, profile
parsing) are checked directly.  The smoke tests run the real thing with tiny
knobs: a local cluster on SQLite through the CLI's own parser, and the two
PostgreSQL baselines on the harness's server.  Timings are never asserted
(machines are noisy); only that the numbers exist and are consistent.
"""

from __future__ import annotations

import asyncio
import json
import os
import random

import pytest

from sequencer.tools.bench.baselines import merge_branches
from sequencer.tools.bench import BenchWorkload, GroupTape, normalize, run_bench, top_functions
from sequencer.tools.cli import build_parser
from sequencer.tools.stats import percentiles, quantile
from sequencer.tools.workload import Mix

SEED = int(os.environ.get("ORDO_SEED", random.randrange(1, 10**6)))

SMALL = ["--accounts", "200", "--clients", "4", "--batch", "20", "--open-batch", "5", "--duration", "1.5",
         "--warmup", "0.5", "--prefill", "2000", "--quiet"]


def _args(tmp_path, *extra: str):
    return normalize(build_parser().parse_args(["bench", "--seed", str(SEED), "--out", str(tmp_path), *SMALL, *extra]))


def _check_run(run: dict) -> None:
    where = f"{run['system']} {run['mode']} zipf={run['zipf']} (reproduce with ORDO_SEED={SEED})"
    assert run["throughput_tps"] > 0, where
    assert run["transfers"] > 0, where
    lat = run["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["p999"] <= lat["max"], where
    assert run["latency_cdf_ms"][-1][1] == 1.0, where
    assert sum(run["results"].values()) == run["transfers"], where


# ---------------------------------------------------------------- pure parts


def test_same_seed_same_transfers_and_cross_shard_share() -> None:
    def draw(seed: int, cross: float) -> list[list[dict]]:
        tape = GroupTape(BenchWorkload(seed, 500, Mix(zipf_s=0.99), shards=2, cross_shard=cross, tape_index=0))
        tape.fill(3000)
        return tape.groups

    assert draw(SEED, 0.3) == draw(SEED, 0.3), f"seed {SEED} drew two different tapes"
    for cross in (0.0, 0.3, 1.0):
        plain = [t for g in draw(SEED, cross) for t in g
                 if not t.get("flags") and t["debit_account_id"] != t["credit_account_id"]
                 and t["credit_account_id"] < 10**12]  # the failing kinds pick their own partner
        share = sum(t["debit_account_id"] % 2 != t["credit_account_id"] % 2 for t in plain) / len(plain)
        assert abs(share - cross) < 0.05, f"cross_shard={cross} gave {share:.2f} (ORDO_SEED={SEED})"


def test_tape_ids_never_collide_with_funding() -> None:
    setup = BenchWorkload(SEED, 300, Mix())
    setup.account_batches(128)
    funding = {t["id"] for b in setup.funding_batches(128) for t in b}
    tape = GroupTape(BenchWorkload(SEED, 300, Mix(), tape_index=0))
    tape.fill(2000)
    assert not funding & {t["id"] for g in tape.groups for t in g}


def test_percentiles_are_ordered_nearest_rank() -> None:
    p = percentiles([float(x) for x in range(1, 1001)])
    assert (p["p50"], p["p95"], p["p99"], p["p999"], p["max"]) == (500.0, 950.0, 990.0, 999.0, 1000.0)
    assert percentiles([])["p50"] is None
    # The demo's quantile is the same rule: p99 of 1..100 is 99, not 100.
    values = [float(x) for x in range(1, 101)]
    assert quantile(values, 0.99) == 99.0 == percentiles(values)["p99"]
    assert quantile(values, 0.5) == 50.0


def test_two_phase_vote_merge() -> None:
    assert merge_branches([["ok", "none"], ["none", "ok"]]) == (["ok", "ok"], True)
    assert merge_branches([["exceeds_credits"], ["ok"]]) == (["exceeds_credits"], False)
    # a chain: one branch refuses leg 2, so every other leg fails with it
    assert merge_branches([["ok", "exceeds_credits"], ["ok", "none"]]) == (
        ["linked_event_failed", "exceeds_credits"], False)
    assert merge_branches([["exists"], ["exists"]]) == (["exists"], True)
    assert merge_branches([["exists"], ["ok"]]) == (["exists"], False)  # never half-apply a duplicate


def test_profile_parsing() -> None:
    raw = "thread (1): Main;main (a.py:3);f (a.py:10) 3\nthread (1): Main;main (a.py:3);g (b.py:7) 1\n"
    top = top_functions(raw)
    assert top["samples"] == 4
    assert top["self"][0] == ["f (a.py)", 75.0]
    assert ["main (a.py)", 100.0] in top["inclusive"]


# --------------------------------------------------------------- smoke runs


@pytest.mark.cluster
def test_bench_smoke_embedded(tmp_path) -> None:
    args = _args(tmp_path, "--phases", "closed,open,sequencer", "--zipf", "0.99", "--sweep-zipf", "0")
    assert asyncio.run(run_bench(args)) == 0
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["meta"]["seed"] == SEED
    runs = {(r["mode"], r["zipf"]): r for r in report["runs"]}
    assert set(runs) == {("closed", 0.0), ("closed", 0.99), ("open", 0.99), ("sequencer_only", 0.99)}
    for run in runs.values():
        _check_run(run)
    closed = runs[("closed", 0.99)]
    assert closed["epochs_per_s"] > 0 and closed["intents_per_epoch"] > 0
    assert {"executor0", "bench client"} <= set(closed["cpu_s"]) and any("leader" in k for k in closed["cpu_s"])
    stages = closed["stages_ms"]
    assert stages["api_to_commit"]["count"] > 0 and stages["commit_to_applied"]["count"] > 0
    assert runs[("open", 0.99)]["offered_tps"] > 0 and runs[("open", 0.99)]["half_peak"]
    assert runs[("sequencer_only", 0.99)]["intents_per_s"] > 0
    assert "executor0" not in runs[("sequencer_only", 0.99)]["cpu_s"]  # it was stopped
    targets = {t["target"]: t for t in report["targets"]}
    assert len(targets) == 5 and all(t["met"] in (True, False, None) for t in targets.values())
    assert targets["sequencer only (log commit, no execution)"]["met"] is not None
    for plot in report["plots"].values():
        assert (tmp_path / plot).stat().st_size > 0
        (tmp_path / plot).unlink()
    replot = normalize(build_parser().parse_args(["bench", "--replot", str(tmp_path / "results.json")]))
    assert asyncio.run(run_bench(replot)) == 0
    assert all((tmp_path / plot).exists() for plot in report["plots"].values())


@pytest.mark.cluster
@pytest.mark.servers
def test_bench_smoke_baselines(tmp_path, postgres_server) -> None:
    args = _args(tmp_path, "--phases", "closed,monolith,xa", "--zipf", "0.99")
    assert asyncio.run(run_bench(args, pg=postgres_server)) == 0
    report = json.loads((tmp_path / "results.json").read_text())
    runs = {r["system"]: r for r in report["runs"]}
    assert set(runs) == {"ordo", "monolith", "xa"}
    for run in runs.values():
        _check_run(run)
    assert runs["xa"]["two_phase_commits"] > 0, "no transfer crossed the two databases"
    assert "postgres" in runs["monolith"]["cpu_s"]
    # The same seed gave every system the same transfers, in the same order.
    assert runs["ordo"]["tape_start"] == runs["monolith"]["tape_start"] == runs["xa"]["tape_start"] == 0
    assert runs["ordo"]["tape_digest"] == runs["monolith"]["tape_digest"] == runs["xa"]["tape_digest"]
    for name in ("ordo_vs_monolith", "ordo_vs_xa"):
        assert report["ratios"][name]["0.99"] > 0
    ratio = {t["target"]: t for t in report["targets"]}["ordo vs monolith at zipf 0.99"]
    assert ratio["measured"] == report["ratios"]["ordo_vs_monolith"]["0.99"]
