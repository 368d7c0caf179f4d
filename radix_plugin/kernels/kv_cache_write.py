"""Scatter new keys/values into the paged KV cache by slot mapping.

vLLM computes, for each new token, a flat slot = block_id * block_size + offset; the attention
kernels then read everything (cached prefix and new tokens) back through the block table. This
kernel is that write. A slot < 0 marks a padding token and is skipped, as in vLLM.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from radix_plugin.kernels._utils import (
    check_launchable,
    next_power_of_2,
    paged_cache_strides,
)


@triton.jit
def _kv_write_kernel(
    key_ptr,
    value_ptr,
    k_cache_ptr,
    v_cache_ptr,
    slot_ptr,
    num_kv_heads,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    stride_kcb,
    stride_kcs,
    stride_kch,
    stride_vcb,
    stride_vcs,
    stride_vch,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_H: tl.constexpr,
    PAGE: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    head_block = tl.program_id(1)
    slot = tl.load(slot_ptr + token).to(tl.int64)
    if slot < 0:
        return
    block = slot // PAGE
    offset = slot % PAGE
    offs_h = head_block * BLOCK_H + tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_h < num_kv_heads)[:, None] & (offs_d < HEAD_DIM)[None, :]
    src = offs_h[:, None] * stride_kh + offs_d[None, :]
    k = tl.load(key_ptr + token * stride_kt + src, mask=mask)
    dst = block * stride_kcb + offset * stride_kcs + offs_h[:, None] * stride_kch + offs_d[None, :]
    tl.store(k_cache_ptr + dst, k.to(k_cache_ptr.dtype.element_ty), mask=mask)
    src = offs_h[:, None] * stride_vh + offs_d[None, :]
    v = tl.load(value_ptr + token * stride_vt + src, mask=mask)
    dst = block * stride_vcb + offset * stride_vcs + offs_h[:, None] * stride_vch + offs_d[None, :]
    tl.store(v_cache_ptr + dst, v.to(v_cache_ptr.dtype.element_ty), mask=mask)


def write_kv_cache(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Write key/value [num_tokens, kv_heads, head_dim] into caches
    [num_blocks, block_size, kv_heads, head_dim] at slot_mapping[:num_tokens].

    Only `slot_mapping.shape[0]` tokens are written (vLLM pads key/value beyond the real tokens).
    All tensors may be strided views as long as head_dim is contiguous.
    """
    check_launchable(key, value, k_cache, v_cache, slot_mapping)
    if key.shape != value.shape or k_cache.shape != v_cache.shape:
        raise ValueError("key/value and k_cache/v_cache must match in shape")
    if key.shape[1:] != k_cache.shape[2:]:
        raise ValueError(f"key {tuple(key.shape)} does not fit cache {tuple(k_cache.shape)}")
    for name, t in (("key", key), ("value", value), ("k_cache", k_cache), ("v_cache", v_cache)):
        if t.stride(-1) != 1:
            raise ValueError(f"{name} must be contiguous in head_dim")
    num_tokens = min(slot_mapping.shape[0], key.shape[0])
    if num_tokens == 0:
        return
    num_kv_heads, head_dim = key.shape[1], key.shape[2]
    block_d = next_power_of_2(head_dim)
    # ~4K elements per program: enough bytes in flight per SM without spilling registers.
    block_h = min(next_power_of_2(num_kv_heads), max(1, 4096 // block_d))
    grid = (num_tokens, triton.cdiv(num_kv_heads, block_h))
    _kv_write_kernel[grid](
        key,
        value,
        k_cache,
        v_cache,
        slot_mapping,
        num_kv_heads,
        key.stride(0),
        key.stride(1),
        value.stride(0),
        value.stride(1),
        *paged_cache_strides(k_cache, v_cache),
        HEAD_DIM=head_dim,
        BLOCK_D=block_d,
        BLOCK_H=block_h,
        PAGE=k_cache.shape[1],
        num_warps=4,
    )
