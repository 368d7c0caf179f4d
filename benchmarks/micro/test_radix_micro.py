"""Micro-benchmarks of the radix tree's hot operations at 10^3, 10^4 and 10^5 cached blocks.

The scheduler calls ``match_prefix`` once per waiting request per step, ``insert`` once per
admitted/finished request and ``evict`` whenever the free list runs dry, so these three must
stay cheap and, ideally, independent of how much is cached. Trees are built untimed, with the
shape prefix caching sees in chat serving (block_size 16): a few long shared system prompts,
many multi-turn conversations under them, each turn extending the previous one.

Run with ``make bench`` (``pytest benchmarks/micro --benchmark-only``); never part of CI's tests.
Timings are reported, not asserted. Each benchmark asserts only that it did its work.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from radix_plugin.cache_manager.core.radix_tree import Page, RadixTree
from radix_plugin.cache_manager.core.registry import make_eviction_policy

BLOCK_SIZE = 16
VOCAB = 32_000
SIZES = [1_000, 10_000, 100_000]
SYSTEM_PROMPTS = 8
SYSTEM_PAGES = 32  # 512-token system prompts
TURN_PAGES = (4, 24)  # each user+assistant turn adds 64-384 tokens
MAX_TURNS = 6
OPS_BLOCKS = 8  # blocks per insert/evict: one short turn (128 tokens)
QUERIES = 256
ROUNDS = 2_000

pytestmark = pytest.mark.benchmark


@dataclass
class Workload:
    """A tree filled to ``size`` blocks plus the conversations that filled it."""

    tree: RadixTree
    size: int
    conversations: list[list[Page]]
    rng: random.Random
    next_block: Iterator[int] = field(default_factory=itertools.count)

    def fresh_pages(self, n: int) -> list[Page]:
        return [tuple(self.rng.randrange(VOCAB) for _ in range(BLOCK_SIZE)) for _ in range(n)]

    def insert(self, pages: list[Page]) -> int:
        """Insert ``pages`` with new block ids; returns how many blocks the tree took."""
        blocks = [next(self.next_block) for _ in pages]
        already, _ = self.tree.insert(pages, blocks)
        return len(pages) - already

    def continuation(self) -> list[Page]:
        """An existing conversation plus one new short turn: what a finished request inserts.

        The conversation itself is not extended, so prefixes keep their built length."""
        conv = self.conversations[self.rng.randrange(len(self.conversations))]
        return [*conv, *self.fresh_pages(OPS_BLOCKS)]


def build(size: int, seed: int = 0) -> Workload:
    """Multi-turn chat under shared system prompts, inserted turn by turn up to ``size``."""
    rng = random.Random(seed)
    tree = RadixTree(BLOCK_SIZE, make_eviction_policy("lru"))
    work = Workload(tree, size, [], rng)
    systems = [work.fresh_pages(SYSTEM_PAGES) for _ in range(SYSTEM_PROMPTS)]
    while tree.stats().cached_blocks < size:
        conv = list(rng.choice(systems))
        for _ in range(rng.randint(1, MAX_TURNS)):
            conv.extend(work.fresh_pages(rng.randint(*TURN_PAGES)))
            work.insert(conv)
            # Some traffic between turns, so recency is not insertion order.
            if work.conversations and rng.random() < 0.5:
                tree.match_prefix(rng.choice(work.conversations))
        work.conversations.append(conv)
    excess = tree.stats().cached_blocks - size
    tree.evict(excess)
    return work


@pytest.fixture(params=SIZES, ids=[f"{s}_blocks" for s in SIZES])
def workload(request: pytest.FixtureRequest) -> Workload:
    work = build(request.param)
    assert work.tree.stats().cached_blocks == request.param
    return work


def admission_queries(work: Workload) -> list[list[Page]]:
    """Cached conversations plus a fresh user turn: a long partial hit, then a miss."""
    rng = random.Random(1)
    picks = [rng.choice(work.conversations) for _ in range(QUERIES)]
    return [[*conv, *work.fresh_pages(4)] for conv in picks]


def test_match_prefix(benchmark: BenchmarkFixture, workload: Workload) -> None:
    """Admission lookup from pages (the driver hashes pages once per request)."""
    queries = itertools.cycle(admission_queries(workload))
    tree = workload.tree

    def op() -> int:
        return len(tree.match_prefix(next(queries)).blocks)

    assert benchmark(op) > 0


def test_match_prefix_from_tokens(benchmark: BenchmarkFixture, workload: Workload) -> None:
    """The same lookup from raw token ids: adds splitting tokens into pages (O(P·B))."""
    token_queries = [[t for page in q for t in page] for q in admission_queries(workload)]
    queries = itertools.cycle(token_queries)
    tree = workload.tree

    def op() -> int:
        return len(tree.match_prefix(next(queries)).blocks)

    assert benchmark(op) > 0


def test_insert(benchmark: BenchmarkFixture, workload: Workload) -> None:
    """A finished request caches its new turn (``OPS_BLOCKS`` blocks) under a long prefix.

    Setup (untimed) first evicts what the previous round added, so the size stays put."""
    tree = workload.tree
    taken: list[int] = [OPS_BLOCKS]

    def setup() -> tuple[tuple[list[Page], list[int]], dict]:
        tree.evict(taken[-1])
        pages = workload.continuation()
        blocks = [next(workload.next_block) for _ in pages]
        return (pages, blocks), {}

    def op(pages: list[Page], blocks: list[int]) -> None:
        already, _ = tree.insert(pages, blocks)
        taken.append(len(pages) - already)

    benchmark.pedantic(op, setup=setup, rounds=ROUNDS, warmup_rounds=10)
    assert min(taken[1:]) >= OPS_BLOCKS  # every call cached its new turn
    assert tree.stats().cached_blocks == workload.size - OPS_BLOCKS + taken[-1]


def test_evict(benchmark: BenchmarkFixture, workload: Workload) -> None:
    """Free one request's worth (``OPS_BLOCKS``) of least-recently-used blocks.

    Setup (untimed) first inserts a continuation and trims the tree back to its size plus
    ``OPS_BLOCKS``, so every timed call frees exactly that much from a tree of that size."""
    tree = workload.tree
    size = workload.size
    freed: list[list[int]] = []

    def setup() -> tuple[tuple, dict]:
        workload.insert(workload.continuation())
        tree.evict(tree.stats().cached_blocks - size - OPS_BLOCKS)
        return (), {}

    def op() -> None:
        freed.append(tree.evict(OPS_BLOCKS))

    benchmark.pedantic(op, setup=setup, rounds=ROUNDS, warmup_rounds=10)
    assert freed and all(len(f) == OPS_BLOCKS for f in freed)
    assert tree.stats().cached_blocks == size
