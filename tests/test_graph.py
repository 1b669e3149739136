"""The dependency graph (sequencer/graph.py) against a naive search oracle.

Randomized tests draw from hypothesis, which prints the falsifying example
and a `@reproduce_failure` blob (STYLE 2).  That executing the groups in
any interleaving equals serial execution is checked with the state
machine, in tests/test_state_machine.py.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sequencer.errors import InvariantViolation
from sequencer.graph import EpochGraph, build_groups, verify

SETTINGS = settings(print_blob=True, max_examples=300, deadline=None)

#: Few distinct keys so conflicts are common; empty footprints included.
footprint = st.frozensets(st.integers(1, 12), max_size=3)


@st.composite
def epochs(draw) -> tuple[list[frozenset[int]], list[tuple[int, int]]]:
    footprints = draw(st.lists(footprint, max_size=40))
    n = len(footprints)
    links = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=5)) if n else []
    return footprints, links


def oracle(footprints, links) -> list[list[int]]:
    """Connected components by breadth-first search over all pairs: O(n^2), obviously right."""
    n = len(footprints)
    linked = {(a, b) for a, b in links} | {(b, a) for a, b in links}
    seen: set[int] = set()
    groups = []
    for start in range(n):
        if start in seen:
            continue
        component, frontier = {start}, [start]
        while frontier:
            i = frontier.pop()
            for j in range(n):
                if j not in component and (footprints[i] & footprints[j] or (i, j) in linked):
                    component.add(j)
                    frontier.append(j)
        seen |= component
        groups.append(sorted(component))
    return groups


@SETTINGS
@given(epochs())
def test_groups_are_the_connected_components(epoch) -> None:
    footprints, links = epoch
    assert build_groups(footprints, links) == oracle(footprints, links)


@SETTINGS
@given(epochs())
def test_groups_partition_the_epoch_in_log_order(epoch) -> None:
    footprints, links = epoch
    groups = build_groups(footprints, links)
    assert sorted(i for g in groups for i in g) == list(range(len(footprints)))
    for g in groups:
        assert g and g == sorted(g)
    firsts = [g[0] for g in groups]
    assert firsts == sorted(firsts)


@SETTINGS
@given(epochs())
def test_no_two_groups_share_a_key_and_links_stay_together(epoch) -> None:
    footprints, links = epoch
    groups = build_groups(footprints, links)
    owner: dict[int, int] = {}
    group_of = {i: k for k, g in enumerate(groups) for i in g}
    for i, keys in enumerate(footprints):
        for key in keys:
            assert owner.setdefault(key, group_of[i]) == group_of[i]
    for a, b in links:
        assert group_of[a] == group_of[b]


@SETTINGS
@given(epochs(), st.randoms(use_true_random=False))
def test_deterministic_whatever_the_order_of_keys_and_links(epoch, rnd: random.Random) -> None:
    footprints, links = epoch
    reference = EpochGraph.build(footprints, links)
    shuffled_keys = [rnd.sample(sorted(keys), len(keys)) for keys in footprints]
    shuffled_links = [(b, a) for a, b in rnd.sample(links, len(links))]
    again = EpochGraph.build(shuffled_keys, shuffled_links)
    assert again == reference
    assert again.digest() == reference.digest()


def test_hot_account_makes_one_group() -> None:
    footprints = [{1, 100 + i} for i in range(500)]
    assert build_groups(footprints) == [list(range(500))]


def test_disjoint_intents_are_separate_groups() -> None:
    assert build_groups([{1, 2}, {3, 4}, {2, 5}, set()]) == [[0, 2], [1], [3]]


def test_links_join_intents_without_a_common_key() -> None:
    assert build_groups([{1}, {2}, {3}], links=[(0, 2)]) == [[0, 2], [1]]


def test_link_outside_the_epoch_is_refused() -> None:
    with pytest.raises(InvariantViolation, match=r"link \(0, 3\) names intent 3.*0\.\.2"):
        build_groups([{1}, {2}, {3}], links=[(0, 3)])


def test_long_chain_of_conflicts_is_one_group() -> None:
    # Each intent shares a key only with its neighbours: the worst case for
    # a union-find without balancing.
    footprints = [{i, i + 1} for i in range(10_000)]
    assert build_groups(footprints) == [list(range(10_000))]


def test_digest_differs_when_groups_differ() -> None:
    assert EpochGraph([[0, 1], [2]]).digest() != EpochGraph([[0], [1, 2]]).digest()
    assert EpochGraph([[0, 1], [2]]).digest() == EpochGraph([[0, 1], [2]]).digest()


def test_verify_accepts_the_right_graph() -> None:
    footprints = [{1}, {2}, {1}]
    verify(footprints, [[0, 2], [1]])


@pytest.mark.parametrize(
    "groups, message",
    [
        ([[0], [1], [2]], r"group 0: expected \[0, 2\], the log has \[0\]"),  # a missed conflict
        ([[0, 1, 2]], r"group 0"),  # over-merged
        ([[0, 2]], r"1 groups; recomputing the epoch gives 2"),  # an intent dropped
    ],
)
def test_verify_names_the_difference(groups, message: str) -> None:
    with pytest.raises(InvariantViolation, match=message):
        verify([{1}, {2}, {1}], groups)
