"""The one small interface every eviction policy implements.

The tree asks a policy for one thing, a sort key per evictable leaf (smallest evicted first),
and tells it about events so stateful policies can learn. Keys may only change when the tree
reports an event for that node; a policy whose keys change globally (for example on new
workflow hints) bumps ``version`` and the tree re-keys every leaf before the next eviction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from radix_plugin.cache_manager.core.radix_tree import RadixNode, RadixTree


class EvictionPolicy:
    """Base class: LRU-neutral no-op hooks; subclasses define :meth:`key`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    offline_only: ClassVar[bool] = False
    """True for policies that need the future (only the simulator can run them)."""
    rank_per_block: ClassVar[bool] = False
    """True when a leaf's key depends on its last page, so the tree must re-rank a leaf after
    every page it trims (exact, O(log L) per block) instead of trimming a run at once."""

    def __init__(self) -> None:
        self.version = 0
        self.tree: RadixTree | None = None

    def attach(self, tree: RadixTree) -> None:
        """Called once by the tree that uses this policy."""
        self.tree = tree

    def key(self, node: RadixNode) -> Any:
        """Sort key of an evictable leaf; the smallest is evicted first."""
        raise NotImplementedError

    def on_hit(self, node: RadixNode) -> None:
        """``node`` was part of a matched prefix (after its counters were updated)."""

    def on_insert(self, node: RadixNode) -> None:
        """``node`` was just created as a new leaf."""

    def on_split(self, upper: RadixNode, lower: RadixNode) -> None:
        """``upper`` was cut off the front of ``lower``."""

    def on_evict(self, node: RadixNode, num_blocks: int) -> None:
        """``num_blocks`` pages are about to be cut from the tail of ``node``."""

    def on_reset(self) -> None:
        """The whole tree was cleared."""
