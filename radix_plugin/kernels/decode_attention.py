"""Split-KV paged decode attention (one query token per sequence).

Why a separate kernel from extend: a decode query is a single row, so a FlashAttention tile of
128 query rows would be 99% padding and the work per sequence would be one long serial loop.
Here one program handles all query heads that share a KV head (GQA packing: each K/V tile read
from HBM serves `group` query heads) for one chunk of the context, and the chunks of one
sequence run in parallel (split-KV / flash-decoding); `split_merge` then combines them.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from radix_plugin.kernels import split_merge
from radix_plugin.kernels._tl_helpers import online_softmax_step, paged_kv_tile
from radix_plugin.kernels._utils import (
    INTERPRET,
    check_launchable,
    next_power_of_2,
    paged_cache_strides,
)
from radix_plugin.kernels.configs import DecodeConfig


@triton.jit
def _decode_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    out_ptr,
    part_o_ptr,
    part_lse_ptr,
    qsl_ptr,
    seq_lens_ptr,
    bt_ptr,
    sm_scale_log2,
    stride_qt,
    stride_qh,
    stride_ot,
    stride_oh,
    stride_kb,
    stride_ks,
    stride_kh,
    stride_vb,
    stride_vs,
    stride_vh,
    stride_bt,
    GROUP: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_H: tl.constexpr,
    PAGE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    NUM_SPLITS: tl.constexpr,
    IEEE: tl.constexpr,
    UPCAST: tl.constexpr,
):
    kv_head = tl.program_id(0)
    seq = tl.program_id(1)
    split = tl.program_id(2)
    num_q_heads = tl.num_programs(0) * GROUP

    q_start = tl.load(qsl_ptr + seq)
    q_len = tl.load(qsl_ptr + seq + 1) - q_start
    if q_len != 1:
        return  # prefill/extend rows belong to the extend kernel; empty rows to nobody
    seq_len = tl.load(seq_lens_ptr + seq)

    # This split's key range; chunks are whole key tiles so only the last tile needs a mask.
    chunk = tl.cdiv(tl.cdiv(seq_len, NUM_SPLITS), BLOCK_N) * BLOCK_N
    lo = split * chunk
    hi = tl.minimum(seq_len, lo + chunk)

    offs_h = tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    h_mask = offs_h < GROUP
    d_mask = offs_d < HEAD_DIM
    heads = kv_head * GROUP + offs_h
    token = q_start.to(tl.int64)

    if NUM_SPLITS > 1:
        lse_ptrs = part_lse_ptr + (seq.to(tl.int64) * num_q_heads + heads) * NUM_SPLITS + split
        if lo >= hi:
            tl.store(lse_ptrs, tl.full([BLOCK_H], float("-inf"), tl.float32), mask=h_mask)
            return

    q_ptrs = q_ptr + token * stride_qt + heads[:, None] * stride_qh + offs_d[None, :]
    q = tl.load(q_ptrs, mask=h_mask[:, None] & d_mask[None, :], other=0.0)

    m_i = tl.full([BLOCK_H], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, BLOCK_D], tl.float32)
    bt_row = bt_ptr + seq.to(tl.int64) * stride_bt
    k_base = k_ptr + kv_head * stride_kh + offs_d[None, :]
    v_base = v_ptr + kv_head * stride_vh + offs_d[None, :]
    for start in range(lo, hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        n_mask = offs_n < hi
        k, v = paged_kv_tile(
            k_base,
            v_base,
            bt_row,
            offs_n,
            n_mask,
            d_mask,
            stride_kb,
            stride_ks,
            stride_vb,
            stride_vs,
            PAGE,
            True,
        )
        m_i, l_i, acc = online_softmax_step(
            q, k, v, m_i, l_i, acc, n_mask[None, :], sm_scale_log2, True, IEEE, UPCAST
        )

    acc = acc / l_i[:, None]
    if NUM_SPLITS == 1:
        o_ptrs = out_ptr + token * stride_ot + heads[:, None] * stride_oh + offs_d[None, :]
        tl.store(o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=h_mask[:, None] & d_mask[None, :])
    else:
        rows = (seq.to(tl.int64) * num_q_heads + heads) * NUM_SPLITS + split
        tl.store(part_lse_ptr + rows, m_i + tl.log2(l_i), mask=h_mask)
        o_ptrs = part_o_ptr + rows[:, None] * HEAD_DIM + offs_d[None, :]
        tl.store(o_ptrs, acc, mask=h_mask[:, None] & d_mask[None, :])


def decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    out: torch.Tensor,
    query_start_loc: torch.Tensor,
    seq_lens: torch.Tensor,
    block_table: torch.Tensor,
    softmax_scale: float,
    config: DecodeConfig,
    num_splits: int,
) -> torch.Tensor:
    """Attention for every sequence whose query length is exactly 1; other rows are untouched.

    Layouts as in `prefix_attention`. `num_splits` chunks per (sequence, KV head) run in
    parallel; with 1 the kernel writes `out` directly and no merge pass runs.
    """
    check_launchable(q, k_cache, v_cache, out, query_start_loc, seq_lens, block_table)
    batch = seq_lens.shape[0]
    num_q_heads, head_dim = q.shape[1], q.shape[2]
    num_kv_heads, page = k_cache.shape[2], k_cache.shape[1]
    group = num_q_heads // num_kv_heads
    if batch == 0:
        return out
    part_o = part_lse = out  # placeholders, never dereferenced when num_splits == 1
    if num_splits > 1:
        part_o, part_lse = split_merge.alloc_partials(
            batch, num_q_heads, num_splits, head_dim, q.device
        )
    _decode_kernel[(num_kv_heads, batch, num_splits)](
        q,
        k_cache,
        v_cache,
        out,
        part_o,
        part_lse,
        query_start_loc,
        seq_lens,
        block_table,
        softmax_scale * 1.4426950408889634,  # log2(e): the kernel works in base 2
        q.stride(0),
        q.stride(1),
        out.stride(0),
        out.stride(1),
        *paged_cache_strides(k_cache, v_cache),
        block_table.stride(0),
        GROUP=group,
        HEAD_DIM=head_dim,
        BLOCK_D=next_power_of_2(head_dim),
        BLOCK_H=max(16, next_power_of_2(group)),
        PAGE=page,
        BLOCK_N=config.block_n,
        NUM_SPLITS=num_splits,
        IEEE=q.dtype == torch.float32,
        UPCAST=INTERPRET,
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )
    if num_splits > 1:
        split_merge.merge_splits(part_o, part_lse, out, query_start_loc, rows_are_seqs=True)
    return out
