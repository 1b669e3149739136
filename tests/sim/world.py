"""A deterministic whole-cluster simulator: one seed drives everything.

In the manner of TigerBeetle's VOPR and FoundationDB's simulation, one
process runs the real pure cores (`SequencerCore`, `LogState`, `HLC`,
`ExecutorCore`, the state machine) against simulated Raft, simulated clocks
and `MemoryShard` stores, and checks every DESIGN.md invariant after every
step:

* serial equivalence: the stores at W equal `oracle.Model` (written apart
  from the state machine) after the committed log up to W;
* exactly once, and no lost acknowledgement: every acknowledged result is
  the model's, and each posting chain is gap-free;
* conservation: per ledger debits equal credits, and no limited account
  overdraws;
* atomic visibility: a read at W (through the read path) equals the model at W;
* replica agreement: every replica that applied epoch N holds the same digest;
* HLC order: stamps increase strictly along every replica's log;
* bounded memory: the executor evicts keys (its cache is 1 to 128 epochs
  deep, drawn from the seed) and reloads them at the safe read point, so
  eviction meets recovery in every run;
* liveness: once faults stop, everything committed is applied and every
  client is answered within `QUIET_STEPS_MAX` steps.

Faults drawn from the seed: leader changes (in-flight proposals lost or
committed late by the new term), duplicated proposals, lagging replicas,
per-node clock skew and drift, store outages and slow stores, an executor crash at any step
(including between two shards' applies of one epoch), and clients that retry
and resubmit the same ids.

A failure raises `SimFailure`, whose message ends with
`reproduce with: ordo sim --seed N`.  The same seed gives the same run,
byte for byte (`Simulation.trace_digest`).

`PLANTED` bugs, each switched on by name, show that the checks bite.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Coroutine
from dataclasses import dataclass, field

import msgspec

from executor.core import ExecutorCore
from proxies.directory import Directory, Range, ShardSpec
from proxies.memory import MemoryShard
from sequencer.core import SequencerCore
from sequencer.errors import Overloaded, TooLarge
from sequencer.hlc import HLC, Timestamp
from sequencer.log_state import LogState
from sequencer.types import (
    AppliedEpoch,
    CreateAccount,
    CreateTransfer,
    Epoch,
    ShardBatch,
    decode_epoch,
    fold_log_digest,
)
from tests.sim.oracle import Model

PLANTED = ("no_applied_epoch_guard", "read_latest", "dedup_within_epoch", "ack_before_w", "preload_at_base")
REPLICAS = 3
SHARDS = ("s0", "s1")
ACCOUNTS = 6  # ids 1..6; 1..3 may not overdraw (debits_must_not_exceed_credits)
CLIENTS = 4
MAX_OFFSET_MS = 500
EPOCH_MS = 10
#: Steps with faults; then a quiet phase in which everything must settle.
FAULT_STEPS = 400
QUIET_STEPS_MAX = 400


class SimFailure(AssertionError):
    def __init__(self, seed: int, step: int, invariant: str, detail: str) -> None:
        super().__init__(f"seed={seed} step={step}: {invariant}: {detail}\nreproduce with: ordo sim --seed {seed}")
        self.seed, self.step, self.invariant = seed, step, invariant


def run_now(coro: Coroutine):
    """Run a coroutine that never really waits (MemoryShard's methods) to its result."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("a simulated store call tried to wait")


# ------------------------------------------------------------------ pieces


@dataclass
class Clock:
    """A node's physical clock: true time with a skew and a drift, never going backwards."""

    skew_ms: int
    drift_ppm: int
    true_ms: int = 0
    last: int = 0

    def __call__(self) -> int:
        value = self.true_ms + self.skew_ms + self.true_ms * self.drift_ppm // 1_000_000
        self.last = max(self.last, value)
        return self.last


@dataclass
class Replica:
    id: int
    clock: Clock
    hlc: HLC
    core: SequencerCore
    log: LogState
    applied: int = 0  # committed entries applied
    journal: dict[int, AppliedEpoch] = field(default_factory=dict)
    waiting: dict[int, tuple[int, int]] = field(default_factory=dict)  # ticket -> (client, attempt)


@dataclass
class InFlight:
    data: bytes
    proposer: int
    tickets: list[int]
    starts: list[int]
    ends: list[int]
    index: int = -1  # its place in the committed log, once committed


@dataclass
class Client:
    id: int
    batch: list[CreateTransfer] | None = None
    attempt: int = 0  # never reset: a late answer to an old attempt must not be taken for the current one
    state: str = "idle"  # idle | waiting | committed | backoff
    wait_until: int = 0
    epoch: int = 0
    start: int = 0
    end: int = 0


# -------------------------------------------------------------- the world


class Simulation:
    def __init__(self, seed: int, planted: frozenset[str] = frozenset(), fault_steps: int = FAULT_STEPS) -> None:
        unknown = set(planted) - set(PLANTED)
        if unknown:
            raise ValueError(f"unknown planted bugs {sorted(unknown)}; choose from {PLANTED}")
        self.seed = seed
        self.rng = random.Random(seed)
        self.planted = planted
        self.fault_steps = fault_steps
        self.step_no = 0
        self.true_ms = 1_000_000
        self.trace: list[str] = []
        key = hashlib.sha256(f"sim-{seed}".encode()).digest()
        self.log_key = key
        self.replicas = [self._replica(i, key) for i in range(REPLICAS)]
        self.leader: int | None = 0
        self.committed: list[bytes] = []
        self.inflight: list[InFlight] = []
        self.committing: list[InFlight] = []  # committed, waiting for the proposer to apply them
        self.directory = Directory([ShardSpec(n, "memory") for n in SHARDS], [Range(1, 2**63 - 2, SHARDS)])
        self.shards = {n: MemoryShard(n) for n in SHARDS}
        self.down: dict[str, int] = {}  # shard -> step it comes back
        self.slow: dict[str, int] = {}  # shard -> step it is fast again
        self.executor: ExecutorCore | None = None
        self.exec_digest: str | None = None
        self.pending_push: dict[str, ShardBatch] = {}
        self.model = Model()
        self.checked_w = -1
        self.model_epochs: dict[int, Epoch] = {}
        self.clients = [Client(i) for i in range(CLIENTS)]
        self.next_transfer_id = 100
        #: (transfer id, encoded body) -> {(epoch, index): acknowledged result}
        self.acks: dict[tuple[int, bytes], dict[tuple[int, int], str]] = {}
        self.pendings: list[CreateTransfer] = []
        self.accounts_batch = [CreateAccount(i, 1, 1, 1 if i <= 3 else 0) for i in range(1, ACCOUNTS + 1)]
        #: A small cache evicts all the time, so eviction meets recovery in every run.
        self.cache_epochs = self.rng.choice([1, 2, 3, 8, 128])
        self.stats = {"epochs": 0, "acks": 0, "leader_changes": 0, "crashes": 0, "outages": 0, "refused": 0}

    def _replica(self, i: int, key: bytes) -> Replica:
        clock = Clock(self.rng.randint(-MAX_OFFSET_MS // 3, MAX_OFFSET_MS // 3), self.rng.randint(-200, 200))
        hlc = HLC(clock, max_offset_ms=MAX_OFFSET_MS)
        return Replica(i, clock, hlc, SequencerCore(hlc, EPOCH_MS, 12 * 1024, 64), LogState(key))

    # -- the loop ---------------------------------------------------------------

    def run(self) -> dict:
        try:
            for _ in range(self.fault_steps):
                self.step(faults=True)
            for quiet in range(QUIET_STEPS_MAX):
                self.step(faults=False)
                if self._settled():
                    break
            else:
                self._fail("liveness", f"not settled {QUIET_STEPS_MAX} steps after the faults stopped: "
                           f"W={self.watermark()}, committed={len(self.committed)}, clients="
                           f"{[(c.state, c.epoch) for c in self.clients]}")
        except SimFailure:
            raise
        except Exception as exc:  # a crash of the code under test is a finding too
            self._fail("crash", f"{type(exc).__name__}: {exc}")
        return {**self.stats, "steps": self.step_no, "trace": self.trace_digest()}

    def trace_digest(self) -> str:
        return hashlib.sha256("\n".join(self.trace).encode()).hexdigest()[:16]

    def step(self, faults: bool) -> None:
        self.step_no += 1
        self.true_ms += self.rng.randint(1, 6)
        for r in self.replicas:
            r.clock.true_ms = self.true_ms
        if faults:
            self._inject_faults()
        elif self.leader is None:
            self._leader_change(to=self.rng.randrange(REPLICAS))  # the quiet phase has a leader
        actions = [self._clients_act, self._leader_poll, self._raft_commit, self._replicas_apply,
                   self._executor_act, self._stores_recover]
        self.rng.shuffle(actions)
        for action in actions:
            action()
        self._check()

    def _settled(self) -> bool:
        everyone_applied = all(r.applied == len(self.committed) for r in self.replicas)
        last = max((r.log.last_number for r in self.replicas), default=0)
        return (everyone_applied and not self.inflight and not self.committing and self.watermark() == last
                and all(c.state == "idle" for c in self.clients) and self.step_no > self.fault_steps + 20)

    def _log(self, event: str) -> None:
        self.trace.append(f"{self.step_no} {event}")

    def _fail(self, invariant: str, detail: str) -> None:
        raise SimFailure(self.seed, self.step_no, invariant, detail)

    # -- faults -------------------------------------------------------------------

    def _inject_faults(self) -> None:
        roll = self.rng.random()
        if roll < 0.02:
            self._leader_change()
        elif roll < 0.03:
            shard = self.rng.choice(SHARDS)
            self.down[shard] = self.step_no + self.rng.randint(1, 15)
            self.stats["outages"] += 1
            self._log(f"outage {shard}")
        elif roll < 0.038:
            shard = self.rng.choice(SHARDS)
            self.slow[shard] = self.step_no + self.rng.randint(5, 40)  # applies only now and then
            self._log(f"slow {shard}")
        elif roll < 0.045 and self.executor is not None:
            self._log("executor crash")
            self.stats["crashes"] += 1
            self.executor = None
            self.pending_push.clear()
        elif roll < 0.05 and self.inflight:
            dup = self.rng.choice(self.inflight)
            self.inflight.append(InFlight(dup.data, dup.proposer, [], [], []))  # a duplicated proposal
            self._log("duplicate proposal")

    def _leader_change(self, to: int | None = -1) -> None:
        old = self.leader
        self.leader = self.rng.choice([None, *range(REPLICAS)]) if to == -1 else to
        self.stats["leader_changes"] += 1
        self._log(f"leader {old} -> {self.leader}")
        kept = []
        for f in self.inflight:
            if self.rng.random() < 0.5:
                kept.append(f)  # replicated to a majority: the new term commits it
            else:
                self._resolve(f, None)  # lost with the old term
        self.inflight = kept
        if old is not None:
            for refusal in self.replicas[old].core.flush():
                for ticket in refusal.tickets:
                    self._client_refused(self.replicas[old], ticket)

    # -- clients --------------------------------------------------------------------

    def _clients_act(self) -> None:
        for c in self.clients:
            if c.state == "backoff" and self.step_no >= c.wait_until:
                c.state = "retry"
            if c.state == "idle" and self.step_no <= self.fault_steps:
                c.batch = self._draw_batch()
                c.state = "retry"
            if c.state == "retry":
                self._submit(c)
            elif c.state == "committed":
                self._maybe_ack(c)

    def _draw_batch(self) -> list:
        if self.model.balances.keys() < set(range(1, ACCOUNTS + 1)) and not self.acks:
            return list(self.accounts_batch)
        batch = []
        for _ in range(self.rng.randint(1, 4)):
            batch.extend(self._draw_transfers())
        return batch

    def _draw_transfers(self) -> list[CreateTransfer]:
        rng = self.rng
        kind = rng.random()
        dr, cr = rng.randint(1, ACCOUNTS), rng.randint(1, ACCOUNTS)
        if dr == cr and rng.random() < 0.8:
            cr = dr % ACCOUNTS + 1
        amount = rng.randint(1, 60)

        def new(flags=0, **kw) -> CreateTransfer:
            self.next_transfer_id += 1
            return CreateTransfer(self.next_transfer_id, kw.pop("debit", dr), kw.pop("credit", cr),
                                  kw.pop("amount", amount), 1, 1, flags, **kw)

        if kind < 0.35:
            return [new()]
        if kind < 0.5:
            return [new(1), new(1, debit=cr, credit=dr), new()]  # a linked chain
        if kind < 0.65:
            p = new(2, timeout_ms=rng.choice([0, 5, 30, 200]))
            self.pendings.append(p)
            return [p]
        if kind < 0.8 and self.pendings:
            p = rng.choice(self.pendings)
            flag = rng.choice([4, 8])
            amt = 0 if flag == 8 else rng.choice([0, p.amount, max(1, p.amount // 2), p.amount + 1])
            return [new(flag, debit=p.debit_account_id, credit=p.credit_account_id, amount=amt, pending_id=p.id)]
        if kind < 0.9 and self.next_transfer_id > 110:
            old_id = rng.randint(101, self.next_transfer_id)
            return [CreateTransfer(old_id, dr, cr, amount, 1, 1)]  # a duplicate id, maybe a different body
        return [new(debit=rng.choice([dr, 99]))]  # 99 does not exist

    def _submit(self, c: Client) -> None:
        if self.leader is None:
            self._backoff(c)
            return
        leader = self.replicas[self.leader]
        try:
            ticket = leader.core.submit(c.batch)
        except (Overloaded, TooLarge):
            self._backoff(c)
            return
        c.attempt += 1
        leader.waiting[ticket] = (c.id, c.attempt)
        c.state = "waiting"
        self._log(f"client {c.id} submits {len(c.batch)} to {leader.id} (ticket {ticket})")

    def _backoff(self, c: Client) -> None:
        c.state = "backoff"
        c.wait_until = self.step_no + self.rng.randint(1, 5)

    def _client_refused(self, replica: Replica, ticket: int) -> None:
        owner = replica.waiting.pop(ticket, None)
        if owner is None:
            return
        c = self.clients[owner[0]]
        if c.state == "waiting" and c.attempt == owner[1]:
            self.stats["refused"] += 1
            self._backoff(c)  # retry with the SAME ids

    def _maybe_ack(self, c: Client) -> None:
        w = self.watermark()
        if "ack_before_w" not in self.planted and w < c.epoch:
            return
        results = {}
        for shard in self.shards.values():
            for r in run_now(shard.read_results(c.epoch)):
                results[r.index] = r.result
        if "ack_before_w" in self.planted and w < c.epoch:
            results = {i: "ok" for i in range(c.start, c.end)}  # answered at commit, before W covers it
        for offset, t in enumerate(c.batch):
            code = results.get(c.start + offset)
            if code is None:
                self._fail("no lost acknowledgement", f"epoch {c.epoch} has no result for index {c.start + offset}")
            self._check_ack(t, code, c.epoch, c.start + offset)
        self.stats["acks"] += 1
        self._log(f"client {c.id} acked epoch {c.epoch}")
        if self.rng.random() < 0.1:
            c.state = "retry"  # resubmit an acknowledged batch: it must change nothing
        else:
            c.state, c.batch = "idle", None

    def _check_ack(self, t, code: str, epoch: int, index: int) -> None:
        """Every later submission of the same body is answered with the first one's outcome.

        "First" is in log order, not in the order clients heard back.  Not
        checked for chain-dependent codes: a retried chain whose member
        collides with another transfer's id is not a replay (that member's
        body differs), so the chain runs again and the colliding member may
        answer `linked_event_failed` where it first answered
        `exists_with_different_fields`; nothing is applied either time.
        """
        if not isinstance(t, CreateTransfer):
            return
        seen = self.acks.setdefault((t.id, msgspec.msgpack.encode(t)), {})
        seen[(epoch, index)] = code
        ordered = [seen[k] for k in sorted(seen)]
        first = ordered[0]
        if first in ("exists_with_different_fields", "linked_event_failed"):
            return
        expected = "exists" if first == "ok" else first
        for later in ordered[1:]:
            if later != expected and later not in ("exists_with_different_fields", "linked_event_failed"):
                self._fail("exactly once", f"transfer {t.id} was answered {first}, then {later} for the same body")

    # -- the leader and Raft -----------------------------------------------------------

    def _leader_poll(self) -> None:
        for r in self.replicas:
            may_stamp = r.id == self.leader and r.applied == len(self.committed)
            proposals, refusals = r.core.poll(self.true_ms, may_stamp)
            for refusal in refusals:
                for ticket in refusal.tickets:
                    self._client_refused(r, ticket)
            for p in proposals:
                self.inflight.append(InFlight(p.data, r.id, p.tickets, p.starts, p.ends))
                self._log(f"replica {r.id} proposes {len(p.tickets)} batches")

    def _raft_commit(self) -> None:
        for _ in range(self.rng.randint(0, 2)):
            if not self.inflight or self.leader is None:
                return
            f = self.inflight.pop(0)
            self.committed.append(f.data)
            f.index = len(self.committed) - 1
            self.committing.append(f)

    def _replicas_apply(self) -> None:
        for r in self.replicas:
            lag = self.rng.randint(0, 3)
            for _ in range(lag):
                if r.applied == len(self.committed):
                    break
                data = self.committed[r.applied]
                entry = r.log.apply(data)
                r.applied += 1
                if entry is not None:
                    self._journal(r, entry)
                self._resolve_applied(r, r.applied - 1, entry)

    def _journal(self, r: Replica, entry: AppliedEpoch) -> None:
        previous = r.journal.get(entry.number - 1)
        stamps = decode_epoch(entry.data).stamps
        if previous is not None and stamps[0] <= previous.hlc_last:
            self._fail("HLC order", f"replica {r.id}: epoch {entry.number} starts at or below epoch {entry.number - 1}")
        if any(b <= a for a, b in zip(stamps, stamps[1:])):
            self._fail("HLC order", f"replica {r.id}: epoch {entry.number}'s stamps do not increase")
        r.journal[entry.number] = entry
        r.hlc.observe_log(Timestamp.unpack(entry.hlc_last))
        for other in self.replicas:
            theirs = other.journal.get(entry.number)
            if theirs is not None and theirs != entry:
                self._fail("replica agreement", f"replicas {r.id} and {other.id} differ at epoch {entry.number}")

    def _resolve_applied(self, r: Replica, index: int, entry: AppliedEpoch | None) -> None:
        """The proposer learns the outcome of its entry when it applies it (pysyncobj's callback)."""
        for f in [f for f in self.committing if f.proposer == r.id and f.index == index]:
            self.committing.remove(f)
            self._resolve(f, entry)

    def _resolve(self, f: InFlight, entry: AppliedEpoch | None) -> None:
        r = self.replicas[f.proposer]
        for ticket, start, end in zip(f.tickets, f.starts, f.ends):
            if entry is None:
                self._client_refused(r, ticket)
                continue
            owner = r.waiting.pop(ticket, None)
            if owner is None:
                continue
            c = self.clients[owner[0]]
            if c.state == "waiting" and c.attempt == owner[1]:
                c.state, c.epoch, c.start, c.end = "committed", entry.number, start, end

    # -- the executor ----------------------------------------------------------------------

    def _executor_act(self) -> None:
        if self.executor is None:
            self._executor_recover()
            return
        if self.pending_push:
            self._push_some()
            return
        self._executor_next()

    def _up(self, shard: str) -> bool:
        return self.step_no >= self.down.get(shard, 0)

    def _executor_recover(self) -> None:
        if not all(self._up(s) for s in SHARDS):
            return
        applied = {n: run_now(s.applied_epoch()) for n, s in self.shards.items()}
        base = min(applied.values())
        pendings = [rec for s in self.shards.values() for rec in run_now(s.load_open_pendings(base))]
        core = ExecutorCore(self.directory, cache_epochs=self.cache_epochs)
        core.recover(applied, pendings)
        digest = self._digest_at(base)
        if digest is None:
            return  # no replica serves epoch `base` yet
        self.executor, self.exec_digest = core, digest
        self._evicted_seen = 0
        self._log(f"executor recovers at {base} ({applied})")

    def _digest_at(self, number: int) -> str | None:
        if number == 0:
            return LogState(self.log_key).digest
        for r in self.replicas:
            if number in r.journal:
                return r.journal[number].digest
        return None

    def _executor_next(self) -> None:
        core = self.executor
        source = self.rng.choice(self.replicas)
        entry = source.journal.get(core.next_epoch)
        if entry is None:
            return
        if fold_log_digest(self.log_key, self.exec_digest, entry.data) != entry.digest:
            self._fail("replica agreement", f"epoch {entry.number} from replica {source.id} breaks the chain")
        epoch = decode_epoch(entry.data)
        for request in core.loads(epoch):
            if not self._up(request.shard):
                return  # a store is down: try again later (the cache is unchanged)
            method = getattr(self.shards[request.shard], f"load_{request.what}")
            at = core.base_epoch if "preload_at_base" in self.planted else request.at_epoch
            found = run_now(method(request.ids, at))
            if "dedup_within_epoch" in self.planted and request.what in ("transfers", "resolutions"):
                found = {}  # forgets every id stored in earlier epochs
            core.loaded(request, found)
        self.exec_digest = entry.digest
        if "no_applied_epoch_guard" in self.planted:
            core.applied = dict.fromkeys(core.applied, 0)  # forgets which shards already hold the epoch
        self.pending_push = core.execute(epoch)
        self.stats["epochs"] += 1
        self.stats["evicted"] = self.stats.get("evicted", 0) + core.evicted - self._evicted_seen
        self._evicted_seen = core.evicted
        self._log(f"executor executes {epoch.number}")

    def _push_some(self) -> None:
        for name in sorted(self.pending_push, key=lambda _: self.rng.random()):
            if not self._up(name):
                continue
            if self.step_no < self.slow.get(name, 0) and self.rng.random() < 0.8:
                continue  # a slow store: this apply takes a few more steps
            batch = self.pending_push.pop(name)
            shard = self.shards[name]
            if "no_applied_epoch_guard" in self.planted:
                shard.apply_one(batch)  # writes whatever it gets, even an epoch it already holds
            else:
                run_now(shard.apply([batch]))
            self.executor.pushed(name, batch.epoch)
            self._log(f"push {name} {batch.epoch}")
            if self.rng.random() < 0.05 and self.step_no <= self.fault_steps:
                self._log("executor crash between shards")
                self.stats["crashes"] += 1
                self.executor = None
                self.pending_push.clear()
                return
            if self.rng.random() < 0.5:
                return  # one shard per step, sometimes

    def _stores_recover(self) -> None:
        for shard in [s for s, back in self.down.items() if self.step_no >= back]:
            del self.down[shard]

    # -- invariants ---------------------------------------------------------------------------

    def watermark(self) -> int:
        return min(run_now(s.applied_epoch()) for s in self.shards.values())

    def _check(self) -> None:
        w = self.watermark()
        self._advance_model(w)
        if w != self.checked_w:  # the stores at W change only when W does
            self._check_stores(w)
            self.checked_w = w
        self._check_reads(w)
        for (tid, body), answers in self.acks.items():
            stored = self.model.transfers.get(tid)
            code = answers[min(answers)]
            if stored is None:
                self._fail("no lost acknowledgement", f"transfer {tid} was acknowledged ({code}) but is not stored")
            same_body = msgspec.msgpack.encode(stored[0]) == body
            if same_body and code not in (stored[1], "exists") and code not in ("exists_with_different_fields",
                                                                                 "linked_event_failed"):
                self._fail("no lost acknowledgement", f"transfer {tid} acknowledged {code}, the model says {stored[1]}")
            if not same_body and code in ("ok", "exists"):
                self._fail("exactly once", f"a second body for transfer {tid} was acknowledged {code}")

    def _advance_model(self, w: int) -> None:
        while self.model.epoch < w:
            number = self.model.epoch + 1
            entry = next((r.journal[number] for r in self.replicas if number in r.journal), None)
            if entry is None:
                self._fail("liveness", f"W={w} but no replica holds epoch {number}")
            self.model.apply_epoch(decode_epoch(entry.data))

    def _check_stores(self, w: int) -> None:
        dumps = [run_now(s.dump(w)) for s in self.shards.values()]
        accounts = {a.id: a for d in dumps for a in d.accounts}
        debits = credits = 0
        for account_id, want in self.model.balances.items():
            a = accounts.get(account_id)
            got = None if a is None else [a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted]
            if got != want:
                self._fail("serial equivalence", f"account {account_id} at W={w}: stores {got}, model {want}")
            if account_id in self.model.limited and got[0] + got[1] > got[3]:
                self._fail("conservation", f"account {account_id} overdraws its credits: {got}")
            debits += got[1]
            credits += got[3]
        if debits != credits:
            self._fail("conservation", f"posted debits {debits} != credits {credits} at W={w}")
        stored = {r.transfer.id: r.result for d in dumps for r in d.transfers}
        want = {tid: code for tid, (_, code) in self.model.transfers.items()}
        if stored != want:
            diff = sorted(k for k in stored.keys() | want.keys() if stored.get(k) != want.get(k))[:5]
            self._fail("exactly once", f"transfer records differ at W={w}: " +
                       ", ".join(f"{k}: stores {stored.get(k)} model {want.get(k)}" for k in diff))
        for d in dumps:
            seqs: dict[int, list[int]] = {}
            for p in d.postings:
                seqs.setdefault(p.account_id, []).append(p.seq)
            for account_id, got in seqs.items():
                if got != list(range(1, len(got) + 1)):
                    self._fail("exactly once", f"account {account_id}'s postings are not one chain: seq {got[:10]}")

    def _check_reads(self, w: int) -> None:
        """A reader's snapshot through the read path: at W, or (planted) at each shard's latest."""
        for account_id, want in self.model.balances.items():
            shard_name = self.directory.account_shard(account_id)
            shard = self.shards[shard_name]
            at = run_now(shard.applied_epoch()) if "read_latest" in self.planted else w
            a = run_now(shard.load_accounts([account_id], at)).get(account_id)
            got = None if a is None else [a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted]
            if got != want:
                self._fail("atomic visibility", f"a read of account {account_id} at {at} (W={w}) saw {got}, "
                           f"the model at W has {want}")


def sweep(first_seed: int, count: int, planted: frozenset[str] = frozenset()) -> list[dict]:
    return [Simulation(seed, planted).run() for seed in range(first_seed, first_seed + count)]
