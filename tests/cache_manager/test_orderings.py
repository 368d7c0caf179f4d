"""Cache-aware orderings over a real radix tree."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from radix_plugin.cache_manager.core.radix_tree import RadixNode, RadixTree
from radix_plugin.cache_manager.core.registry import UnknownPolicyError, make_ordering


@dataclass(frozen=True)
class Req:
    request_id: str
    tokens: tuple[int, ...]


def lookup_in(tree: RadixTree):
    def lookup(r: Req) -> tuple[int, RadixNode]:
        m = tree.match_prefix(list(r.tokens), touch=False, split=False)
        return len(m.blocks), m.last_node

    return lookup


@pytest.fixture
def tree() -> RadixTree:
    t = RadixTree(block_size=1, token_ids=True)
    t.insert([1, 2, 3, 4], [10, 11, 12, 13])
    t.insert([1, 2, 7], [10, 11, 17])
    t.insert([5, 6], [20, 21])
    return t


def test_fcfs_keeps_arrival_order(tree: RadixTree) -> None:
    reqs = [Req("a", (9,)), Req("b", (1, 2, 3, 4, 0))]
    assert make_ordering("fcfs").order(reqs, lookup_in(tree)) == reqs


def test_lpm_sorts_by_cached_prefix_stably(tree: RadixTree) -> None:
    a, b, c, d = (
        Req("a", (9, 9)),
        Req("b", (1, 2, 3, 4, 0)),
        Req("c", (5, 6, 0)),
        Req("d", (1, 2, 3, 4, 1)),
    )
    order = make_ordering("lpm").order([a, b, c, d], lookup_in(tree))
    assert [r.request_id for r in order] == ["b", "d", "c", "a"]


def test_lpm_falls_back_to_fcfs_on_long_queues(tree: RadixTree) -> None:
    reqs = [Req("a", (9,)), Req("b", (1, 2, 3, 4, 0)), Req("c", (5, 6))]
    policy = make_ordering("lpm", max_queue=2)
    assert policy.order(reqs, lookup_in(tree)) == reqs


def test_dfs_groups_requests_by_subtree_heaviest_first(tree: RadixTree) -> None:
    reqs = [
        Req("x1", (5, 6, 0)),
        Req("p1", (1, 2, 3, 4, 8)),
        Req("new", (42,)),
        Req("q1", (1, 2, 7, 8)),
        Req("p2", (1, 2, 3, 4, 9)),
        Req("q2", (1, 2, 7, 9)),
    ]
    order = [r.request_id for r in make_ordering("dfs").order(reqs, lookup_in(tree))]
    # Subtree under [1, 2] holds 4 requests: it goes first, and within it the heavier...
    assert order[:4] in (["p1", "p2", "q1", "q2"], ["q1", "q2", "p1", "p2"])
    # ...then the [5, 6] subtree, then requests with nothing cached.
    assert order[4:] == ["x1", "new"]
    assert sorted(order) == sorted(r.request_id for r in reqs)


def test_unknown_scheduling_policy_lists_choices() -> None:
    with pytest.raises(UnknownPolicyError, match="valid choices: dfs, fcfs, lpm"):
        make_ordering("sjf")
