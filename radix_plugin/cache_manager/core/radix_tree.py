"""Block-granular radix tree over token ids: the plugin's prefix-cache index.

vLLM can only reuse whole KV blocks, so every edge holds a whole number of pages of
``block_size`` tokens and one block id per page. The tree owns no memory: it records which
block ids hold which prefixes, who is using them (locks), which must stay (pins), and hands
back block ids when asked to evict. Eviction is leaf-first and ordered by a pluggable
:class:`~radix_plugin.cache_manager.core.policies.base.EvictionPolicy`.

Costs (``P`` = pages in the query, ``D`` = depth of the touched path, ``L`` = evictable
leaves, ``B`` = block size) are stated on each public method. Pure Python, no vLLM import.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from radix_plugin.cache_manager.core.errors import PinBudgetExceeded
from radix_plugin.cache_manager.core.policies.builtin import LRUPolicy

if TYPE_CHECKING:
    from radix_plugin.cache_manager.core.policies.base import EvictionPolicy

Page = Hashable
"""One page's key: the tuple of its ``block_size`` token ids, or any hashable that identifies
the page *and its whole prefix* (vLLM's chained block hash), which is cheaper to compare."""


@dataclass(eq=False, slots=True)
class RadixNode:
    """A run of cached pages; ``blocks[i]`` holds the KV of ``pages[i]``.

    ``lock_count`` counts running requests whose prefix passes through this node (locked nodes
    are never evicted); ``pin_count`` counts explicit pins (same protection, separate budget).
    ``metadata`` is free room for tier and workflow information kept by other components.
    ``detached`` marks a node :meth:`RadixTree.remove_subtree` dropped: holders may still
    reference it, and their later release or unpin must change nothing.
    """

    pages: list[Page]
    blocks: list[int]
    parent: RadixNode | None
    namespace: Hashable = None
    children: dict[Page, RadixNode] = field(default_factory=dict)
    lock_count: int = 0
    pin_count: int = 0
    last_access: int = 0
    created_at: int = 0
    hit_count: int = 0
    priority: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    heap_version: int = 0
    detached: bool = False

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def is_root(self) -> bool:
        return self.parent is None

    @property
    def is_leaf(self) -> bool:
        return not self.children

    @property
    def is_protected(self) -> bool:
        return self.lock_count > 0 or self.pin_count > 0

    def path_to_root(self) -> Iterator[RadixNode]:
        """Yield this node and its ancestors, excluding the root."""
        node: RadixNode | None = self
        while node is not None and node.parent is not None:
            yield node
            node = node.parent

    def depth_in_blocks(self) -> int:
        """Blocks from the root to the end of this node (O(D))."""
        return sum(n.num_blocks for n in self.path_to_root())


@dataclass(frozen=True, slots=True)
class MatchResult:
    """The cached prefix of a query: its block ids and the node that ends it."""

    blocks: list[int]
    last_node: RadixNode

    def num_tokens(self, block_size: int) -> int:
        return len(self.blocks) * block_size


@dataclass(frozen=True, slots=True)
class TreeStats:
    """A snapshot of the tree's occupancy and hit counters."""

    num_nodes: int
    cached_blocks: int
    evictable_blocks: int
    protected_blocks: int
    pinned_blocks: int
    lookups: int
    lookup_blocks: int
    hit_blocks: int
    inserted_blocks: int
    evicted_blocks: int

    @property
    def hit_ratio(self) -> float:
        return self.hit_blocks / self.lookup_blocks if self.lookup_blocks else 0.0


class RadixTree:
    """Prefix index at block granularity with lock/pin protection and policy-driven eviction.

    ``max_pinned_blocks`` bounds how much of the pool explicit pins may hold, so that pins can
    never starve running requests. ``path_compression=False`` keeps one node per block, which
    the vLLM glue uses so that a node's protection mirrors one block's reference count.
    ``token_ids`` says what :meth:`match_prefix` and :meth:`insert` take: token ids, cut into
    pages of ``block_size`` here, or (the default) page keys, e.g. from :meth:`pages_of` or
    vLLM's block hashes. Fixed per tree, never guessed from the elements' type (NumPy and
    torch integers are not ``int``).
    """

    def __init__(
        self,
        block_size: int,
        policy: EvictionPolicy | None = None,
        max_pinned_blocks: int | None = None,
        path_compression: bool = True,
        token_ids: bool = False,
    ) -> None:
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        if policy is None:
            policy = LRUPolicy()
        self.block_size = block_size
        self.policy = policy
        self.max_pinned_blocks = max_pinned_blocks
        self.path_compression = path_compression
        self.token_ids = token_ids
        self._clock = 0
        self._seq = itertools.count()
        self._policy_version = policy.version
        self.reset_state()
        policy.attach(self)

    # ------------------------------------------------------------------ state

    def reset_state(self) -> None:
        """Forget everything, including counters (O(1))."""
        self._roots: dict[Hashable, RadixNode] = {}
        self._heap: list[tuple[Any, int, int, RadixNode]] = []
        self._evictable_leaves: set[RadixNode] = set()
        self._num_nodes = 0
        self._cached_blocks = 0
        self._protected_blocks = 0
        self._pinned_blocks = 0
        self._lookups = 0
        self._lookup_blocks = 0
        self._hit_blocks = 0
        self._inserted_blocks = 0
        self._evicted_blocks = 0

    def tick(self) -> int:
        """Advance and return the logical clock used for recency (O(1))."""
        self._clock += 1
        return self._clock

    @property
    def now(self) -> int:
        return self._clock

    def root(self, namespace: Hashable = None) -> RadixNode:
        """The root of ``namespace`` (LoRA name, cache salt, ...), created on first use."""
        root = self._roots.get(namespace)
        if root is None:
            root = RadixNode(pages=[], blocks=[], parent=None, namespace=namespace)
            self._roots[namespace] = root
        return root

    def pages_of(self, tokens: Sequence[int]) -> list[Page]:
        """Split ``tokens`` into full pages; a partial tail page is dropped (O(len))."""
        bs = self.block_size
        return [tuple(tokens[i : i + bs]) for i in range(0, len(tokens) - bs + 1, bs)]

    # ------------------------------------------------------------------ lookup

    def match_prefix(
        self,
        tokens: Sequence[int] | Sequence[Page],
        namespace: Hashable = None,
        *,
        touch: bool = True,
        split: bool = True,
        max_blocks: int | None = None,
    ) -> MatchResult:
        """Longest cached prefix of ``tokens`` (token ids or pages, per ``token_ids``).

        With ``touch`` the matched nodes count as used (recency and hit count). With ``split``
        a match ending inside a node splits it so that ``last_node`` covers exactly the match,
        which :meth:`lock` needs; schedulers that only peek pass ``touch=False, split=False``.
        Cost: O(P·B) to hash pages plus O(D).
        """
        pages = self._as_pages(tokens)
        if max_blocks is not None:
            pages = pages[:max_blocks]
        node = self.root(namespace)
        blocks: list[int] = []
        i = 0
        while i < len(pages):
            child, n = self._descend(node, pages, i, split)
            if child is None:
                break
            if n < child.num_blocks:  # ends inside an unsplit node
                blocks.extend(child.blocks[:n])
                break
            blocks.extend(child.blocks)
            node = child
            i += n
        if touch:
            self.touch(node, query_blocks=len(pages))
        return MatchResult(blocks=blocks, last_node=node)

    def touch(self, node: RadixNode, query_blocks: int | None = None) -> None:
        """Count the prefix ending at ``node`` as used by one request (O(D)).

        Updates recency and hit counts along the path and the hit statistics; callers that
        looked up with ``touch=False`` call this once the request is actually admitted, so a
        lookup that leads nowhere does not make a prefix look popular.
        """
        now = self.tick()
        hit = 0
        for n in node.path_to_root():
            n.last_access = now
            n.hit_count += 1
            hit += n.num_blocks
            self.policy.on_hit(n)
            self._rekey(n)
        self._lookups += 1
        self._lookup_blocks += hit if query_blocks is None else query_blocks
        self._hit_blocks += hit

    # ------------------------------------------------------------------ insert

    def insert(
        self,
        tokens: Sequence[int] | Sequence[Page],
        blocks: Sequence[int],
        namespace: Hashable = None,
        *,
        priority: int = 0,
        parent: RadixNode | None = None,
        origin: str = "prompt",
    ) -> tuple[int, RadixNode]:
        """Record that ``blocks[i]`` holds page ``i`` of ``tokens``.

        With ``parent``, ``tokens`` continue the prefix that ends at ``parent`` (which saves the
        walk from the root when the caller remembers where a sequence ends).

        Returns ``(already_cached_blocks, last_node)``: the first ``already_cached_blocks``
        pages were cached before, under possibly different block ids; the caller keeps
        ownership of its own ids for those pages (they are duplicates). ``priority`` is
        max-propagated along the path (the ``priority`` policy reads it). ``origin`` tags new
        nodes (``"prompt"`` or ``"output"``) in ``metadata``; policies may learn per origin.
        Cost: O(P·B) plus O(D).
        """
        pages = self._as_pages(tokens)
        if len(blocks) < len(pages):
            pages = pages[: len(blocks)]
        now = self.tick()
        node = self.root(namespace) if parent is None else parent
        i = 0
        while i < len(pages):
            child, n = self._descend(node, pages, i, split=True)
            if child is None:
                break
            node = child
            node.last_access = now
            node.priority = max(node.priority, priority)
            self._rekey(node)
            i += n
        already = i
        step = len(pages) if self.path_compression else 1
        while i < len(pages):
            j = min(len(pages), i + step)
            leaf = RadixNode(
                pages=list(pages[i:j]),
                blocks=list(blocks[i:j]),
                parent=node,
                namespace=node.namespace,
                last_access=now,
                created_at=now,
                priority=priority,
                metadata={"origin": origin},
            )
            was_leaf = node.is_leaf
            node.children[leaf.pages[0]] = leaf
            self._num_nodes += 1
            self._cached_blocks += leaf.num_blocks
            self._inserted_blocks += leaf.num_blocks
            if was_leaf:
                self._forget_leaf(node)
            self.policy.on_insert(leaf)
            self._rekey(leaf)
            node = leaf
            i = j
        return already, node

    # ------------------------------------------------------------------ protection

    def lock(self, node: RadixNode) -> None:
        """A running request uses the prefix ending at ``node``: protect it (O(D))."""
        for n in node.path_to_root():
            if not n.is_protected:
                self._protected_blocks += n.num_blocks
                self._forget_leaf(n)
            n.lock_count += 1

    def unlock(self, node: RadixNode) -> None:
        """Release a :meth:`lock` (O(D)).

        The release time counts as the last use, as in vLLM, whose free queue orders cached
        blocks by when their last user finished.
        """
        if node.detached:
            return  # its locks ended when it was removed
        now = self.tick()
        for n in node.path_to_root():
            if n.lock_count <= 0:
                raise RuntimeError("unlock() without a matching lock()")
            n.lock_count -= 1
            n.last_access = now
            if not n.is_protected:
                self._protected_blocks -= n.num_blocks
            self._rekey(n)

    def hold(self, node: RadixNode) -> None:
        """Protect ``node`` alone (O(1)).

        For callers whose own bookkeeping already holds every ancestor whenever it holds a
        node, as vLLM's per-block reference counts do; :meth:`lock` is the general form.
        """
        if not node.is_protected:
            self._protected_blocks += node.num_blocks
            self._forget_leaf(node)
        node.lock_count += 1

    def release(self, node: RadixNode) -> None:
        """Undo one :meth:`hold`; the release time counts as the last use (O(log L)).

        A no-op on a node :meth:`remove_subtree` dropped (its holds ended there)."""
        if node.detached:
            return
        if node.lock_count <= 0:
            raise RuntimeError("release() without a matching hold()")
        node.lock_count -= 1
        node.last_access = self.tick()
        if not node.is_protected:
            self._protected_blocks -= node.num_blocks
        self._rekey(node)

    def remove_subtree(self, node: RadixNode) -> list[RadixNode]:
        """Drop ``node`` and everything below it, protected or not; returns the dropped nodes.

        For invalidation from outside (a connector evicting a block by id): descendants of a
        dropped prefix can never be matched again, so they leave the index too. The caller
        decides what happens to their blocks. Dropped nodes end up ``detached`` with no locks
        or pins: later :meth:`release`, :meth:`unlock` or :meth:`unpin` calls by their holders
        are no-ops. Pins made inside the subtree also cover its ancestors (a pin holds the
        whole path), so they are taken off the surviving path here. Path locks (:meth:`lock`)
        through the subtree stay on the surviving ancestors; invalidation is meant for
        per-node holds (:meth:`hold`), as the vLLM block pool uses. O(size of the subtree + D).
        """
        assert node.parent is not None and not node.detached, "cannot remove a root"
        parent = node.parent
        if node.pin_count:
            self._drop_pins(parent, node.pin_count)
        dropped = [node]
        stack = list(node.children.values())
        while stack:
            n = stack.pop()
            dropped.append(n)
            stack.extend(n.children.values())
        for n in dropped:
            self._forget_leaf(n)
            self._num_nodes -= 1
            self._cached_blocks -= n.num_blocks
            if n.is_protected:
                self._protected_blocks -= n.num_blocks
            if n.pin_count:
                self._pinned_blocks -= n.num_blocks
            n.lock_count = n.pin_count = 0
            n.detached = True
        del parent.children[node.pages[0]]
        node.parent = None
        if parent.parent is not None:
            self._rekey(parent)
        return dropped

    def _drop_pins(self, node: RadixNode, count: int) -> None:
        """Take ``count`` pins off the path ending at ``node`` (O(D))."""
        for n in node.path_to_root():
            n.pin_count -= count
            if n.pin_count == 0:
                self._pinned_blocks -= n.num_blocks
                if not n.is_protected:
                    self._protected_blocks -= n.num_blocks
                    self._rekey(n)

    def pin(self, node: RadixNode) -> None:
        """Keep the prefix ending at ``node`` cached until :meth:`unpin` (O(D)).

        Raises :class:`PinBudgetExceeded` if newly pinned blocks would pass the budget.
        """
        new = sum(n.num_blocks for n in node.path_to_root() if n.pin_count == 0)
        if self.max_pinned_blocks is not None and self._pinned_blocks + new > (
            self.max_pinned_blocks
        ):
            raise PinBudgetExceeded(
                f"pinning {new} more blocks would exceed the pin budget of "
                f"{self.max_pinned_blocks} blocks ({self._pinned_blocks} pinned)"
            )
        for n in node.path_to_root():
            if n.pin_count == 0:
                self._pinned_blocks += n.num_blocks
            if not n.is_protected:
                self._protected_blocks += n.num_blocks
                self._forget_leaf(n)
            n.pin_count += 1

    def unpin(self, node: RadixNode) -> None:
        """Release a :meth:`pin` (O(D)); a no-op on a node :meth:`remove_subtree` dropped."""
        if node.detached:
            return
        for n in node.path_to_root():
            if n.pin_count <= 0:
                raise RuntimeError("unpin() without a matching pin()")
            n.pin_count -= 1
            if n.pin_count == 0:
                self._pinned_blocks -= n.num_blocks
            if not n.is_protected:
                self._protected_blocks -= n.num_blocks
                self._rekey(n)

    def clear_pins(self) -> None:
        """Drop every pin (explicit or a policy's), e.g. before a full reset (O(N))."""
        for n in self.iter_nodes():
            if n.pin_count:
                self._pinned_blocks -= n.num_blocks
                n.pin_count = 0
                if not n.is_protected:
                    self._protected_blocks -= n.num_blocks
                    self._rekey(n)

    # ------------------------------------------------------------------ eviction

    def evict(self, num_blocks: int) -> list[int]:
        """Free up to ``num_blocks`` blocks, leaf-first, in the policy's order.

        Leaves are trimmed from their tail, so exactly the requested number is freed when
        enough is evictable; a policy with ``rank_per_block`` re-ranks after every page.
        Returns the freed block ids, deepest first.
        Cost: O(k·log L) amortised for k freed nodes (lazy heap), plus a heap rebuild
        O(L log L) when the policy's keys changed globally.
        """
        if self.policy.version != self._policy_version:
            self._rebuild_heap()
        freed: list[int] = []
        while len(freed) < num_blocks and self._heap:
            _, _, version, node = heapq.heappop(self._heap)
            if version != node.heap_version or node not in self._evictable_leaves:
                continue
            take = min(num_blocks - len(freed), node.num_blocks)
            if self.policy.rank_per_block:
                take = 1  # its next page may rank elsewhere: re-key after each one
            victims = node.blocks[node.num_blocks - take :]
            self.policy.on_evict(node, take)
            freed.extend(reversed(victims))
            self._cached_blocks -= take
            self._evicted_blocks += take
            if take == node.num_blocks:
                self._remove_leaf(node)
            else:
                del node.blocks[-take:]
                del node.pages[-take:]
                self._rekey(node)
        self._maybe_compact_heap()
        return freed

    def next_victim(self) -> RadixNode | None:
        """The leaf :meth:`evict` would trim next, without evicting it (amortised O(log L))."""
        if self.policy.version != self._policy_version:
            self._rebuild_heap()
        while self._heap:
            _, _, version, node = self._heap[0]
            if version == node.heap_version and node in self._evictable_leaves:
                return node
            heapq.heappop(self._heap)
        return None

    def refresh(self, node: RadixNode) -> None:
        """Re-key ``node`` after its metadata changed outside the tree (O(log L))."""
        self._rekey(node)

    def evictable_blocks(self) -> int:
        """Blocks that :meth:`evict` could free right now (O(1))."""
        return self._cached_blocks - self._protected_blocks

    def reset(self) -> list[int] | None:
        """Drop every cached prefix and return their blocks; ``None`` while any is in use.

        Mirrors vLLM's ``reset_prefix_cache``, which refuses while blocks are in use. O(N).
        """
        if self._protected_blocks:
            return None
        blocks = [b for n in self.iter_nodes() for b in n.blocks]
        counters = (self._lookups, self._lookup_blocks, self._hit_blocks)
        self.reset_state()
        self._lookups, self._lookup_blocks, self._hit_blocks = counters
        self.policy.on_reset()
        return blocks

    # ------------------------------------------------------------------ introspection

    def stats(self) -> TreeStats:
        """Occupancy and counters (O(1))."""
        return TreeStats(
            num_nodes=self._num_nodes,
            cached_blocks=self._cached_blocks,
            evictable_blocks=self.evictable_blocks(),
            protected_blocks=self._protected_blocks,
            pinned_blocks=self._pinned_blocks,
            lookups=self._lookups,
            lookup_blocks=self._lookup_blocks,
            hit_blocks=self._hit_blocks,
            inserted_blocks=self._inserted_blocks,
            evicted_blocks=self._evicted_blocks,
        )

    def iter_nodes(self) -> Iterator[RadixNode]:
        """Every non-root node, parents before children (O(N))."""
        stack = [c for r in self._roots.values() for c in r.children.values()]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(node.children.values())

    def cached_block_ids(self) -> list[int]:
        """Every block id the tree holds (O(N))."""
        return [b for n in self.iter_nodes() for b in n.blocks]

    def evictable_leaves(self) -> frozenset[RadixNode]:
        """Leaves that are neither locked nor pinned (O(L))."""
        return frozenset(self._evictable_leaves)

    # ------------------------------------------------------------------ internals

    def _as_pages(self, tokens: Sequence[int] | Sequence[Page]) -> list[Page]:
        if self.token_ids:
            return self.pages_of(tokens)  # type: ignore[arg-type]
        return list(tokens)

    def _descend(
        self, node: RadixNode, pages: Sequence[Page], i: int, split: bool
    ) -> tuple[RadixNode | None, int]:
        """The child of ``node`` that continues ``pages[i:]`` and how many pages it matches;
        with ``split``, a partial match is split off first so the child ends at the match."""
        child = node.children.get(pages[i])
        if child is None:
            return None, 0
        n = _common_pages(child.pages, pages, i)
        if n < child.num_blocks and split:
            child = self._split(child, n)
        return child, n

    def _split(self, node: RadixNode, n: int) -> RadixNode:
        """Cut ``node`` after ``n`` pages; returns the new upper part (O(B))."""
        assert node.parent is not None and 0 < n < node.num_blocks
        upper = RadixNode(
            pages=node.pages[:n],
            blocks=node.blocks[:n],
            parent=node.parent,
            namespace=node.namespace,
            lock_count=node.lock_count,
            pin_count=node.pin_count,
            last_access=node.last_access,
            created_at=node.created_at,
            hit_count=node.hit_count,
            priority=node.priority,
            metadata=dict(node.metadata),
        )
        node.parent.children[upper.pages[0]] = upper
        del node.pages[:n]
        del node.blocks[:n]
        node.parent = upper
        upper.children[node.pages[0]] = node
        self._num_nodes += 1
        self.policy.on_split(upper, node)
        self._rekey(node)
        return upper

    def _is_evictable_leaf(self, node: RadixNode) -> bool:
        return node.parent is not None and node.is_leaf and not node.is_protected

    def _rekey(self, node: RadixNode) -> None:
        """Re-enter ``node`` in the eviction heap if it is an evictable leaf (O(log L))."""
        if not self._is_evictable_leaf(node):
            self._forget_leaf(node)
            return
        node.heap_version += 1
        self._evictable_leaves.add(node)
        heapq.heappush(
            self._heap, (self.policy.key(node), next(self._seq), node.heap_version, node)
        )
        # Every touch pushes a new entry; compact here too, not only in evict(), or a cache
        # that never fills grows its heap by one stale entry per request forever.
        self._maybe_compact_heap()

    def _forget_leaf(self, node: RadixNode) -> None:
        if node in self._evictable_leaves:
            self._evictable_leaves.discard(node)
            node.heap_version += 1

    def _remove_leaf(self, node: RadixNode) -> None:
        parent = node.parent
        assert parent is not None
        self._forget_leaf(node)
        del parent.children[node.pages[0]]
        self._num_nodes -= 1
        node.parent = None
        if parent.parent is not None:
            self._rekey(parent)

    def _rebuild_heap(self) -> None:
        self._policy_version = self.policy.version
        self._heap = []
        for node in self._evictable_leaves:
            node.heap_version += 1
            self._heap.append((self.policy.key(node), next(self._seq), node.heap_version, node))
        heapq.heapify(self._heap)

    def _maybe_compact_heap(self) -> None:
        if len(self._heap) > 4 * len(self._evictable_leaves) + 1024:
            self._rebuild_heap()


def _common_pages(node_pages: list[Page], pages: Sequence[Page], start: int) -> int:
    """How many of ``node_pages`` equal ``pages[start:]`` pairwise (O(matched·B))."""
    n = 0
    limit = min(len(node_pages), len(pages) - start)
    while n < limit and node_pages[n] == pages[start + n]:
        n += 1
    return n
