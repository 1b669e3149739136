-------------------------------- MODULE HLC --------------------------------
(***************************************************************************)
(* Hybrid logical clocks, Kulkarni, Demirbas, Madeppa, Avva, Leone:        *)
(* "Logical Physical Clocks and Consistent Snapshots in Globally           *)
(* Distributed Databases" (2014), Figure 5: the send rule and the receive  *)
(* rule, run against physical clocks whose pairwise drift is bounded by    *)
(* Epsilon.  Optionally a Rogue process with an unsynchronised clock (a    *)
(* misconfigured peer or a client passing after=) sends timestamps; ordo   *)
(* refuses any remote timestamp more than MaxOffset ahead of its own       *)
(* physical clock, as CockroachDB does (DESIGN.md, Ordering).  Only what a *)
(* Rogue sends matters, so it sends and never receives.                    *)
(*                                                                         *)
(* Code: sequencer/hlc.py -- HLC.now is the send rule (SendTo below), and  *)
(* HLC.receive is the receive rule (Receive below).  The physical clock is *)
(* injected there, which is what pt is here.                               *)
(*                                                                         *)
(* Each invariant below has a mutant in specs/mutants/ that removes the    *)
(* mechanism guarding it; tests/test_specs.py checks that TLC finds the    *)
(* violation.  The mutant switches are the BOOLEAN constants.              *)
(***************************************************************************)
EXTENDS Naturals, FiniteSets

CONSTANTS
    Nodes,            \* processes whose physical clocks are synchronised
    Rogue,            \* processes with an arbitrary clock ({} for none)
    Epsilon,          \* bound on |pt[p] - pt[q]| between Nodes
    MaxOffset,        \* max_offset_ms: remote l further ahead is refused
    MaxTime,          \* model horizon for physical time
    MaxEventsPerTick, \* events a process handles per physical tick
    MaxInFlight,      \* bound on messages in flight (network buffer)
    \* Mechanism switches; TRUE is the real algorithm, FALSE a mutant.
    SendUsesMax,      \* send: l' = max(l, pt), not l' = pt
    ReceiveUsesRemote,\* receive: take m.l and m.c into account
    ResetC,           \* c restarts at 0 when l moves forward
    RefuseFar         \* refuse m.l > pt + MaxOffset

ASSUME Epsilon \in Nat /\ MaxOffset \in Nat /\ Epsilon <= MaxOffset
ASSUME MaxTime \in Nat /\ MaxEventsPerTick \in Nat \ {0} /\ MaxInFlight \in Nat
ASSUME Nodes # {} /\ Nodes \cap Rogue = {}
ASSUME \A b \in {SendUsesMax, ReceiveUsesRemote, ResetC, RefuseFar} : b \in BOOLEAN

Procs == Nodes \cup Rogue

VARIABLES
    pt,        \* physical clock of each process
    hlc,       \* [l, c] of each process
    ev,        \* events handled since the last tick (rate limit)
    msgs,      \* messages in flight: [to, ts]
    prev,      \* ghost: the timestamp before the last event (or NoTs)
    recvd      \* ghost: the timestamp of the last message accepted (or NoTs)

vars == <<pt, hlc, ev, msgs, prev, recvd>>

NoTs == [l |-> 0, c |-> 0, none |-> TRUE]
Ts(l, c) == [l |-> l, c |-> c, none |-> FALSE]

Max2(a, b) == IF a >= b THEN a ELSE b
Max3(a, b, c) == Max2(Max2(a, b), c)
Min(S) == CHOOSE x \in S : \A y \in S : x <= y

\* Lexicographic order of timestamps: (l, c) < (l', c').
Less(a, b) == a.l < b.l \/ (a.l = b.l /\ a.c < b.c)

\* ----- The two rules of Kulkarni et al. Figure 5 ---------------------------
\* Send or local event at a process with timestamp h and physical time p.
SendRule(h, p) ==
    LET l == IF SendUsesMax THEN Max2(h.l, p) ELSE p
    IN  Ts(l, IF l = h.l THEN h.c + 1 ELSE IF ResetC THEN 0 ELSE h.c + 1)

\* Receive event of message timestamp m.
ReceiveRule(h, m, p) ==
    IF ~ReceiveUsesRemote THEN SendRule(h, p)
    ELSE LET l == Max3(h.l, m.l, p)
             c == CASE l = h.l /\ l = m.l -> Max2(h.c, m.c) + 1
                    [] l = h.l             -> h.c + 1
                    [] l = m.l             -> m.c + 1
                    [] OTHER               -> IF ResetC THEN 0
                                                ELSE Max2(h.c, m.c) + 1
         IN  Ts(l, c)

\* ----- Physical clocks -------------------------------------------------------
\* Nodes start together at 0; a Rogue clock starts anywhere in the horizon.
Init ==
    /\ pt \in [Procs -> 0..MaxTime]
    /\ \A p \in Nodes : pt[p] = 0
    /\ hlc = [p \in Procs |-> Ts(pt[p], 0)]
    /\ ev = [p \in Procs |-> 0]
    /\ msgs = {}
    /\ prev = [p \in Procs |-> NoTs]
    /\ recvd = [p \in Procs |-> NoTs]

\* A synchronised clock may move ahead only while it stays within Epsilon of
\* the slowest synchronised clock (NTP/chrony keep drift bounded; nodes that
\* drift further are removed from the cluster, as in CockroachDB).
Tick(p) ==
    /\ pt[p] < MaxTime
    /\ p \in Nodes => pt[p] + 1 - Min({pt[q] : q \in Nodes}) <= Epsilon
    /\ pt' = [pt EXCEPT ![p] = @ + 1]
    /\ ev' = [ev EXCEPT ![p] = 0]
    /\ UNCHANGED <<hlc, msgs, prev, recvd>>

\* ----- Events ---------------------------------------------------------------
\* HLC.now(): send rule; the timestamp travels with a message to q.
SendTo(p, q) ==
    /\ p # q
    /\ q \in Nodes
    /\ ev[p] < MaxEventsPerTick
    /\ Cardinality(msgs) < MaxInFlight
    /\ LET t == SendRule(hlc[p], pt[p]) IN
       /\ hlc' = [hlc EXCEPT ![p] = t]
       /\ msgs' = msgs \cup {[to |-> q, ts |-> [l |-> t.l, c |-> t.c]]}
    /\ ev' = [ev EXCEPT ![p] = @ + 1]
    /\ prev' = [prev EXCEPT ![p] = hlc[p]]
    /\ UNCHANGED <<pt, recvd>>

\* HLC.receive(remote): a message further ahead than MaxOffset is refused
\* (the request is answered with an error; the clock does not move).
Far(p, m) == m.ts.l > pt[p] + MaxOffset

Receive(p, m) ==
    /\ m \in msgs
    /\ m.to = p
    /\ ev[p] < MaxEventsPerTick
    /\ msgs' = msgs \ {m}
    /\ IF RefuseFar /\ Far(p, m)
       THEN UNCHANGED <<hlc, ev, prev, recvd>>
       ELSE /\ hlc' = [hlc EXCEPT ![p] = ReceiveRule(hlc[p], m.ts, pt[p])]
            /\ ev' = [ev EXCEPT ![p] = @ + 1]
            /\ prev' = [prev EXCEPT ![p] = hlc[p]]
            /\ recvd' = [recvd EXCEPT ![p] = Ts(m.ts.l, m.ts.c)]
    /\ UNCHANGED pt

\* The model stops at the time horizon.  This is not a deadlock of the
\* algorithm: physical time goes on, the model does not.  Before the horizon
\* the slowest clock can always tick, so TLC's deadlock check stays meaningful
\* for every other state.
Horizon ==
    /\ \A p \in Procs : pt[p] = MaxTime
    /\ UNCHANGED vars

Next ==
    \/ \E p \in Procs : Tick(p)
    \/ \E p, q \in Procs : SendTo(p, q)
    \/ \E p \in Nodes, m \in msgs : Receive(p, m)
    \/ Horizon

Spec == Init /\ [][Next]_vars

\* ----- Safety ---------------------------------------------------------------
TypeOK ==
    /\ pt \in [Procs -> 0..MaxTime]
    /\ \A p \in Procs : hlc[p].l \in Nat /\ hlc[p].c \in Nat
    /\ ev \in [Procs -> 0..MaxEventsPerTick]

\* DESIGN 5 (HLC order): every event's timestamp is strictly greater than
\* the previous one at the same process.
HLCMonotonic ==
    \A p \in Procs : ~prev[p].none => Less(prev[p], hlc[p])

\* DESIGN 5 (HLC order equals causal order): a receive event is stamped
\* after the send event it depends on (e hb f => hlc(e) < hlc(f)).
HLCCausal ==
    \A p \in Procs : ~recvd[p].none => Less(recvd[p], hlc[p])

\* Kulkarni Theorem 1: l - pt <= epsilon.  With a Rogue clock the bound that
\* holds is MaxOffset, and only because far timestamps are refused.
LBound == IF Rogue = {} THEN Epsilon ELSE MaxOffset

HLCBoundL == \A p \in Nodes : hlc[p].l - pt[p] <= LBound

\* Kulkarni Theorem 2, with a rate limit: events with l = L happen at p only
\* while pt[p] is in L-Epsilon..L, i.e. during Epsilon+1 ticks, each with at
\* most MaxEventsPerTick events; c counts such events that precede it.
CBound == Cardinality(Procs) * MaxEventsPerTick * (Epsilon + 1)

HLCBoundC == \A p \in Nodes : hlc[p].c < CBound
=============================================================================
