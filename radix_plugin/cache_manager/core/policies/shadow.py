"""Key-only replicas of a cache: the hits it would get under another ranking.

A policy that learns can lose to LRU on a trace it has not learned yet. Running LRU and the
learned ranking side by side on page keys alone (no KV, just the keys, sized like the real
cache) tells which of them to follow, request by request, at the cost of the bookkeeping.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Hashable, Sequence

from radix_plugin.cache_manager.core.policies.base import EvictionPolicy
from radix_plugin.cache_manager.core.radix_tree import MatchResult, RadixNode, RadixTree

UNBOUNDED = 1 << 62
"""Capacity of a shadow before the real cache first fills (nothing is evicted until then)."""


class ShadowLRU:
    """LRU over page keys, ordered as the radix tree's LRU evicts: leaves first."""

    def __init__(self) -> None:
        self.capacity = UNBOUNDED
        self._pages: OrderedDict[Hashable, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pages)

    def serve(self, pages: Sequence[Hashable]) -> int:
        """A request with prompt ``pages`` arrives: its cached prefix, in pages; then cache it."""
        hit = 0
        for page in pages:
            if page not in self._pages:
                break
            hit += 1
        self.touch(pages)
        return hit

    def touch(self, pages: Sequence[Hashable]) -> None:
        """Use a path, deepest page first: among pages used together the tree evicts the
        deepest first and the root's last."""
        cached = self._pages
        for page in reversed(pages):
            cached[page] = None
            cached.move_to_end(page)
        while len(cached) > self.capacity:
            cached.popitem(last=False)


class ShadowTree:
    """A radix tree under ``policy`` holding page keys only, evicting to ``capacity``."""

    def __init__(self, policy: EvictionPolicy) -> None:
        self.capacity = UNBOUNDED
        self.tree = RadixTree(1, policy)
        self._ids = itertools.count()

    def serve(self, pages: Sequence[Hashable]) -> tuple[int, RadixNode]:
        """A request with prompt ``pages`` arrives: its cached prefix, in pages, and the node
        ending its prompt once cached."""
        match = self.tree.match_prefix(pages)
        return len(match.blocks), self._insert(pages, match)

    def store(self, pages: Sequence[Hashable]) -> RadixNode:
        """Cache a path (a prompt, or a prompt and its output), making room first."""
        return self._insert(pages, self.tree.match_prefix(pages, touch=False))

    def _insert(self, pages: Sequence[Hashable], match: MatchResult) -> RadixNode:
        tree = self.tree
        tree.lock(match.last_node)
        over = tree.stats().cached_blocks + len(pages) - len(match.blocks) - self.capacity
        if over > 0:
            tree.evict(over)
        tree.unlock(match.last_node)
        fits = max(0, self.capacity - tree.stats().cached_blocks) + len(match.blocks)
        _, node = tree.insert(pages[:fits], [next(self._ids) for _ in pages[:fits]])
        return node

    def resize(self, capacity: int) -> None:
        self.capacity = capacity
        over = self.tree.stats().cached_blocks - capacity
        if over > 0:
            self.tree.evict(over)
