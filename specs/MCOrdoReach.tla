--------------------------- MODULE MCOrdoReach ---------------------------
(***************************************************************************)
(* Non-vacuity checks for the Ordo models.  Each Never* predicate claims    *)
(* that an interesting behaviour cannot happen; the configs in             *)
(* specs/reachable/ check one each against an unmodified model, and        *)
(* tests/test_specs.py requires TLC to find a counterexample, i.e. to      *)
(* reach the behaviour.  If an edit to the model made one of them          *)
(* unreachable, the invariants would pass for the wrong reason.            *)
(***************************************************************************)
EXTENDS MCOrdo

\* apply_epoch refuses an entry stamped below the last epoch (leader change
\* to a replica whose clock is behind).
NeverRefused == Len(elog) = Len(clog)

\* A retry puts the same request in two different epochs.
NeverDuplicateEpochs ==
    ~\E c \in Clients : \E i, j \in DOMAIN elog :
        i < j /\ c \in Range(elog[i].reqs) /\ c \in Range(elog[j].reqs)

\* c2's linked chain succeeds (c1 first) ...
NeverChainSucceeds == ~\E r \in Serial(Len(elog)).recs : r.t = T3 /\ r.code = "ok"

\* ... and fails, rolling back T2 (c2 first).
NeverChainRollsBack ==
    ~\E r \in Serial(Len(elog)).recs : r.t = T2 /\ r.code = "linked_event_failed"

\* One shard is two or more epochs ahead of another (pipelined pushers).
NeverShardsTwoApart == \A s, q \in Shards : appliedEpoch[s] <= appliedEpoch[q] + 1

\* After a crash, the runner re-pushes a batch the shard already holds, and
\* the shard skips it.
NeverReplaySkipped ==
    ~\E x \in Executors : ex[x].up /\ \E s \in Shards :
        ex[x].q[s] # <<>> /\ Head(ex[x].q[s]).e <= appliedEpoch[s]

\* A store without transactions holds rows of an epoch beyond its
\* applied_epoch (a crash came between the rows and applied_epoch).
NeverHalfWritten ==
    \A s \in UpsertShards : \A i \in DOMAIN rows[s] : rows[s][i].e <= appliedEpoch[s]

\* ... and, after a crash, the replay is about to write that epoch again
\* over the rows already there.
NeverReplayOverHalfWritten ==
    ~\E x \in Executors, s \in UpsertShards :
        /\ ex[x].up /\ ex[x].q[s] # <<>> /\ s \notin ex[x].half
        /\ \E i \in DOMAIN rows[s] : rows[s][i].e = Head(ex[x].q[s]).e /\ rows[s][i].e > appliedEpoch[s]

\* A client is answered after a leader change.
NeverAckAfterLeaderChange == ~(changes > 0 /\ \E c \in Clients : cst[c] = "acked")

\* Every shard has applied every epoch and every client is done: the runs
\* reach their end.
NeverDone == ~Done
=============================================================================
