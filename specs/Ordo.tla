------------------------------- MODULE Ordo -------------------------------
(***************************************************************************)
(* ordo: sequencing and execution.                                         *)
(*                                                                         *)
(* Clients submit requests (sequences of transfers with client-chosen ids) *)
(* and retry them, so the log can hold duplicates.  The leader of the      *)
(* sequencer group drains its bounded queue into epochs and stamps every   *)
(* transfer with its HLC.  The replicated log is modelled at the level of  *)
(* what Raft guarantees (Raft itself comes from pysyncobj and is assumed   *)
(* correct): the leader appends, followers copy the leader's log, an entry *)
(* is committed once a majority holds it, and a new leader holds every     *)
(* committed entry.  Every replica applies committed entries in log order: *)
(* it refuses an entry stamped at or below the last epoch it accepted,     *)
(* numbers the others (they are the epochs), and moves its HLC past them.  *)
(*                                                                         *)
(* The executor ("runner") reads the epochs in order.  After a restart it  *)
(* resumes at the smallest applied_epoch of its shards and preloads the    *)
(* state at that version; then it executes epoch after epoch on its        *)
(* in-memory state with the pure state machine (dedup by id, balance       *)
(* flags, ledgers, linked chains) and queues each shard its batch.  One    *)
(* pusher per shard applies the batches in order; a shard skips a batch    *)
(* at or below its applied_epoch.  SQLite and PostgreSQL write a batch and *)
(* applied_epoch in one transaction.  Cassandra has none: it upserts the   *)
(* batch's rows under deterministic keys and writes applied_epoch last, so *)
(* a crash can leave an epoch half written but invisible, and the replay   *)
(* rewrites the same cells.  The runner can crash at any step and loses    *)
(* everything but the stores; stores can be unreachable for a while.       *)
(*                                                                         *)
(* Readers read every shard at the watermark W = min applied_epoch.        *)
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
    Attempts,         \* [Clients -> Nat]: tries per client (first + retries)
    ShardOf,          \* [Accounts -> Shards]: where an account's rows live
    XferShard,        \* [ids -> Shards]: where a transfer's record lives
    Owner,            \* [Shards -> Executors]: who pushes to the shard
    UpsertShards,     \* shards whose store has no transactions (Cassandra)
    LedgerOf,         \* [Accounts -> Nat]
    DebitsMustNotExceedCredits,   \* accounts with that flag
    CreditsMustNotExceedDebits,   \* accounts with that flag
    InitBal,          \* [Accounts -> [dp : Nat, cp : Nat]], posted balances
    ClockOffset,      \* [Replicas -> Nat]: each replica's clock skew
    QueueMax,         \* API queue bound (the API answers 429 beyond it)
    EpochMaxReqs,     \* requests per epoch (stands for epoch_bytes_max)
    MaxLeaderChanges, \* bound on leader elections (finitely many)
    MaxCrashes,       \* bound on executor crashes (finitely many)
    MaxOutages,       \* bound on store outages (finitely many)
    FlappingStores,   \* TRUE: stores go down and up without bound
    MaxTime,          \* horizon of true time (0: the clocks stand still)
    \* ---- mechanism switches: TRUE = real protocol, FALSE = mutant ----
    DedupIds,         \* state machine answers `exists` for a known id
    CheckBalance,     \* state machine enforces the balance flags
    CheckLedger,      \* state machine answers `ledger_mismatch`
    LinkedAtomic,     \* a linked chain succeeds or fails as a whole
    GuardAppliedEpoch,\* a shard skips batches <= its applied_epoch
    AtomicApply,      \* effects and applied_epoch in one transaction
    IdempotentWrites, \* an UpsertShards write of an epoch overwrites its rows
    PreloadAtEpoch,   \* recovery preloads at the resume version
    ReadAtW,          \* readers read every shard at W
    AckAtW,           \* ack once W covers the epoch (else: on append)
    RefuseStaleHLC,   \* apply refuses an entry stamped <= the last epoch
    ContinueHLC,      \* apply moves the replica's HLC past the epoch
    ResumeFromMin,    \* recovery resumes at min applied_epoch + 1
    StrongRetry       \* the runner's retries are strongly fair

Switches == <<DedupIds, CheckBalance, CheckLedger, LinkedAtomic,
              GuardAppliedEpoch, AtomicApply, IdempotentWrites, PreloadAtEpoch,
              ReadAtW, AckAtW,
              RefuseStaleHLC, ContinueHLC, ResumeFromMin, StrongRetry>>

ASSUME \A i \in DOMAIN Switches : Switches[i] \in BOOLEAN
ASSUME ShardOf \in [Accounts -> Shards] /\ Owner \in [Shards -> Executors]
ASSUME UpsertShards \subseteq Shards
ASSUME FlappingStores \in BOOLEAN
ASSUME \A c \in Clients : Attempts[c] >= 1 /\ Len(Req[c]) >= 1
ASSUME QueueMax >= 1 /\ EpochMaxReqs >= 1

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

\* Upper bound on the number of epochs: each epoch holds at least one request.
MaxEpochs == SetSum(Attempts, Clients)

-----------------------------------------------------------------------------
(* HLC (sequencer/hlc.py), Kulkarni et al.; HLC.tla checks the clock rules. *)

Less(a, b) == a.l < b.l \/ (a.l = b.l /\ a.c < b.c)
Leq(a, b) == a = b \/ Less(a, b)

\* HLC.now: l := max(l, pt); c := c + 1 if l did not change, else 0.
SendRule(h, p) ==
    LET l == Max2(h.l, p) IN [l |-> l, c |-> IF l = h.l THEN h.c + 1 ELSE 0]

\* HLC.observe_log(ts): every later now() exceeds ts.
Observe(h, m) == IF Less(h, m) THEN m ELSE h

-----------------------------------------------------------------------------
(* The deterministic state machine (executor/state_machine.py,             *)
(* execute_epoch).  A transfer is [id, dr, cr, amt, linked].  The state is *)
(* the posted balances and the record of every decided transfer, failed   *)
(* ones included, so that a resubmission gets the original result.         *)
(*                                                                         *)
(* TLC does not cache operator arguments or LET values while it evaluates *)
(* ENABLED (fairness, liveness), so a recursion that mentions an argument  *)
(* several times would redo the work exponentially.  The idiom            *)
(*     CHOOSE out \in {Body(v) : v \in {Expr}} : TRUE                      *)
(* means Body(Expr) but evaluates Expr once.                               *)

InitState == [bal |-> InitBal, recs |-> {}]

Recorded(st, id) == {r \in st.recs : r.t.id = id}

\* The checks in the order execute_epoch makes them: shape, then the id's
\* record, then the accounts and balances.
Decide(st, t) ==
    CASE t.dr = t.cr                                         -> "accounts_must_be_different"
      [] DedupIds /\ Recorded(st, t.id) # {} ->
             LET r == CHOOSE r \in Recorded(st, t.id) : TRUE IN
             IF r.t # t THEN "exists_with_different_fields"
             ELSE IF r.code = "ok" THEN "exists" ELSE r.code
      [] CheckLedger /\ LedgerOf[t.dr] # LedgerOf[t.cr]      -> "ledger_mismatch"
      [] CheckBalance /\ t.dr \in DebitsMustNotExceedCredits
                      /\ st.bal[t.dr].dp + t.amt > st.bal[t.dr].cp -> "exceeds_credits"
      [] CheckBalance /\ t.cr \in CreditsMustNotExceedDebits
                      /\ st.bal[t.cr].cp + t.amt > st.bal[t.cr].dp -> "exceeds_debits"
      [] OTHER                                               -> "ok"

Post(st, t) ==
    [bal  |-> [st.bal EXCEPT ![t.dr].dp = @ + t.amt, ![t.cr].cp = @ + t.amt],
     recs |-> st.recs \cup {[t |-> t, code |-> "ok"]}]

\* Failed transfers are recorded too (unless their id already has a record).
RECURSIVE RecordFailures(_, _)
RecordFailures(st, outs) ==
    IF outs = <<>> THEN st
    ELSE CHOOSE out \in
           {RecordFailures(
                IF Recorded(s0, Head(outs).t.id) # {} THEN s0
                ELSE [s0 EXCEPT !.recs = @ \cup {Head(outs)}],
                Tail(outs)) : s0 \in {st}} : TRUE

\* Run a chain on a scratch copy: the first failure ends it.
RECURSIVE RunChain(_, _)
RunChain(st, ch) ==
    IF ch = <<>> THEN [ok |-> TRUE, st |-> st, bad |-> 0, code |-> "ok"]
    ELSE CHOOSE out \in
           {LET code == Decide(s0, Head(ch)) IN
            IF code = "ok"
            THEN LET r == RunChain(Post(s0, Head(ch)), Tail(ch))
                 IN [r EXCEPT !.bad = IF @ = 0 THEN 0 ELSE @ + 1]
            ELSE [ok |-> FALSE, st |-> s0, bad |-> 1, code |-> code] : s0 \in {st}} : TRUE

\* The linked chains of a request: up to and including the first transfer
\* without the linked flag.  A chain never spans two requests.
RECURSIVE FirstChainLen(_)
FirstChainLen(txs) ==
    IF Len(txs) = 1 \/ ~Head(txs).linked THEN 1 ELSE 1 + FirstChainLen(Tail(txs))

RECURSIVE Chains(_)
Chains(txs) ==
    IF txs = <<>> THEN <<>>
    ELSE LET n == FirstChainLen(txs)
         IN <<SubSeq(txs, 1, n)>> \o Chains(SubSeq(txs, n + 1, Len(txs)))

RECURSIVE ChainsOf(_)
ChainsOf(reqs) == IF reqs = <<>> THEN <<>> ELSE Chains(Req[Head(reqs)]) \o ChainsOf(Tail(reqs))

\* The units the state machine runs one by one: the chains, or (mutant
\* LinkedAtomic = FALSE) every transfer on its own.
RECURSIVE Flatten(_)
Flatten(reqs) == IF reqs = <<>> THEN <<>> ELSE Req[Head(reqs)] \o Flatten(Tail(reqs))

Units(entry) ==
    IF LinkedAtomic THEN ChainsOf(entry.reqs)
    ELSE LET txs == Flatten(entry.reqs) IN [i \in 1..Len(txs) |-> <<txs[i]>>]

\* One unit: an open chain fails whole (linked_event_chain_open); a chain
\* succeeds whole, or the failing member gets its code and the others
\* linked_event_failed, and nothing of it is applied.
RunUnit(acc, ch) ==
    CHOOSE out \in UNION {{
        IF LinkedAtomic /\ ch[Len(ch)].linked
        THEN [a EXCEPT !.st = RecordFailures(@, [i \in 1..Len(ch) |->
                                 [t |-> ch[i], code |-> "linked_event_chain_open"]])]
        ELSE IF r.ok
        THEN [st |-> r.st, oks |-> a.oks \o ch]
        ELSE [a EXCEPT !.st = RecordFailures(@, [i \in 1..Len(ch) |->
                                 [t |-> ch[i], code |-> IF i = r.bad THEN r.code
                                                          ELSE "linked_event_failed"]])]
        : r \in {RunChain(a.st, ch)}} : a \in {acc}} : TRUE

RECURSIVE RunUnits(_, _)
RunUnits(acc, us) ==
    CHOOSE out \in {IF u0 = <<>> THEN acc ELSE RunUnits(RunUnit(acc, Head(u0)), Tail(u0))
                    : u0 \in {us}} : TRUE

\* Execute one epoch: the new state and the transfers that succeeded, in order.
ExecEpoch(st, entry) == RunUnits([st |-> st, oks |-> <<>>], Units(entry))

\* What shard s stores of an epoch executed from st: the postings of its
\* accounts and the records of its transfer ids (new ones only).
BatchFor(st, res, s) ==
    [posts |-> SelectSeq(res.oks, LAMBDA t : ShardOf[t.dr] = s \/ ShardOf[t.cr] = s),
     recs  |-> {r \in res.st.recs \ st.recs : XferShard[r.t.id] = s}]

-----------------------------------------------------------------------------
VARIABLES
    cst,          \* client state: "idle", "waiting" or "acked"
    sends,        \* attempts made by each client
    queue,        \* the leader's bounded intake queue (client ids)
    leader,
    changes,      \* leader changes so far
    log,          \* each replica's Raft log of entries [reqs, first, last]
    clog,         \* the committed prefix (what a majority holds)
    elog,         \* the epochs: committed entries that apply accepted
    oracle,       \* ghost: serial execution, oracle[k+1] = state after epoch k
    appliedR,     \* committed entries each replica has applied
    hlc,          \* each replica's HLC [l, c]
    now,          \* true time; replica r's physical clock reads now + ClockOffset[r]
    rows,         \* per shard: the batches written, [e, posts, recs], in order
    appliedEpoch, \* per shard: applied_epoch
    down,         \* shards whose store is unreachable
    outages,      \* store outages so far
    ex,           \* per executor: [up, next, mem, q, half]
    crashes       \* executor crashes so far

clientVars == <<cst, sends>>
seqVars    == <<queue, leader, changes, log, clog, elog, oracle, appliedR, hlc, now>>
storeVars  == <<rows, appliedEpoch, down, outages>>
exVars     == <<ex, crashes>>
vars == <<clientVars, seqVars, storeVars, exVars>>

-----------------------------------------------------------------------------
(* Stores are versioned by epoch: version v of a shard is its batches with  *)
(* e <= v.  A view gives the version read in each shard.                   *)

RECURSIVE ConcatPosts(_)
ConcatPosts(rs) == IF rs = <<>> THEN <<>> ELSE Head(rs).posts \o ConcatPosts(Tail(rs))

PostsUpTo(s, v) == ConcatPosts(SelectSeq(rows[s], LAMBDA r : r.e <= v))

\* Balances of shard s's accounts after the postings xs (each posting counts
\* on the side that lives on s).
RECURSIVE FoldSide(_, _, _)
FoldSide(bal, s, xs) ==
    IF xs = <<>> THEN bal
    ELSE LET t == Head(xs) IN
         FoldSide([bal EXCEPT ![t.dr].dp = IF ShardOf[t.dr] = s THEN @ + t.amt ELSE @,
                              ![t.cr].cp = IF ShardOf[t.cr] = s THEN @ + t.amt ELSE @],
                  s, Tail(xs))

\* Version v of shard s: balances, meaningful for AcctsOf(s).
ShardBals(s, v) == FoldSide(InitBal, s, PostsUpTo(s, v))

\* Every account's balance, each read in its shard at view[shard].
RECURSIVE BalsFrom(_, _, _)
BalsFrom(bal, ss, view) ==
    IF ss = {} THEN bal
    ELSE LET s == CHOOSE x \in ss : TRUE
         IN BalsFrom(FoldSide(bal, s, PostsUpTo(s, view[s])), ss \ {s}, view)

Bals(view) == BalsFrom(InitBal, Shards, view)

RecsAt(s, v) == UNION {r.recs : r \in {q \in Range(rows[s]) : q.e <= v}}

Snapshot(view) ==
    [bal  |-> Bals(view),
     recs |-> UNION {RecsAt(s, view[s]) : s \in Shards}]

\* Postings visible in a view: one per (epoch, transfer, account).
Postings(view) ==
    LET RowPostings(s, r) ==
            UNION {{[e |-> r.e, t |-> t, a |-> a] : a \in {x \in {t.dr, t.cr} : ShardOf[x] = s}} :
                   t \in Range(r.posts)}
        ShardPostings(s) ==
            UNION {RowPostings(s, r) : r \in {q \in Range(rows[s]) : q.e <= view[s]}}
    IN UNION {ShardPostings(s) : s \in Shards}

ConstView(v) == [s \in Shards |-> v]

\* "The latest version" of a shard: every batch it holds.
Latest == MaxEpochs + 1

W == Min({appliedEpoch[s] : s \in Shards})

\* What a reader sees (api.py get_accounts: every shard at the W it got from
\* node.py Watermark; the proxies' load_accounts(ids, at_epoch)).
ReadView == IF ReadAtW THEN ConstView(W) ELSE [s \in Shards |-> appliedEpoch[s]]

\* The oracle: the serial execution of the epochs, one after the other (the
\* ghost variable oracle is extended as each epoch is accepted).
Serial(k) == oracle[k + 1]

InLog(c, lg, upto) == \E e \in 1..upto : c \in Range(lg[e].reqs)

NoQueues == [s \in Shards |-> <<>>]

-----------------------------------------------------------------------------
Init ==
    /\ cst = [c \in Clients |-> "idle"]
    /\ sends = [c \in Clients |-> 0]
    /\ queue = <<>>
    /\ leader \in Replicas
    /\ changes = 0
    /\ log = [r \in Replicas |-> <<>>]
    /\ clog = <<>>
    /\ elog = <<>>
    /\ oracle = <<InitState>>
    /\ appliedR = [r \in Replicas |-> 0]
    /\ hlc = [r \in Replicas |-> [l |-> 0, c |-> 0]]
    /\ now = 0
    /\ rows = [s \in Shards |-> <<>>]
    /\ appliedEpoch = [s \in Shards |-> 0]
    /\ down = {}
    /\ outages = 0
    /\ ex = [x \in Executors |-> [up |-> TRUE, next |-> 1, mem |-> InitState,
                                  q |-> NoQueues, half |-> {}]]
    /\ crashes = 0

-----------------------------------------------------------------------------
(* Clients: sequencer/client.py OrdoClient.submit retries with tenacity,   *)
(* always with the same ids; sequencer/api.py post_transfers puts the      *)
(* batch on the leader's queue.  A retry re-sends the same request.        *)

Submit(c) ==
    /\ cst[c] # "acked"
    /\ sends[c] < Attempts[c]
    /\ Len(queue) < QueueMax          \* else the API answers 429 and the client waits
    /\ queue' = Append(queue, c)
    /\ sends' = [sends EXCEPT ![c] = @ + 1]
    /\ cst' = [cst EXCEPT ![c] = "waiting"]
    /\ UNCHANGED <<leader, changes, log, clog, elog, oracle, appliedR, hlc, now, storeVars, exVars>>

\* api.py _submit answers once W covers the epoch that holds the request
\* (Watermark.wait_for).  Mutant AckAtW = FALSE: answer as soon as the
\* leader has appended the entry to its own log.
Ack(c) ==
    /\ cst[c] = "waiting"
    /\ IF AckAtW THEN InLog(c, elog, W)
                 ELSE InLog(c, log[leader], Len(log[leader]))
    /\ cst' = [cst EXCEPT ![c] = "acked"]
    /\ UNCHANGED <<sends, seqVars, storeVars, exVars>>

-----------------------------------------------------------------------------
(* Sequencer: sequencer/node.py drain/_propose closes an epoch              *)
(* (batcher.py EpochBatcher.poll) and stamps it with HLC.now;               *)
(* sequencer/log.py ReplicatedLog.apply_epoch is the replicated method.    *)

\* Replica r's physical clock.
PT(r) == now + ClockOffset[r]

\* The leader stamps only when caught_up(): it has applied every entry it
\* knows to be committed.  (It may still hold uncommitted entries of an
\* older leader; apply refuses what it then stamps too low.)
CloseEpoch ==
    /\ queue # <<>>
    /\ appliedR[leader] = Len(clog)
    /\ LET n     == Min2(Len(queue), EpochMaxReqs)
           batch == SubSeq(queue, 1, n)
           k     == SetSum([i \in 1..n |-> Len(Req[batch[i]])], 1..n)
           first == SendRule(hlc[leader], PT(leader))
           last  == [l |-> first.l, c |-> first.c + k - 1]   \* k-1 more now() at the same pt
       IN /\ log' = [log EXCEPT ![leader] = Append(@, [reqs |-> batch, first |-> first, last |-> last])]
          /\ queue' = SubSeq(queue, n + 1, Len(queue))
          /\ hlc' = [hlc EXCEPT ![leader] = last]
    /\ UNCHANGED <<clientVars, leader, changes, clog, elog, oracle, appliedR, now, storeVars, exVars>>

CommonPrefixLen(a, b) ==
    Max({i \in 0..Min2(Len(a), Len(b)) : SubSeq(a, 1, i) = SubSeq(b, 1, i)})

\* AppendEntries: the follower's log converges on the leader's, one entry at
\* a time; entries after the common prefix are overwritten.
Replicate(f) ==
    /\ f # leader
    /\ log[f] # log[leader]
    /\ LET p == CommonPrefixLen(log[f], log[leader])
       IN log' = [log EXCEPT ![f] = SubSeq(log[leader], 1, Min2(p + 1, Len(log[leader])))]
    /\ UNCHANGED <<clientVars, queue, leader, changes, clog, elog, oracle, appliedR, hlc, now,
                   storeVars, exVars>>

\* apply_epoch on one replica: an entry stamped at or below the last epoch is
\* refused (its clients get an error and retry); the others become the next
\* epochs, and the replica's HLC moves past them (observe_log).
Accepts(entry) == ~RefuseStaleHLC \/ elog = <<>> \/ Less(elog[Len(elog)].last, entry.first)
AppliedHLC(h, entry, accepted) == IF ContinueHLC /\ accepted THEN Observe(h, entry.last) ELSE h

\* The next entry is committed once a majority holds it; pysyncobj applies it
\* on the leader at once.  Whether apply accepts it is a function of the
\* committed log, the same on every replica, so the model decides it here.
CommitEpoch ==
    LET k == Len(clog) + 1
        entry == log[leader][k] IN
    /\ k <= Len(log[leader])
    /\ appliedR[leader] = Len(clog)
    /\ \E Q \in Quorums : leader \in Q /\ \A r \in Q : IsPrefix(SubSeq(log[leader], 1, k), log[r])
    /\ clog' = Append(clog, entry)
    /\ IF Accepts(entry)
       THEN /\ elog' = Append(elog, [reqs |-> entry.reqs, first |-> entry.first,
                                     last |-> entry.last, at |-> k])
            /\ oracle' = Append(oracle, ExecEpoch(oracle[Len(oracle)], entry).st)
       ELSE UNCHANGED <<elog, oracle>>
    /\ appliedR' = [appliedR EXCEPT ![leader] = k]
    /\ hlc' = [hlc EXCEPT ![leader] = AppliedHLC(@, entry, Accepts(entry))]
    /\ UNCHANGED <<clientVars, queue, leader, changes, log, now, storeVars, exVars>>

\* Entry k of the committed log was accepted as an epoch.
AcceptedAt(k) == \E i \in DOMAIN elog : elog[i].at = k

\* apply_epoch on a replica that lags (pysyncobj applies in log order).
ApplyEpoch(r) ==
    LET k == appliedR[r] + 1 IN
    /\ k <= Len(clog)
    /\ k <= Len(log[r])
    /\ log[r][k] = clog[k]
    /\ appliedR' = [appliedR EXCEPT ![r] = k]
    /\ hlc' = [hlc EXCEPT ![r] = AppliedHLC(@, clog[k], AcceptedAt(k))]
    /\ UNCHANGED <<clientVars, queue, leader, changes, log, clog, elog, oracle, now, storeVars, exVars>>

\* Raft elects a replica holding every committed entry.  The old leader's
\* queue is in memory and is lost; its clients time out and retry.
LeaderChange(r) ==
    /\ r # leader
    /\ changes < MaxLeaderChanges
    /\ IsPrefix(clog, log[r])
    /\ leader' = r
    /\ changes' = changes + 1
    /\ queue' = <<>>
    /\ UNCHANGED <<clientVars, log, clog, elog, oracle, appliedR, hlc, now, storeVars, exVars>>

\* Time passes.  The clocks keep their skew (HLC.tla lets them drift).
Tick ==
    /\ now < MaxTime
    /\ now' = now + 1
    /\ UNCHANGED <<clientVars, queue, leader, changes, log, clog, elog, oracle, appliedR, hlc,
                   storeVars, exVars>>

-----------------------------------------------------------------------------
(* Executor: executor/runner.py.  Runner.run_epoch executes the next epoch *)
(* on the in-memory state and queues each shard its batch; one pusher per  *)
(* shard (Runner._pusher) calls the proxy's apply (proxies/sqlite.py,      *)
(* proxies/postgres.py, proxies/cassandra.py), which checks applied_epoch  *)
(* (proxies/base.py check_batches).  Runner.recover resumes.               *)

SetEx(x, r) == ex' = [ex EXCEPT ![x] = r]

Execute(x) ==
    LET e == ex[x].next IN
    /\ ex[x].up
    /\ e <= Len(elog)
    /\ \E res \in {ExecEpoch(ex[x].mem, elog[e])} :
       SetEx(x, [ex[x] EXCEPT
           !.next = e + 1,
           !.mem  = res.st,
           !.q    = [s \in Shards |->
                       IF Owner[s] = x
                       THEN LET b == BatchFor(ex[x].mem, res, s)
                            IN Append(ex[x].q[s], [e |-> e, posts |-> b.posts, recs |-> b.recs])
                       ELSE <<>>]])
    /\ UNCHANGED <<clientVars, seqVars, storeVars, crashes>>

\* Writing batch b to shard s.  A transactional store appends the batch.  A
\* store without transactions (UpsertShards) upserts it: every row of an
\* epoch has a deterministic key, so writing the epoch again overwrites the
\* same cells (rows left by an earlier, different attempt would stay: the
\* union models that).  Mutant IdempotentWrites = FALSE: it appends.
Write(rs, b, s) ==
    LET old == {i \in DOMAIN rs : rs[i].e = b.e} IN
    IF s \in UpsertShards /\ IdempotentWrites /\ old # {}
    THEN LET i == CHOOSE j \in old : TRUE
             r == rs[i]
         IN [rs EXCEPT ![i] = [e     |-> r.e,
                               posts |-> r.posts \o SelectSeq(b.posts, LAMBDA t : t \notin Range(r.posts)),
                               recs  |-> r.recs \cup b.recs]]
    ELSE Append(rs, b)

\* The pusher applies the batch at the head of the shard's queue.  The store
\* skips a batch at or below applied_epoch, and refuses one that would leave
\* a gap (InvariantViolation: the pusher then stays stuck on it).  A
\* transactional store writes the rows and applied_epoch at once; a store
\* without transactions writes applied_epoch in a second step.
ShardApply(x, s) ==
    LET b == Head(ex[x].q[s]) IN
    /\ ex[x].up
    /\ Owner[s] = x
    /\ ex[x].q[s] # <<>>
    /\ s \notin ex[x].half
    /\ s \notin down
    /\ IF GuardAppliedEpoch /\ b.e <= appliedEpoch[s]
       THEN \* a replay: the store writes nothing
            /\ SetEx(x, [ex[x] EXCEPT !.q[s] = Tail(@)])
            /\ UNCHANGED <<rows, appliedEpoch>>
       ELSE /\ GuardAppliedEpoch => b.e = appliedEpoch[s] + 1
            /\ rows' = [rows EXCEPT ![s] = Write(@, b, s)]
            /\ IF AtomicApply /\ s \notin UpsertShards
               THEN /\ appliedEpoch' = [appliedEpoch EXCEPT ![s] = b.e]
                    /\ SetEx(x, [ex[x] EXCEPT !.q[s] = Tail(@)])
               ELSE \* applied_epoch is written by a second write
                    /\ UNCHANGED appliedEpoch
                    /\ SetEx(x, [ex[x] EXCEPT !.half = @ \cup {s}])
    /\ UNCHANGED <<clientVars, seqVars, down, outages, crashes>>

\* The second write: applied_epoch, last (UpsertShards, and the mutant
\* AtomicApply = FALSE of a transactional store).
ShardApplyMark(x, s) ==
    /\ ex[x].up
    /\ s \in ex[x].half
    /\ s \notin down
    /\ appliedEpoch' = [appliedEpoch EXCEPT ![s] = Head(ex[x].q[s]).e]
    /\ SetEx(x, [ex[x] EXCEPT !.half = @ \ {s}, !.q[s] = Tail(@)])
    /\ UNCHANGED <<clientVars, seqVars, rows, down, outages, crashes>>

\* A crash (kill -9) at any step: the process loses everything but the stores.
ExecutorCrash(x) ==
    /\ ex[x].up
    /\ crashes < MaxCrashes
    /\ SetEx(x, [up |-> FALSE, next |-> 0, mem |-> InitState, q |-> NoQueues, half |-> {}])
    /\ crashes' = crashes + 1
    /\ UNCHANGED <<clientVars, seqVars, storeVars>>

\* Runner.recover: read applied_epoch from the executor's shards, resume at
\* the smallest + 1 and preload at that version (load_*(ids, base_epoch)).
\* In the Calvin layout the executor also reads the other executors' shards
\* at that version, so it waits until they have reached it.
ExecutorRecover(x) ==
    LET applied == {appliedEpoch[s] : s \in OwnedBy(x)}
        base    == IF ResumeFromMin THEN Min(applied) ELSE Max(applied)
        view    == IF PreloadAtEpoch THEN ConstView(base) ELSE ConstView(Latest)
    IN
    /\ ~ex[x].up
    /\ down = {}
    /\ \A s \in Shards : appliedEpoch[s] >= base
    /\ SetEx(x, [up |-> TRUE, next |-> base + 1, mem |-> Snapshot(view), q |-> NoQueues,
                 half |-> {}])
    /\ UNCHANGED <<clientVars, seqVars, storeVars, crashes>>

StoreDown(s) ==
    /\ s \notin down
    /\ FlappingStores \/ outages < MaxOutages
    /\ down' = down \cup {s}
    /\ outages' = IF FlappingStores THEN outages ELSE outages + 1
    /\ UNCHANGED <<clientVars, seqVars, rows, appliedEpoch, exVars>>

StoreUp(s) ==
    /\ s \in down
    /\ down' = down \ {s}
    /\ UNCHANGED <<clientVars, seqVars, rows, appliedEpoch, outages, exVars>>

-----------------------------------------------------------------------------
\* Everything submitted has been dealt with: each client is answered or has
\* spent its retries on a request that no epoch holds, every replica holds
\* and has applied the whole committed log, every shard has applied every
\* epoch, and the executors have no work.  Only then may the system stop;
\* any other state without a successor is a deadlock and fails the check.
Done ==
    /\ queue = <<>>
    /\ \A r \in Replicas : log[r] = clog /\ appliedR[r] = Len(clog)
    /\ \A s \in Shards : appliedEpoch[s] = Len(elog) /\ s \notin down
    /\ \A x \in Executors : ex[x].up /\ ex[x].next = Len(elog) + 1 /\ ex[x].q = NoQueues
    /\ \A c \in Clients : cst[c] = "acked" \/ (sends[c] = Attempts[c] /\ ~InLog(c, elog, Len(elog)))

Terminated == Done /\ UNCHANGED vars

Next ==
    \/ \E c \in Clients : Submit(c) \/ Ack(c)
    \/ CloseEpoch \/ CommitEpoch \/ Tick
    \/ \E r \in Replicas : Replicate(r) \/ ApplyEpoch(r) \/ LeaderChange(r)
    \/ \E x \in Executors : Execute(x) \/ ExecutorCrash(x) \/ ExecutorRecover(x)
    \/ \E x \in Executors, s \in Shards : ShardApply(x, s) \/ ShardApplyMark(x, s)
    \/ \E s \in Shards : StoreDown(s) \/ StoreUp(s)
    \/ Terminated

(***************************************************************************)
(* Fairness, per process, as for a PlusCal `fair process`: a process that  *)
(* can take a step eventually takes one.  Nothing is assumed about         *)
(* clients, leader elections, crashes, outages or time: they may happen or *)
(* not, within their bounds.  Weak fairness suffices: after the last of    *)
(* the finitely many faults nothing disables a process's pending step but  *)
(* the process itself, and each step makes progress toward a finite goal   *)
(* (a longer log, a higher applied_epoch), so no step of a process can be  *)
(* starved forever by the others.                                          *)
(***************************************************************************)

\* Raft: with a majority of replicas up, the leader keeps sending
\* AppendEntries (every append_entries_period_ms), so a lagging follower is
\* brought up to date, an entry held by a majority becomes known committed,
\* and pysyncobj applies committed entries on every live replica.
RaftStep == CommitEpoch \/ \E r \in Replicas : Replicate(r) \/ ApplyEpoch(r)

\* The runner is a process that loops while it has work; after its last
\* crash it is restarted (systemd, `ordo up`).  A failed apply is retried
\* with backoff, and stores are reachable again after their last outage
\* (DESIGN 6: "the stores eventually reachable"), so a pending apply stays
\* enabled until it is done.
ExecutorStep(x) ==
    \/ ExecutorRecover(x) \/ Execute(x)
    \/ \E s \in Shards : ShardApply(x, s) \/ ShardApplyMark(x, s)

\* Strong fairness for the same steps, for stores that flap without bound
\* (OrdoLiveFlapping.cfg): a pending apply is then enabled infinitely often
\* but never continuously, and weak fairness lets the runner miss every up
\* period (OrdoLiveFlapping_WeakRetry finds that behaviour).  Realistic
\* because the runner retries forever with a capped backoff
\* (executor/runner.py, tenacity): a store that is up again and again, each
\* time for longer than the cap, is written during one of those periods.
\* `StrongRetry /\ ...` makes the conjunct vacuous when the switch is off.
StrongExecutorStep(x) == StrongRetry /\ ExecutorStep(x)

\* An outage ends: the store is restarted or the partition heals.  Per
\* store: fairness for "some store comes up" would let one store come up
\* and go down forever while the other stays down (TLC found that lasso in
\* OrdoLiveFlapping before this was per store).
StoreRepair(s) == StoreUp(s)

\* The API answers a waiting client once W covers its epoch (it polls W).
Answer == \E c \in Clients : Ack(c)

Fairness ==
    /\ WF_vars(RaftStep)
    /\ \A x \in Executors : WF_vars(ExecutorStep(x))
    /\ \A x \in Executors : SF_vars(StrongExecutorStep(x))
    /\ \A s \in Shards : WF_vars(StoreRepair(s))
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
    /\ \A r \in Replicas : Len(log[r]) <= MaxEpochs /\ appliedR[r] <= Len(clog)
    /\ Len(elog) <= Len(clog) /\ Len(oracle) = Len(elog) + 1
    /\ \A s \in Shards : appliedEpoch[s] <= Len(elog)
    /\ crashes <= MaxCrashes /\ changes <= MaxLeaderChanges /\ outages <= MaxOutages

\* 1. Serial equivalence: each shard's latest version equals the serial
\* execution of the epochs up to its applied_epoch.  Checking the latest
\* version in every state covers every older version, in particular W:
\* versions are cumulative, so a batch that changes version v <= applied_epoch
\* changes the latest version too, and applied_epoch moves one epoch at a time.
SerialEquivalence ==
    \A s \in Shards :
        LET v  == appliedEpoch[s]
            st == Serial(v)
            b  == ShardBals(s, v)
        IN /\ \A a \in AcctsOf(s) : b[a] = st.bal[a]
           /\ RecsAt(s, v) = {r \in st.recs : XferShard[r.t.id] = s}

\* 2. Exactly once: no shard applies an epoch twice ...
ExactlyOnceEpoch ==
    \A s \in Shards : \A i, j \in DOMAIN rows[s] : i # j => rows[s][i].e # rows[s][j].e

\* ... no transfer id is posted twice (on any shard) ...
ExactlyOnceTransfer ==
    \A s \in Shards : LET xs == ConcatPosts(rows[s]) IN
        \A i, j \in DOMAIN xs : i # j => xs[i].id # xs[j].id

\* ... and no acknowledged transfer is lost: an acknowledged request is in an
\* epoch, and epochs are committed, which Raft never loses.
ExactlyOnceNoLostAck ==
    \A c \in Clients : cst[c] = "acked" => InLog(c, elog, Len(elog))

\* 3. Conservation: per ledger, debits equal credits in the complete version
\* at W (every shard at the same epoch).  W moves one epoch at a time and
\* versions are cumulative, so checking W in every state covers every v <= W.
ConservationLedger ==
    \A L \in Ledgers :
        LET acc == {a \in Accounts : LedgerOf[a] = L}
            b   == Bals(ConstView(W))
        IN SetSum([a \in acc |-> b[a].dp], acc) = SetSum([a \in acc |-> b[a].cp], acc)

\* ... and no stored balance, in any version, breaks its account's flags.
ConservationFlags ==
    \A s \in Shards : \A v \in 0..appliedEpoch[s] :
        LET b == ShardBals(s, v) IN
        \A a \in AcctsOf(s) :
            /\ a \in DebitsMustNotExceedCredits => b[a].dp <= b[a].cp
            /\ a \in CreditsMustNotExceedDebits => b[a].cp <= b[a].dp

\* 4. Atomic visibility: a read sees the state after a whole number of epochs ...
AtomicVisibilityEpoch ==
    LET seen == Snapshot(ReadView) IN \E k \in 0..Len(elog) : seen = Serial(k)

\* ... all of a linked chain or none of it ...
AtomicVisibilityLinked ==
    LET vis == Postings(ReadView) IN
    \A e \in 1..Len(elog) : \A ch \in Range(ChainsOf(elog[e].reqs)) :
        Len(ch) > 1 =>
            LET pot == UNION {{[e |-> e, t |-> t, a |-> a] : a \in {t.dr, t.cr}} : t \in Range(ch)}
            IN vis \cap pot \in {{}, pot}

\* ... and both sides of a transfer between stores, or neither.
AtomicVisibilityCrossStore ==
    LET vis == Postings(ReadView) IN
    \A p \in vis : [p EXCEPT !.a = p.t.dr] \in vis /\ [p EXCEPT !.a = p.t.cr] \in vis

\* 5. HLC timestamps increase strictly along the log of epochs ...
HLCMonotonicLog ==
    \A k \in 1..Len(elog) :
        /\ Leq(elog[k].first, elog[k].last)
        /\ k > 1 => Less(elog[k - 1].last, elog[k].first)

\* ... because every replica's clock is past every epoch it has applied, so
\* a new leader continues above the log.
HLCAheadOfLog ==
    \A r \in Replicas : \A i \in DOMAIN elog :
        elog[i].at <= appliedR[r] => Leq(elog[i].last, hlc[r])

-----------------------------------------------------------------------------
(* 6. Liveness, checked under FairSpec with finitely many faults. *)

\* Every committed epoch is eventually applied on every shard ...
AppliedEverywhere ==
    \A k \in 1..MaxEpochs : (Len(elog) >= k) ~> (\A s \in Shards : appliedEpoch[s] >= k)

\* ... and every client whose request is in an epoch eventually gets its answer.
CommittedAcked ==
    \A c \in Clients : InLog(c, elog, Len(elog)) ~> (cst[c] = "acked")
=============================================================================
