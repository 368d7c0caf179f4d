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
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from radix_plugin.cache_manager.core.errors import PinBudgetExceeded
from radix_plugin.cache_manager.core.policies.base import EvictionPolicy
from radix_plugin.cache_manager.core.policies.builtin import LRUPolicy

Page = Hashable
"""One page's key: the tuple of its ``block_size`` token ids, or any hashable that identifies
the page *and its whole prefix* (vLLM's chained block hash), which is cheaper to compare."""


_NO_CHILDREN: Mapping[Page, RadixNode] = MappingProxyType({})


_UNREAD = object()
_EMPTY = object()

LARGE_TREE_LEAVES = 2048
"""Evictable leaves beyond which re-keying all of them at once costs a visible step
(milliseconds in Python): heap compaction then keeps keys, and time-drifting policies
re-key a slice per request (:meth:`RadixTree.refresh_some`)."""


class RadixNode:
    """A run of cached pages; ``blocks[i]`` holds the KV of ``pages[i]``.

    ``lock_count`` counts running requests whose prefix passes through this node (locked nodes
    are never evicted); ``pin_count`` counts explicit pins (same protection, separate budget).
    ``origin`` says what the pages hold (``"prompt"`` or generated ``"output"``);
    ``metadata`` is free room for tier and workflow information kept by other components.
    ``detached`` marks a node :meth:`RadixTree.remove_subtree` dropped: holders may still
    reference it, and their later release or unpin must change nothing.

    Compact, because the vLLM glue keeps one node per KV block (10^5-10^6 of them): slots
    only; ``metadata`` is made on first use; children are ``None`` (a leaf), the one child
    itself (a chain, the common case) or a dict keyed by first page (a branch). A one-page
    node of a one-node-per-block tree holds ``pages`` and ``blocks`` as one-element tuples:
    it is never trimmed or split, and tuples of hashes and ints leave the cyclic garbage
    collector's lists, which a full collection would otherwise walk per cached block.
    """

    __slots__ = (
        "_kids",
        "_meta",
        "blocks",
        "created_at",
        "detached",
        "heap_version",
        "hit_count",
        "last_access",
        "lock_count",
        "namespace",
        "origin",
        "pages",
        "parent",
        "pin_count",
        "priority",
    )

    def __init__(
        self,
        pages: list[Page] | tuple[Page],
        blocks: list[int] | tuple[int],
        parent: RadixNode | None,
        namespace: Hashable = None,
        *,
        last_access: int = 0,
        created_at: int = 0,
        priority: int = 0,
        origin: str = "prompt",
        lock_count: int = 0,
        pin_count: int = 0,
        hit_count: int = 0,
    ) -> None:
        self.pages = pages
        self.blocks = blocks
        self.parent = parent
        self.namespace = namespace
        self.last_access = last_access
        self.created_at = created_at
        self.priority = priority
        self.origin = origin
        self.lock_count = lock_count
        self.pin_count = pin_count
        self.hit_count = hit_count
        self.heap_version = 0
        self.detached = False
        self._kids: RadixNode | dict[Page, RadixNode] | None = None
        self._meta: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return (
            f"RadixNode(blocks={self.blocks!r}, lock_count={self.lock_count}, "
            f"pin_count={self.pin_count}, last_access={self.last_access})"
        )

    @property
    def metadata(self) -> dict[str, Any]:
        """Free-form per-node data of other components (made on first access)."""
        meta = self._meta
        if meta is None:
            meta = self._meta = {}
        return meta

    def meta(self, key: str, default: Any = None) -> Any:
        """``metadata.get(key, default)`` without making the dict (for hot read paths)."""
        meta = self._meta
        return default if meta is None else meta.get(key, default)

    @property
    def children(self) -> Mapping[Page, RadixNode]:
        """The children by first page (read-only view)."""
        kids = self._kids
        if kids is None:
            return _NO_CHILDREN
        if type(kids) is RadixNode:
            return {kids.pages[0]: kids}
        return MappingProxyType(kids)  # type: ignore[arg-type]

    def child(self, page: Page) -> RadixNode | None:
        """The child whose first page is ``page`` (O(1))."""
        kids = self._kids
        if kids is None:
            return None
        if type(kids) is RadixNode:
            return kids if kids.pages[0] == page else None
        return kids.get(page)  # type: ignore[union-attr]

    def iter_children(self) -> Iterator[RadixNode]:
        kids = self._kids
        if kids is None:
            return iter(())
        if type(kids) is RadixNode:
            return iter((kids,))
        return iter(list(kids.values()))  # type: ignore[union-attr]

    def _add_child(self, node: RadixNode) -> None:
        kids = self._kids
        if kids is None:
            self._kids = node
        elif type(kids) is RadixNode:
            self._kids = {kids.pages[0]: kids, node.pages[0]: node}
        else:
            kids[node.pages[0]] = node  # type: ignore[index]

    def _remove_child(self, node: RadixNode) -> None:
        kids = self._kids
        if kids is node:
            self._kids = None
            return
        assert type(kids) is dict, "not a child of this node"
        del kids[node.pages[0]]
        if len(kids) == 1:
            self._kids = next(iter(kids.values()))

    def _replace_child(self, old: RadixNode, new: RadixNode) -> None:
        """``new`` takes ``old``'s place (same first page)."""
        kids = self._kids
        if kids is old:
            self._kids = new
        else:
            kids[new.pages[0]] = new  # type: ignore[index]

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def is_root(self) -> bool:
        return self.parent is None

    @property
    def is_leaf(self) -> bool:
        return self._kids is None

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
        # Hooks a policy does not override are not called (every block passes through them).
        self._on_hit = None if _inherits(policy, "on_hit") else policy.on_hit
        self._on_insert = None if _inherits(policy, "on_insert") else policy.on_insert
        self._on_evict = None if _inherits(policy, "on_evict") else policy.on_evict
        self.reset_state()
        policy.attach(self)

    # ------------------------------------------------------------------ state

    def reset_state(self) -> None:
        """Forget everything, including counters (O(1))."""
        self._roots: dict[Hashable, RadixNode] = {}
        self._heap: list[tuple[Any, int, int, RadixNode]] = []
        self._evictable_leaves: set[RadixNode] = set()
        self._refresh_round: list[RadixNode] = []  # leaves refresh_some has yet to re-key
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
        on_hit = self._on_hit
        hit = 0
        n: RadixNode | None = node
        while n is not None and n.parent is not None:
            n.last_access = now
            n.hit_count += 1
            hit += len(n.blocks)
            if on_hit is not None:
                on_hit(n)
            # A held node is never in the heap (protection takes it out): nothing to re-key.
            if not n.lock_count and not n.pin_count:
                self._rekey(n)
            n = n.parent
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
        nodes (``"prompt"`` or ``"output"``); policies may learn per origin.
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
            if priority > node.priority:
                node.priority = priority
            self._rekey(node)
            i += n
        already = i
        step = len(pages) if self.path_compression else 1
        while i < len(pages):
            j = min(len(pages), i + step)
            node = self._new_leaf(node, list(pages[i:j]), list(blocks[i:j]), now, priority, origin)
            i = j
        return already, node

    def insert_blocks(
        self,
        pages: Sequence[Page],
        blocks: Sequence[int],
        parent: RadixNode,
        *,
        priority: int = 0,
        origin: str = "prompt",
        hold: bool = False,
    ) -> tuple[int, list[RadixNode]]:
        """:meth:`insert` for a tree with one node per block: the node of every page.

        Pages already cached below ``parent`` keep their nodes (and block ids); the rest get
        new nodes, held once each with ``hold`` (their blocks are in use: created protected,
        so they never enter the eviction heap on the way). Returns ``(already, nodes)`` as
        :meth:`insert` counts them. Cost: O(P).
        """
        assert not self.path_compression, "insert_blocks needs a tree with one node per block"
        now = self.tick()
        node = parent
        nodes: list[RadixNode] = []
        n = min(len(pages), len(blocks))
        i = 0
        while i < n:
            child = node.child(pages[i])
            if child is None:
                break
            child.last_access = now
            if priority > child.priority:
                child.priority = priority
            if child.lock_count or child.pin_count:
                self._forget_leaf(child)
            else:
                self._rekey(child)
            nodes.append(child)
            node = child
            i += 1
        already = i
        if i < n:
            if hold and self._on_insert is None:
                nodes.extend(
                    self._new_held_chain(node, pages[i:n], blocks[i:n], now, priority, origin)
                )
            else:
                while i < n:
                    node = self._new_leaf(
                        node, (pages[i],), (blocks[i],), now, priority, origin, held=hold
                    )
                    nodes.append(node)
                    i += 1
        return already, nodes

    def _new_held_chain(
        self,
        parent: RadixNode,
        pages: Sequence[Page],
        blocks: Sequence[int],
        now: int,
        priority: int,
        origin: str,
    ) -> list[RadixNode]:
        """:meth:`_new_leaf` ``held=True`` for a chain of one-block nodes below ``parent``,
        in one pass (the vLLM glue caches a request's new full blocks this way)."""
        if parent._kids is None:
            self._forget_leaf(parent)
        namespace = parent.namespace
        chain: list[RadixNode] = []
        for page, block in zip(pages, blocks, strict=True):
            node = RadixNode(
                (page,),
                (block,),
                parent,
                namespace,
                last_access=now,
                created_at=now,
                priority=priority,
                origin=origin,
                lock_count=1,
            )
            parent._add_child(node)
            chain.append(node)
            parent = node
        size = len(chain)
        self._num_nodes += size
        self._cached_blocks += size
        self._inserted_blocks += size
        self._protected_blocks += size
        return chain

    def _new_leaf(
        self,
        parent: RadixNode,
        pages: list[Page] | tuple[Page],
        blocks: list[int] | tuple[int],
        now: int,
        priority: int,
        origin: str,
        held: bool = False,
    ) -> RadixNode:
        leaf = RadixNode(
            pages,
            blocks,
            parent,
            parent.namespace,
            last_access=now,
            created_at=now,
            priority=priority,
            origin=origin,
            lock_count=1 if held else 0,
        )
        if parent._kids is None:
            self._forget_leaf(parent)
        parent._add_child(leaf)
        size = len(blocks)
        self._num_nodes += 1
        self._cached_blocks += size
        self._inserted_blocks += size
        if held:
            self._protected_blocks += size
        if self._on_insert is not None:
            self._on_insert(leaf)
        if not held:
            self._rekey(leaf)
        return leaf

    # ------------------------------------------------------------------ protection

    def lock(self, node: RadixNode) -> None:
        """A running request uses the prefix ending at ``node``: protect it (O(D))."""
        for n in node.path_to_root():
            if not n.lock_count and not n.pin_count:
                self._protected_blocks += len(n.blocks)
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
            if not n.lock_count and not n.pin_count:
                self._protected_blocks -= len(n.blocks)
                self._rekey(n)

    def hold(self, node: RadixNode) -> None:
        """Protect ``node`` alone (O(1)).

        For callers whose own bookkeeping already holds every ancestor whenever it holds a
        node, as vLLM's per-block reference counts do; :meth:`lock` is the general form.
        """
        if not node.lock_count and not node.pin_count:
            self._protected_blocks += len(node.blocks)
            leaves = self._evictable_leaves
            if node in leaves:
                leaves.remove(node)
                node.heap_version += 1
        node.lock_count += 1

    def release(self, node: RadixNode) -> None:
        """Undo one :meth:`hold`; the release time counts as the last use (O(log L)).

        A no-op on a node :meth:`remove_subtree` dropped (its holds ended there)."""
        if node.detached:
            return
        count = node.lock_count
        if count <= 0:
            raise RuntimeError("release() without a matching hold()")
        node.lock_count = count - 1
        self._clock += 1
        node.last_access = self._clock
        if count == 1 and not node.pin_count:
            self._protected_blocks -= len(node.blocks)
            if node._kids is None and node.parent is not None:
                self._push(node)

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
        stack = list(node.iter_children())
        while stack:
            n = stack.pop()
            dropped.append(n)
            stack.extend(n.iter_children())
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
        parent._remove_child(node)
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
        O(L log L) when the policy's keys changed globally. A parent left a leaf by an
        eviction that would be popped next anyway is evicted directly (chains go without a
        heap round trip per block; the order is the same).
        """
        if self.policy.version != self._policy_version:
            self._rebuild_heap()
        policy = self.policy
        per_block = policy.rank_per_block
        on_evict = self._on_evict
        key_of = policy.key
        leaves = self._evictable_leaves
        freed: list[int] = []
        # self._heap, not a local: a push below may compact it into a new list.
        while len(freed) < num_blocks and self._heap:
            _, _, version, node = heapq.heappop(self._heap)
            if version != node.heap_version or node not in leaves:
                continue
            # The heap is not touched while a chain is walked, so its top is read once.
            top: Any = _UNREAD
            while True:
                size = len(node.blocks)
                take = 1 if per_block else min(num_blocks - len(freed), size)
                if on_evict is not None:
                    on_evict(node, take)
                self._cached_blocks -= take
                self._evicted_blocks += take
                if take < size:
                    victims = node.blocks[size - take :]
                    freed.extend(reversed(victims))
                    del node.blocks[-take:]
                    del node.pages[-take:]
                    self._rekey(node)
                    break
                freed.extend(reversed(node.blocks))
                # Unlink the evicted leaf (it was popped: it leaves the leaf set).
                if node in leaves:
                    leaves.remove(node)
                    node.heap_version += 1
                parent = node.parent
                assert parent is not None
                parent._remove_child(node)
                self._num_nodes -= 1
                node.parent = None
                if (
                    parent.parent is None
                    or parent._kids is not None
                    or parent.lock_count
                    or parent.pin_count
                ):
                    break
                key = key_of(parent)
                if len(freed) < num_blocks:
                    if top is _UNREAD:
                        top = self._live_top_key()
                    if top is _EMPTY or key < top:
                        node = parent  # the next victim: no push and pop
                        continue
                self._push(parent, key)
                break
        self._maybe_compact_heap()
        return freed

    def _live_top_key(self) -> Any:
        """The key of the heap's first live entry (stale tops are dropped on the way), or
        ``_EMPTY``."""
        heap = self._heap
        leaves = self._evictable_leaves
        while heap:
            top_key, _, version, node = heap[0]
            if version == node.heap_version and node in leaves:
                return top_key
            heapq.heappop(heap)
        return _EMPTY

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

    def num_evictable_leaves(self) -> int:
        """Leaves in the eviction heap (O(1)): what a policy-wide re-key would cost."""
        return len(self._evictable_leaves)

    def refresh_some(self, n: int) -> None:
        """Re-key up to ``n`` evictable leaves, going round all of them (O(n log L)).

        A policy whose keys drift with time (``session``) calls this per request instead of
        bumping ``version`` once a tree is large: re-keying every leaf at once would stall
        one step for O(L log L) at a GPU's pool size. Each leaf's key is then at most
        ``L / n`` requests old; leaves that got an event meanwhile were re-keyed by it.
        """
        pending, leaves = self._refresh_round, self._evictable_leaves
        for _ in range(n):
            if not pending:
                pending.extend(leaves)
                if not pending:
                    return
            node = pending.pop()
            if node in leaves:
                self._push(node)

    def cached_blocks(self) -> int:
        """Blocks the tree holds (O(1))."""
        return self._cached_blocks

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
        stack = [c for r in self._roots.values() for c in r.iter_children()]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(node.iter_children())

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
        child = node.child(pages[i])
        if child is None:
            return None, 0
        n = _common_pages(child.pages, pages, i)
        if n < child.num_blocks and split:
            child = self._split(child, n)
        return child, n

    def _split(self, node: RadixNode, n: int) -> RadixNode:
        """Cut ``node`` after ``n`` pages; returns the new upper part (O(B))."""
        parent = node.parent
        assert parent is not None and 0 < n < node.num_blocks
        upper = RadixNode(
            node.pages[:n],
            node.blocks[:n],
            parent,
            node.namespace,
            last_access=node.last_access,
            created_at=node.created_at,
            priority=node.priority,
            origin=node.origin,
            lock_count=node.lock_count,
            pin_count=node.pin_count,
            hit_count=node.hit_count,
        )
        if node._meta:
            upper._meta = dict(node._meta)
        parent._replace_child(node, upper)
        del node.pages[:n]
        del node.blocks[:n]
        node.parent = upper
        upper._add_child(node)
        self._num_nodes += 1
        self.policy.on_split(upper, node)
        self._rekey(node)
        return upper

    def _push(self, node: RadixNode, key: Any = None) -> None:
        """Enter the evictable leaf ``node`` in the heap under ``key`` (its policy key)."""
        node.heap_version += 1
        self._evictable_leaves.add(node)
        heapq.heappush(
            self._heap,
            (
                self.policy.key(node) if key is None else key,
                next(self._seq),
                node.heap_version,
                node,
            ),
        )
        # Every touch pushes a new entry; compact here too, not only in evict(), or a cache
        # that never fills grows its heap by one stale entry per request forever.
        self._maybe_compact_heap()

    def _rekey(self, node: RadixNode) -> None:
        """Re-enter ``node`` in the eviction heap if it is an evictable leaf (O(log L))."""
        if (
            node._kids is None
            and node.parent is not None
            and not node.lock_count
            and not node.pin_count
        ):
            self._push(node)
        else:
            self._forget_leaf(node)

    def _forget_leaf(self, node: RadixNode) -> None:
        leaves = self._evictable_leaves
        if node in leaves:
            leaves.remove(node)
            node.heap_version += 1

    def _rebuild_heap(self) -> None:
        self._policy_version = self.policy.version
        key = self.policy.key
        seq = self._seq
        heap = []
        for node in self._evictable_leaves:
            node.heap_version += 1
            heap.append((key(node), next(seq), node.heap_version, node))
        heapq.heapify(heap)
        self._heap = heap

    def _maybe_compact_heap(self) -> None:
        """Drop stale heap entries once they outnumber live ones 3:1. A small tree re-keys
        while at it (as it always has); a large one keeps each live entry's key (O(H)
        instead of O(L) policy calls, which would stall the step that compacts)."""
        leaves = self._evictable_leaves
        if len(self._heap) <= 4 * len(leaves) + 1024:
            return
        if len(leaves) <= LARGE_TREE_LEAVES:
            self._rebuild_heap()
            return
        heap = [e for e in self._heap if e[2] == e[3].heap_version and e[3] in leaves]
        heapq.heapify(heap)
        self._heap = heap


def _inherits(policy: EvictionPolicy, hook: str) -> bool:
    """Whether ``policy`` leaves ``hook`` as the policy interface defines it (a no-op)."""
    return getattr(type(policy), hook) is getattr(EvictionPolicy, hook)


def _common_pages(node_pages: Sequence[Page], pages: Sequence[Page], start: int) -> int:
    """How many of ``node_pages`` equal ``pages[start:]`` pairwise (O(matched·B))."""
    n = 0
    limit = min(len(node_pages), len(pages) - start)
    while n < limit and node_pages[n] == pages[start + n]:
        n += 1
    return n
