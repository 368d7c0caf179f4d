"""vLLM glue: a ``BlockPool`` whose prefix cache is indexed and evicted by the radix tree.

Written against vLLM 0.32.0 (``vllm/v1/core/block_pool.py``, ``kv_cache_utils.py``).

vLLM keeps free blocks in one LRU queue; cached blocks become eviction candidates when their
reference count drops to zero. Here the free blocks live in three tiers, handed out in order:

* blocks holding nothing (never used, or their content was never cached), most recently
  freed first, as vLLM does;
* blocks whose content vLLM's hash map still lists but the tree does not (a duplicate of a
  cached block, a continuation of an invalidated prefix), oldest release first: no lookup
  of the tree can hit them, yet vLLM announced them, so, as in vLLM, they are reused only
  once no empty block is left (each reuse is a ``BlockRemoved`` a router sees);
* cached blocks, which stay in the radix tree and are handed out leaf-first in the order of
  the configured eviction policy.

KV-cache events are vLLM's: a radix eviction hands the block out through vLLM's
``get_new_blocks``, which drops its hash and reports ``BlockRemoved``, exactly as for a stock
eviction. The pool also keeps each tree block's ``BlockStored`` payload (only while events are
on) so the host tier can announce the same content on the host medium, and announces blocks a
prefetch brings back (see ``kv_events``).

The tree holds one node per block, keyed by vLLM's chained block hash (which already covers
the prefix, LoRA and cache salt), so a node is protected exactly while its block's reference
count is positive. A duplicate block (same content as a cached one, computed again, e.g. the
last block of a fully cached prompt) is not in the tree: while it is in use it protects the
cached original, so every protected node's ancestors stay protected and the tree's evictable
count is exactly what can be handed out.

Everything else (hash map, events, metrics, reference counts) is vLLM's own code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vllm.distributed.kv_events import BlockStored
from vllm.v1.core.block_pool import BlockPool
from vllm.v1.core.kv_cache_utils import KVCacheBlock, make_block_hash_with_group_id

from radix_plugin.cache_manager.core.hints import RequestHintsMap
from radix_plugin.cache_manager.core.policies.session import SessionPolicy, tag_session
from radix_plugin.cache_manager.core.radix_tree import RadixNode, RadixTree
from radix_plugin.cache_manager.engine_core.kv_events import (
    StoredBlock,
    split_stored,
    stored_events,
)
from radix_plugin.compat import BlockPoolSeam

if TYPE_CHECKING:
    from vllm.v1.request import Request

    from radix_plugin.cache_manager.core.policies.base import EvictionPolicy


@dataclass(slots=True)
class PoolCounters:
    """Cumulative event counts of one pool, for /metrics (plain ints; never reset)."""

    evicted_capacity: int = 0
    """Cached blocks evicted because the pool needed free blocks."""
    evicted_invalidation: int = 0
    """Cached blocks dropped because vLLM forgot their hash (``evict_blocks``)."""
    evicted_reset: int = 0
    """Cached blocks dropped by a prefix-cache reset."""
    lookup_tokens: int = 0
    """Tokens requests' prefix lookups could have hit."""
    hit_tokens: int = 0
    """Tokens those lookups found cached."""


class RadixFreeQueue:
    """Drop-in for vLLM's ``FreeKVCacheBlockQueue`` over the three tiers described above.

    ``remove`` is called on every cache hit and must be O(1): a block outside the tree leaves
    a dict, a cached block just becomes protected in the tree.
    """

    def __init__(self, pool: RadixBlockPool, free_blocks: Sequence[KVCacheBlock]) -> None:
        self._pool = pool
        self._tree = pool.tree
        # Insertion-ordered dicts: the empty tier is a stack (popitem takes the last one in),
        # the hashed tier a queue (its first key is the oldest release).
        self._plain: dict[int, KVCacheBlock] = {b.block_id: b for b in reversed(free_blocks)}
        self._hashed: dict[int, KVCacheBlock] = {}

    @property
    def num_free_blocks(self) -> int:
        """Free blocks outside the tree plus the tree's unprotected (evictable) blocks, O(1).

        Derived rather than counted, so pins, aliases and invalidations can never make it
        drift from what ``popleft_n`` can actually hand out."""
        return len(self._plain) + len(self._hashed) + self._tree.evictable_blocks()

    # The FreeKVCacheBlockQueue interface ------------------------------------------------

    def popleft(self) -> KVCacheBlock:
        return self.popleft_n(1)[0]

    def popleft_n(self, n: int) -> list[KVCacheBlock]:
        if n > self.num_free_blocks:
            raise ValueError(f"cannot take {n} blocks: only {self.num_free_blocks} are free")
        out: list[KVCacheBlock] = []
        while self._plain and len(out) < n:
            out.append(self._plain.popitem()[1])
        while self._hashed and len(out) < n:
            out.append(self._hashed.pop(next(iter(self._hashed))))
        if len(out) < n:
            out.extend(self._pool.evict_cached(n - len(out)))
        if len(out) != n:
            raise RuntimeError(f"radix free queue out of sync: wanted {n}, got {len(out)}")
        return out

    def has_blocks_outside_tree(self) -> bool:
        """Whether a block can be handed out without evicting anything the tree serves."""
        return bool(self._plain or self._hashed)

    def remove(self, block: KVCacheBlock) -> None:
        if (
            self._plain.pop(block.block_id, None) is None
            and self._hashed.pop(block.block_id, None) is None
        ):
            self._pool.on_cached_block_used(block)

    def append(self, block: KVCacheBlock) -> None:
        self.append_n([block])

    def append_n(self, blocks: Iterable[KVCacheBlock]) -> None:
        released = self._pool.on_block_released
        for block in blocks:
            if not released(block):
                self._park(block)

    def _park(self, block: KVCacheBlock) -> None:
        """A free block outside the tree: empty, or still listed in vLLM's hash map."""
        if block.block_hash is None:
            self._plain[block.block_id] = block
        else:
            self._hashed[block.block_id] = block

    def prepend_n(self, blocks: Iterable[KVCacheBlock]) -> None:
        # Uncached blocks go first (LIFO), as in vLLM; cached ones stay ordered by the tree.
        self.append_n(blocks)

    def get_all_free_blocks(self) -> list[KVCacheBlock]:
        """Free blocks in the order they are handed out, the tree's unordered (for tests and
        introspection; O(N))."""
        plain = [*reversed(self._plain.values()), *self._hashed.values()]
        tree_free = [
            self._pool.blocks[b]
            for node in self._pool.tree.iter_nodes()
            if not node.is_protected
            for b in node.blocks
        ]
        return plain + tree_free

    def iter_blocks_after(self, cursor: KVCacheBlock | None) -> Iterator[KVCacheBlock]:
        raise NotImplementedError(
            "radix_plugin orders cached blocks by its eviction policy, not by a list a cursor "
            "can walk; it cannot be combined with VLLM_USE_SIMPLE_KV_OFFLOAD"
        )

    def move_from_tree(self, blocks: Iterable[KVCacheBlock]) -> None:
        """Blocks that were free in the tree and left it; they are still free."""
        for block in blocks:
            self._park(block)

    def forget_hashes(self) -> None:
        """vLLM's prefix-cache reset dropped every hash: the hashed tier is empty blocks."""
        self._plain.update(self._hashed)
        self._hashed.clear()


class RadixBlockPool(BlockPoolSeam):
    """vLLM's ``BlockPool`` with the radix tree as prefix index and eviction order."""

    def __init__(
        self,
        num_gpu_blocks: int,
        enable_caching: bool,
        hash_block_size: int,
        enable_kv_cache_events: bool = False,
        metrics_collector: Any = None,
        *,
        policy: EvictionPolicy,
        max_pinned_blocks: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            num_gpu_blocks,
            enable_caching,
            hash_block_size,
            enable_kv_cache_events,
            metrics_collector,
            **kwargs,
        )
        self.tree = RadixTree(
            hash_block_size, policy, max_pinned_blocks=max_pinned_blocks, path_compression=False
        )
        if isinstance(policy, SessionPolicy):
            policy.limit_shadows(num_gpu_blocks - 1)  # the null block is never cached
        # Block id -> its tree node (a list: one slot per block, no per-entry object).
        self._node_of: list[RadixNode | None] = [None] * num_gpu_blocks
        # Page key (vLLM's chained block hash with group id) -> node, for lookups that
        # binary-search a request's hashes instead of walking the tree block by block.
        self._node_by_key: dict[Any, RadixNode] = {}
        self._alias_of: dict[int, RadixNode] = {}
        self._eviction_listeners: list[Callable[[list[KVCacheBlock]], None]] = []
        self._reset_listeners: list[Callable[[], None]] = []
        # Block id -> how its content was announced; only for tree blocks, only with events.
        self._stored: dict[int, StoredBlock] = {}
        # The radix scheduler shares its own map, filled when requests are added.
        self.request_hints = RequestHintsMap()
        self.counters = PoolCounters()
        still_free = [b for b in self.blocks if not b.is_null]
        self.replace_free_queue(RadixFreeQueue(self, still_free))

    # --- lookup --------------------------------------------------------------------------

    def longest_cached_prefix(
        self, block_hashes: Sequence[Any], max_blocks: int, group_id: int = 0
    ) -> list[KVCacheBlock]:
        """Blocks of the longest cached prefix, from the tree (no side effects;
        O(log P) lookups plus O(hit) to collect the blocks)."""
        n, node = self._longest(block_hashes, max_blocks, group_id)
        out: list[KVCacheBlock] = [None] * n  # type: ignore[list-item]
        blocks = self.blocks
        for i in range(n - 1, -1, -1):
            out[i] = blocks[node.blocks[0]]
            node = node.parent  # type: ignore[assignment]
        return out

    def request_lookup(
        self, block_hashes: Sequence[Any], max_tokens: int, group_id: int = 0
    ) -> list[KVCacheBlock]:
        """vLLM's prefix lookup for a request (``compat.install_lookup_patch``): the blocks of
        the longest cached prefix of at most ``max_tokens`` tokens, counted for /metrics."""
        blocks = self.longest_cached_prefix(
            block_hashes, max_tokens // self.hash_block_size, group_id
        )
        self.counters.lookup_tokens += max_tokens
        self.counters.hit_tokens += len(blocks) * self.hash_block_size
        return blocks

    def cached_prefix_node(
        self, block_hashes: Sequence[Any], group_id: int = 0
    ) -> tuple[int, RadixNode]:
        """Cached prefix length in blocks and the node that ends it, without side effects
        (O(log P) lookups)."""
        return self._longest(block_hashes, len(block_hashes), group_id)

    def still_cached_prefix(
        self, block_hashes: Sequence[Any], n: int, node: RadixNode, group_id: int = 0
    ) -> bool:
        """Whether :meth:`cached_prefix_node` would still answer ``(n, node)``: block
        ``n - 1`` is still indexed as ``node`` and block ``n`` is still not cached (two
        probes; chained hashes make that the whole answer, as in :meth:`_longest`)."""
        index = self._node_by_key
        if n:
            if index.get(make_block_hash_with_group_id(block_hashes[n - 1], group_id)) is not node:
                return False
        elif node is not self.tree.root():
            return False  # a reset made new roots
        return n >= len(block_hashes) or (
            make_block_hash_with_group_id(block_hashes[n], group_id) not in index
        )

    def _longest(
        self, block_hashes: Sequence[Any], max_blocks: int, group_id: int
    ) -> tuple[int, RadixNode]:
        """Binary search for the longest prefix of ``block_hashes`` in the tree.

        vLLM's block hashes are chained (each covers its whole prefix) and the tree holds a
        node only together with its ancestors (eviction is leaf-first, invalidation drops
        whole subtrees), so "block ``i`` is cached" is true up to the hit length and false
        after it: one probe of the key index per halving instead of one per block.
        """
        index = self._node_by_key
        lo, hi = 0, min(max_blocks, len(block_hashes))
        node: RadixNode | None = None
        while lo < hi:
            mid = (lo + hi + 1) >> 1
            found = index.get(make_block_hash_with_group_id(block_hashes[mid - 1], group_id))
            if found is None:
                hi = mid - 1
            else:
                lo, node = mid, found
        return lo, node if node is not None else self.tree.root()

    # --- caching -------------------------------------------------------------------------

    def cache_full_blocks(
        self,
        request: Request,
        blocks: list[KVCacheBlock],
        num_cached_blocks: int,
        num_full_blocks: int,
        block_size: int,
        kv_cache_group_id: int,
        block_mask: list[bool] | None = None,
    ) -> None:
        queued = len(self.kv_event_queue)
        super().cache_full_blocks(
            request,
            blocks,
            num_cached_blocks,
            num_full_blocks,
            block_size,
            kv_cache_group_id,
            block_mask,
        )
        if num_cached_blocks >= num_full_blocks or not self.enable_caching:
            return
        new_blocks = blocks[num_cached_blocks:num_full_blocks]
        # Sliding-window style sparse prefixes (null blocks stand for those left behind, at
        # the front) are not radix paths; a full-attention prefix has none.
        if block_mask is not None or blocks[0].is_null or any(b.is_null for b in new_blocks):
            return
        if block_size != self.hash_block_size:
            return  # hybrid block sizes: vLLM's own hash map still serves them
        parent = self.tree.root()
        if num_cached_blocks:
            parent = self.node_of_block(blocks[num_cached_blocks - 1].block_id)
            if parent is None:
                return  # the prefix left the index (invalidated); its continuation cannot match
        # vLLM just set each block's hash with group id: the tree's page key, shared.
        pages = [b.block_hash for b in new_blocks]
        ids = [b.block_id for b in new_blocks]
        already, nodes = self.tree.insert_blocks(
            pages, ids, parent, priority=self.request_hints.get(request).priority, hold=True
        )
        announced = self._announced_blocks(queued, len(new_blocks))
        node_of, by_key = self._node_of, self._node_by_key
        for i, block in enumerate(new_blocks):
            node = nodes[i]
            if i < already:
                if node.blocks[0] != block.block_id and block.ref_cnt > 0:
                    # A duplicate of a cached block: while in use it protects the original.
                    self._alias_of[block.block_id] = node
                    self.tree.hold(node)
                continue
            node_of[block.block_id] = node
            by_key[pages[i]] = node
            if announced:
                self._stored[block.block_id] = announced[i]
            if block.ref_cnt == 0:
                self.tree.release(node)  # created held: a block no request holds is free
        tag_session(self.tree, request.request_id, nodes[-1])

    def _announced_blocks(self, queued: int, n: int) -> list[StoredBlock]:
        """The per-block payloads of the ``BlockStored`` vLLM just queued for ``n`` blocks
        (the events after index ``queued``); empty with events off."""
        stored = [e for e in self.kv_event_queue[queued:] if isinstance(e, BlockStored)]
        if not stored:
            return []
        blocks = split_stored(stored[-1])
        assert len(blocks) == n, f"vLLM announced {len(blocks)} of {n} new full blocks"
        return blocks

    def stored_block(self, block_id: int) -> StoredBlock | None:
        """How a cached tree block's content was announced (``None`` with events off)."""
        return self._stored.get(block_id)

    def touch(self, blocks: Sequence[KVCacheBlock]) -> None:
        super().touch(blocks)
        for block in reversed(blocks):
            node = self.node_of_block(block.block_id)
            if node is not None:
                self.tree.touch(node)
                break

    # --- free-queue callbacks ------------------------------------------------------------

    def on_cached_block_used(self, block: KVCacheBlock) -> None:
        """A free cached block got a user (a cache hit)."""
        node = self._node_of[block.block_id]
        assert node is not None
        self.tree.hold(node)

    def on_block_released(self, block: KVCacheBlock) -> bool:
        """A block's last user left; True if the tree keeps it (cached), False if it goes to
        the uncached tier."""
        if self._alias_of:
            alias = self._alias_of.pop(block.block_id, None)
            if alias is not None:
                self.tree.release(alias)
                return False
        node = self._node_of[block.block_id]
        if node is None:
            return False
        self.tree.release(node)
        return True

    def pin_prefix(self, node: RadixNode) -> None:
        """Pin the cached prefix ending at ``node`` (``radix_pin``); may raise
        ``PinBudgetExceeded``. Pinned blocks stop counting as free."""
        self.tree.pin(node)

    def unpin_prefix(self, node: RadixNode) -> None:
        self.tree.unpin(node)

    def evict_cached(self, n: int) -> list[KVCacheBlock]:
        """Take ``n`` cached free blocks out of the tree, leaf-first in policy order."""
        ids = self.tree.evict(n)
        self.counters.evicted_capacity += len(ids)
        node_of, by_key, blocks = self._node_of, self._node_by_key, self.blocks
        evicted = []
        for block_id in ids:
            node = node_of[block_id]
            assert node is not None
            del by_key[node.pages[0]]
            node_of[block_id] = None
            evicted.append(blocks[block_id])
        for listener in self._eviction_listeners:
            listener(evicted)
        stored = self._stored
        if stored:  # only with KV events on
            for block_id in ids:
                stored.pop(block_id, None)
        return evicted

    def add_eviction_listener(self, listener: Callable[[list[KVCacheBlock]], None]) -> None:
        """Call ``listener`` with every batch of evicted cached blocks, while they still
        carry their block hash and content (the host tier copies them out)."""
        self._eviction_listeners.append(listener)

    def add_reset_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every successful prefix-cache reset (which queued an
        ``AllBlocksCleared`` event)."""
        self._reset_listeners.append(listener)

    # --- host-tier prefetch --------------------------------------------------------------

    def hold_blocks(self, blocks: Sequence[KVCacheBlock]) -> None:
        """Take a reference on cached blocks, as a request hit would, without counting a
        hit (a prefetch keeps the prefix it continues from being evicted)."""
        BlockPool.touch(self, blocks)

    def take_blocks_for_prefetch(
        self, n: int, may_evict: Callable[[RadixNode], bool]
    ) -> list[KVCacheBlock]:
        """Up to ``n`` blocks for a prefetch: free blocks outside the tree first, then cached ones,
        but only while the next eviction victim passes ``may_evict`` (a prefetch must not
        evict what is needed sooner than what it brings back)."""
        queue: RadixFreeQueue = self.free_block_queue  # type: ignore[assignment]
        taken: list[KVCacheBlock] = []
        while len(taken) < n:
            if not queue.has_blocks_outside_tree():
                victim = self.tree.next_victim()
                if victim is None or not may_evict(victim):
                    break
            taken.extend(self.get_new_blocks(1))
        return taken

    def adopt_loaded_blocks(
        self,
        parent: RadixNode | None,
        blocks: Sequence[KVCacheBlock],
        block_hashes: Sequence[Any],
        first_block_index: int,
        announce: Sequence[StoredBlock] | None = None,
    ) -> RadixNode | None:
        """Index blocks a prefetch filled as the cached continuation of ``parent`` (``None``:
        the root), then drop the prefetch's reference so they are ordinary cached blocks.

        ``block_hashes`` are vLLM's hashes with group id, ``first_block_index`` the position
        of the first block in its sequence, ``announce`` their payloads (required while KV
        events are on: each newly cached block is reported ``BlockStored`` on this pool's
        medium). Blocks whose content got cached meanwhile by a request are duplicates and
        go back uncached. Returns the last indexed node."""
        if self.enable_kv_cache_events and announce is None:
            raise ValueError("with KV events on, prefetched blocks need their payloads")
        last: RadixNode | None = None
        cached: list[StoredBlock] = []
        if parent is None or parent.parent is not None:
            ids = [b.block_id for b in blocks]
            start = parent if parent is not None else self.tree.root()
            already, nodes = self.tree.insert_blocks(list(block_hashes), ids, start, hold=True)
            for i, (block, page) in enumerate(zip(blocks, block_hashes, strict=True)):
                node = nodes[i]
                if i < already:
                    continue
                num_tokens = (first_block_index + i + 1) * self.hash_block_size
                self.insert_cached_hash(page, block, num_tokens=num_tokens)
                if announce is not None and self.enable_kv_cache_events:
                    self._stored[block.block_id] = announce[i]
                    cached.append(announce[i])
                self._node_of[block.block_id] = node
                self._node_by_key[page] = node
                node.hit_count = max(node.hit_count, 1)  # brought back for reuse
                last = node
        self.kv_event_queue.extend(stored_events(cached, self.medium))
        self.free_blocks(blocks)
        return last

    # --- invalidation --------------------------------------------------------------------

    def on_cached_hash_removed(self, block: KVCacheBlock) -> None:
        node = self._node_of[block.block_id]
        if node is not None:
            self._drop_subtree(node)

    def _drop_subtree(self, node: RadixNode) -> None:
        """A prefix was invalidated from outside: it and its continuations leave the index;
        their free blocks stay free, outside the tree. Blocks in use (and duplicates
        of dropped blocks) leave the maps too, so their release finds nothing to undo."""
        still_free = []
        for dropped in self.tree.remove_subtree(node):
            self.counters.evicted_invalidation += dropped.num_blocks
            block = self.blocks[dropped.blocks[0]]
            self._node_of[block.block_id] = None
            del self._node_by_key[dropped.pages[0]]
            self._stored.pop(block.block_id, None)
            if block.ref_cnt == 0:
                still_free.append(block)
        for alias, target in list(self._alias_of.items()):
            if target.detached:
                del self._alias_of[alias]
        self.free_block_queue.move_from_tree(still_free)  # type: ignore[attr-defined]

    def reset_prefix_cache(self) -> bool:
        pinned_free = sum(1 for n in self.tree.iter_nodes() if n.pin_count and not n.lock_count)
        if self.num_gpu_blocks - 1 - self.get_num_free_blocks() - pinned_free == 0:
            self.tree.clear_pins()  # nothing in use: a reset drops pins too
        if not super().reset_prefix_cache():
            return False
        freed = self.tree.reset()
        assert freed is not None, "vLLM reported no block in use but the tree has protected ones"
        self.counters.evicted_reset += len(freed)
        queue: RadixFreeQueue = self.free_block_queue  # type: ignore[assignment]
        queue.forget_hashes()
        queue.move_from_tree(self.blocks[b] for b in freed)
        self._node_of = [None] * self.num_gpu_blocks
        self._node_by_key.clear()
        self._alias_of.clear()
        self._stored.clear()
        for listener in self._reset_listeners:
            listener()
        return True

    # --- hints ---------------------------------------------------------------------------

    def page_keys(self, block_hashes: Iterable[Any], group_id: int = 0) -> list[Any]:
        """The tree's page keys for a request's block hashes (what policies see as pages)."""
        return [make_block_hash_with_group_id(h, group_id) for h in block_hashes]

    def node_of_block(self, block_id: int) -> RadixNode | None:
        return self._node_of[block_id] or self._alias_of.get(block_id)
