"""Cache drivers: one admission/finish protocol over vLLM's real manager and the radix tree.

Both drivers allocate a request's prompt *and* output slots at admission, cache the prompt's
full blocks at admission (vLLM caches blocks as soon as they are scheduled, so concurrent
siblings can hit them), cache the output's full blocks at finish, and release everything at
finish. Both cap a hit at ``prompt_length - 1`` tokens, as vLLM does (the last token is always
recomputed to produce logits). Capacity is counted in usable blocks (vLLM's null block is
added on top), so hit numbers are directly comparable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from radix_plugin.cache_manager.core.policies.base import EvictionPolicy
from radix_plugin.cache_manager.core.radix_tree import Page, RadixNode, RadixTree
from radix_plugin.simulator.tokens import TokenSynthesizer
from radix_plugin.simulator.trace import TraceRequest


class CacheDriver(Protocol):
    name: str

    def admit(self, index: int, req: TraceRequest) -> int | None:
        """Allocate KV for the whole request; hit tokens, or ``None`` if it does not fit now."""

    def finish(self, index: int) -> None:
        """Cache the request's output blocks and release its blocks."""

    def leaked_blocks(self) -> int:
        """Blocks neither free nor cached after every request finished (must be 0)."""


def _blocks_for(num_tokens: int, block_size: int) -> int:
    return -(-num_tokens // block_size)


@dataclass(slots=True)
class _Active:
    blocks: list[int]
    pages: list[Page]
    node: RadixNode
    private: set[int]


def request_pages(index: int, req: TraceRequest, block_size: int) -> tuple[list[Page], list[Page]]:
    """Page keys of request ``index``'s full prompt blocks and of its whole sequence.

    A trace's hash id already names a block's content *and* prefix, so it is the page key
    (what the tree would get from hashing the synthesized tokens, without building them); a
    page holding output tokens is unique to the request, as the simulator's outputs are.
    """
    prompt = list(req.hash_ids[: req.input_length // block_size])
    total = (req.input_length + req.output_length) // block_size
    return prompt, prompt + [("out", index, j) for j in range(len(prompt), total)]


class RadixDriver:
    """The radix tree plus a free list, as the plugin's block pool manages them."""

    def __init__(
        self,
        capacity_blocks: int,
        block_size: int,
        policy: EvictionPolicy,
        max_pinned_blocks: int | None = None,
    ) -> None:
        self.name = policy.name
        self.block_size = block_size
        self.capacity = capacity_blocks
        if max_pinned_blocks is None:
            max_pinned_blocks = capacity_blocks // 4
        self.tree = RadixTree(block_size, policy, max_pinned_blocks=max_pinned_blocks)
        self._free = list(range(capacity_blocks - 1, -1, -1))
        self._active: dict[int, _Active] = {}

    def admit(self, index: int, req: TraceRequest) -> int | None:
        bs, tree = self.block_size, self.tree
        prompt_pages, sequence_pages = request_pages(index, req, bs)
        match = tree.match_prefix(
            prompt_pages, touch=False, split=True, max_blocks=(req.input_length - 1) // bs
        )
        hit = len(match.blocks)
        needed = _blocks_for(req.input_length + req.output_length, bs) - hit
        tree.lock(match.last_node)
        shortfall = needed - len(self._free)
        if shortfall > 0:
            if tree.evictable_blocks() < shortfall:
                tree.unlock(match.last_node)
                return None
            self._free.extend(tree.evict(shortfall))
        tree.touch(match.last_node, query_blocks=len(prompt_pages))
        new = [self._free.pop() for _ in range(needed)]
        blocks = match.blocks + new
        already, node = tree.insert(prompt_pages, blocks[: len(prompt_pages)])
        tree.lock(node)
        tree.unlock(match.last_node)
        private = set(blocks[hit:already]) | set(blocks[len(prompt_pages) :])
        self._active[index] = _Active(blocks, sequence_pages, node, private)
        return hit * bs

    def finish(self, index: int) -> None:
        act = self._active.pop(index)
        pages = act.pages
        already, _ = self.tree.insert(pages, act.blocks[: len(pages)], origin="output")
        owned_by_tree = set(act.blocks[already : len(pages)])
        self.tree.unlock(act.node)
        self._free.extend(b for b in act.blocks if b in act.private and b not in owned_by_tree)

    def node_of(self, index: int) -> RadixNode:
        """The node ending the cached prompt of in-flight request ``index``."""
        return self._active[index].node

    def leaked_blocks(self) -> int:
        return self.capacity - len(self._free) - self.tree.stats().cached_blocks


class VllmDriver:
    """vLLM 0.32's own ``KVCacheManager`` with prefix caching (real code, not a model of it)."""

    name = "vllm"

    def __init__(self, capacity_blocks: int, block_size: int, max_model_len: int) -> None:
        import torch
        from vllm.sampling_params import SamplingParams
        from vllm.utils.hashing import get_hash_fn_by_name
        from vllm.v1.core.kv_cache_manager import KVCacheManager
        from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
        from vllm.v1.kv_cache_interface import (
            FullAttentionSpec,
            KVCacheConfig,
            KVCacheGroupSpec,
        )

        hash_fn = get_hash_fn_by_name("sha256")
        init_none_hash(hash_fn)
        spec = FullAttentionSpec(
            block_size=block_size, num_kv_heads=1, head_size=64, dtype=torch.float16
        )
        config = KVCacheConfig(
            num_blocks=capacity_blocks + 1,  # + vLLM's reserved null block
            kv_cache_tensors=[],
            kv_cache_groups=[KVCacheGroupSpec(["layer.0"], spec)],
        )
        self.block_size = block_size
        self.capacity = capacity_blocks
        self.manager = KVCacheManager(
            config,
            max_model_len=max_model_len,
            scheduler_block_size=block_size,
            hash_block_size=block_size,
            enable_caching=True,
        )
        self._hasher = get_request_block_hasher(block_size, hash_fn)
        self._synth = TokenSynthesizer(block_size)
        self._sampling = SamplingParams
        self._active: dict[int, Any] = {}

    def admit(self, index: int, req: TraceRequest) -> int | None:
        from vllm.v1.request import Request

        prompt, output = self._synth.prompt(req), self._synth.output(req, index)
        request = Request(
            request_id=str(index),
            prompt_token_ids=prompt,
            sampling_params=self._sampling(max_tokens=max(1, len(output))),
            pooling_params=None,
            block_hasher=self._hasher,
        )
        computed, num_hit, *_ = self.manager.get_computed_blocks(request)
        new = self.manager.allocate_slots(
            request,
            len(prompt) + len(output) - num_hit,
            num_new_computed_tokens=num_hit,
            new_computed_blocks=computed,
        )
        if new is None:
            return None
        request.num_computed_tokens = len(prompt)
        request.append_output_token_ids(output)
        request.num_computed_tokens = len(prompt) + len(output)
        self._active[index] = request
        return num_hit

    def finish(self, index: int) -> None:
        req = self._active.pop(index)
        self.manager.cache_blocks(req, req.num_computed_tokens)
        self.manager.free(req)

    def leaked_blocks(self) -> int:
        pool = self.manager.block_pool
        return self.capacity - pool.get_num_free_blocks()
