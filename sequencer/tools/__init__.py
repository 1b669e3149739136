"""The drivers of a whole cluster: the `ordo` command and what it runs.

Nothing here is part of the ordering service a replica runs; it starts,
loads, measures and checks one.  `cli` (the `ordo` command), `cluster`
(local processes and their generated secrets), `workload` (seeded
transfers), `demo` (the embedded demo and the invariant checks of a run),
`up` (a topology with real servers), `settlement` (the DvP demo), `bench`
(throughput and latency, with its baselines), `stats` (percentiles).
These modules may import everything below them; nothing below imports them
(`tests/test_layout.py`).
"""
