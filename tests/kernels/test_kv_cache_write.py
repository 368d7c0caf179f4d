"""The slot-mapping KV-cache write against its reference, on vLLM-shaped strided views."""

from __future__ import annotations

import pytest
import torch

from radix_plugin.kernels.kv_cache_write import write_kv_cache
from radix_plugin.kernels.reference import write_kv_cache_ref


def _vllm_views(
    num_blocks: int, num_kv_heads: int, block_size: int, head_dim: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """vLLM hands backends a [blocks, kv_heads, block_size, 2 * head_dim] cache; K and V are
    non-contiguous [blocks, block_size, kv_heads, head_dim] views of it."""
    kv = torch.randn((num_blocks, num_kv_heads, block_size, 2 * head_dim)).to(dtype)
    k_view, v_view = kv.transpose(1, 2).split(head_dim, dim=-1)
    return kv, k_view, v_view


@pytest.mark.parametrize(
    ("num_kv_heads", "head_dim", "block_size", "dtype"),
    [(2, 64, 16, torch.float32), (8, 128, 32, torch.bfloat16), (1, 80, 128, torch.float16)],
)
def test_write_matches_reference_on_strided_views(
    num_kv_heads: int, head_dim: int, block_size: int, dtype: torch.dtype
) -> None:
    gen = torch.Generator().manual_seed(1)
    num_blocks, num_tokens, num_q_heads = 6, 11, 2 * num_kv_heads
    kv, k_view, v_view = _vllm_views(num_blocks, num_kv_heads, block_size, head_dim, dtype)
    k_ref, v_ref = kv.clone().transpose(1, 2).split(head_dim, dim=-1)
    # key/value as strided slices of a fused qkv projection, plus 3 padding tokens
    width = (num_q_heads + 2 * num_kv_heads) * head_dim
    qkv = torch.randn((num_tokens + 3, width), generator=gen).to(dtype)
    qkv = qkv.view(num_tokens + 3, -1, head_dim)
    key = qkv[:, num_q_heads : num_q_heads + num_kv_heads]
    value = qkv[:, num_q_heads + num_kv_heads :]
    slots = torch.randperm(num_blocks * block_size, generator=gen)[:num_tokens]
    slots[3] = -1  # padding token inside the batch
    before = kv.clone()

    write_kv_cache(key, value, k_view, v_view, slots)
    write_kv_cache_ref(key, value, k_ref, v_ref, slots)

    assert torch.equal(k_view, k_ref) and torch.equal(v_view, v_ref)
    written = torch.zeros(num_blocks * block_size, dtype=torch.bool)
    written[slots[slots >= 0]] = True
    written = written.view(num_blocks, block_size)
    untouched = kv.transpose(1, 2)[~written]
    assert torch.equal(untouched, before.transpose(1, 2)[~written])
    assert torch.equal(k_view[slots[0] // block_size, slots[0] % block_size], key[0])


def test_write_rejects_mismatched_head_dim() -> None:
    cache = torch.zeros((2, 16, 2, 64))
    key = torch.zeros((3, 2, 32))
    with pytest.raises(ValueError, match="does not fit"):
        write_kv_cache(key, key, cache, cache, torch.zeros(3, dtype=torch.int64))
