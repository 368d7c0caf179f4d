"""Unit tests of the block-granular radix tree: one behaviour per test, small hand-built trees.

The tree is the plugin's prefix-cache index, so a wrong answer here means either reusing the
wrong KV (silent corruption) or leaking/double-freeing blocks; every test therefore checks
exact block ids, not just lengths.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from radix_plugin.cache_manager.core.policies.base import EvictionPolicy
from radix_plugin.cache_manager.core.policies.builtin import BeladyPolicy
from radix_plugin.cache_manager.core.radix_tree import (
    LARGE_TREE_LEAVES,
    PinBudgetExceeded,
    RadixNode,
    RadixTree,
)
from radix_plugin.cache_manager.core.registry import make_eviction_policy

BS = 2


def toks(*pages: int) -> list[int]:
    """Token ids whose pages (of ``BS`` tokens) are ``(p, p)`` for each ``p`` given."""
    return [t for p in pages for t in (p, p)]


def make_tree(policy: str = "lru", max_pinned_blocks: int | None = None, **opts) -> RadixTree:
    return RadixTree(
        BS,
        make_eviction_policy(policy, **opts),
        max_pinned_blocks=max_pinned_blocks,
        token_ids=True,
    )


def node_shapes(tree: RadixTree) -> set[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Every node as (blocks of its whole path, its own blocks): the tree's exact shape."""
    shapes = set()
    for node in tree.iter_nodes():
        path = [b for n in reversed(list(node.path_to_root())) for b in n.blocks]
        shapes.add((tuple(path), tuple(node.blocks)))
    return shapes


# ---------------------------------------------------------------------- construction


@pytest.mark.parametrize("bad", [0, -1])
def test_block_size_must_be_positive(bad: int) -> None:
    with pytest.raises(ValueError, match="block_size must be positive"):
        RadixTree(bad)


def test_default_policy_is_lru() -> None:
    assert RadixTree(4).policy.name == "lru"


def test_pages_of_drops_partial_tail_page() -> None:
    tree = RadixTree(3)
    assert tree.pages_of([1, 2, 3, 4, 5, 6, 7]) == [(1, 2, 3), (4, 5, 6)]
    assert tree.pages_of([1, 2]) == []
    assert tree.pages_of([]) == []


# ---------------------------------------------------------------------- match_prefix


def test_match_on_empty_tree_returns_root_and_nothing() -> None:
    tree = make_tree()
    m = tree.match_prefix(toks(1, 2))
    assert m.blocks == []
    assert m.last_node is tree.root()
    assert m.num_tokens(BS) == 0


def test_full_match_returns_block_ids_in_page_order() -> None:
    tree = make_tree()
    _, leaf = tree.insert(toks(1, 2, 3), [10, 11, 12])
    m = tree.match_prefix(toks(1, 2, 3, 4))
    assert m.blocks == [10, 11, 12]
    assert m.last_node is leaf
    assert m.num_tokens(BS) == 6


def test_partial_tail_page_and_in_page_divergence_do_not_match() -> None:
    tree = make_tree()
    tree.insert(toks(1, 2), [10, 11])
    # Second page differs in its last token: only the first page is reusable.
    assert tree.match_prefix([1, 1, 2, 9]).blocks == [10]
    # A query shorter than a page matches nothing, even if its tokens agree.
    assert tree.match_prefix([1]).blocks == []
    # Extra tokens that do not fill a page are ignored.
    assert tree.match_prefix([*toks(1, 2), 3]).blocks == [10, 11]


def test_a_tree_of_pages_takes_the_pages_of_token_ids() -> None:
    tree = RadixTree(BS)
    tree.insert(tree.pages_of(toks(1, 2, 3)), [10, 11, 12])
    pages = tree.pages_of(toks(1, 2, 5))
    assert tree.match_prefix(pages).blocks == [10, 11]


def test_match_inside_a_node_splits_it_so_last_node_covers_exactly_the_match() -> None:
    tree = make_tree()
    _, leaf = tree.insert(toks(1, 2, 3, 4), [10, 11, 12, 13])
    assert tree.stats().num_nodes == 1
    m = tree.match_prefix(toks(1, 2, 9))
    assert m.blocks == [10, 11]
    assert m.last_node.blocks == [10, 11]
    assert m.last_node.depth_in_blocks() == 2
    # The original node object keeps the tail and its identity (callers may hold it).
    assert leaf.blocks == [12, 13]
    assert leaf.parent is m.last_node
    assert tree.stats().num_nodes == 2
    assert node_shapes(tree) == {((10, 11), (10, 11)), ((10, 11, 12, 13), (12, 13))}
    # The full prefix still matches through both halves.
    assert tree.match_prefix(toks(1, 2, 3, 4)).blocks == [10, 11, 12, 13]


def test_partial_match_without_split_leaves_the_tree_alone() -> None:
    tree = make_tree()
    tree.insert(toks(1, 2, 3, 4), [10, 11, 12, 13])
    m = tree.match_prefix(toks(1, 2, 9), touch=False, split=False)
    assert m.blocks == [10, 11]
    assert m.last_node is tree.root()  # no node ends at the match
    assert tree.stats().num_nodes == 1


def test_max_blocks_caps_the_match() -> None:
    tree = make_tree()
    tree.insert(toks(1, 2, 3, 4), [10, 11, 12, 13])
    m = tree.match_prefix(toks(1, 2, 3, 4), max_blocks=3)
    assert m.blocks == [10, 11, 12]
    assert m.last_node.depth_in_blocks() == 3
    assert tree.match_prefix(toks(1, 2, 3, 4), max_blocks=0).blocks == []


def test_touch_false_leaves_counters_and_recency_alone() -> None:
    tree = make_tree()
    _, leaf = tree.insert(toks(1, 2), [10, 11])
    before = (tree.stats(), leaf.last_access, leaf.hit_count)
    tree.match_prefix(toks(1, 2), touch=False)
    assert (tree.stats(), leaf.last_access, leaf.hit_count) == before


def test_touch_counts_hits_on_the_whole_path() -> None:
    tree = make_tree()
    tree.insert(toks(1, 2, 3), [10, 11, 12])
    m = tree.match_prefix(toks(1, 2, 7, 8))  # splits after 2 pages
    s = tree.stats()
    assert (s.lookups, s.lookup_blocks, s.hit_blocks) == (1, 4, 2)
    assert s.hit_ratio == 0.5
    assert [n.hit_count for n in m.last_node.path_to_root()] == [1]
    # An admitted request touched later (the scheduler peeked with touch=False).
    peek = tree.match_prefix(toks(1, 2, 3), touch=False)
    tree.touch(peek.last_node, query_blocks=5)
    s = tree.stats()
    assert (s.lookups, s.lookup_blocks, s.hit_blocks) == (2, 9, 5)
    assert [n.hit_count for n in peek.last_node.path_to_root()] == [1, 2]


def test_numpy_token_ids_are_tokens_not_pages() -> None:
    """Token ids straight from a NumPy array (or torch ``tolist()`` of int64 elements taken
    one by one) are token ids: a tree built for tokens never guesses from the element type."""
    np = pytest.importorskip("numpy")
    tree = make_tree()
    tree.insert(list(np.array(toks(1, 2, 3), dtype=np.int64)), [10, 11, 12])
    assert tree.match_prefix(toks(1, 2, 5)).blocks == [10, 11]
    assert tree.match_prefix(np.array(toks(1, 2, 3), dtype=np.int32)).blocks == [10, 11, 12]


def test_hit_ratio_is_zero_without_lookups() -> None:
    assert make_tree().stats().hit_ratio == 0.0


def test_hashable_page_keys_other_than_token_tuples() -> None:
    """vLLM's chained block hashes (bytes) can be used as page keys directly."""
    tree = RadixTree(BS)
    tree.insert([b"h1", b"h2", b"h3"], [10, 11, 12])
    assert tree.match_prefix([b"h1", b"h2", b"hX"]).blocks == [10, 11]


# ---------------------------------------------------------------------- insert


def test_insert_new_prefix_returns_zero_cached_and_the_new_leaf() -> None:
    tree = make_tree()
    already, leaf = tree.insert(toks(1, 2), [10, 11])
    assert already == 0
    assert leaf.blocks == [10, 11] and leaf.is_leaf and leaf.parent is tree.root()
    assert tree.stats().inserted_blocks == 2


def test_insert_returns_already_cached_count_and_keeps_the_original_block_ids() -> None:
    tree = make_tree()
    tree.insert(toks(1, 2, 3), [10, 11, 12])
    already, leaf = tree.insert(toks(1, 2, 4, 5), [20, 21, 22, 23])
    assert already == 2
    assert leaf.blocks == [22, 23]
    # The caller's duplicates 20 and 21 stay the caller's: the tree never took them.
    ids = tree.cached_block_ids()
    assert sorted(ids) == [10, 11, 12, 22, 23]
    assert tree.match_prefix(toks(1, 2, 4, 5)).blocks == [10, 11, 22, 23]
    assert tree.stats().cached_blocks == 5
    assert tree.stats().inserted_blocks == 5


def test_insert_diverging_inside_a_node_splits_it() -> None:
    tree = make_tree()
    tree.insert(toks(1, 2, 3, 4), [10, 11, 12, 13])
    tree.insert(toks(1, 2, 5), [20, 21, 22])
    assert node_shapes(tree) == {
        ((10, 11), (10, 11)),
        ((10, 11, 12, 13), (12, 13)),
        ((10, 11, 22), (22,)),
    }
    assert tree.stats().num_nodes == 3


def test_insert_of_a_fully_cached_prefix_adds_nothing() -> None:
    tree = make_tree()
    tree.insert(toks(1, 2, 3), [10, 11, 12])
    already, node = tree.insert(toks(1, 2), [20, 21])
    assert already == 2
    assert node.depth_in_blocks() == 2 and node.blocks == [10, 11]
    assert tree.stats().cached_blocks == 3
    assert tree.stats().inserted_blocks == 3


def test_insert_with_fewer_blocks_than_pages_caches_only_what_has_blocks() -> None:
    tree = make_tree()
    already, leaf = tree.insert([*toks(1, 2, 3), 9], [10, 11])
    assert already == 0 and leaf.blocks == [10, 11]
    assert tree.match_prefix(toks(1, 2, 3)).blocks == [10, 11]


def test_insert_of_nothing_returns_the_root() -> None:
    tree = make_tree()
    assert tree.insert([1], [10]) == (0, tree.root())
    assert tree.stats().cached_blocks == 0


def test_insert_priority_is_max_propagated_along_the_path() -> None:
    tree = make_tree()
    _, low = tree.insert(toks(1, 2), [10, 11], priority=1)
    _, high = tree.insert(toks(1, 2, 3), [20, 21, 22], priority=5)
    assert low.priority == 5 and high.priority == 5
    _, other = tree.insert(toks(1, 4), [30, 31], priority=2)
    assert other.priority == 2
    assert other.parent is not None and other.parent.priority == 5


# ---------------------------------------------------------------------- namespaces


def test_namespaces_are_isolated() -> None:
    tree = make_tree()
    tree.insert(toks(1, 2), [10, 11], namespace="lora-a")
    assert tree.match_prefix(toks(1, 2)).blocks == []
    assert tree.match_prefix(toks(1, 2), namespace="lora-b").blocks == []
    already, _ = tree.insert(toks(1, 2), [20, 21], namespace="lora-b")
    assert already == 0  # not a duplicate: a different namespace
    assert tree.match_prefix(toks(1, 2), namespace="lora-a").blocks == [10, 11]
    assert tree.match_prefix(toks(1, 2), namespace="lora-b").blocks == [20, 21]
    assert tree.stats().cached_blocks == 4
    assert sorted(tree.evict(10)) == [10, 11, 20, 21]


def test_reset_clears_every_namespace() -> None:
    tree = make_tree()
    tree.insert(toks(1), [10])
    tree.insert(toks(1), [20], namespace=("salt", 7))
    assert sorted(tree.reset() or []) == [10, 20]
    assert tree.match_prefix(toks(1), namespace=("salt", 7)).blocks == []


# ---------------------------------------------------------------------- lock / unlock


def test_lock_protects_the_whole_path_to_the_root() -> None:
    tree = make_tree()
    _, shared_leaf = tree.insert(toks(1, 2, 3), [10, 11, 12])
    _, sibling = tree.insert(toks(1, 2, 4), [20, 21, 22])
    _, other = tree.insert(toks(5), [30])
    assert sibling.parent is not None
    tree.lock(sibling)
    s = tree.stats()
    assert s.protected_blocks == 3 and s.evictable_blocks == 2
    assert sorted(tree.evict(100)) == [12, 30]
    assert tree.match_prefix(toks(1, 2, 4)).blocks == [10, 11, 22]
    assert shared_leaf.parent is None and other.parent is None  # detached when evicted
    tree.unlock(sibling)
    assert tree.stats().protected_blocks == 0
    assert tree.evict(100) == [22, 11, 10]


def test_lock_is_counted_and_survives_a_split() -> None:
    tree = make_tree()
    _, leaf = tree.insert(toks(1, 2, 3), [10, 11, 12])
    tree.lock(leaf)
    tree.lock(leaf)
    tree.match_prefix(toks(1, 9))  # splits the locked node
    assert leaf.parent is not None and leaf.parent.lock_count == 2
    tree.unlock(leaf)
    assert tree.evict(100) == []
    tree.unlock(leaf)
    assert tree.stats().protected_blocks == 0
    assert tree.evict(100) == [12, 11, 10]


def test_unlock_without_lock_raises() -> None:
    tree = make_tree()
    _, leaf = tree.insert(toks(1), [10])
    with pytest.raises(RuntimeError, match="unlock\\(\\) without a matching lock\\(\\)"):
        tree.unlock(leaf)
    tree.lock(leaf)
    tree.unlock(leaf)
    with pytest.raises(RuntimeError, match="without a matching lock"):
        tree.unlock(leaf)


def test_locking_the_root_is_a_no_op() -> None:
    tree = make_tree()
    tree.insert(toks(1), [10])
    tree.lock(tree.root())
    assert tree.stats().protected_blocks == 0
    assert tree.evict(1) == [10]


# ---------------------------------------------------------------------- pin / unpin


def test_pinned_prefix_is_never_evicted_until_unpinned() -> None:
    tree = make_tree()
    _, leaf = tree.insert(toks(1, 2), [10, 11])
    tree.pin(leaf)
    s = tree.stats()
    assert (s.pinned_blocks, s.protected_blocks, s.evictable_blocks) == (2, 2, 0)
    assert tree.evict(5) == []
    tree.unpin(leaf)
    assert tree.stats().pinned_blocks == 0
    assert tree.evict(5) == [11, 10]


def test_pin_budget_error_names_the_numbers_and_changes_nothing() -> None:
    tree = make_tree(max_pinned_blocks=3)
    _, a = tree.insert(toks(1, 2), [10, 11])
    _, b = tree.insert(toks(5, 6), [20, 21])
    _, a2 = tree.insert(toks(1, 2, 3), [30, 31, 32])
    tree.pin(a)
    with pytest.raises(
        PinBudgetExceeded,
        match=r"pinning 2 more blocks would exceed the pin budget of 3 blocks \(2 pinned\)",
    ):
        tree.pin(b)
    assert b.pin_count == 0
    assert tree.stats().pinned_blocks == 2 and tree.stats().protected_blocks == 2
    # Only newly pinned blocks count: extending the pinned prefix by one block fits.
    tree.pin(a2)
    assert tree.stats().pinned_blocks == 3


def test_unpin_without_pin_raises() -> None:
    tree = make_tree()
    _, leaf = tree.insert(toks(1), [10])
    with pytest.raises(RuntimeError, match="unpin\\(\\) without a matching pin\\(\\)"):
        tree.unpin(leaf)


def test_lock_and_pin_protect_independently() -> None:
    tree = make_tree()
    _, leaf = tree.insert(toks(1, 2), [10, 11])
    tree.lock(leaf)
    tree.pin(leaf)
    assert tree.stats().protected_blocks == 2
    tree.unlock(leaf)
    assert tree.evict(5) == []  # still pinned
    tree.lock(leaf)
    tree.unpin(leaf)
    assert tree.evict(5) == []  # still locked
    tree.unlock(leaf)
    assert tree.evict(5) == [11, 10]


# ---------------------------------------------------------------------- evict


def test_evict_trims_a_leaf_tail_page_by_page_to_free_exactly_n() -> None:
    tree = make_tree()
    _, leaf = tree.insert(toks(1, 2, 3, 4, 5), [10, 11, 12, 13, 14])
    assert tree.evict(2) == [14, 13]
    assert leaf.blocks == [10, 11, 12] and leaf.parent is tree.root()
    assert tree.match_prefix(toks(1, 2, 3, 4, 5)).blocks == [10, 11, 12]
    s = tree.stats()
    assert (s.cached_blocks, s.evicted_blocks, s.num_nodes) == (3, 2, 1)


def test_evict_crosses_leaf_boundaries_and_stops_at_n() -> None:
    tree = make_tree()
    tree.insert(toks(1, 2), [10, 11])
    tree.insert(toks(3, 4), [20, 21])
    assert tree.evict(3) == [11, 10, 21]
    assert tree.stats().cached_blocks == 1


def test_evict_more_than_evictable_frees_everything_evictable() -> None:
    tree = make_tree()
    tree.insert(toks(1, 2), [10, 11])
    assert tree.evict(0) == []
    assert tree.evict(-3) == []
    assert tree.evict(99) == [11, 10]
    assert tree.evict(1) == []
    assert tree.stats().num_nodes == 0


def test_evict_is_leaf_first_and_parents_become_leaves() -> None:
    # Belady with an oracle that ranks the inner node first: only leaf-first stops it.
    next_use = {10: math.inf, 12: 1.0, 30: 0.5}
    policy = make_eviction_policy("belady")
    policy.set_oracle(lambda node: next_use[node.blocks[0]])
    tree = RadixTree(BS, policy, token_ids=True)
    tree.insert(toks(1, 2), [10, 11])
    tree.insert(toks(1, 2, 3), [10, 11, 12])
    tree.insert(toks(7), [30])
    assert {tuple(n.blocks) for n in tree.evictable_leaves()} == {(12,), (30,)}
    assert tree.evict(1) == [12]
    assert {tuple(n.blocks) for n in tree.evictable_leaves()} == {(10, 11), (30,)}
    assert tree.evict(3) == [11, 10, 30]


# ---------------------------------------------------------------------- policies


def test_lru_evicts_least_recently_used_leaf_first() -> None:
    tree = make_tree("lru")
    tree.insert(toks(1), [10])
    tree.insert(toks(2), [20])
    tree.insert(toks(3), [30])
    tree.match_prefix(toks(1))
    assert tree.evict(3) == [20, 30, 10]


def test_lfu_evicts_fewest_hits_first_then_least_recent() -> None:
    tree = make_tree("lfu")
    tree.insert(toks(1), [10])
    tree.insert(toks(2), [20])
    tree.insert(toks(3), [30])
    tree.insert(toks(4), [40])
    for _ in range(3):
        tree.match_prefix(toks(1))
    tree.match_prefix(toks(2))
    tree.match_prefix(toks(4))
    # hits: 10 -> 3, 20 -> 1, 30 -> 0, 40 -> 1 (more recent than 20)
    assert tree.evict(4) == [30, 20, 40, 10]


def test_priority_evicts_lowest_priority_first_even_if_recent() -> None:
    tree = make_tree("priority")
    tree.insert(toks(1), [10], priority=5)
    tree.insert(toks(2), [20], priority=0)
    tree.insert(toks(3), [30], priority=5)
    tree.insert(toks(4), [40], priority=1)
    tree.match_prefix(toks(1))
    assert tree.evict(4) == [20, 40, 30, 10]


def test_pinned_auto_pins_hot_prefixes_within_the_budget() -> None:
    tree = make_tree("pinned", max_pinned_blocks=3, min_hits=2)
    _, hot = tree.insert(toks(1, 2), [10, 11])
    tree.match_prefix(toks(1, 2))
    assert hot.pin_count == 0  # one hit is not hot yet
    tree.match_prefix(toks(1, 2))
    assert hot.pin_count == 1
    assert tree.stats().pinned_blocks == 2
    tree.insert(toks(5), [50])
    # Plain LRU would evict the hot prefix first (it is older than 50); the pin keeps it.
    assert tree.evict(10) == [50]
    assert tree.match_prefix(toks(1, 2), touch=False).blocks == [10, 11]


def test_pinned_replaces_the_least_recently_hit_auto_pin_when_over_budget() -> None:
    tree = make_tree("pinned", max_pinned_blocks=3, min_hits=2)
    _, a = tree.insert(toks(1, 2), [10, 11])
    _, b = tree.insert(toks(3, 4), [20, 21])
    for _ in range(2):
        tree.match_prefix(toks(1, 2))
    assert a.pin_count == 1
    for _ in range(2):
        tree.match_prefix(toks(3, 4))
    # a + b = 4 blocks > 3: the older auto-pin a made room for b.
    assert (a.pin_count, b.pin_count) == (0, 1)
    assert tree.stats().pinned_blocks == 2
    assert tree.evict(10) == [11, 10]


def test_pinned_leaves_hot_prefixes_alone_without_a_budget() -> None:
    tree = make_tree("pinned", min_hits=1)
    _, leaf = tree.insert(toks(1), [10])
    tree.match_prefix(toks(1))
    assert leaf.pin_count == 0
    assert tree.evict(1) == [10]


def test_pinned_prefix_too_big_for_the_budget_does_not_flush_the_others() -> None:
    """Regression: a hot prefix deeper than the whole budget used to unpin every auto-pin
    (making room it could never use) and then give up, leaving nothing pinned."""
    tree = make_tree("pinned", max_pinned_blocks=4, min_hits=2)
    _, small = tree.insert(toks(1, 2), [10, 11])
    tree.match_prefix(toks(1, 2))
    tree.match_prefix(toks(1, 2))
    assert small.pin_count == 1
    _, big = tree.insert(toks(5, 6, 7, 8, 9), [20, 21, 22, 23, 24])
    tree.match_prefix(toks(5, 6, 7, 8, 9))
    tree.match_prefix(toks(5, 6, 7, 8, 9))
    assert big.pin_count == 0
    assert small.pin_count == 1
    assert tree.stats().pinned_blocks == 2


def test_pinned_auto_pins_respect_explicit_pins_in_the_tree_budget() -> None:
    tree = make_tree("pinned", max_pinned_blocks=2, min_hits=1)
    _, explicit = tree.insert(toks(1, 2), [10, 11])
    tree.pin(explicit)
    _, hot = tree.insert(toks(3), [30])
    tree.match_prefix(toks(3))
    assert hot.pin_count == 0  # the tree's budget is spent on the explicit pin
    assert tree.stats().pinned_blocks == 2


def test_belady_evicts_the_farthest_next_use_first() -> None:
    policy = make_eviction_policy("belady")
    assert isinstance(policy, BeladyPolicy)
    next_use = {10: 5.0, 20: math.inf, 30: 1.0, 40: 9.0}
    policy.set_oracle(lambda node: next_use[node.blocks[0]])
    tree = RadixTree(BS, policy, token_ids=True)
    for i in (1, 2, 3, 4):
        tree.insert(toks(i), [i * 10])
    assert tree.evict(2) == [20, 40]
    # A new oracle re-keys every leaf before the next eviction.
    next_use.update({10: 2.0, 30: 3.0})
    policy.set_oracle(lambda node: next_use[node.blocks[0]])
    assert tree.evict(1) == [30]


def test_belady_without_an_oracle_refuses_to_rank() -> None:
    tree = RadixTree(BS, make_eviction_policy("belady"), token_ids=True)
    with pytest.raises(RuntimeError, match="belady needs an oracle"):
        tree.insert(toks(1), [10])


def test_adaptive_evicts_never_hit_tails_before_reused_prefixes() -> None:
    """Once the cache has turned over (lifetime > 0), a reused prefix outlives a more recent
    one-off tail; plain LRU would evict the reused one first."""
    tree = make_tree("adaptive")
    tree.insert(toks(9), [90])
    for _ in range(5):
        tree.tick()
    assert tree.evict(1) == [90]  # learns a cache lifetime of 5 ticks
    tree.insert(toks(1), [10])
    tree.match_prefix(toks(1))
    tree.insert(toks(2), [20])  # more recent, never hit
    assert tree.evict(2) == [20, 10]
    lru = make_tree("lru")
    lru.insert(toks(1), [10])
    lru.match_prefix(toks(1))
    lru.insert(toks(2), [20])
    assert lru.evict(2) == [10, 20]


# ---------------------------------------------------------------------- reset / stats


def test_reset_refuses_while_locked_or_pinned_then_returns_every_block() -> None:
    tree = make_tree()
    _, a = tree.insert(toks(1, 2), [10, 11])
    tree.insert(toks(1, 3), [10, 21])
    tree.match_prefix(toks(1, 2))
    tree.lock(a)
    assert tree.reset() is None
    assert tree.stats().cached_blocks == 3  # nothing dropped
    tree.unlock(a)
    tree.pin(a)
    assert tree.reset() is None
    tree.unpin(a)
    assert sorted(tree.reset() or []) == [10, 11, 21]
    s = tree.stats()
    assert (s.num_nodes, s.cached_blocks, s.inserted_blocks, s.evicted_blocks) == (0, 0, 0, 0)
    assert s.lookups == 1  # hit statistics survive a reset
    assert tree.match_prefix(toks(1, 2)).blocks == []
    assert tree.evictable_leaves() == frozenset()


def test_stats_track_every_counter() -> None:
    tree = make_tree(max_pinned_blocks=10)
    tree.insert(toks(1, 2, 3), [10, 11, 12])
    _, b = tree.insert(toks(1, 4), [10, 21])
    _, c = tree.insert(toks(5), [30])
    tree.lock(b)
    tree.pin(c)
    tree.match_prefix(toks(1, 2, 9, 9))
    freed = tree.evict(5)
    assert freed == [12, 11]
    s = tree.stats()
    assert s.num_nodes == 3  # (10) -> (21) and (30); the split-off (11) -> (12) is gone
    assert s.cached_blocks == 3
    assert s.protected_blocks == 3 and s.pinned_blocks == 1 and s.evictable_blocks == 0
    assert (s.lookups, s.lookup_blocks, s.hit_blocks) == (1, 4, 2)
    assert (s.inserted_blocks, s.evicted_blocks) == (5, 2)
    assert sorted(tree.cached_block_ids()) == [10, 21, 30]


def test_iter_nodes_yields_parents_before_children() -> None:
    tree = make_tree()
    tree.insert(toks(1, 2, 3), [10, 11, 12])
    tree.insert(toks(1, 2, 4), [10, 11, 22])
    tree.insert(toks(1, 5), [10, 25])
    seen: set[RadixNode] = set()
    for node in tree.iter_nodes():
        assert node.parent is tree.root() or node.parent in seen
        seen.add(node)
    assert len(seen) == tree.stats().num_nodes == 5


def test_heap_stays_bounded_without_evictions_and_order_survives_compaction() -> None:
    """Regression: every touch pushes a heap entry and the heap used to be compacted only in
    evict(), so a cache that never filled grew one stale entry per request, without bound.
    (White-box: reads the private heap, the only place the leak is visible.)"""
    tree = make_tree()
    for i in range(10):
        tree.insert(toks(i), [i])
    for r in range(20_000):
        tree.match_prefix(toks(r % 10))
    leaves = len(tree.evictable_leaves())
    assert leaves == 10
    assert len(tree._heap) <= 4 * leaves + 1024
    tree.match_prefix(toks(3))
    tree.match_prefix(toks(0))
    assert tree.evict(10) == [1, 2, 4, 5, 6, 7, 8, 9, 3, 0]


class _ExternalKeys(EvictionPolicy):
    """Keys set from outside the tree, as a time-drifting policy's are."""

    name = "external"

    def __init__(self) -> None:
        super().__init__()
        self.keys: dict[int, float] = {}

    def key(self, node: RadixNode) -> Any:
        return self.keys.get(node.blocks[0], 0.0)


def _leaves_tree(n: int) -> tuple[RadixTree, _ExternalKeys]:
    policy = _ExternalKeys()
    tree = RadixTree(1, policy)
    for i in range(n):
        policy.keys[i] = float(i)  # keyed at insertion: block i goes i-th
        tree.insert([("leaf", i)], [i])
    return tree, policy


def test_refresh_some_rekeys_a_slice_and_a_full_round_rekeys_every_leaf() -> None:
    """Spread re-keying: n calls re-key n leaves (the rest keep their old keys); after a
    round over all leaves the eviction order is the new keys' order."""
    n = 50
    tree, policy = _leaves_tree(n)
    policy.keys = {i: float(n - i) for i in range(n)}  # reversed order, not yet seen
    tree.refresh_some(0)
    assert tree.evict(1) == [0]  # old key still rules
    tree.refresh_some(n)  # a full round over the 49 left (plus a new round's start)
    assert tree.num_evictable_leaves() == n - 1
    assert tree.evict(n - 1) == list(range(n - 1, 0, -1))


def test_a_large_trees_heap_compaction_keeps_the_keys_it_had() -> None:
    """Past LARGE_TREE_LEAVES, compaction drops stale entries without asking the policy
    again (re-keying thousands of leaves at once would stall a step)."""
    n = LARGE_TREE_LEAVES + 1
    tree, policy = _leaves_tree(n)
    policy.keys = {i: float(n - i) for i in range(n)}
    for _ in range(5):  # stale entries pile up past 4x the leaves: compaction runs
        for i in range(1, n):
            tree.touch(tree.match_prefix([("leaf", i)], touch=False).last_node)
    # Leaf 0 was never touched: it keeps its old key 0.0 (re-keyed, it would go last).
    assert tree.evict(1) == [0]
    assert tree.evict(1) == [n - 1]


@pytest.mark.parametrize("stale", range(1020, 1045))
def test_evict_frees_all_it_can_when_a_push_compacts_the_heap(stale: int) -> None:
    """A parent left a leaf mid-eviction is pushed, and a push may rebuild the heap once
    stale entries pile up; evict() must go on with the rebuilt heap (it kept popping the
    old list, whose entries the rebuild had all made stale, and freed too few blocks)."""
    tree = make_tree()
    tree.insert(toks(1, 2, 3), [10, 11, 12])
    tree.insert(toks(1, 2, 4), [10, 11, 13])  # splits: [1, 2] with children [3] and [4]
    tree.insert(toks(9), [19])
    tree.match_prefix(toks(1, 2))  # [1, 2] newer than [9]: not the next victim once a leaf
    tree.insert(toks(7), [17])
    for _ in range(stale):
        tree.match_prefix(toks(7))  # a stale heap entry per touch, newer than [1, 2]
    tree.lock(tree.match_prefix(toks(7)).last_node)  # [7]'s entries all stale now
    assert sorted(tree.evict(tree.evictable_blocks())) == [10, 11, 12, 13, 19]
    assert tree.evictable_blocks() == 0
