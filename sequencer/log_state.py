"""The replicated log's state machine: numbering, HLC continuity and the digest.

Role: pure core (the replicated log's); driven by `log.py` and `tests/sim/`.

Owned here, and pure: what applying one committed Raft entry means.  Every
replica runs it in log order (driven by `sequencer/log.py`, the pysyncobj
glue), and so do the simulator (`tests/sim/`) and recovery, so the numbering,
the refusal of an entry that does not continue the HLC, and the keyed digest
are computed by one piece of code everywhere.

An entry is refused (deterministically, by every replica) when its first
stamp is not above the last applied stamp: a leader that stamped before it
had applied the whole log could stamp below the last epoch, and HLC order
must equal log order.  A refused entry gets no number and changes nothing.
"""

from __future__ import annotations

import msgspec

from sequencer.types import AppliedEpoch, decode_epoch, encode_epoch, fold_log_digest, log_genesis_digest


class LogState:
    """The last epoch number, its HLC and the running digest, as every replica derives them."""

    def __init__(self, log_key: bytes) -> None:
        self.log_key = log_key
        self.last_number = 0
        self.last_hlc = 0
        self.digest = log_genesis_digest(log_key)

    # TLA+: Ordo!CommitEpoch -- number, check HLC continuity, fold the digest.
    def next_entry(self, data: bytes) -> AppliedEpoch | None:
        """The entry that applying `data` would produce, or None if it is refused.  Changes nothing."""
        epoch = decode_epoch(data)
        if epoch.hlc_first <= self.last_hlc:
            return None
        number = self.last_number + 1
        stored = encode_epoch(msgspec.structs.replace(epoch, number=number))
        return AppliedEpoch(number, epoch.hlc_last, fold_log_digest(self.log_key, self.digest, stored), stored)

    def advance(self, entry: AppliedEpoch) -> None:
        """Make `entry` (from `next_entry`) the last applied epoch."""
        self.last_number, self.last_hlc, self.digest = entry.number, entry.hlc_last, entry.digest

    def apply(self, data: bytes) -> AppliedEpoch | None:
        entry = self.next_entry(data)
        if entry is not None:
            self.advance(entry)
        return entry
