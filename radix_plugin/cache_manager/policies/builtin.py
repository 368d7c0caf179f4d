"""Built-in eviction policies, registered through the same pluggy hook third parties use.

Every key is "smallest evicted first" and only changes on an event the tree reports for that
node, which lets the tree keep a lazy heap instead of re-sorting on every eviction.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from radix_plugin.cache_manager.policies.base import EvictionPolicy
from radix_plugin.cache_manager.policies.hookspecs import hookimpl

if TYPE_CHECKING:
    from radix_plugin.cache_manager.radix_tree import RadixNode


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
        while self._auto_pinned and self._auto_blocks + size > budget:
            old, _ = self._auto_pinned.popitem(last=False)
            self._auto_blocks -= old.metadata.pop("auto_pin_blocks", 0)
            tree.unpin(old)
        if self._auto_blocks + size > budget:
            return
        from radix_plugin.cache_manager.radix_tree import PinBudgetExceeded

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

    Needs an oracle ``next_use(node) -> float`` (``inf`` for never again), installed by the
    simulator with :meth:`set_oracle`; an engine cannot know the future.
    """

    name = "belady"
    description = "offline optimum: farthest next use first (simulator only)"
    offline_only = True

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


class ReuseDistancePolicy(EvictionPolicy):
    """Online approximation of Belady from per-node reuse gaps, with admission for one-offs.

    Belady evicts the block used farthest in the future. Online, we predict each leaf's next
    use as ``last_access + expected gap``:

    * a node hit before has its own gap estimate, an exponential average of the gaps between
      its accesses;
    * a node never hit since insertion (a one-off tail in most traces) is predicted from what
      the tree has learned about fresh nodes: the average gap to a fresh node's first reuse,
      divided by the observed share of fresh nodes that are ever reused. Rarely reused tails
      are thereby predicted far away and go first, which is admission control without a
      separate filter.

    A node's key is fixed between its own accesses, so the lazy heap stays valid.
    """

    name = "reuse"
    description = "predicted next use from per-node reuse gaps (online Belady estimate)"

    def __init__(self, *, smoothing: float = 0.5, prior_reuse: float = 0.5) -> None:
        super().__init__()
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        self.smoothing = smoothing
        self.prior_reuse = prior_reuse
        self._fresh_seen = 1.0
        self._fresh_reused = prior_reuse
        self._first_gap_sum = 0.0
        self._first_gap_n = 0

    def _fresh_estimate(self) -> float:
        tree = self.tree
        assert tree is not None
        mean_gap = (
            self._first_gap_sum / self._first_gap_n
            if self._first_gap_n
            else max(1.0, float(tree.now))
        )
        reuse_share = max(self._fresh_reused / self._fresh_seen, 1e-3)
        return mean_gap / reuse_share

    def key(self, node: RadixNode) -> Any:
        gap = node.metadata.get("reuse_gap")
        if gap is None:
            gap = self._fresh_estimate()
        return (node.last_access + gap, node.last_access)

    def on_insert(self, node: RadixNode) -> None:
        self._fresh_seen += 1.0

    def on_hit(self, node: RadixNode) -> None:
        meta = node.metadata
        prev = meta.get("prev_access", node.created_at)
        gap = float(node.last_access - prev)
        meta["prev_access"] = node.last_access
        old = meta.get("reuse_gap")
        if old is None:
            self._fresh_reused += 1.0
            self._first_gap_sum += gap
            self._first_gap_n += 1
            meta["reuse_gap"] = gap
        else:
            meta["reuse_gap"] = self.smoothing * gap + (1.0 - self.smoothing) * old

    def on_split(self, upper: RadixNode, lower: RadixNode) -> None:
        upper.metadata.update(lower.metadata)

    def on_reset(self) -> None:
        self._fresh_seen = 1.0
        self._fresh_reused = self.prior_reuse
        self._first_gap_sum = 0.0
        self._first_gap_n = 0


@hookimpl
def radix_eviction_policies() -> list[type]:
    return [LRUPolicy, LFUPolicy, PriorityPolicy, PinnedPolicy, BeladyPolicy, ReuseDistancePolicy]
