"""Write the TLC configs in specs/, specs/mutants/ and specs/reachable/.

The configs are committed; this script keeps them consistent (every mutant
is its model with exactly one mechanism switched off).  After editing the
tables below, run

    python specs/gen_configs.py          # rewrite the .cfg files
    python specs/gen_configs.py --check  # exit 1 if a .cfg is out of date

tests/test_specs.py runs the check, so a hand edit of a generated .cfg fails
the suite.

Header lines that tests/test_specs.py reads:
    \\* MODULE: <root module>          which .tla TLC checks
    \\* EXPECT: <invariant|property>   mutants and reachability checks: TLC
                                      must find this violated
    \\* TLCFLAGS: <options>            extra TLC options
"""

from __future__ import annotations

import pathlib
import sys

SPECS = pathlib.Path(__file__).resolve().parent

# ----------------------------------------------------------------- HLC.tla

HLC_SWITCHES = ["SendUsesMax", "ReceiveUsesRemote", "ResetC", "RefuseFar"]

HLC_MODELS = {
    "HLC": dict(
        nodes="{n1, n2}", rogue="{}", max_time=3, events_per_tick=2,
        invariants=["TypeOK", "HLCMonotonic", "HLCCausal", "HLCBoundL", "HLCBoundC"],
        header="""\
HLC.tla: Kulkarni et al. send and receive rules on two nodes whose clocks
drift apart by at most Epsilon = 1 tick, up to 2 events per tick.  Checks
monotonicity, causality, l - pt <= Epsilon and the bound on c."""),
    "HLCRogue": dict(
        nodes="{n1, n2}", rogue="{r1}", max_time=2, events_per_tick=1,
        invariants=["TypeOK", "HLCMonotonic", "HLCCausal", "HLCBoundL"],
        header="""\
HLC.tla with a rogue clock r1 (a misconfigured peer, or a client passing
after=) that starts anywhere in 0..MaxTime and sends to the nodes.  Far
timestamps are refused (max_offset_ms), so l - pt <= MaxOffset holds.  The
c bound is not checked: it needs every clock to be synchronised."""),
}

HLC_MUTANTS = [
    ("HLC", "SendUsesMax", "HLCMonotonic", "HLC_SendNoMax", """\
The send rule takes l from the physical clock alone (l' = pt).  After a
node received a timestamp from a node whose clock is ahead, its next event
goes back in time."""),
    ("HLC", "ReceiveUsesRemote", "HLCCausal", "HLC_ReceiveIgnoresRemote", """\
The receive rule ignores the message's timestamp, so a receive can be
stamped before its send."""),
    ("HLC", "ResetC", "HLCBoundC", "HLC_NoResetC", """\
c is never reset when l moves to a new physical time, so it grows with
every event and passes the bound."""),
    ("HLCRogue", "RefuseFar", "HLCBoundL", "HLCRogue_AcceptFar", """\
A node accepts the rogue's far-ahead timestamp, and its l runs ahead of its
clock by more than MaxOffset (the failure CockroachDB's max_offset
prevents)."""),
]


def hlc_cfg(base: str, off: str | None = None, expect: str | None = None, why: str = "") -> str:
    m = HLC_MODELS[base]
    lines = ["\\* MODULE: HLC"]
    if off:
        lines.append(f"\\* EXPECT: {expect}")
        lines.append(f"\\* Mutant of {base}.cfg: {off} = FALSE.")
        lines += ["\\* " + line for line in why.splitlines()]
    else:
        lines += ["\\* " + line for line in m["header"].splitlines()]
    lines += [
        "SPECIFICATION Spec",
        "CONSTANTS",
        f"    Nodes = {m['nodes']}",
        f"    Rogue = {m['rogue']}",
        "    Epsilon = 1",
        "    MaxOffset = 1",
        f"    MaxTime = {m['max_time']}",
        f"    MaxEventsPerTick = {m['events_per_tick']}",
        "    MaxInFlight = 2",
    ]
    lines += [f"    {s} = {'FALSE' if s == off else 'TRUE'}" for s in HLC_SWITCHES]
    lines.append("INVARIANTS")
    lines += ["    " + i for i in ([expect] if off else m["invariants"])]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- Ordo.tla

ORDO_SCENARIO = """\
    Clients <- MCClients
    Shards <- MCShards
    Accounts <- MCAccounts
    Req <- MCReq
    ShardOf <- MCShardOf
    XferShard <- MCXferShard
    LedgerOf <- MCLedgerOf
    DebitsMustNotExceedCredits <- MCDebitsMustNotExceedCredits
    CreditsMustNotExceedDebits <- MCCreditsMustNotExceedDebits
    InitBal <- MCInitBal
    ClockOffset <- MCClockOffset"""

ORDO_SWITCHES = ["DedupIds", "CheckBalance", "CheckLedger", "LinkedAtomic",
                 "GuardAppliedEpoch", "AtomicApply", "IdempotentWrites", "PreloadAtEpoch", "ReadAtW",
                 "AckAtW", "RefuseStaleHLC", "ContinueHLC", "ResumeFromMin",
                 "StrongRetry"]

ORDO_SAFETY = ["TypeOK", "SerialEquivalence", "ExactlyOnceEpoch", "ExactlyOnceTransfer",
               "ExactlyOnceNoLostAck", "ConservationLedger", "ConservationFlags",
               "AtomicVisibilityEpoch", "AtomicVisibilityLinked",
               "AtomicVisibilityCrossStore", "HLCMonotonicLog", "HLCAheadOfLog"]

ORDO_LIVENESS = ["AppliedEverywhere", "CommittedAcked"]

ORDO_MODELS = {
    "Ordo": dict(
        layout="Runner", spec="Spec", attempts="MCAttempts", replicas="MCReplicas",
        knobs=dict(QueueMax=2, EpochMaxReqs=2, MaxLeaderChanges=1, MaxCrashes=1,
                   MaxOutages=0, MaxTime=0),
        header="""\
Ordo.tla, embedded layout: one runner pushes every epoch to two shards in
two different stores (s1 SQLite, s2 PostgreSQL), so it can crash between
shard A's apply and shard B's apply.  Two sequencer replicas with skewed
clocks, one leader change, one runner crash, c1 retries once."""),
    "OrdoCalvin": dict(
        layout="Calvin", spec="Spec", attempts="MCAttempts", replicas="MCReplicas",
        knobs=dict(QueueMax=2, EpochMaxReqs=2, MaxLeaderChanges=0, MaxCrashes=1,
                   MaxOutages=0, MaxTime=0),
        header="""\
Ordo.tla, Calvin scale-out: two executors, one per shard, each executing
every epoch and pushing only its own shard; after a restart an executor
reads the other's shard at its resume version.  One executor crash, c1
retries once; no leader change (Ordo.cfg has one, and executors see only
the committed log)."""),
    "OrdoCassandra": dict(
        layout="Runner", spec="Spec", attempts="MCAttempts", replicas="MCReplicas",
        upsert="MCCassandraShards",
        knobs=dict(QueueMax=2, EpochMaxReqs=2, MaxLeaderChanges=0, MaxCrashes=1,
                   MaxOutages=0, MaxTime=0),
        header="""\
Ordo.tla with s2 in Cassandra, which has no transactions: an epoch's rows
are idempotent upserts and applied_epoch is written last, so a crash can
leave an epoch half written (invisible: reads and preloads stop at
applied_epoch) and the replay writes the same cells again.  One runner
crash, c1 retries once, no leader change."""),
    "OrdoRaft": dict(
        layout="Runner", spec="Spec", attempts="MCAttemptsOnce", replicas="MCReplicas3",
        knobs=dict(QueueMax=2, EpochMaxReqs=2, MaxLeaderChanges=2, MaxCrashes=0,
                   MaxOutages=0, MaxTime=0),
        header="""\
Ordo.tla with three sequencer replicas: an entry commits once two of them
hold it, the third may lag, and the leader changes twice (a replica that
missed an uncommitted entry can win, and the entry is overwritten).  No
retries and no executor crash (Ordo.cfg has those)."""),
    "OrdoLive": dict(
        layout="Runner", spec="FairSpec", attempts="MCAttemptsOnce", replicas="MCReplicas",
        knobs=dict(QueueMax=2, EpochMaxReqs=2, MaxLeaderChanges=0, MaxCrashes=1,
                   MaxOutages=1, MaxTime=0),
        header="""\
Ordo.tla liveness under FairSpec: every epoch is eventually applied on
every shard and every client whose request is in an epoch is answered,
given finitely many faults: one runner crash and one store outage.  No
retries and no leader change, to keep the behaviour graph small: the
executor sees only the committed log, which a leader change does not alter
(the other models check with TLC's deadlock check that the system cannot
get stuck across leader changes)."""),
    "OrdoLiveFlapping": dict(
        layout="Runner", spec="FairSpec", attempts="MCAttemptsOnce", replicas="MCReplicas",
        knobs=dict(QueueMax=2, EpochMaxReqs=2, MaxLeaderChanges=0, MaxCrashes=0,
                   MaxOutages=0, FlappingStores="TRUE", MaxTime=0),
        header="""\
Ordo.tla liveness when the stores flap: each store goes down and comes back
without bound (outages are not counted), so a pending apply is enabled
infinitely often but never continuously.  Under the strong fairness of the
runner's retries every epoch is still applied everywhere and every client
answered.  No runner crash: recovery needs every store up at once, which a
store that flaps against the other need never give."""),
}

# (model, switch set to FALSE, invariant it must break, config name, why).
ORDO_MUTANTS = [
    ("Ordo", "GuardAppliedEpoch", "ExactlyOnceEpoch", "Ordo_NoAppliedEpochGuard", """\
The shard applies whatever it is pushed.  The runner crashes after shard s1
applied epoch e and before s2 did; it resumes at min(applied_epoch) + 1 = e
and pushes e to s1 again, which applies it a second time.  (The real runner
also skips batches for shards it knows to be ahead; the model leaves that
optimisation out, so the shard's own guard is the defence that must hold.)"""),
    ("Ordo", "DedupIds", "ExactlyOnceTransfer", "Ordo_NoDedup", """\
The state machine does not look up transfer ids.  c1 retries after a
timeout, both copies of its request reach the log, and T1 moves alice's
money twice."""),
    ("Ordo", "AckAtW", "ExactlyOnceNoLostAck", "Ordo_AckOnAppend", """\
The API answers as soon as the leader appended the epoch to its own log.
The leader changes before a majority holds the entry, the new leader never
had it, and the acknowledged transfer is gone."""),
    ("Ordo", "PreloadAtEpoch", "SerialEquivalence", "Ordo_PreloadLatest", """\
Recovery preloads the latest version instead of the resume version.  After
a crash between the shards, the runner resumes at epoch e but reads s1 with
e already applied: T1 is seen as `exists`, so s2 never gets its credit."""),
    ("Ordo", "AtomicApply", "ConservationLedger", "Ordo_NonAtomicApply", """\
apply writes the effects and applied_epoch in two transactions.  The
runner crashes in between; on replay the guard sees the old applied_epoch
and s1 gets the debits twice while s2 has the credits once."""),
    ("Ordo", "CheckLedger", "ConservationLedger", "Ordo_NoLedgerCheck", """\
The state machine does not answer ledger_mismatch: T4 moves 1 from ledger 1
(equity) to ledger 2 (euro), so neither ledger balances."""),
    ("Ordo", "CheckBalance", "ConservationFlags", "Ordo_NoBalanceCheck", """\
The state machine does not enforce the balance flags: with c2 first, T3
takes 2 from bob, who holds 1, and bob breaks debits_must_not_exceed_credits."""),
    ("Ordo", "ReadAtW", "AtomicVisibilityEpoch", "Ordo_ReadLatest", """\
A reader reads every shard at its own applied_epoch instead of W.  Between
s1's and s2's apply of an epoch it sees half of that epoch."""),
    ("Ordo", "ReadAtW", "AtomicVisibilityCrossStore", "Ordo_ReadLatestCrossStore", """\
As Ordo_ReadLatest: the reader sees alice debited for T1 in SQLite and bob
not yet credited in PostgreSQL."""),
    ("Ordo", "ReadAtW", "AtomicVisibilityLinked", "Ordo_ReadLatestLinked", """\
As Ordo_ReadLatest: the reader sees part of c2's linked chain (T2, T3), the
part stored in SQLite."""),
    ("Ordo", "LinkedAtomic", "AtomicVisibilityLinked", "Ordo_LinkedNotAtomic", """\
The state machine runs each transfer of a chain on its own.  With c2 first,
T2 succeeds and T3 fails, and T2 stays: half of the chain is stored and
visible."""),
    ("Ordo", "RefuseStaleHLC", "HLCMonotonicLog", "Ordo_AcceptStaleHLC", """\
apply_epoch does not refuse an entry stamped at or below the last epoch.
r1 (clock one tick ahead) stamps an epoch and r2 copies it; r2 becomes
leader before it is committed, is caught_up (nothing it knows to be
committed is unapplied), and stamps the next epoch from its own clock, which
is behind.  Both entries commit in that order.  So the caught_up() wait
alone does not keep HLC order equal to log order; the refusal does."""),
    ("Ordo", "ContinueHLC", "HLCAheadOfLog", "Ordo_NoHLCContinue", """\
apply_epoch does not call observe_log.  r2 applies r1's epoch but its HLC
stays on its own clock, which is behind the epoch's timestamps: as leader
it would stamp below the log (and have its epochs refused)."""),
    ("OrdoCassandra", "IdempotentWrites", "ExactlyOnceEpoch", "OrdoCassandra_NotIdempotent", """\
Cassandra's rows are appended instead of upserted under deterministic keys.
The runner crashes after writing an epoch's rows to s2 and before writing
applied_epoch; the replay writes the epoch a second time."""),
    ("OrdoCalvin", "PreloadAtEpoch", "SerialEquivalence", "OrdoCalvin_PreloadLatest", """\
Calvin layout, recovery reads at the latest version instead of the resume
version: an executor that restarts behind the other reads the other's shard
after later epochs, and computes a different outcome for its own shard."""),
    ("OrdoLiveFlapping", "StrongRetry", "AppliedEverywhere", "OrdoLiveFlapping_WeakRetry", """\
Only weak fairness for the runner's retries.  A store that goes down
whenever an apply to it is enabled, and always comes back, is never
written: the apply is enabled infinitely often but never continuously,
which weak fairness allows to be ignored forever.  Deadlock checking is
off (-deadlock) so that TLC reports the liveness property it breaks."""),
    ("OrdoLive", "ResumeFromMin", "AppliedEverywhere", "OrdoLive_ResumeFromMax", """\
Runner.recover resumes after the furthest shard instead of the smallest
applied_epoch.  After a crash between the shards the lagging shard never
gets that epoch: recovery waits for every shard to reach the resume version
and the lagging one never does.  Deadlock checking is off (-deadlock) so
that TLC reports the liveness property it breaks."""),
]

# (model, Never* predicate of MCOrdoReach.tla that TLC must refute).
ORDO_REACHABLE = [
    ("Ordo", "NeverRefused"),
    ("Ordo", "NeverDuplicateEpochs"),
    ("Ordo", "NeverChainSucceeds"),
    ("Ordo", "NeverChainRollsBack"),
    ("Ordo", "NeverShardsTwoApart"),
    ("Ordo", "NeverReplaySkipped"),
    ("Ordo", "NeverAckAfterLeaderChange"),
    ("Ordo", "NeverDone"),
    ("OrdoCalvin", "NeverShardsTwoApart"),
    ("OrdoRaft", "NeverRefused"),
    ("OrdoCassandra", "NeverHalfWritten"),
    ("OrdoCassandra", "NeverReplayOverHalfWritten"),
]

#: Mutants that need a leader change to fail; the others run without one,
#: so TLC finds their counterexample sooner.
ORDO_NEEDS_LEADER_CHANGE = {"Ordo_AckOnAppend", "Ordo_AcceptStaleHLC"}


def ordo_cfg(base: str, off: str | None = None, expect: str | None = None, why: str = "",
             knobs: dict | None = None, reach: str | None = None) -> str:
    m = ORDO_MODELS[base]
    knobs = knobs or {}
    live = m["spec"] == "FairSpec"
    lines = ["\\* MODULE: " + ("MCOrdoReach" if reach else "MCOrdo")]
    if reach:
        lines.append(f"\\* EXPECT: {reach}")
        lines.append(f"\\* Reachability in {base}.cfg: TLC must find a state where {reach} is false.")
    elif off:
        lines.append(f"\\* EXPECT: {expect}")
        if live:
            lines.append("\\* TLCFLAGS: -deadlock")
        changed = "".join(f", {k} = {v}" for k, v in knobs.items())
        lines.append(f"\\* Mutant of {base}.cfg: {off} = FALSE{changed}.")
        lines += ["\\* " + line for line in why.splitlines()]
    else:
        lines += ["\\* " + line for line in m["header"].splitlines()]
    lines += [
        f"SPECIFICATION {m['spec']}",
        "CONSTANTS",
        ORDO_SCENARIO,
        f"    Replicas <- {m['replicas']}",
        f"    Executors <- MCExecutors{m['layout']}",
        f"    Owner <- MCOwner{m['layout']}",
        f"    UpsertShards <- {m.get('upsert', 'MCNoUpsertShards')}",
        f"    Attempts <- {m['attempts']}",
    ]
    values = {**m["knobs"], **knobs}
    values.setdefault("FlappingStores", "FALSE")  # outages are bounded unless a model says otherwise
    lines += [f"    {k} = {v}" for k, v in values.items()]
    lines += [f"    {s} = {'FALSE' if s == off else 'TRUE'}" for s in ORDO_SWITCHES]
    if reach:
        lines += ["INVARIANTS", f"    {reach}"]
    elif off and live:
        lines += ["INVARIANTS", "    TypeOK", "PROPERTIES", f"    {expect}"]
    elif off:
        lines += ["INVARIANTS", f"    {expect}"]
    else:
        lines += ["INVARIANTS"] + ["    " + i for i in (["TypeOK"] if live else ORDO_SAFETY)]
        if live:
            lines += ["PROPERTIES"] + ["    " + p for p in ORDO_LIVENESS]
    return "\n".join(lines) + "\n"


def configs() -> dict[pathlib.Path, str]:
    out: dict[pathlib.Path, str] = {}
    for name in HLC_MODELS:
        out[SPECS / f"{name}.cfg"] = hlc_cfg(name)
    for base, off, expect, name, why in HLC_MUTANTS:
        out[SPECS / "mutants" / f"{name}.cfg"] = hlc_cfg(base, off, expect, why)
    for name in ORDO_MODELS:
        out[SPECS / f"{name}.cfg"] = ordo_cfg(name)
    for base, off, expect, name, why in ORDO_MUTANTS:
        knobs = None
        if base == "Ordo" and name not in ORDO_NEEDS_LEADER_CHANGE:
            knobs = {"MaxLeaderChanges": 0}
        out[SPECS / "mutants" / f"{name}.cfg"] = ordo_cfg(base, off, expect, why, knobs)
    for base, never in ORDO_REACHABLE:
        out[SPECS / "reachable" / f"{base}_{never}.cfg"] = ordo_cfg(base, reach=never)
    return out


def main(argv: list[str]) -> int:
    wanted = configs()
    present = {p for d in ("", "mutants", "reachable") for p in (SPECS / d).glob("*.cfg")}
    stale = sorted(str(p.relative_to(SPECS)) for p, text in wanted.items()
                   if not p.exists() or p.read_text() != text)
    extra = sorted(str(p.relative_to(SPECS)) for p in present - set(wanted))
    if "--check" in argv:
        for path in stale:
            print(f"out of date: {path}")
        for path in extra:
            print(f"not generated: {path}")
        return 1 if stale or extra else 0
    for d in ("mutants", "reachable"):
        (SPECS / d).mkdir(exist_ok=True)
    for path, text in wanted.items():
        path.write_text(text)
    for path in extra:
        (SPECS / path).unlink()
    print(f"wrote {len(wanted)} configs" + (f", removed {extra}" if extra else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
