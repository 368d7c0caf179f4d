"""Cache-aware orderings of the waiting queue (SGLang's fcfs / lpm / dfs-weight).

A policy only orders requests; the scheduler decides admission as vLLM always does. Orderings
are found by name in ``registry`` through the same pluggy hook third parties use
(``radix_scheduling_policies``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol

from radix_plugin.cache_manager.core.hookspecs import hookimpl
from radix_plugin.cache_manager.core.radix_tree import RadixNode


class Waiting(Protocol):
    """What an ordering needs to know about a waiting request."""

    request_id: str


PrefixLookup = Callable[[Any], tuple[int, RadixNode]]
"""request -> (cached prefix length in blocks, node that ends it); must not touch the tree."""


class SchedulingPolicy:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def order(self, waiting: Sequence[Any], lookup: PrefixLookup) -> list[Any]:
        """Return ``waiting`` reordered (a permutation; stable where the policy is indifferent)."""
        raise NotImplementedError


class FCFSPolicy(SchedulingPolicy):
    name = "fcfs"
    description = "arrival order (vLLM's default)"

    def order(self, waiting: Sequence[Any], lookup: PrefixLookup) -> list[Any]:
        return list(waiting)


class LongestPrefixMatchPolicy(SchedulingPolicy):
    """Longest cached prefix first, so hits are used before eviction takes them.

    Above ``max_queue`` waiters the tree walk per waiter per step costs more than it saves,
    so the round falls back to arrival order (SGLang uses 128 too).
    """

    name = "lpm"
    description = "longest cached prefix first; FCFS when the queue is long"

    def __init__(self, *, max_queue: int = 128) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self.max_queue = max_queue

    def order(self, waiting: Sequence[Any], lookup: PrefixLookup) -> list[Any]:
        if len(waiting) > self.max_queue:
            return list(waiting)
        hits = {id(r): lookup(r)[0] for r in waiting}
        return sorted(waiting, key=lambda r: -hits[id(r)])


class DFSWeightPolicy(SchedulingPolicy):
    """SGLang's DFS-weight order: visit the cached-prefix tree depth first, heavier subtrees
    (more waiting requests below) first, so requests sharing a prefix run back to back."""

    name = "dfs"
    description = "depth-first over the prefix tree, heavier subtrees first"

    def order(self, waiting: Sequence[Any], lookup: PrefixLookup) -> list[Any]:
        at: dict[RadixNode, list[Any]] = defaultdict(list)
        uncached: list[Any] = []
        for r in waiting:
            n_blocks, node = lookup(r)
            (at[node] if n_blocks else uncached).append(r)
        if not at:
            return list(waiting)
        weight: dict[RadixNode, int] = defaultdict(int)
        children: dict[RadixNode, set[RadixNode]] = defaultdict(set)
        roots: set[RadixNode] = set()
        for node, reqs in at.items():
            child: RadixNode | None = None
            for n in _self_and_ancestors(node):
                weight[n] += len(reqs)
                if child is not None:
                    children[n].add(child)
                child = n
            roots.add(child)  # type: ignore[arg-type]
        out: list[Any] = []
        stack = sorted(roots, key=lambda n: weight[n])
        while stack:
            node = stack.pop()
            out.extend(at.get(node, ()))
            stack.extend(sorted(children[node], key=lambda n: weight[n]))
        return out + uncached


def _self_and_ancestors(node: RadixNode) -> list[RadixNode]:
    """The node and its ancestors up to (including) the namespace root."""
    out = []
    n: RadixNode | None = node
    while n is not None:
        out.append(n)
        n = n.parent
    return out


@hookimpl
def radix_scheduling_policies() -> list[type]:
    return [FCFSPolicy, LongestPrefixMatchPolicy, DFSWeightPolicy]
