"""RadixBlockPool inside vLLM 0.32's real KVCacheManager (no engine, no mocks).

The manager is built exactly as vLLM's scheduler builds it, with the pool swapped in by the
same scoped patch the plugin uses; requests are real ``vllm.v1.request.Request`` objects.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
from vllm.distributed.kv_events import AllBlocksCleared, BlockRemoved, BlockStored
from vllm.sampling_params import SamplingParams
from vllm.utils.hashing import get_hash_fn_by_name
from vllm.v1.core.kv_cache_manager import KVCacheManager
from vllm.v1.core.kv_cache_utils import (
    get_request_block_hasher,
    init_none_hash,
    maybe_convert_block_hash,
)
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
from vllm.v1.request import Request

from radix_plugin.cache_manager.core.errors import PinBudgetExceeded
from radix_plugin.cache_manager.core.registry import make_eviction_policy
from radix_plugin.cache_manager.engine_core.block_pool import RadixBlockPool
from radix_plugin.compat import install_lookup_patch, radix_block_pool

BS = 4
_ids = itertools.count()


def make_manager(num_blocks: int, policy: str = "lru", events: bool = True) -> KVCacheManager:
    hash_fn = get_hash_fn_by_name("sha256")
    init_none_hash(hash_fn)
    spec = FullAttentionSpec(block_size=BS, num_kv_heads=1, head_size=8, dtype=torch.float16)
    config = KVCacheConfig(
        num_blocks=num_blocks, kv_cache_tensors=[], kv_cache_groups=[KVCacheGroupSpec(["l"], spec)]
    )
    install_lookup_patch(RadixBlockPool)
    with radix_block_pool(RadixBlockPool, policy=make_eviction_policy(policy)):
        manager = KVCacheManager(
            config,
            max_model_len=256,
            scheduler_block_size=BS,
            hash_block_size=BS,
            enable_caching=True,
            enable_kv_cache_events=events,
        )
    assert isinstance(manager.block_pool, RadixBlockPool)
    return manager


def request(tokens: list[int], extra: dict[str, Any] | None = None, lora: Any = None) -> Request:
    hasher = get_request_block_hasher(BS, get_hash_fn_by_name("sha256"))
    return Request(
        request_id=f"r{next(_ids)}",
        prompt_token_ids=tokens,
        sampling_params=SamplingParams(max_tokens=1, extra_args=extra),
        pooling_params=None,
        lora_request=lora,
        block_hasher=hasher,
    )


def admit(manager: KVCacheManager, tokens: list[int], **kw: Any) -> tuple[Request, int]:
    """Schedule a whole prompt as vLLM's scheduler would; returns the request and its hit."""
    req = request(tokens, **kw)
    computed, hit, *_ = manager.get_computed_blocks(req)
    blocks = manager.allocate_slots(
        req, len(tokens) - hit, num_new_computed_tokens=hit, new_computed_blocks=computed
    )
    assert blocks is not None, "pool unexpectedly full"
    req.num_computed_tokens = len(tokens)
    return req, hit


def pool_of(manager: KVCacheManager) -> RadixBlockPool:
    return manager.block_pool  # type: ignore[return-value]


def test_hits_come_from_the_tree_and_events_are_emitted() -> None:
    m = make_manager(16)
    a, hit_a = admit(m, list(range(12)))  # 3 full blocks
    assert hit_a == 0
    b, hit_b = admit(m, [*range(8), 99, 98, 97, 96, 95])
    assert hit_b == 8  # two shared blocks
    tree = pool_of(m).tree
    assert tree.stats().cached_blocks == 4  # 3 + b's one new full block
    events = m.take_events()
    assert sum(len(e.block_hashes) for e in events if isinstance(e, BlockStored)) == 4
    m.free(a)
    m.free(b)
    assert pool_of(m).get_num_free_blocks() == 15


def test_eviction_is_leaf_first_lru_and_reports_block_removed() -> None:
    m = make_manager(9)  # 8 usable blocks
    old, _ = admit(m, list(range(100, 116)))  # 4 blocks
    m.free(old)
    new, _ = admit(m, list(range(200, 216)))  # 4 blocks, pool now has only cached blocks
    m.free(new)
    m.take_events()
    third, _ = admit(m, list(range(300, 308)))  # needs 2 blocks: the old chain's tail
    removed = [e for e in m.take_events() if isinstance(e, BlockRemoved)]
    assert len(removed) == 2
    # The older chain lost its two deepest blocks; its first half still hits.
    probe = request(list(range(100, 116)))
    _, hit, *_ = m.get_computed_blocks(probe)
    assert hit == 8
    probe_new = request(list(range(200, 216)))
    _, hit_new, *_ = m.get_computed_blocks(probe_new)
    assert hit_new == 12  # capped at prompt length - 1, rounded down to a block
    m.free(third)


def test_duplicate_last_block_protects_the_original_and_is_reused_before_tree_blocks() -> None:
    m = make_manager(12)
    tokens = list(range(16))  # exactly 4 blocks
    first, _ = admit(m, tokens)
    m.free(first)
    # Fully cached prompt: vLLM recomputes the last block into a new (duplicate) block.
    again, hit = admit(m, tokens)
    assert hit == 12
    pool = pool_of(m)
    tree = pool.tree
    assert tree.stats().cached_blocks == 4
    assert tree.stats().protected_blocks == 4  # the original last block is held via the dup
    m.free(again)
    assert tree.stats().protected_blocks == 0
    assert pool.get_num_free_blocks() == 11
    m.take_events()
    # The duplicate goes out once the 6 empty blocks are gone, before any tree block (as in
    # vLLM, whose events it keeps: its hash is reported removed only when it is reused).
    six, _ = admit(m, list(range(500, 524)))  # 6 blocks
    assert not [e for e in m.take_events() if isinstance(e, BlockRemoved)]
    seventh, _ = admit(m, list(range(600, 603)))
    (removed,) = [e for e in m.take_events() if isinstance(e, BlockRemoved)]
    assert removed.block_hashes == [maybe_convert_block_hash(again.block_hashes[3])]
    assert tree.stats().evicted_blocks == 0
    _, hit_after, *_ = m.get_computed_blocks(request(tokens))
    assert hit_after == 12
    m.free(six)
    m.free(seventh)


def test_pinned_prefix_survives_pressure_and_is_not_counted_free() -> None:
    m = make_manager(9)
    pool = pool_of(m)
    pool.tree.max_pinned_blocks = 2
    keep, _ = admit(m, list(range(8)))
    n_blocks, node = pool.cached_prefix_node(keep.block_hashes)
    assert n_blocks == 2
    pool.pin_prefix(node)
    m.free(keep)
    assert pool.get_num_free_blocks() == 6  # 8 usable - 2 pinned
    filler, _ = admit(m, list(range(1000, 1024)))  # takes every free block
    m.free(filler)
    _, hit, *_ = m.get_computed_blocks(request([*range(8), 7]))
    assert hit == 8
    with pytest.raises(PinBudgetExceeded, match="pin budget of 2 blocks"):
        _, filler_node = pool.cached_prefix_node(filler.block_hashes)
        pool.pin_prefix(filler_node)
    pool.unpin_prefix(node)
    assert pool.get_num_free_blocks() == 8


def test_invalidating_a_middle_block_drops_its_continuations_but_keeps_blocks_free() -> None:
    m = make_manager(10)
    r, _ = admit(m, list(range(16)))
    block_ids = [b.block_id for b in m.get_blocks(r.request_id).blocks[0]]
    m.free(r)
    pool = pool_of(m)
    m.evict_blocks({block_ids[1]})  # as a KV connector may do
    assert pool.tree.stats().cached_blocks == 1
    assert pool.get_num_free_blocks() == 9
    _, hit, *_ = m.get_computed_blocks(request(list(range(16))))
    assert hit == 4
    # Every block is still allocatable.
    big, _ = admit(m, list(range(700, 736)))
    m.free(big)


def test_reset_empties_the_tree_and_refuses_while_in_use() -> None:
    m = make_manager(8)
    r, _ = admit(m, list(range(12)))
    assert not m.reset_prefix_cache()
    m.free(r)
    assert m.reset_prefix_cache()
    assert isinstance(m.take_events()[-1], AllBlocksCleared)
    assert pool_of(m).tree.stats().cached_blocks == 0
    assert pool_of(m).get_num_free_blocks() == 7
    _, hit, *_ = m.get_computed_blocks(request(list(range(12))))
    assert hit == 0


def test_radix_priority_feeds_the_priority_policy() -> None:
    m = make_manager(9, policy="priority")
    important, _ = admit(m, list(range(16)), extra={"radix_priority": 5})
    m.free(important)
    casual, _ = admit(m, list(range(300, 316)))
    m.free(casual)
    newer, _ = admit(m, list(range(600, 608)))  # forces 2 evictions
    m.free(newer)
    _, hit_important, *_ = m.get_computed_blocks(request(list(range(17))))
    assert hit_important == 16  # the older but higher-priority chain survived whole


def test_lora_adapters_get_separate_prefixes() -> None:
    from vllm.lora.request import LoRARequest

    m = make_manager(16)
    tokens = list(range(12))

    def run(name: str | None) -> int:
        # The adapter is only hashed here (LoRA name in the block keys), never loaded.
        lora = None if name is None else LoRARequest(name, 1 + len(name), f"/none/{name}")
        req = request([*tokens, 99], lora=lora)
        computed, hit, *_ = m.get_computed_blocks(req)
        m.allocate_slots(req, 13 - hit, num_new_computed_tokens=hit, new_computed_blocks=computed)
        req.num_computed_tokens = 13
        m.free(req)
        return hit

    assert run("adapter-a") == 0
    assert run("adapter-a") == 12
    assert run("adapter-b") == 0
    assert run(None) == 0
    assert run(None) == 12


def test_auto_pins_of_the_pinned_policy_keep_the_free_count_exact() -> None:
    # Pins made by the policy itself (not through the pool) must not let vLLM believe a
    # pinned block can be handed out: the free count is derived from the tree.
    m = make_manager(9, policy="pinned")
    pool = pool_of(m)
    pool.tree.max_pinned_blocks = 4
    hot = list(range(9))
    for _ in range(3):  # the second hit auto-pins the 2-block prefix
        r, _ = admit(m, hot)
        m.free(r)
    assert pool.tree.stats().pinned_blocks == 2
    assert pool.get_num_free_blocks() == 8 - 2
    big, _ = admit(m, list(range(100, 124)))  # exactly the 6 allocatable blocks
    m.free(big)
    assert m.reset_prefix_cache()
    assert pool.get_num_free_blocks() == 8


def test_duplicate_released_after_the_original_leaves_nothing_uncounted() -> None:
    m = make_manager(12)
    tokens = list(range(16))
    first, _ = admit(m, tokens)
    m.free(first)
    dup_user, _ = admit(m, tokens)  # holds the original last block through its duplicate
    pool = pool_of(m)
    m.free(dup_user)
    assert pool.get_num_free_blocks() == 11
    assert m.reset_prefix_cache()
    assert pool.get_num_free_blocks() == 11


def assert_consistent(m: KVCacheManager) -> None:
    """The tree's counters match what it holds, and every free block can be handed out."""
    pool = pool_of(m)
    stats = pool.tree.stats()
    nodes = list(pool.tree.iter_nodes())
    assert stats.protected_blocks == sum(n.num_blocks for n in nodes if n.is_protected)
    assert stats.pinned_blocks == sum(n.num_blocks for n in nodes if n.pin_count)
    free = pool.get_num_free_blocks()
    taken = pool.get_new_blocks(free)  # raises if the count promised more than exists
    assert len({b.block_id for b in taken}) == free
    pool.free_blocks(taken)


def test_invalidating_an_in_use_block_releases_cleanly() -> None:
    # vLLM's evict_blocks only drops the hash of an in-use block; its release must not
    # count the dropped nodes again (protected_blocks went to -1, then evict() KeyError'd).
    m = make_manager(10)
    r, _ = admit(m, list(range(16)))
    block_ids = [b.block_id for b in m.get_blocks(r.request_id).blocks[0]]
    m.evict_blocks({block_ids[1]})
    m.free(r)
    assert pool_of(m).tree.stats().protected_blocks == 0
    assert pool_of(m).get_num_free_blocks() == 9
    assert_consistent(m)


def test_invalidating_a_block_whose_duplicate_is_in_use_releases_cleanly() -> None:
    m = make_manager(12)
    tokens = list(range(16))
    first, _ = admit(m, tokens)
    ids = [b.block_id for b in m.get_blocks(first.request_id).blocks[0]]
    m.free(first)
    dup_user, _ = admit(m, tokens)  # its last block duplicates ids[3] and holds that node
    m.evict_blocks({ids[1]})  # drops ids[1..3]; the duplicate's node among them
    m.free(dup_user)
    stats = pool_of(m).tree.stats()
    assert stats.protected_blocks == 0
    assert stats.cached_blocks == 1
    assert pool_of(m).get_num_free_blocks() == 11
    assert_consistent(m)


def test_invalidating_a_pinned_prefix_drops_its_pin_on_the_surviving_path() -> None:
    m = make_manager(10)
    pool = pool_of(m)
    pool.tree.max_pinned_blocks = 8
    r, _ = admit(m, list(range(16)))
    ids = [b.block_id for b in m.get_blocks(r.request_id).blocks[0]]
    _, node = pool.cached_prefix_node(r.block_hashes)
    pool.pin_prefix(node)
    m.evict_blocks({ids[2]})
    m.free(r)
    stats = pool.tree.stats()
    assert stats.pinned_blocks == 0  # the pin ended at a dropped node: it is void
    assert stats.protected_blocks == 0
    pool.unpin_prefix(node)  # a holder letting go of a dropped pin changes nothing
    assert pool.tree.stats().pinned_blocks == 0
    assert pool.get_num_free_blocks() == 9
    assert_consistent(m)
