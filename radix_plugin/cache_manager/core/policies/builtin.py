"""Built-in eviction policies, registered through the same pluggy hook third parties use.

Every key is "smallest evicted first" and only changes on an event the tree reports for that
node, which lets the tree keep a lazy heap instead of re-sorting on every eviction.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from radix_plugin.cache_manager.core.errors import PinBudgetExceeded
from radix_plugin.cache_manager.core.hookspecs import hookimpl
from radix_plugin.cache_manager.core.policies.base import EvictionPolicy

if TYPE_CHECKING:
    from radix_plugin.cache_manager.core.radix_tree import RadixNode


class LRUPolicy(EvictionPolicy):
    name = "lru"
    description = "least recently used leaf first (vLLM's and SGLang's default)"

    def key(self, node: RadixNode) -> Any:
        return node.last_access


class LFUPolicy(EvictionPolicy):
    name = "lfu"
    description = "fewest hits first, least recently used among equals"

    def key(self, node: RadixNode) -> Any:
        return (node.hit_count, node.last_access)


class PriorityPolicy(EvictionPolicy):
    name = "priority"
    description = "lowest request priority first (max-propagated along the path), then LRU"

    def key(self, node: RadixNode) -> Any:
        return (node.priority, node.last_access)


class PinnedPolicy(LRUPolicy):
    """LRU, plus automatic pinning of hot prefixes within the tree's pin budget.

    A prefix hit ``min_hits`` times is pinned (never evicted) while it stays among the most
    recently hit pinned prefixes that fit the budget; explicit pins (``radix_pin``) are honoured
    by every policy, this one only adds the automatic ones.
    """

    name = "pinned"
    description = "LRU; prefixes hit at least `min_hits` times stay pinned within a budget"

    def __init__(self, *, min_hits: int = 2, max_pinned_blocks: int | None = None) -> None:
        super().__init__()
        if min_hits < 1:
            raise ValueError(f"min_hits must be >= 1, got {min_hits}")
        self.min_hits = min_hits
        self.max_pinned_blocks = max_pinned_blocks
        self._auto_pinned: OrderedDict[RadixNode, None] = OrderedDict()
        self._auto_blocks = 0

    def on_hit(self, node: RadixNode) -> None:
        if node.hit_count < self.min_hits or not node.is_leaf or node in self._auto_pinned:
            if node in self._auto_pinned:
                self._auto_pinned.move_to_end(node)
            return
        tree = self.tree
        assert tree is not None
        budget = self.max_pinned_blocks
        if budget is None:
            budget = tree.max_pinned_blocks
        if budget is None:
            return
        size = node.depth_in_blocks()
        if size > budget:
            return  # can never fit: must not flush the auto-pins that do
        while self._auto_pinned and self._auto_blocks + size > budget:
            old, _ = self._auto_pinned.popitem(last=False)
            self._auto_blocks -= old.metadata.pop("auto_pin_blocks", 0)
            tree.unpin(old)
        try:
            tree.pin(node)
        except PinBudgetExceeded:
            return
        node.metadata["auto_pin_blocks"] = size
        self._auto_blocks += size
        self._auto_pinned[node] = None

    def on_reset(self) -> None:
        self._auto_pinned.clear()
        self._auto_blocks = 0


class BeladyPolicy(EvictionPolicy):
    """Offline optimum: evict the leaf whose next use is farthest in the future.

    Needs an oracle ``next_use(node) -> float`` (``inf`` for never again) of the node's last
    page, installed by the simulator with :meth:`set_oracle`; an engine cannot know the
    future. Ranking is per block (``rank_per_block``): a leaf is re-ranked after each page
    trimmed, so every evicted page is the one used farthest ahead among the evictable ones.
    A page is never used later than its prefix, so leaf-first costs nothing: this is the
    exact optimum of the cache (Belady's MIN over unit-size pages).
    """

    name = "belady"
    description = "offline optimum: farthest next use first, per block (simulator only)"
    offline_only = True
    rank_per_block = True

    def __init__(self) -> None:
        super().__init__()
        self._next_use: Callable[[RadixNode], float] | None = None

    def set_oracle(self, next_use: Callable[[RadixNode], float]) -> None:
        self._next_use = next_use
        self.version += 1

    def key(self, node: RadixNode) -> Any:
        if self._next_use is None:
            raise RuntimeError("belady needs an oracle: call set_oracle() (simulator only)")
        return (-self._next_use(node), node.last_access)


class AdaptivePolicy(EvictionPolicy):
    """Recency, plus a frequency credit tuned by ghost hits, minus a learned one-off penalty.

    A leaf's key (smallest evicted first) is, in units of the cache ``lifetime`` (the average
    age of evicted leaves)::

        last_access + lifetime * (credit * log2(1 + hits) - junk_weight * (1 - p_origin))

    where the last term applies only to never-hit nodes.

    * Frequency credit: a reused prefix survives longer than a one-off. How much frequency is
      worth depends on the workload (Zipf-popular prompts want it; chat and tree-of-thought do
      not), so ``credit`` adapts like ARC's target: evicted pages are remembered in a bounded
      ghost list with their class; a miss on a ghost page that had been reused means
      frequency was undervalued (credit grows), one that had never been reused means recency
      was (credit shrinks toward plain LRU).
    * Admission control for one-off tails: ``p_origin`` is the learned share of blocks of the
      node's origin (prompt or generated output) that were ever hit again. Where generated
      blocks or question tails are never reused, their nodes age a lifetime faster and go
      first; where they are reused (chat clients re-sending answers), no penalty remains.

    A key is computed with the credit, lifetime and shares current at the node's last event
    and kept until its next one (the lazy heap's contract); re-keying every leaf whenever
    the learned values move would cost a heap rebuild per eviction.
    """

    name = "adaptive"
    description = "recency + ghost-tuned frequency credit + learned one-off penalty"

    def __init__(
        self,
        *,
        initial_credit: float = 1.0,
        max_credit: float = 8.0,
        learning_rate: float = 0.1,
        junk_weight: float = 2.0,
        ghost_pages: int = 4096,
    ) -> None:
        super().__init__()
        if not 0.0 <= initial_credit <= max_credit:
            raise ValueError(
                f"initial_credit must be in [0, max_credit={max_credit}], got {initial_credit}"
            )
        if learning_rate <= 0.0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate}")
        if junk_weight < 0.0:
            raise ValueError(f"junk_weight must be >= 0, got {junk_weight}")
        self.initial_credit = initial_credit
        self.max_credit = max_credit
        self.learning_rate = learning_rate
        self.junk_weight = junk_weight
        self.ghost_pages = ghost_pages
        self.on_reset()

    def reuse_share(self, origin: str) -> float:
        """Laplace-smoothed share of inserted blocks of ``origin`` that were hit again."""
        return min(1.0, (self._reused.get(origin, 0) + 1) / (self._inserted.get(origin, 0) + 2))

    def key(self, node: RadixNode) -> Any:
        credit = self.credit * math.log2(1 + node.hit_count)
        if node.hit_count == 0:
            origin = node.origin
            credit -= self.junk_weight * (1.0 - self.reuse_share(origin))
        return (node.last_access + self.lifetime * credit, node.last_access)

    def on_insert(self, node: RadixNode) -> None:
        origin = node.origin
        self._inserted[origin] = self._inserted.get(origin, 0) + node.num_blocks
        was_reused = self._ghost.pop(node.pages[0], None)
        if was_reused is None:
            return
        if was_reused:
            self.credit = min(self.max_credit, self.credit * (1 + self.learning_rate) + 0.01)
        else:
            self.credit = self.credit / (1 + self.learning_rate)

    def on_hit(self, node: RadixNode) -> None:
        if node.hit_count == 1:
            origin = node.origin
            self._reused[origin] = self._reused.get(origin, 0) + node.num_blocks

    def on_evict(self, node: RadixNode, num_blocks: int) -> None:
        assert self.tree is not None
        age = self.tree.now - node.last_access
        self.lifetime = age if self.lifetime == 0.0 else 0.95 * self.lifetime + 0.05 * age
        reused = node.hit_count > 0
        for page in node.pages[node.num_blocks - num_blocks :]:
            self._ghost[page] = reused
            self._ghost.move_to_end(page)
        while len(self._ghost) > self.ghost_pages:
            self._ghost.popitem(last=False)

    def on_reset(self) -> None:
        self.credit = self.initial_credit
        self.lifetime = 0.0
        self._ghost: OrderedDict[Any, bool] = OrderedDict()
        self._inserted: dict[str, int] = {}
        self._reused: dict[str, int] = {}


@hookimpl
def radix_eviction_policies() -> list[type]:
    return [LRUPolicy, LFUPolicy, PriorityPolicy, PinnedPolicy, BeladyPolicy, AdaptivePolicy]
