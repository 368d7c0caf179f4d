"""Key-only shadows of the cache: what they hit is what a cache of their size would hit."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from radix_plugin.cache_manager.core.policies.builtin import LRUPolicy
from radix_plugin.cache_manager.core.policies.shadow import ShadowLRU, ShadowTree

paths = st.lists(
    st.lists(st.integers(0, 3), min_size=1, max_size=6).map(
        lambda branch: [tuple(branch[: i + 1]) for i in range(len(branch))]
    ),
    min_size=1,
    max_size=40,
)
"""Prompts as page keys: a page names its whole prefix, as block hashes do."""


@settings(max_examples=100, deadline=None)
@given(paths)
def test_unbounded_shadows_hit_every_prefix_seen_before(prompts: list[list[tuple]]) -> None:
    lru, tree, seen = ShadowLRU(), ShadowTree(LRUPolicy()), set()
    for pages in prompts:
        expected = next((i for i, page in enumerate(pages) if page not in seen), len(pages))
        assert lru.serve(pages) == expected
        assert tree.serve(pages)[0] == expected
        seen.update(pages)


@settings(max_examples=100, deadline=None)
@given(paths, st.integers(1, 8))
def test_bounded_shadows_stay_within_capacity(prompts: list[list[tuple]], capacity: int) -> None:
    lru, tree = ShadowLRU(), ShadowTree(LRUPolicy())
    lru.capacity = capacity
    tree.resize(capacity)
    for pages in prompts:
        assert 0 <= lru.serve(pages) <= len(pages)
        hit, node = tree.serve(pages)
        assert 0 <= hit <= len(pages)
        assert tree.tree.stats().cached_blocks <= capacity
        assert node.depth_in_blocks() == min(len(pages), capacity)
        assert len(lru._pages) <= capacity


def test_the_shadow_lru_drops_the_deepest_page_first() -> None:
    """The radix tree evicts leaves first: of a path used once, the root's page stays longest."""
    lru = ShadowLRU()
    lru.capacity = 2
    lru.serve(["a", "ab", "abc"])
    assert lru.serve(["a", "ab", "abc"]) == 2
