"""The replicated log: one pysyncobj Raft group, one entry per epoch.

Role: driver of `LogState` (sequencer/log_state.py) over pysyncobj.

Owned here: the glue between pysyncobj (the edge) and ordo's epochs, i.e.
the `@replicated` apply (which runs `LogState`: numbering, the HLC
continuity check and the running digest), and `EpochJournal`, the replica's local
SQLite copy of applied epochs that the executor reads through the API.
Callers: `sequencer/node.py` proposes epochs and serves the journal.

pysyncobj behaviour we design around (DESIGN.md):

* Large entries break its chunked transmission (64 KiB: "pickle data was
  truncated") and 16 KiB entries under load caused leader churn.  Entries
  are capped by `epoch_bytes_max` (see `LogConfig`), well below both.
* Its journal is an mmap that it never flushes.  A killed *process* loses
  nothing (the pages belong to the kernel), but an OS crash could; with
  `journal_flush=True` we msync after every appended entry.
* Any attribute set after `SyncObj.__init__` is pickled into its snapshots.
  All of ours are set before it, and compaction is pushed out of reach so
  that a replica's journal always holds every epoch.
* It frames every message, log entry and journal header as a pickle
  (protocol 2).  Fernet (`password`) keeps strangers out; on top of that,
  `harden_pysyncobj_unpickling` makes every unpickle in pysyncobj refuse all
  globals but the few plain-data constructors protocol 2 needs, so even a
  holder of the cluster secret cannot name a callable to run.
"""

from __future__ import annotations

import io
import pickle
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pysyncobj.journal
import pysyncobj.pickle
import pysyncobj.serializer
from pysyncobj import SyncObj, SyncObjConf, replicated

from sequencer import limits
from sequencer.errors import InvariantViolation
from sequencer.hlc import HLC, Timestamp
from sequencer.log_state import LogState
from sequencer.types import AppliedEpoch


def _bytes_from_latin1(text: str = "", encoding: str = "latin1", errors: str = "strict") -> bytes:
    """What protocol 2 pickles `bytes` as (`_codecs.encode(s, 'latin1')`), and nothing else."""
    if encoding != "latin1" or errors != "strict" or not isinstance(text, str):
        raise pickle.UnpicklingError("refused _codecs.encode with anything but (str, 'latin1')")
    return text.encode("latin1")


def _empty(kind):
    def make(*args):
        if args and not (len(args) == 1 and isinstance(args[0], (list, tuple, str, bytes))):
            raise pickle.UnpicklingError(f"refused {kind.__name__}{args!r}")
        return kind(*args)
    return make


#: The only globals pysyncobj's plain-data pickles (protocol 2) reference.
_DATA_GLOBALS = {
    ("_codecs", "encode"): _bytes_from_latin1,
    **{(module, kind.__name__): _empty(kind)
       for module in ("builtins", "__builtin__") for kind in (bytes, bytearray, set, frozenset)},
}


class _DataOnlyUnpickler(pickle.Unpickler):
    """An unpickler that builds plain data and refuses every other global.

    Without a callable from `find_class`, a pickle's REDUCE has nothing to
    call, so no pickle can run code.  Protocol 2 needs only the constructors
    in `_DATA_GLOBALS` (bytes are `_codecs.encode(str, 'latin1')`).
    """

    def find_class(self, module: str, name: str):
        found = _DATA_GLOBALS.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"refused to unpickle {module}.{name}: pysyncobj's data holds no objects")
        return found


def _data_loads(data) -> object:
    return _DataOnlyUnpickler(io.BytesIO(pysyncobj.pickle.to_bytes(data))).load()


def _data_load(file) -> object:
    return _DataOnlyUnpickler(file).load()


def harden_pysyncobj_unpickling() -> None:
    """Route every unpickle in pysyncobj (messages, entries, journal, snapshots) through `_DataOnlyUnpickler`.

    pysyncobj's own `loads` falls back to the pure-Python unpickler on any
    error; replacing it removes that second chance too.
    """
    pysyncobj.pickle.loads = _data_loads
    pysyncobj.pickle.load = _data_load
    pysyncobj.journal.loads = _data_loads  # imported by name; the serializer and the TCP
    # connection call `pysyncobj.pickle.load[s]` through the module, so they are covered above.
    if pysyncobj.serializer.pickle is not pysyncobj.pickle:
        raise InvariantViolation("pysyncobj's serializer no longer unpickles through pysyncobj.pickle")


harden_pysyncobj_unpickling()


@dataclass(frozen=True)
class LogConfig:
    """Raft timing and entry limits (`[log]`); defaults, reasons and relations in `sequencer/limits.py`."""

    election_timeout_ms_min: int = limits.ELECTION_TIMEOUT_MS_MIN
    election_timeout_ms_max: int = limits.ELECTION_TIMEOUT_MS_MAX
    append_entries_period_ms: int = limits.APPEND_ENTRIES_PERIOD_MS
    tick_ms: int = limits.RAFT_TICK_MS
    epoch_bytes_max: int = limits.EPOCH_BYTES_MAX
    append_entries_batch_bytes: int = limits.APPEND_ENTRIES_BATCH_BYTES
    journal_flush: bool = True

    def check(self) -> None:
        limits.check_raft_timing(self.append_entries_period_ms, self.election_timeout_ms_min,
                                 self.election_timeout_ms_max)
        limits.check_epoch_bytes(self.epoch_bytes_max, self.append_entries_batch_bytes)

    def syncobj_conf(self, journal_path: Path | None, bind_address: str, password: str | None) -> SyncObjConf:
        self.check()
        return SyncObjConf(
            # Bind exactly the configured address: pysyncobj binds 0.0.0.0
            # unless told otherwise, which exposed the Raft port to the network.
            bindAddress=bind_address,
            # Fernet (AES-CBC + HMAC-SHA256) on every message, checked before
            # pysyncobj unpickles it: without it, anyone reaching the port
            # could run code in the replica.  None only on loopback.
            password=password,
            raftMinTimeout=self.election_timeout_ms_min / 1000,
            raftMaxTimeout=self.election_timeout_ms_max / 1000,
            appendEntriesPeriod=self.append_entries_period_ms / 1000,
            autoTickPeriod=self.tick_ms / 1000,
            connectionTimeout=self.election_timeout_ms_max / 1000 * 2,
            connectionRetryTime=0.5,
            appendEntriesBatchSizeBytes=self.append_entries_batch_bytes,
            journalFile=str(journal_path) if journal_path else None,
            # Compaction would let a lagging replica install a snapshot and
            # skip epochs its EpochJournal then lacks; keep it out of reach.
            logCompactionMinEntries=2**62,
            logCompactionMinTime=2**31,
            commandsWaitLeader=False,
            dynamicMembershipChange=False,
        )


class EpochJournal:
    """A replica's copy of every epoch it applied, with the running digest.

    The apply thread writes it; the API thread reads it.  It is derived from
    the Raft journal, so on restart pysyncobj's replay re-applies every
    entry and `append` checks that each one is byte-identical to what is here.
    """

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # derived data: replayed from the Raft journal
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS epochs (number INTEGER PRIMARY KEY, hlc_last INTEGER NOT NULL,"
            " digest TEXT NOT NULL, data BLOB NOT NULL)"
        )

    def get(self, number: int) -> AppliedEpoch | None:
        with self._lock:
            row = self._db.execute("SELECT number, hlc_last, digest, data FROM epochs WHERE number=?", (number,)).fetchone()
        return AppliedEpoch(*row) if row else None

    def append(self, entry: AppliedEpoch) -> None:
        existing = self.get(entry.number)
        if existing is not None:
            if existing != entry:
                raise InvariantViolation(f"replayed epoch {entry.number} differs from the one applied before")
            return
        with self._lock:
            self._db.execute(
                "INSERT INTO epochs (number, hlc_last, digest, data) VALUES (?, ?, ?, ?)",
                (entry.number, entry.hlc_last, entry.digest, entry.data),
            )

    def range(self, first: int, limit: int, bytes_max: int) -> list[AppliedEpoch]:
        with self._lock:
            rows = self._db.execute(
                "SELECT number, hlc_last, digest, data FROM epochs WHERE number >= ? ORDER BY number LIMIT ?",
                (first, limit),
            ).fetchall()
        out, size = [], 0
        for row in rows:
            size += len(row[3])
            if out and size > bytes_max:
                break
            out.append(AppliedEpoch(*row))
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()


class ReplicatedLog(SyncObj):
    """A pysyncobj replica whose only command is `apply_epoch`.

    `on_applied(entry)` is called on pysyncobj's thread after every epoch
    this replica applies (also during journal replay on restart).
    """

    def __init__(
        self,
        self_address: str,
        partners: list[str],
        hlc: HLC,
        journal: EpochJournal,
        data_dir: Path,
        config: LogConfig,
        on_applied: Callable[[AppliedEpoch], None],
        log_key: bytes,
        raft_password: str | None,
    ) -> None:
        # Everything set before SyncObj.__init__ is excluded from its pickled snapshots.
        self._hlc = hlc
        self._journal = journal
        self._on_applied = on_applied
        self._config = config
        self._state = LogState(log_key)
        self._state_lock = threading.Lock()
        conf = config.syncobj_conf(data_dir / "raft.journal", self_address, raft_password)
        super().__init__(self_address, partners, conf)
        if config.journal_flush:
            _flush_journal_on_append(self)

    # TLA+: Ordo!CommitEpoch -- runs on every replica, in log order.
    @replicated
    def apply_epoch(self, data: bytes) -> int | None:
        """Apply one committed entry through `LogState` (numbering, HLC continuity,
        digest), journal it, and continue the HLC from it.

        Returns the epoch number, or None when `LogState` refuses the entry.
        """
        with self._state_lock:
            entry = self._state.next_entry(data)
            if entry is None:
                return None
            self._journal.append(entry)  # before advancing: a replay must find what it applied
            self._state.advance(entry)
        # A new leader continues the HLC from the log (TLA+: Ordo!ContinueHLC).
        self._hlc.observe_log(Timestamp.unpack(entry.hlc_last))
        self._on_applied(entry)
        return entry.number

    def status(self) -> dict:
        with self._state_lock:
            mine = {"last_epoch": self._state.last_number, "last_hlc": self._state.last_hlc,
                    "digest": self._state.digest}
        leader = self._getLeader()
        # Single fields, not getStatus(): that one iterates pysyncobj's dicts
        # from this thread while its own thread may be changing them.
        return {
            **mine,
            "leader": leader.address if leader is not None else None,
            "is_leader": self.is_leader(),
            "term": self.raftCurrentTerm,
            "commit_idx": self.raftCommitIndex,
            "last_applied": self.raftLastApplied,
        }

    def is_leader(self) -> bool:
        """Whether pysyncobj believes this replica leads.

        pysyncobj offers no public call for it; this wraps its private
        `_isLeader`, read without its lock, so the answer can be a moment
        stale (a stale yes only costs a refused proposal: apply refuses it).
        """
        return self._isLeader()

    # TLA+: Ordo!CloseEpoch -- a new leader stamps only once caught up.
    def caught_up(self) -> bool:
        """True when every committed entry has been applied here.

        A new leader waits for this before stamping, so its first epoch is
        stamped after the last committed one (otherwise apply refuses it).
        """
        return self.raftLastApplied >= self.raftCommitIndex  # two fields: no iteration across threads

    def members(self) -> list[str]:
        return sorted([self.selfNode.address] + [n.address for n in self.otherNodes])


def _flush_journal_on_append(log: SyncObj) -> None:
    """msync pysyncobj's mmap journal after every appended entry.

    pysyncobj writes its journal through an mmap and never flushes it, so an
    OS crash could lose entries a follower already acknowledged to Raft.
    """
    raft_log = getattr(log, "_SyncObj__raftLog", None)
    if raft_log is None or not hasattr(raft_log, "flush"):
        return
    add = raft_log.add

    def add_and_flush(*args, **kwargs):
        add(*args, **kwargs)
        raft_log.flush()

    raft_log.add = add_and_flush
