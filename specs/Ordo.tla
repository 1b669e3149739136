------------------------------- MODULE Ordo -------------------------------
(***************************************************************************)
(* ordo: sequencing and execution.                                         *)
(*                                                                         *)
(* Clients submit requests (sequences of transfers with client-chosen ids) *)
(* and retry them, so the log can hold duplicates.  The leader of the      *)
(* sequencer group drains its bounded queue into epochs and stamps them    *)
(* with HLC timestamps.  The replicated log is modelled at the level of    *)
(* what Raft guarantees (Raft itself comes from pysyncobj and is assumed   *)
(* correct): the leader appends, followers copy the leader's log, an entry *)
(* is committed once a majority holds it, and a new leader holds every     *)
(* committed entry.  Every replica applies committed entries in order and  *)
(* feeds each epoch's last timestamp to its HLC receive rule.              *)
(*                                                                         *)
(* Executors read the committed log.  For epoch e they preload every       *)
(* account at version e-1 from the versioned stores, run the pure state    *)
(* machine (dedup by id, balance flags, ledgers, linked chains), and push  *)
(* each shard its effects in one atomic write that also sets the shard's   *)
(* applied_epoch; a shard ignores an epoch it has already applied.  An     *)
(* executor can crash at any step and loses its memory; it resumes from    *)
(* the smallest applied_epoch of its shards.  Shards live in different     *)
(* stores (SQLite, PostgreSQL) and can be unreachable for a while.         *)
(*                                                                         *)
(* Readers read at the watermark W = min applied_epoch over the shards.    *)
(*                                                                         *)
(* The BOOLEAN constants at the end of the CONSTANTS list switch the       *)
(* mechanisms on (TRUE, the real protocol).  Each mutant in specs/mutants/ *)
(* sets one to FALSE and names the invariant that must then fail.          *)
(***************************************************************************)
EXTENDS Naturals, Sequences, FiniteSets

CONSTANTS
    Clients,          \* each client owns one request, Req[c]
    Replicas,         \* sequencer replicas (one pysyncobj Raft group)
    Executors,        \* executor processes
    Shards,           \* shards; each is one store
    Accounts,
    Req,              \* [Clients -> Seq(Transfer)], a request of transfers
    ShardOf,          \* [Accounts -> Shards]
    Owner,            \* [Shards -> Executors]: who pushes to the shard
    LedgerOf,         \* [Accounts -> Nat]
    DebitsMustNotExceedCredits,   \* accounts with that flag
    CreditsMustNotExceedDebits,   \* accounts with that flag
    InitBal,          \* [Accounts -> [dp : Nat, cp : Nat]], posted balances
    Attempts,         \* [Clients -> Nat]: tries per client (first + retries)
    QueueMax,         \* API queue bound (the API answers 429 beyond it)
    EpochMaxReqs,     \* requests per epoch (stands for epoch_bytes_max)
    MaxLeaderChanges, \* bound on leader elections (finitely many)
    MaxCrashes,       \* bound on executor crashes (finitely many)
    MaxOutages,       \* bound on store outages (finitely many)
    ClockOffset,      \* [Replicas -> Nat]: each replica's clock skew
    MaxTime,          \* horizon of true time (0: the clocks stand still)
    \* ---- mechanism switches: TRUE = real protocol, FALSE = mutant ----
    DedupIds,         \* state machine answers `exists` for a known id
    CheckBalance,     \* state machine enforces the balance flags
    CheckLedger,      \* state machine answers `ledger_mismatch`
    LinkedAtomic,     \* a linked chain succeeds or fails as a whole
    GuardAppliedEpoch,\* a shard ignores epochs <= its applied_epoch
    AtomicApply,      \* effects and applied_epoch in one transaction
    PreloadAtEpoch,   \* preload reads at version e-1, not the latest
    ReadAtW,          \* readers read every shard at W
    AckAtW,           \* ack once W covers the epoch (else: on append)
    ContinueHLC,      \* replicas apply the HLC receive rule to the log
    LeaderBarrier,    \* new leader applies its log before stamping
    ResumeFromMin     \* recovery resumes at min applied_epoch + 1

Switches == <<DedupIds, CheckBalance, CheckLedger, LinkedAtomic,
              GuardAppliedEpoch, AtomicApply, PreloadAtEpoch, ReadAtW, AckAtW,
              ContinueHLC, LeaderBarrier, ResumeFromMin>>

ASSUME \A i \in DOMAIN Switches : Switches[i] \in BOOLEAN
ASSUME ShardOf \in [Accounts -> Shards] /\ Owner \in [Shards -> Executors]
ASSUME \A c \in Clients : Attempts[c] >= 1
ASSUME QueueMax >= 1 /\ EpochMaxReqs >= 1
ASSUME \A c \in Clients : Len(Req[c]) >= 1

-----------------------------------------------------------------------------
(* Helpers *)

Min2(a, b) == IF a <= b THEN a ELSE b
Max2(a, b) == IF a >= b THEN a ELSE b
Min(S) == CHOOSE x \in S : \A y \in S : x <= y
Max(S) == CHOOSE x \in S : \A y \in S : x >= y
Range(f) == {f[i] : i \in DOMAIN f}
IsPrefix(p, s) == Len(p) <= Len(s) /\ SubSeq(s, 1, Len(p)) = p
Quorums == {Q \in SUBSET Replicas : 2 * Cardinality(Q) > Cardinality(Replicas)}

RECURSIVE SeqSum(_)
SeqSum(ns) == IF ns = <<>> THEN 0 ELSE Head(ns) + SeqSum(Tail(ns))

RECURSIVE SetSum(_, _)
SetSum(f, S) == IF S = {} THEN 0
                ELSE LET x == CHOOSE y \in S : TRUE IN f[x] + SetSum(f, S \ {x})

AcctsOf(s) == {a \in Accounts : ShardOf[a] = s}
OwnedBy(x) == {s \in Shards : Owner[s] = x}
Ledgers == {LedgerOf[a] : a \in Accounts}

\* Upper bound on the number of epochs: each epoch holds at least one request
\* and there are at most this many submissions.
MaxEpochs == SetSum(Attempts, Clients)
\* "the latest version" of a shard, for the PreloadAtEpoch mutant
Latest == MaxEpochs + 1

-----------------------------------------------------------------------------
(* HLC (sequencer/hlc.py), the rules of Kulkarni et al.; see HLC.tla. *)

Less(a, b) == a.l < b.l \/ (a.l = b.l /\ a.c < b.c)
Leq(a, b) == a = b \/ Less(a, b)

SendRule(h, p) ==
    LET l == Max2(h.l, p) IN [l |-> l, c |-> IF l = h.l THEN h.c + 1 ELSE 0]

\* What the log needs from HLC.receive(ts): afterwards the clock is at least
\* ts, so the next send is greater.  Kulkarni's receive rule (checked in
\* HLC.tla) moves the clock to a value >= this one; the model takes the
\* least such value so that harmless differences in c do not multiply the
\* states.
Observe(h, m) == IF Less(h, m) THEN m ELSE h

-----------------------------------------------------------------------------
(* The deterministic state machine (executor/state_machine.py).            *)
(* A transfer is [id, dr, cr, amt, linked].  The state is the posted       *)
(* balances and the set of transfers stored so far.                        *)

RECURSIVE Flatten(_)
Flatten(cs) == IF cs = <<>> THEN <<>> ELSE Req[Head(cs)] \o Flatten(Tail(cs))

\* The transfers of a log entry, in log order.
Txs(entry) == Flatten(entry.reqs)

Validate(st, t) ==
    CASE DedupIds /\ t \in st.xfers                          -> "exists"
      [] DedupIds /\ \E x \in st.xfers : x.id = t.id         -> "exists_with_different_fields"
      [] t.dr = t.cr                                         -> "accounts_must_be_different"
      [] CheckLedger /\ LedgerOf[t.dr] # LedgerOf[t.cr]      -> "ledger_mismatch"
      [] CheckBalance /\ t.dr \in DebitsMustNotExceedCredits
                      /\ st.bal[t.dr].dp + t.amt > st.bal[t.dr].cp -> "exceeds_credits"
      [] CheckBalance /\ t.cr \in CreditsMustNotExceedDebits
                      /\ st.bal[t.cr].cp + t.amt > st.bal[t.cr].dp -> "exceeds_debits"
      [] OTHER                                               -> "ok"

Post(st, t) ==
    [bal   |-> [st.bal EXCEPT ![t.dr].dp = @ + t.amt, ![t.cr].cp = @ + t.amt],
     xfers |-> st.xfers \cup {t}]

\* Length of the first chain of txs: up to and including the first transfer
\* without the linked flag (or to the end, an open chain).
RECURSIVE FirstChainLen(_)
FirstChainLen(txs) ==
    IF Len(txs) = 1 \/ ~Head(txs).linked THEN 1 ELSE 1 + FirstChainLen(Tail(txs))

\* The linked chains of an epoch, as intended by the clients.
RECURSIVE Chains(_)
Chains(txs) ==
    IF txs = <<>> THEN <<>>
    ELSE LET n == FirstChainLen(txs)
         IN <<SubSeq(txs, 1, n)>> \o Chains(SubSeq(txs, n + 1, Len(txs)))

(* TLC does not cache operator arguments or LET values while it evaluates *)
(* ENABLED (fairness, liveness), so a recursion that mentions its state    *)
(* argument several times would redo the work exponentially.  The idiom    *)
(*     CHOOSE out \in {Body(v) : v \in {Expr}} : TRUE                      *)
(* evaluates Expr once and binds v to the value; it means Body(Expr).      *)

RECURSIVE RunChain(_, _)
RunChain(st, ch) ==
    IF ch = <<>> THEN [ok |-> TRUE, st |-> st]
    ELSE CHOOSE out \in
           {IF Validate(s0, Head(ch)) = "ok"
            THEN RunChain(Post(s0, Head(ch)), Tail(ch))
            ELSE [ok |-> FALSE, st |-> s0] : s0 \in {st}} : TRUE

\* Execute one epoch: returns the new state and the transfers that
\* succeeded, in order.  A failing chain leaves no trace (linked_event_failed);
\* a chain still open at the end of the epoch fails (linked_event_chain_open).
RECURSIVE ExecEpoch(_, _)
ExecEpoch(st, txs) ==
    IF txs = <<>> THEN [st |-> st, oks |-> <<>>]
    ELSE CHOOSE out \in UNION {UNION {
           LET n    == IF LinkedAtomic THEN FirstChainLen(t0) ELSE 1
               ch   == SubSeq(t0, 1, n)
               good == r.ok /\ ~(LinkedAtomic /\ ch[n].linked)
           IN {[st  |-> rest.st,
                oks |-> (IF good THEN ch ELSE <<>>) \o rest.oks] :
               rest \in {ExecEpoch(IF good THEN r.st ELSE s0, SubSeq(t0, n + 1, Len(t0)))}} :
             r \in {RunChain(s0, SubSeq(t0, 1, IF LinkedAtomic THEN FirstChainLen(t0) ELSE 1))}} :
           s0 \in {st}, t0 \in {txs}} : TRUE

InitState == [bal |-> InitBal, xfers |-> {}]

\* The part of an epoch's successful transfers that shard s stores.
EffectsFor(oks, s) ==
    SelectSeq(oks, LAMBDA t : ShardOf[t.dr] = s \/ ShardOf[t.cr] = s)

-----------------------------------------------------------------------------
VARIABLES
    cst,          \* client state: "idle", "waiting" or "acked"
    sends,        \* attempts made by each client
    queue,        \* the leader's bounded intake queue (client ids)
    leader,
    termStart,    \* length of the leader's log when it was elected
    changes,      \* leader changes so far
    log,          \* each replica's log of epochs [reqs, first, last]
    clog,         \* the committed log (what a majority holds)
    appliedR,     \* committed entries each replica has applied
    hlc,          \* each replica's HLC [l, c]
    now,          \* true time; replica r's physical clock reads now + ClockOffset[r]
    rows,         \* per shard: the epoch rows written, [e, xs], in order
    appliedEpoch, \* per shard: applied_epoch
    down,         \* shards whose store is unreachable
    outages,      \* store outages so far
    ex,           \* per executor: [pc, next, eff, done, half]
    crashes       \* executor crashes so far

clientVars == <<cst, sends>>
seqVars    == <<queue, leader, termStart, changes, log, clog, appliedR, hlc, now>>
storeVars  == <<rows, appliedEpoch, down, outages>>
exVars     == <<ex, crashes>>
vars == <<clientVars, seqVars, storeVars, exVars>>

-----------------------------------------------------------------------------
(* Stores: versioned by epoch.  A shard's version v is its rows with        *)
(* e <= v; a view gives the version read in each shard.                    *)

RECURSIVE ConcatXs(_)
ConcatXs(rs) == IF rs = <<>> THEN <<>> ELSE Head(rs).xs \o ConcatXs(Tail(rs))

XsUpTo(s, v) == ConcatXs(SelectSeq(rows[s], LAMBDA r : r.e <= v))

BalAt(a, view) ==
    LET xs == XsUpTo(ShardOf[a], view[ShardOf[a]])
    IN [dp |-> InitBal[a].dp + SeqSum([i \in DOMAIN xs |-> IF xs[i].dr = a THEN xs[i].amt ELSE 0]),
        cp |-> InitBal[a].cp + SeqSum([i \in DOMAIN xs |-> IF xs[i].cr = a THEN xs[i].amt ELSE 0])]

\* A transfer's row lives on its debit account's shard.
XfersAt(view) ==
    UNION {{t \in Range(XsUpTo(s, view[s])) : ShardOf[t.dr] = s} : s \in Shards}

Snapshot(view) == [bal |-> [a \in Accounts |-> BalAt(a, view)], xfers |-> XfersAt(view)]

\* Postings visible in a view: one per (epoch, transfer, account side).
Postings(view) ==
    LET RowPostings(s, r) ==
            UNION {{[e |-> r.e, t |-> t, a |-> a] : a \in {x \in {t.dr, t.cr} : ShardOf[x] = s}} :
                   t \in Range(r.xs)}
        ShardPostings(s) ==
            UNION {RowPostings(s, r) : r \in {q \in Range(rows[s]) : q.e <= view[s]}}
    IN UNION {ShardPostings(s) : s \in Shards}

ConstView(v) == [s \in Shards |-> v]

W == Min({appliedEpoch[s] : s \in Shards})

\* Replica r's physical clock.
PT(r) == now + ClockOffset[r]

\* What a reader sees (sequencer/api.py Watermark, read_account(at_epoch)).
ReadView == IF ReadAtW THEN ConstView(W) ELSE [s \in Shards |-> appliedEpoch[s]]

InLog(c, lg, upto) == \E e \in 1..upto : c \in Range(lg[e].reqs)

EmptyEff == [s \in Shards |-> <<>>]

\* The oracle: the serial execution of the committed log, one epoch after the
\* other from the initial state (executor's serial reference executor).
RECURSIVE SerialFrom(_, _)
SerialFrom(st, k) == IF k = 0 THEN st ELSE ExecEpoch(SerialFrom(st, k - 1), Txs(clog[k])).st
Serial(k) == SerialFrom(InitState, k)

-----------------------------------------------------------------------------
Init ==
    /\ cst = [c \in Clients |-> "idle"]
    /\ sends = [c \in Clients |-> 0]
    /\ queue = <<>>
    /\ leader \in Replicas
    /\ termStart = 0
    /\ changes = 0
    /\ log = [r \in Replicas |-> <<>>]
    /\ clog = <<>>
    /\ appliedR = [r \in Replicas |-> 0]
    /\ hlc = [r \in Replicas |-> [l |-> 0, c |-> 0]]
    /\ now = 0
    /\ rows = [s \in Shards |-> <<>>]
    /\ appliedEpoch = [s \in Shards |-> 0]
    /\ down = {}
    /\ outages = 0
    /\ ex = [x \in Executors |-> [pc |-> "idle", next |-> 1, eff |-> EmptyEff,
                                  done |-> {}, half |-> {}]]
    /\ crashes = 0

-----------------------------------------------------------------------------
(* Clients: sequencer/client.py OrdoClient.submit_transfers, which retries *)
(* on routing errors and timeouts; sequencer/api.py post_transfers, which  *)
(* enqueues at the leader.  A retry re-sends the same ids.                 *)

Submit(c) ==
    /\ cst[c] # "acked"
    /\ sends[c] < Attempts[c]
    /\ Len(queue) < QueueMax          \* else the API answers 429 and the client waits
    /\ queue' = Append(queue, c)
    /\ sends' = [sends EXCEPT ![c] = @ + 1]
    /\ cst' = [cst EXCEPT ![c] = "waiting"]
    /\ UNCHANGED <<leader, termStart, changes, log, clog, appliedR, hlc, now,
                   storeVars, exVars>>

\* The API answers once W covers the epoch holding the request (the first one,
\* if the request was retried).  Mutant AckAtW = FALSE: answer as soon as the
\* leader appended the epoch to its own log.
Ack(c) ==
    /\ cst[c] = "waiting"
    /\ IF AckAtW THEN InLog(c, clog, W)
                 ELSE InLog(c, log[leader], Len(log[leader]))
    /\ cst' = [cst EXCEPT ![c] = "acked"]
    /\ UNCHANGED <<sends, seqVars, storeVars, exVars>>

-----------------------------------------------------------------------------
(* Sequencer: sequencer/batcher.py EpochBatcher.poll closes an epoch and   *)
(* stamps it with HLC.now (send rule); sequencer/log.py                    *)
(* ReplicatedLog.apply_epoch is the replicated method.                     *)

CloseEpoch ==
    /\ queue # <<>>
    \* A new leader first applies every entry its log held when it was
    \* elected, so its HLC has received their timestamps.
    /\ LeaderBarrier => appliedR[leader] >= termStart
    /\ LET n     == Min2(Len(queue), EpochMaxReqs)
           batch == SubSeq(queue, 1, n)
           k     == Len(Flatten(batch))
           first == SendRule(hlc[leader], PT(leader))
           last  == [l |-> first.l, c |-> first.c + k - 1]   \* k-1 more sends at the same pt
       IN /\ log' = [log EXCEPT ![leader] = Append(@, [reqs |-> batch, first |-> first, last |-> last])]
          /\ queue' = SubSeq(queue, n + 1, Len(queue))
          /\ hlc' = [hlc EXCEPT ![leader] = last]
    /\ UNCHANGED <<clientVars, leader, termStart, changes, clog, appliedR, now,
                   storeVars, exVars>>

CommonPrefixLen(a, b) ==
    Max({i \in 0..Min2(Len(a), Len(b)) : SubSeq(a, 1, i) = SubSeq(b, 1, i)})

\* AppendEntries: the follower's log converges on the leader's, one entry at
\* a time; entries after the common prefix are overwritten.
Replicate(f) ==
    /\ f # leader
    /\ log[f] # log[leader]
    /\ LET p == CommonPrefixLen(log[f], log[leader])
       IN log' = [log EXCEPT ![f] = SubSeq(log[leader], 1, Min2(p + 1, Len(log[leader])))]
    /\ UNCHANGED <<clientVars, queue, leader, termStart, changes, clog, appliedR, hlc, now,
                   storeVars, exVars>>

\* The next entry is committed once a majority holds it.  pysyncobj applies
\* it on the leader in the same step (the leader's HLC is already past it).
Commit ==
    LET k == Len(clog) + 1 IN
    /\ k <= Len(log[leader])
    /\ appliedR[leader] = Len(clog)
    /\ \E Q \in Quorums : leader \in Q /\ \A r \in Q : IsPrefix(SubSeq(log[leader], 1, k), log[r])
    /\ clog' = Append(clog, log[leader][k])
    /\ appliedR' = [appliedR EXCEPT ![leader] = k]
    /\ hlc' = IF ContinueHLC
              THEN [hlc EXCEPT ![leader] = Observe(@, log[leader][k].last)]
              ELSE hlc
    /\ UNCHANGED <<clientVars, queue, leader, termStart, changes, log, now,
                   storeVars, exVars>>

\* A follower applies the next committed entry (ReplicatedLog.apply_epoch
\* runs on every replica) and moves its HLC past the epoch's last timestamp.
ApplyEntry(r) ==
    LET k == appliedR[r] + 1 IN
    /\ r # leader \/ k <= termStart
    /\ k <= Len(clog)
    /\ k <= Len(log[r])
    /\ log[r][k] = clog[k]
    /\ appliedR' = [appliedR EXCEPT ![r] = k]
    /\ hlc' = IF ContinueHLC
              THEN [hlc EXCEPT ![r] = Observe(@, clog[k].last)]
              ELSE hlc
    /\ UNCHANGED <<clientVars, queue, leader, termStart, changes, log, clog, now,
                   storeVars, exVars>>

\* Raft elects a replica holding every committed entry.  The old leader's
\* queue is in memory and is lost; its clients time out and retry.
LeaderChange(r) ==
    /\ r # leader
    /\ changes < MaxLeaderChanges
    /\ IsPrefix(clog, log[r])
    /\ leader' = r
    /\ termStart' = Len(log[r])
    /\ changes' = changes + 1
    /\ queue' = <<>>
    /\ UNCHANGED <<clientVars, log, clog, appliedR, hlc, now, storeVars, exVars>>

\* Time passes.  The clocks keep their skew (HLC.tla lets them drift).
Tick ==
    /\ now < MaxTime
    /\ now' = now + 1
    /\ UNCHANGED <<clientVars, queue, leader, termStart, changes, log, clog, appliedR, hlc,
                   storeVars, exVars>>

-----------------------------------------------------------------------------
(* Executors: executor/runner.py Runner.run_epoch (preload, execute, push) *)
(* and Runner.recover; the per-shard write is the proxies' apply_epoch      *)
(* (proxies/sqlite.py, proxies/postgres.py).                               *)

SetEx(x, r) == ex' = [ex EXCEPT ![x] = r]

\* Preload at version e-1 from every shard (in the Calvin layout, the
\* participants' exchange of local reads), run the state machine, and split
\* the effects by shard.
Compute(x) ==
    LET e == ex[x].next IN
    /\ ex[x].pc = "idle"
    /\ e <= Len(clog)
    /\ \A s \in Shards : appliedEpoch[s] >= e - 1 /\ s \notin down
    /\ LET view == [s \in Shards |-> IF PreloadAtEpoch THEN e - 1 ELSE Latest]
           res  == ExecEpoch(Snapshot(view), Txs(clog[e]))
       IN SetEx(x, [ex[x] EXCEPT !.pc = "push", !.eff = [s \in Shards |-> EffectsFor(res.oks, s)]])
    /\ UNCHANGED <<clientVars, seqVars, storeVars, crashes>>

\* One shard's apply_epoch.  Done means the executor saw the store's answer.
Push(x, s) ==
    LET e == ex[x].next IN
    /\ ex[x].pc = "push"
    /\ Owner[s] = x
    /\ s \notin ex[x].done \cup ex[x].half
    /\ s \notin down
    /\ IF GuardAppliedEpoch /\ appliedEpoch[s] >= e
       THEN \* a replay: the store answers "already applied" and writes nothing
            /\ SetEx(x, [ex[x] EXCEPT !.done = @ \cup {s}])
            /\ UNCHANGED <<rows, appliedEpoch>>
       ELSE /\ rows' = [rows EXCEPT ![s] = Append(@, [e |-> e, xs |-> ex[x].eff[s]])]
            /\ IF AtomicApply
               THEN /\ appliedEpoch' = [appliedEpoch EXCEPT ![s] = e]
                    /\ SetEx(x, [ex[x] EXCEPT !.done = @ \cup {s}])
               ELSE \* mutant: applied_epoch is written by a second transaction
                    /\ UNCHANGED appliedEpoch
                    /\ SetEx(x, [ex[x] EXCEPT !.half = @ \cup {s}])
    /\ UNCHANGED <<clientVars, seqVars, down, outages, crashes>>

\* Only in the AtomicApply = FALSE mutant: the second transaction.
PushMark(x, s) ==
    /\ ex[x].pc = "push"
    /\ s \in ex[x].half
    /\ s \notin down
    /\ appliedEpoch' = [appliedEpoch EXCEPT ![s] = ex[x].next]
    /\ SetEx(x, [ex[x] EXCEPT !.half = @ \ {s}, !.done = @ \cup {s}])
    /\ UNCHANGED <<clientVars, seqVars, rows, down, outages, crashes>>

Finish(x) ==
    /\ ex[x].pc = "push"
    /\ ex[x].done = OwnedBy(x)
    /\ SetEx(x, [pc |-> "idle", next |-> ex[x].next + 1, eff |-> EmptyEff, done |-> {}, half |-> {}])
    /\ UNCHANGED <<clientVars, seqVars, storeVars, crashes>>

\* A crash at any step: the process loses everything but the stores.
Crash(x) ==
    /\ ex[x].pc # "down"
    /\ crashes < MaxCrashes
    /\ SetEx(x, [pc |-> "down", next |-> 0, eff |-> EmptyEff, done |-> {}, half |-> {}])
    /\ crashes' = crashes + 1
    /\ UNCHANGED <<clientVars, seqVars, storeVars>>

\* Runner.recover: read applied_epoch from the executor's shards and resume
\* at the smallest + 1, so that no shard skips an epoch.
Recover(x) ==
    LET applied == {appliedEpoch[s] : s \in OwnedBy(x)} IN
    /\ ex[x].pc = "down"
    /\ OwnedBy(x) \cap down = {}
    /\ SetEx(x, [pc |-> "idle", eff |-> EmptyEff, done |-> {}, half |-> {},
                 next |-> IF ResumeFromMin THEN Min(applied) + 1 ELSE Max(applied) + 1])
    /\ UNCHANGED <<clientVars, seqVars, storeVars, crashes>>

StoreDown(s) ==
    /\ s \notin down
    /\ outages < MaxOutages
    /\ down' = down \cup {s}
    /\ outages' = outages + 1
    /\ UNCHANGED <<clientVars, seqVars, rows, appliedEpoch, exVars>>

StoreUp(s) ==
    /\ s \in down
    /\ down' = down \ {s}
    /\ UNCHANGED <<clientVars, seqVars, rows, appliedEpoch, outages, exVars>>

-----------------------------------------------------------------------------
\* Everything submitted has been dealt with: each client is answered or has
\* spent its retries on a request that no log holds, every replica holds and
\* has applied the whole committed log, every shard has applied it, and no
\* executor has work.  Only then may the system stop; any other state without
\* a successor is a deadlock and fails the check.
Done ==
    /\ queue = <<>>
    /\ \A r \in Replicas : log[r] = clog /\ appliedR[r] = Len(clog)
    /\ \A s \in Shards : appliedEpoch[s] = Len(clog) /\ s \notin down
    /\ \A x \in Executors : ex[x].pc = "idle" /\ ex[x].next = Len(clog) + 1
    /\ \A c \in Clients : cst[c] = "acked" \/ (sends[c] = Attempts[c] /\ ~InLog(c, clog, Len(clog)))

Terminated == Done /\ UNCHANGED vars

Next ==
    \/ \E c \in Clients : Submit(c) \/ Ack(c)
    \/ CloseEpoch \/ Commit
    \/ \E r \in Replicas : Replicate(r) \/ ApplyEntry(r) \/ LeaderChange(r)
    \/ Tick
    \/ \E x \in Executors : Compute(x) \/ Finish(x) \/ Crash(x) \/ Recover(x)
    \/ \E x \in Executors, s \in Shards : Push(x, s) \/ PushMark(x, s)
    \/ \E s \in Shards : StoreDown(s) \/ StoreUp(s)
    \/ Terminated

(***************************************************************************)
(* Fairness, per process, as for a PlusCal `fair process`: a process that  *)
(* can take a step eventually takes one.  Nothing is assumed about         *)
(* clients, leader elections, crashes, outages or time: they may happen or *)
(* not, within their bounds.  Weak fairness suffices: after the last of    *)
(* the finitely many faults, nothing disables a process's pending step     *)
(* but the process itself, and each step makes progress toward a finite   *)
(* goal (a longer log, a higher applied_epoch), so no process can starve   *)
(* one of its own steps forever.                                           *)
(***************************************************************************)

\* Raft: with a majority of replicas up, the leader keeps sending
\* AppendEntries (every append_entries_period_ms), so a lagging follower is
\* brought up to date, an entry held by a majority becomes known committed,
\* and pysyncobj applies committed entries on every live replica.
RaftStep == Commit \/ \E r \in Replicas : Replicate(r) \/ ApplyEntry(r)

\* An executor is a process that loops while it has work; after its last
\* crash it runs.  A push that fails is retried with backoff, and stores are
\* reachable after their last outage (DESIGN 6 assumes "the stores
\* eventually reachable"), so a pending push stays enabled until it is done.
ExecutorStep(x) ==
    \/ Recover(x) \/ Compute(x) \/ Finish(x)
    \/ \E s \in Shards : Push(x, s) \/ PushMark(x, s)

\* An outage ends: the store is restarted or the partition heals.
StoreRepair == \E s \in Shards : StoreUp(s)

\* The API answers a waiting client once W covers its epoch (it polls W).
Answer == \E c \in Clients : Ack(c)

Fairness ==
    /\ WF_vars(RaftStep)
    /\ \A x \in Executors : WF_vars(ExecutorStep(x))
    /\ WF_vars(StoreRepair)
    /\ WF_vars(Answer)

Spec == Init /\ [][Next]_vars

FairSpec == Spec /\ Fairness

-----------------------------------------------------------------------------
(* Safety.  Each definition is one property of DESIGN.md, "What must hold". *)

TypeOK ==
    /\ cst \in [Clients -> {"idle", "waiting", "acked"}]
    /\ \A c \in Clients : sends[c] <= Attempts[c]
    /\ Len(queue) <= QueueMax
    /\ leader \in Replicas
    /\ \A r \in Replicas : Len(log[r]) <= MaxEpochs
    /\ \A s \in Shards : appliedEpoch[s] <= Len(clog)
    /\ crashes <= MaxCrashes /\ changes <= MaxLeaderChanges /\ outages <= MaxOutages

\* 1. Serial equivalence: each shard's latest version equals the serial
\* execution of the committed log up to that epoch.  Checking the latest
\* version in every state covers every older version, in particular W:
\* versions are cumulative, so a row that changes version v <= applied_epoch
\* changes the latest version too, and applied_epoch moves one epoch at a time.
SerialEquivalence ==
    \A s \in Shards :
        LET v == appliedEpoch[s] IN
        /\ v <= Len(clog)
        /\ \A a \in AcctsOf(s) : BalAt(a, ConstView(v)) = Serial(v).bal[a]
        /\ {t \in Range(XsUpTo(s, v)) : ShardOf[t.dr] = s}
             = {t \in Serial(v).xfers : ShardOf[t.dr] = s}

\* 2. Exactly once: no shard applies an epoch twice ...
ExactlyOnceEpoch ==
    \A s \in Shards : \A i, j \in DOMAIN rows[s] : i # j => rows[s][i].e # rows[s][j].e

\* ... no transfer id is applied twice (on any shard) ...
ExactlyOnceTransfer ==
    \A s \in Shards : LET xs == ConcatXs(rows[s]) IN
        \A i, j \in DOMAIN xs : i # j => xs[i].id # xs[j].id

\* ... and no acknowledged transfer is lost: an acknowledged request is in
\* the committed log, which Raft never loses.
ExactlyOnceNoLostAck ==
    \A c \in Clients : cst[c] = "acked" => InLog(c, clog, Len(clog))

\* 3. Conservation: per ledger, debits equal credits in the complete version
\* at W (every shard at the same epoch).  W moves one epoch at a time and
\* versions are cumulative, so checking W in every state covers every v <= W.
ConservationLedger ==
    \A L \in Ledgers :
        LET acc == {a \in Accounts : LedgerOf[a] = L}
            b   == [a \in acc |-> BalAt(a, ConstView(W))]
        IN SetSum([a \in acc |-> b[a].dp], acc) = SetSum([a \in acc |-> b[a].cp], acc)

\* ... and no stored balance breaks its account's flags.
ConservationFlags ==
    \A s \in Shards : \A v \in 0..appliedEpoch[s] : \A a \in AcctsOf(s) :
        LET b == BalAt(a, ConstView(v)) IN
        /\ a \in DebitsMustNotExceedCredits => b.dp <= b.cp
        /\ a \in CreditsMustNotExceedDebits => b.cp <= b.dp

\* 4. Atomic visibility: a read sees the state after a whole number of epochs ...
AtomicVisibilityEpoch ==
    \E k \in 0..Len(clog) : Snapshot(ReadView) = Serial(k)

\* ... all of a linked chain or none of it ...
AtomicVisibilityLinked ==
    LET vis == Postings(ReadView) IN
    \A e \in 1..Len(clog) : \A ch \in Range(Chains(Txs(clog[e]))) :
        Len(ch) > 1 =>
            LET pot == UNION {{[e |-> e, t |-> t, a |-> a] : a \in {t.dr, t.cr}} : t \in Range(ch)}
            IN vis \cap pot \in {{}, pot}

\* ... and both sides of a transfer between stores, or neither.
AtomicVisibilityCrossStore ==
    LET vis == Postings(ReadView) IN
    \A p \in vis : [p EXCEPT !.a = p.t.dr] \in vis /\ [p EXCEPT !.a = p.t.cr] \in vis

\* 5. HLC timestamps increase strictly along the committed log.
HLCMonotonicLog ==
    \A k \in 1..Len(clog) :
        /\ Leq(clog[k].first, clog[k].last)
        /\ k > 1 => Less(clog[k - 1].last, clog[k].first)

-----------------------------------------------------------------------------
(* 6. Liveness, checked under FairSpec with finitely many faults. *)

\* Every committed epoch is eventually applied on every shard ...
AppliedEverywhere ==
    \A k \in 1..MaxEpochs : (Len(clog) >= k) ~> (\A s \in Shards : appliedEpoch[s] >= k)

\* ... and every client whose request is committed eventually gets its answer.
CommittedAcked ==
    \A c \in Clients : InLog(c, clog, Len(clog)) ~> (cst[c] = "acked")
=============================================================================
