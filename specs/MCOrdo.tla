------------------------------ MODULE MCOrdo ------------------------------
(***************************************************************************)
(* The scenario that TLC checks Ordo.tla against.  The configs substitute  *)
(* these definitions for Ordo's constants (`Req <- MCReq` and so on).      *)
(*                                                                         *)
(* Two shards in two different stores: s1 is SQLite, s2 is PostgreSQL (or *)
(* Cassandra, in OrdoCassandra.cfg).                                       *)
(*   alice  s1  ledger 1  debits_must_not_exceed_credits, credited 2       *)
(*   equity s1  ledger 1  credits_must_not_exceed_debits, debited 2        *)
(*   bob    s2  ledger 1  debits_must_not_exceed_credits                   *)
(*   euro   s2  ledger 2                                                   *)
(* The initial balances are one funding transfer equity -> alice of 2.     *)
(*                                                                         *)
(* Client c1 sends T1 (alice -> bob 1, across stores) and T4 (equity ->    *)
(* euro, across ledgers: always ledger_mismatch).  Client c2 sends a       *)
(* linked chain across stores: T2 (alice -> bob 1, linked) then T3 (bob -> *)
(* equity 2).  The order decides the outcome:                              *)
(*   c1 then c2:  T1 ok; T2 ok; T3 ok (bob holds 2).                       *)
(*   c2 then c1:  T2 ok but T3 exceeds_credits (bob holds 1), so the chain *)
(*                rolls back: T2 linked_event_failed; then T1 ok.          *)
(* Failed transfers are recorded too, so a retry of c1 after its first    *)
(* copy was executed gets `exists` for T1 and the original ledger_mismatch *)
(* for T4; with dedup switched off it would move alice's money again.      *)
(* Postings live on the account's shard, transfer records on the shard of  *)
(* their id (MCXferShard).                                                 *)
(***************************************************************************)
EXTENDS Ordo

MCClients  == {"c1", "c2"}
MCReplicas == {"r1", "r2"}
MCReplicas3 == {"r1", "r2", "r3"}
\* r1's clock runs one tick ahead of the others.
MCClockOffset == [r \in MCReplicas3 |-> IF r = "r1" THEN 1 ELSE 0]
MCShards   == {"s1", "s2"}
MCAccounts == {"alice", "equity", "bob", "euro"}

\* Which store backs each shard.  SQLite and PostgreSQL apply an epoch in one
\* transaction; in OrdoCassandra.cfg s2 is Cassandra instead, which has no
\* transactions (Ordo's UpsertShards).
StoreOf == [s \in MCShards |-> IF s = "s1" THEN "sqlite" ELSE "postgres"]
MCNoUpsertShards == {}
MCCassandraShards == {"s2"}

MCShardOf  == [a \in MCAccounts |-> IF a \in {"alice", "equity"} THEN "s1" ELSE "s2"]
\* Transfer records are routed by id: odd ids to s1, even ids to s2.
MCXferShard == [id \in 1..4 |-> IF id % 2 = 1 THEN "s1" ELSE "s2"]
MCLedgerOf == [a \in MCAccounts |-> IF a = "euro" THEN 2 ELSE 1]
MCDebitsMustNotExceedCredits == {"alice", "bob"}
MCCreditsMustNotExceedDebits == {"equity"}
MCInitBal ==
    [a \in MCAccounts |->
        CASE a = "alice"  -> [dp |-> 0, cp |-> 2]
          [] a = "equity" -> [dp |-> 2, cp |-> 0]
          [] OTHER        -> [dp |-> 0, cp |-> 0]]

T1 == [id |-> 1, dr |-> "alice",  cr |-> "bob",    amt |-> 1, linked |-> FALSE]
T4 == [id |-> 4, dr |-> "equity", cr |-> "euro",   amt |-> 1, linked |-> FALSE]
T2 == [id |-> 2, dr |-> "alice",  cr |-> "bob",    amt |-> 1, linked |-> TRUE]
T3 == [id |-> 3, dr |-> "bob",    cr |-> "equity", amt |-> 2, linked |-> FALSE]

\* c1 may send its request twice (a retry after a timeout), c2 once.
MCAttempts == [c \in MCClients |-> IF c = "c1" THEN 2 ELSE 1]
\* No retries (the liveness model, which TLC checks more slowly).
MCAttemptsOnce == [c \in MCClients |-> 1]

MCReq == [c \in MCClients |-> IF c = "c1" THEN <<T1, T4>> ELSE <<T2, T3>>]

\* Layouts.  One runner that owns both shards (the embedded default: the
\* runner pushes an epoch to both stores, so it can crash between them), or
\* Calvin scale-out with one executor per shard.
MCExecutorsRunner == {"x1"}
MCOwnerRunner     == [s \in MCShards |-> "x1"]
MCExecutorsCalvin == {"x1", "x2"}
MCOwnerCalvin     == [s \in MCShards |-> IF s = "s1" THEN "x1" ELSE "x2"]
=============================================================================
