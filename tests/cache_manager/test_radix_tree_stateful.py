"""Model-based test of the radix tree: random operation sequences against a naive reference.

The reference is deliberately dumb: a dict from ``(namespace, full page-prefix tuple)`` to the
block id caching that prefix's last page, plus the lists of lock and pin handles. Everything
the tree keeps incrementally (split nodes, lazy eviction heap, protected/pinned/evictable
counters, hit statistics) is recomputed from scratch after every step and compared, and every
block id is accounted for: the free list, the tree and the caller's held blocks partition the
pool exactly, so a leaked or double-owned block fails immediately.

Small block sizes, three page patterns (two of which agree on their first tokens, so queries
also diverge inside a page) and sequences cut from a few shared bases or replayed from earlier
inserts make prefixes collide, hit, split and diverge constantly, which is where a radix tree
goes wrong.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, ClassVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from radix_plugin.cache_manager.core.radix_tree import (
    PinBudgetExceeded,
    RadixNode,
    RadixTree,
)
from radix_plugin.cache_manager.core.registry import make_eviction_policy

POOL = 24
PIN_BUDGET = 4
NAMESPACES: list[Hashable] = [None, "lora-b"]
PAGE_TOKENS = [(0, 0, 0, 0), (0, 0, 1, 1), (1, 0, 0, 1)]
"""Token patterns of page symbols 0-2, cut to the block size (so they may coincide)."""
BASES = [(0,) * 6, (0, 1) * 3, (2,) * 6, (1, 2) * 3]
ORDERED_POLICIES = {"lru", "lfu", "priority", "pinned"}
"""Policies whose keys change only on per-node events, so eviction must follow them exactly.
(adaptive's keys drift with its global credit/lifetime, so only the structure is checked.)"""

Key = tuple[Hashable, tuple[Hashable, ...]]
"""A cached page in the reference: (namespace, every page from the root to it)."""

symbol_seqs = st.builds(
    lambda base, cut, tail: [*base[:cut], *tail],
    st.sampled_from(BASES),
    st.integers(0, 6),
    st.lists(st.integers(0, 2), max_size=4),
)
namespaces = st.sampled_from(NAMESPACES)
indices = st.integers(0, 1_000)
Query = tuple[str, int, list[int], int, int]
queries = st.tuples(
    st.sampled_from(["fresh", "again", "cut"]),
    indices,
    symbol_seqs,
    st.integers(0, 10),
    st.integers(0, 3),
)
"""(kind, which earlier insert, fresh page symbols, cut, partial-page tokens): a fresh
sequence, an earlier insert replayed, or an earlier insert cut short and continued with fresh
pages. Replays are what make whole leaves hit, lock, pin and split."""


@dataclass(frozen=True)
class Handle:
    """A lock or pin the test holds: the node the tree gave back and the prefix it ends."""

    key: Key
    node: RadixNode


def node_key(node: RadixNode) -> Key:
    """The reference key of ``node``'s last page (its whole path's pages)."""
    pages: list[Hashable] = []
    for n in reversed(list(node.path_to_root())):
        pages.extend(n.pages)
    return (node.namespace, tuple(pages))


def covers(handle: Handle, key: Key) -> bool:
    """Whether the prefix ``key`` lies on the path that ``handle`` protects."""
    (ns, pages), (hns, hpages) = key, handle.key
    return ns == hns and len(pages) <= len(hpages) and hpages[: len(pages)] == pages


class RadixMachine(RuleBasedStateMachine):
    """Drives one tree with random operations; the subclasses pick the policy."""

    policy_name: ClassVar[str] = "lru"

    def __init__(self) -> None:
        super().__init__()
        self.tree: RadixTree | None = None

    # ------------------------------------------------------------------ setup

    @initialize(
        block_size=st.integers(1, 4), path_compression=st.booleans(), token_ids=st.booleans()
    )
    def setup(self, block_size: int, path_compression: bool, token_ids: bool) -> None:
        """A fresh tree; ``path_compression=False`` (one node per block) is what the vLLM
        block pool uses, so both shapes must keep every invariant; a tree takes token ids or
        pages, and every rule passes the tree's kind (:meth:`keys`)."""
        options: dict[str, Any] = {"min_hits": 2} if self.policy_name == "pinned" else {}
        policy = make_eviction_policy(self.policy_name, online=True, **options)
        self.tree = RadixTree(
            block_size,
            policy,
            max_pinned_blocks=PIN_BUDGET,
            path_compression=path_compression,
            token_ids=token_ids,
        )
        self.bs = block_size
        self.free: list[int] = list(range(POOL))
        self.held: list[int] = []
        self.ref: dict[Key, int] = {}
        self.locks: list[Handle] = []
        self.pins: list[Handle] = []
        self.lookups = self.lookup_blocks = self.hit_blocks = 0
        self.inserted = self.evicted = 0
        self.seen: list[tuple[Hashable, list[int]]] = []
        """(namespace, page symbols) of every insert so far, for replays."""

    # ------------------------------------------------------------------ reference helpers

    def query(self, ns: Hashable, q: Query, *, record: bool = False) -> tuple[Hashable, list[int]]:
        """Resolve a :data:`queries` draw to ``(namespace, token ids)``."""
        kind, i, fresh, cut, partial = q
        symbols = fresh
        if kind != "fresh" and self.seen:
            ns, seen = self.seen[i % len(self.seen)]
            symbols = seen if kind == "again" else seen[:cut] + fresh[cut:]
        if record:
            self.seen.append((ns, symbols))
        tokens = [t for s in symbols for t in PAGE_TOKENS[s][: self.bs]]
        return ns, tokens + [1] * min(partial, self.bs - 1)

    @property
    def t(self) -> RadixTree:
        assert self.tree is not None
        return self.tree

    def keys(self, tokens: list[int]) -> list[Any]:
        """What the tree takes for ``tokens``: the token ids, or their pages."""
        return tokens if self.t.token_ids else self.pages(tokens)

    def pages(self, tokens: list[int]) -> list[tuple[int, ...]]:
        bs = self.bs
        return [tuple(tokens[i : i + bs]) for i in range(0, len(tokens) - bs + 1, bs)]

    def ref_match(self, ns: Hashable, pages: list[Any]) -> list[int]:
        """The reference's longest cached prefix of ``pages``: its block ids."""
        blocks = []
        for j in range(1, len(pages) + 1):
            b = self.ref.get((ns, tuple(pages[:j])))
            if b is None:
                break
            blocks.append(b)
        return blocks

    def explicit_count(self, handles: list[Handle], node: RadixNode) -> int:
        """How many of ``handles`` protect ``node`` (their path includes its first page)."""
        first = node_key(node)
        first = (first[0], first[1][: len(first[1]) - node.num_blocks + 1])
        return sum(covers(h, first) for h in handles)

    def protected_keys(self) -> set[Key]:
        """Pages under an explicit lock or pin, plus the pinned policy's automatic pins."""
        keys = {
            (h.key[0], h.key[1][:j])
            for h in self.locks + self.pins
            for j in range(1, len(h.key[1]) + 1)
        }
        for node, node_keys in self.tree_nodes():
            if node.pin_count > self.explicit_count(self.pins, node):
                assert self.policy_name == "pinned", "only the pinned policy pins by itself"
                keys.update(node_keys)
        return keys

    def pinned_keys(self) -> set[Key]:
        """Pages under an explicit pin or an automatic one (the pinned policy's)."""
        keys = {(h.key[0], h.key[1][:j]) for h in self.pins for j in range(1, len(h.key[1]) + 1)}
        for node, node_keys in self.tree_nodes():
            if node.pin_count > self.explicit_count(self.pins, node):
                keys.update(node_keys)
        return keys

    def tree_nodes(self) -> list[tuple[RadixNode, list[Key]]]:
        """Every tree node with the reference keys of its pages, from a fresh walk."""
        out = []
        for node in self.t.iter_nodes():
            ns, full = node_key(node)
            start = len(full) - node.num_blocks
            out.append((node, [(ns, full[: start + i + 1]) for i in range(node.num_blocks)]))
        return out

    def path_blocks(self, node: RadixNode) -> list[int]:
        return [b for n in reversed(list(node.path_to_root())) for b in n.blocks]

    def take_free(self, n: int) -> list[int]:
        """Pop ``n`` free blocks, evicting the shortfall first when the tree can spare it."""
        shortfall = n - len(self.free)
        if shortfall > 0:
            self.check_evict(min(shortfall, self.t.evictable_blocks()))
        n = min(n, len(self.free))
        return [self.free.pop() for _ in range(n)]

    def check_evict(self, n: int) -> list[int]:
        """``tree.evict(n)`` checked page by page against the reference."""
        protected = self.protected_keys()
        key_of: dict[Key, Any] = {}
        if self.policy_name in ORDERED_POLICIES:
            for node, node_keys in self.tree_nodes():
                if not node.is_protected:
                    k = self.t.policy.key(node)
                    key_of.update(dict.fromkeys(node_keys, k))
        evictable = sum(k not in protected for k in self.ref)
        freed = self.t.evict(n)
        assert len(freed) == min(max(n, 0), evictable)
        by_block = {b: k for k, b in self.ref.items()}
        for b in freed:
            assert b in by_block, f"evict returned block {b} the tree did not hold"
            key = by_block.pop(b)
            assert key not in protected, f"evicted protected page {key}"
            parents = {(ns, pages[:-1]) for ns, pages in self.ref}
            assert key not in parents, f"evicted {key} before its descendants"
            if key_of:
                leaves = [k for k in self.ref if k not in protected and k not in parents]
                best = min(key_of[k] for k in leaves)
                assert key_of[key] == best, f"{self.policy_name} evicted {key} out of order"
            del self.ref[key]
        self.free.extend(freed)
        self.evicted += len(freed)
        return freed

    # ------------------------------------------------------------------ rules

    @rule(ns=namespaces, q=queries, priority=st.integers(0, 2))
    def insert_fresh(self, ns: Hashable, q: Query, priority: int) -> None:
        """Insert with all-new block ids; the already-cached ones stay the caller's."""
        ns, tokens = self.query(ns, q, record=True)
        pages = self.pages(tokens)
        blocks = self.take_free(len(pages))
        expected_already = len(self.ref_match(ns, pages[: len(blocks)]))
        already, node = self.t.insert(self.keys(tokens), blocks, ns, priority=priority)
        assert already == expected_already
        if blocks:
            assert node_key(node) == (ns, tuple(pages[: len(blocks)]))
            assert self.path_blocks(node) == self.ref_match(ns, pages[:already]) + blocks[already:]
        else:
            assert node is self.t.root(ns)
        for j in range(already, len(blocks)):
            self.ref[(ns, tuple(pages[: j + 1]))] = blocks[j]
        self.inserted += len(blocks) - already
        self.free.extend(blocks[:already])  # duplicates: the caller frees its own copies

    @rule(ns=namespaces, q=queries)
    def insert_reusing_match(self, ns: Hashable, q: Query) -> None:
        """The scheduler's protocol: match, lock, evict for room, insert, unlock."""
        ns, tokens = self.query(ns, q, record=True)
        pages = self.pages(tokens)
        m = self.t.match_prefix(self.keys(tokens), ns, touch=False, split=True)
        assert m.blocks == self.ref_match(ns, pages)
        self.t.lock(m.last_node)
        handle = Handle((ns, tuple(pages[: len(m.blocks)])), m.last_node)
        self.locks.append(handle)
        new = self.take_free(len(pages) - len(m.blocks))
        already, node = self.t.insert(self.keys(tokens), m.blocks + new, ns)
        assert already == len(m.blocks)
        assert self.path_blocks(node) == m.blocks + new
        for j in range(len(new)):
            self.ref[(ns, tuple(pages[: already + j + 1]))] = new[j]
        self.inserted += len(new)
        self.locks.remove(handle)
        self.t.unlock(m.last_node)

    @rule(
        ns=namespaces,
        q=queries,
        mode=st.sampled_from([(True, True), (True, True), (False, True), (False, False)]),
        max_blocks=st.none() | st.integers(0, 6),
    )
    def match(
        self, ns: Hashable, q: Query, mode: tuple[bool, bool], max_blocks: int | None
    ) -> None:
        ns, tokens = self.query(ns, q)
        touch, split = mode
        pages = self.pages(tokens)
        if max_blocks is not None:
            pages = pages[:max_blocks]
        nodes_before = self.t.stats().num_nodes
        m = self.t.match_prefix(
            self.keys(tokens), ns, touch=touch, split=split, max_blocks=max_blocks
        )
        assert m.blocks == self.ref_match(ns, pages)
        if split:
            assert node_key(m.last_node) == (ns, tuple(pages[: len(m.blocks)]))
        else:
            assert self.t.stats().num_nodes == nodes_before
            assert m.last_node.depth_in_blocks() <= len(m.blocks)
        if touch:
            self.lookups += 1
            self.lookup_blocks += len(pages)
            self.hit_blocks += len(m.blocks)

    @rule(ns=namespaces, q=queries)
    def lock(self, ns: Hashable, q: Query) -> None:
        ns, tokens = self.query(ns, q)
        m = self.t.match_prefix(self.keys(tokens), ns, touch=False)
        if not m.blocks:
            return
        self.t.lock(m.last_node)
        self.locks.append(Handle(node_key(m.last_node), m.last_node))

    @precondition(lambda self: self.locks)
    @rule(i=indices)
    def unlock(self, i: int) -> None:
        handle = self.locks.pop(i % len(self.locks))
        self.t.unlock(handle.node)

    @precondition(lambda self: self.locks)
    @rule(i=indices)
    def touch_locked(self, i: int) -> None:
        """An admitted request counts as a hit only now (it was matched with touch=False)."""
        handle = self.locks[i % len(self.locks)]
        self.t.touch(handle.node, query_blocks=len(handle.key[1]) + 1)
        self.lookups += 1
        self.lookup_blocks += len(handle.key[1]) + 1
        self.hit_blocks += len(handle.key[1])

    @rule(ns=namespaces, q=queries)
    def pin(self, ns: Hashable, q: Query) -> None:
        ns, tokens = self.query(ns, q)
        m = self.t.match_prefix(self.keys(tokens), ns, touch=False)
        if not m.blocks:
            return
        key = node_key(m.last_node)
        pinned = self.pinned_keys()
        new = sum((ns, key[1][:j]) not in pinned for j in range(1, len(key[1]) + 1))
        before = self.t.stats()
        try:
            self.t.pin(m.last_node)
        except PinBudgetExceeded:
            assert len(pinned) + new > PIN_BUDGET
            assert self.t.stats() == before, "a refused pin must change nothing"
            return
        assert len(pinned) + new <= PIN_BUDGET
        self.pins.append(Handle(key, m.last_node))

    @precondition(lambda self: self.pins)
    @rule(i=indices)
    def unpin(self, i: int) -> None:
        handle = self.pins.pop(i % len(self.pins))
        self.t.unpin(handle.node)

    @rule(ns=namespaces, q=queries)
    def release_unlocked_raises(self, ns: Hashable, q: Query) -> None:
        """unlock/unpin of a node nobody locked/pinned raise and change nothing."""
        ns, tokens = self.query(ns, q)
        m = self.t.match_prefix(self.keys(tokens), ns, touch=False, split=False)
        node = m.last_node
        if node.is_root:
            return
        before = self.t.stats()
        if self.explicit_count(self.locks, node) == 0:
            try:
                self.t.unlock(node)
            except RuntimeError as e:
                assert "without a matching lock" in str(e)
            else:
                raise AssertionError("unlock() of an unlocked node did not raise")
        if node.pin_count == 0:
            try:
                self.t.unpin(node)
            except RuntimeError as e:
                assert "without a matching pin" in str(e)
            else:
                raise AssertionError("unpin() of an unpinned node did not raise")
        assert self.t.stats() == before

    @rule(n=st.integers(-1, 8))
    def evict(self, n: int) -> None:
        self.check_evict(n)

    @rule(n=st.integers(1, 4))
    def hold(self, n: int) -> None:
        """A running request takes private blocks (decode slots) from the free list."""
        self.held.extend(self.take_free(n))

    @precondition(lambda self: self.held)
    @rule(n=st.integers(1, 4))
    def give_back(self, n: int) -> None:
        for _ in range(min(n, len(self.held))):
            self.free.append(self.held.pop())

    @rule(go=st.integers(0, 4))
    def reset(self, go: int) -> None:
        """Rarely (one draw in five), so that trees get big between resets."""
        if go:
            return
        protected = self.protected_keys()
        result = self.t.reset()
        if protected:
            assert result is None, "reset() must refuse while anything is protected"
            return
        assert result is not None
        assert sorted(result) == sorted(self.ref.values())
        self.free.extend(result)
        self.ref.clear()
        self.inserted = self.evicted = 0

    # ------------------------------------------------------------------ invariants

    @invariant()
    def blocks_partition_the_pool(self) -> None:
        if self.tree is None:
            return
        owned = self.free + self.held + self.t.cached_block_ids()
        assert sorted(owned) == list(range(POOL)), "a block was lost or is owned twice"

    @invariant()
    def tree_holds_exactly_the_reference(self) -> None:
        if self.tree is None:
            return
        seen: dict[Key, int] = {}
        for node, keys in self.tree_nodes():
            assert node.num_blocks == len(node.pages) > 0
            assert node.parent is not None
            assert node.parent.children[node.pages[0]] is node
            assert node.namespace == node.parent.namespace
            for key, block in zip(keys, node.blocks, strict=True):
                assert key not in seen, f"page {key} cached twice"
                seen[key] = block
        assert seen == self.ref

    @invariant()
    def protection_matches_the_handles(self) -> None:
        if self.tree is None:
            return
        for node, _ in self.tree_nodes():
            assert node.lock_count == self.explicit_count(self.locks, node)
            explicit_pins = self.explicit_count(self.pins, node)
            if self.policy_name == "pinned":
                assert node.pin_count >= explicit_pins
            else:
                assert node.pin_count == explicit_pins
        for h in self.locks + self.pins:
            assert h.node.parent is not None, "a protected node left the tree"
            assert node_key(h.node) == h.key

    @invariant()
    def stats_match_a_recount(self) -> None:
        if self.tree is None:
            return
        nodes = [n for n, _ in self.tree_nodes()]
        s = self.t.stats()
        protected = sum(n.num_blocks for n in nodes if n.is_protected)
        assert s.num_nodes == len(nodes)
        assert s.cached_blocks == len(self.ref)
        assert s.protected_blocks == protected == len(self.protected_keys())
        assert s.pinned_blocks == sum(n.num_blocks for n in nodes if n.pin_count)
        assert s.pinned_blocks == len(self.pinned_keys()) <= PIN_BUDGET
        assert s.evictable_blocks == self.t.evictable_blocks() == len(self.ref) - protected
        assert (s.inserted_blocks, s.evicted_blocks) == (self.inserted, self.evicted)
        assert (s.lookups, s.lookup_blocks, s.hit_blocks) == (
            self.lookups,
            self.lookup_blocks,
            self.hit_blocks,
        )
        leaves = {n for n in nodes if n.is_leaf and not n.is_protected}
        assert self.t.evictable_leaves() == leaves


SETTINGS = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _test_case_for(policy: str) -> type:
    """A unittest case running the machine with ``policy`` (one per policy, so each runs)."""
    machine = type(f"RadixMachine_{policy}", (RadixMachine,), {"policy_name": policy})
    case = machine.TestCase
    case.settings = SETTINGS
    return case


TestRadixTreeLRU = _test_case_for("lru")
TestRadixTreeLFU = _test_case_for("lfu")
TestRadixTreePriority = _test_case_for("priority")
TestRadixTreeAdaptive = _test_case_for("adaptive")
TestRadixTreePinned = _test_case_for("pinned")
