"""The dependency graph of an epoch: which intents may run concurrently.

Role: pure core, part of `SequencerCore` (and checked by `ExecutorCore`'s runner).

Owned here: a pure function from each intent's footprint (the keys it reads
or writes: account ids, or any integer keys the caller derives) to
independent groups.  Two intents conflict when their footprints share a
key; the groups are the connected components of that conflict relation, so
no two groups share a key and groups may execute in any interleaving.

Called by the leader when it builds an epoch (`sequencer/epochs.py`) and by
every executor, which recomputes the graph from the epoch and checks it
against the log (`verify`): the graph is a deterministic function of the
epoch, so a replica that built it wrong is caught, not trusted.

Union-find with union by size and path halving: O((n + k) α(n)) for n
intents touching k keys in total.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Sequence

import msgspec

from sequencer.errors import InvariantViolation


class _UnionFind:
    """Disjoint sets over 0..n-1."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]  # path halving keeps trees flat
            i = parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]


def build_groups(
    footprints: Sequence[Collection[int]], links: Iterable[tuple[int, int]] | None = None
) -> list[list[int]]:
    """Independent groups of intent indices, each in log order, ordered by first index.

    `footprints[i]` is the set of keys intent i touches, in log order.
    `links` are index pairs that must share a group even without a common
    key: members of a linked chain (which succeed or fail together), or a
    pending transfer and the post/void that names it in the same epoch.

    The result depends only on the conflict relation, never on the order
    of keys inside a footprint or of the links, so every replica computes
    the same groups.  An intent with an empty footprint is a group alone.
    """
    n = len(footprints)
    uf = _UnionFind(n)
    first_toucher: dict[int, int] = {}
    for i, keys in enumerate(footprints):
        for key in keys:
            first = first_toucher.setdefault(key, i)
            if first != i:
                uf.union(first, i)
    for a, b in links or ():
        _check_link(a, b, n)
        uf.union(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        # Visiting i in order keeps each group in log order and, since dicts
        # keep insertion order, the groups ordered by their first index.
        groups.setdefault(uf.find(i), []).append(i)
    return list(groups.values())


def _check_link(a: int, b: int, n: int) -> None:
    for index in (a, b):
        if not 0 <= index < n:
            raise InvariantViolation(f"link ({a}, {b}) names intent {index}, but the epoch holds intents 0..{n - 1}")


class EpochGraph(msgspec.Struct, frozen=True):
    """An epoch's groups, with a digest replicas compare to check agreement."""

    groups: list[list[int]]

    @classmethod
    def build(
        cls, footprints: Sequence[Collection[int]], links: Iterable[tuple[int, int]] | None = None
    ) -> EpochGraph:
        return cls(build_groups(footprints, links))

    def digest(self) -> str:
        """Hex SHA-256 of the groups' msgpack encoding.

        Canonical: msgspec writes every integer in its shortest form and the
        groups are lists in a fixed order, so equal graphs hash equally.
        """
        return hashlib.sha256(msgspec.msgpack.encode(self.groups)).hexdigest()


def verify(
    footprints: Sequence[Collection[int]],
    groups: list[list[int]],
    links: Iterable[tuple[int, int]] | None = None,
) -> None:
    """Recompute the graph and raise `InvariantViolation` if `groups` differs.

    The message names the first group that differs, so a replica that built
    the graph wrong can be told apart from one that received a corrupt entry.
    """
    expected = build_groups(footprints, links)
    if expected == groups:
        return
    for k, (want, got) in enumerate(zip(expected, groups)):
        if want != got:
            raise InvariantViolation(f"dependency graph differs at group {k}: expected {want}, the log has {got}")
    raise InvariantViolation(
        f"dependency graph has {len(groups)} groups; recomputing the epoch gives {len(expected)}"
    )
