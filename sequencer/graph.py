"""The dependency graph of an epoch: which intents may run concurrently.

Owned here: a pure function from each intent's footprint (the keys it reads
or writes) to independent groups.  Two intents conflict when their
footprints share a key; groups are the connected components of that
conflict relation, so no two groups share a key.  Called by the leader
when it builds an epoch (`sequencer/epochs.py`) and by the executor, which
recomputes it to check the log.  Union-find: O(n α(n)) for n intents.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Sequence

import msgspec

from sequencer.errors import InvariantViolation


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:  # path compression
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # The smaller index becomes the root, so roots are deterministic.
            self.parent[max(ra, rb)] = min(ra, rb)


def build_groups(
    footprints: Sequence[Collection[int]], links: Iterable[tuple[int, int]] | None = None
) -> list[list[int]]:
    """Independent groups of intent indices, each in log order, ordered by first index.

    `links` are index pairs that must share a group even without a common
    key: the members of a linked chain, which succeed or fail together.
    """
    uf = _UnionFind(len(footprints))
    owner: dict[int, int] = {}
    for i, keys in enumerate(footprints):
        for key in keys:
            first = owner.setdefault(key, i)
            if first != i:
                uf.union(first, i)
    for a, b in links or ():
        uf.union(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(len(footprints)):
        groups.setdefault(uf.find(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


class EpochGraph(msgspec.Struct, frozen=True):
    groups: list[list[int]]

    def digest(self) -> str:
        return hashlib.sha256(msgspec.msgpack.encode(self.groups)).hexdigest()


def verify(footprints: Sequence[Collection[int]], groups: list[list[int]], links=None) -> None:
    """Recompute the graph and raise if `groups` differs (a replica built it wrong)."""
    expected = build_groups(footprints, links)
    if expected != groups:
        raise InvariantViolation("dependency graph differs from the one recomputed from the epoch")
