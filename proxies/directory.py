"""The directory: which shard holds which account, and which store holds which shard.

Role: pure (routing), used by every core and driver.

Owned here: the routing function (PArSEC's Directory, seed 002) and its
validation.  Callers: the executor routes effects with it, the API routes
reads with it and refuses accounts no range covers.

Accounts are routed by id: each `[[ranges]]` entry covers ids
`first..last` (inclusive), may restrict which ledgers its accounts use, and
spreads its ids over its shards by `id % len(shards)`.  Ranges may not
overlap, and may not leave a gap between the lowest and the highest id
covered.  A transfer's record (and its result) lives on its *home* shard,
`all_shards[id % n]`: a function of the id alone, so that a resubmission
with a different body still finds the original.
"""

from __future__ import annotations

import bisect
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sequencer.errors import ConfigError

STORES = ("sqlite", "postgres", "cassandra", "memory")


@dataclass(frozen=True)
class ShardSpec:
    name: str
    store: str
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Range:
    first: int
    last: int
    shards: tuple[str, ...]
    ledgers: frozenset[int] | None = None  # None: any ledger


class Directory:
    def __init__(self, shards: list[ShardSpec], ranges: list[Range]) -> None:
        self.shards = {s.name: s for s in shards}
        self.names = sorted(self.shards)
        self.ranges = sorted(ranges, key=lambda r: r.first)
        self._firsts = [r.first for r in self.ranges]
        self._validate()

    # -- routing -------------------------------------------------------------

    def range_of(self, account_id: int) -> Range | None:
        i = bisect.bisect_right(self._firsts, account_id) - 1
        if i < 0 or account_id > self.ranges[i].last:
            return None
        return self.ranges[i]

    def account_shard(self, account_id: int) -> str | None:
        r = self.range_of(account_id)
        return None if r is None else r.shards[account_id % len(r.shards)]

    def transfer_shard(self, transfer_id: int) -> str:
        return self.names[transfer_id % len(self.names)]

    def result_shard(self, kind: str, event_id: int) -> str:
        if kind == "account":
            shard = self.account_shard(event_id)
            if shard is not None:
                return shard
        return self.transfer_shard(event_id)

    def admit_account(self, account_id: int, ledger: int) -> str | None:
        """Why an account cannot be created here, or None if it can."""
        r = self.range_of(account_id)
        if r is None:
            return f"account id {account_id} is in no directory range"
        if r.ledgers is not None and ledger not in r.ledgers:
            allowed = ", ".join(str(x) for x in sorted(r.ledgers))
            return f"account id {account_id} is in range {r.first}..{r.last}, which holds ledgers {allowed}, not {ledger}"
        return None

    # -- loading -------------------------------------------------------------

    def _validate(self) -> None:
        if not self.shards:
            raise ConfigError("directory: no shards are configured")
        if not self.ranges:
            raise ConfigError("directory: no account ranges are configured")
        for spec in self.shards.values():
            if spec.store not in STORES:
                raise ConfigError(f"directory: shard {spec.name!r} has unknown store {spec.store!r}; use one of {STORES}")
        for r in self.ranges:
            if not 1 <= r.first <= r.last < 2**63 - 1:
                raise ConfigError(f"directory: range {r.first}..{r.last} must satisfy 1 <= first <= last < 2**63-1")
            if not r.shards:
                raise ConfigError(f"directory: range {r.first}..{r.last} names no shards")
            for name in r.shards:
                if name not in self.shards:
                    raise ConfigError(f"directory: range {r.first}..{r.last} names unknown shard {name!r}")
        for a, b in zip(self.ranges, self.ranges[1:]):
            if b.first <= a.last:
                raise ConfigError(f"directory: ranges {a.first}..{a.last} and {b.first}..{b.last} overlap")
            if b.first != a.last + 1:
                raise ConfigError(f"directory: gap between ranges: ids {a.last + 1}..{b.first - 1} are in no range")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Directory:
        try:
            shards = [
                ShardSpec(name, str(spec["store"]), {k: v for k, v in spec.items() if k != "store"})
                for name, spec in data["shards"].items()
            ]
            ranges = [
                Range(
                    int(r["first"]),
                    int(r["last"]),
                    tuple(r["shards"]),
                    frozenset(int(x) for x in r["ledgers"]) if "ledgers" in r else None,
                )
                for r in data["ranges"]
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"directory: malformed configuration ({type(exc).__name__}: {exc})") from exc
        return cls(shards, ranges)

    @classmethod
    def load(cls, path: str | Path) -> Directory:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read directory {path}: {exc}") from exc
        return cls.from_dict(data.get("directory", data))

    @classmethod
    def embedded(cls, shard_paths: list[str]) -> Directory:
        """The embedded default: SQLite shards, every id spread over all of them."""
        shards = [ShardSpec(f"s{i}", "sqlite", {"path": p}) for i, p in enumerate(shard_paths)]
        return cls(shards, [Range(1, 2**63 - 2, tuple(s.name for s in shards))])
