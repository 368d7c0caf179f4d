"""Merge split-KV partial attention results into the final output.

When one query's keys are processed by several programs (split-KV, used to fill the GPU when
there are few queries), each program writes its softmax-normalised partial output o_s and the
log2-sum-exp lse_s of its scores. The exact result is sum_s w_s * o_s / sum_s w_s with
w_s = 2 ** (lse_s - max_s lse_s); this kernel computes that per (row, head).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from radix_plugin.kernels._tl_helpers import seq_of_token
from radix_plugin.kernels._utils import next_power_of_2


@triton.jit
def _merge_kernel(
    part_o_ptr,  # [rows, num_heads, num_splits, head_dim] fp32
    part_lse_ptr,  # [rows, num_heads, num_splits] fp32 (log2 domain, -inf = empty split)
    out_ptr,  # [num_tokens, num_heads, head_dim]
    qsl_ptr,
    num_seqs,
    stride_ot,
    stride_oh,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    NUM_SPLITS: tl.constexpr,
    BLOCK_S: tl.constexpr,
    ROWS_ARE_SEQS: tl.constexpr,
    SKIP_DECODE: tl.constexpr,
):
    row = tl.program_id(0)
    head = tl.program_id(1)
    num_heads = tl.num_programs(1)

    if ROWS_ARE_SEQS:
        # Decode partials: one row per sequence; only single-token queries were split.
        q_start = tl.load(qsl_ptr + row)
        q_len = tl.load(qsl_ptr + row + 1) - q_start
        if q_len != 1:
            return
        token = q_start
    else:
        # Extend partials: one row per token; skip padding tokens and (if the decode kernel
        # owns them) single-token sequences.
        token = row
        seq = seq_of_token(qsl_ptr, num_seqs, token)
        q_start = tl.load(qsl_ptr + seq)
        q_end = tl.load(qsl_ptr + seq + 1)
        if token >= q_end:
            return
        if SKIP_DECODE:  # noqa: SIM102 (constexpr outer branch, see prefix_attention)
            if q_end - q_start == 1:
                return

    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    s_mask = offs_s < NUM_SPLITS
    d_mask = offs_d < HEAD_DIM
    base = row.to(tl.int64) * num_heads + head
    lse = tl.load(part_lse_ptr + base * NUM_SPLITS + offs_s, mask=s_mask, other=float("-inf"))
    lse_max = tl.max(lse, axis=0)
    weight = tl.exp2(lse - lse_max)
    o_ptrs = part_o_ptr + (base * NUM_SPLITS + offs_s[:, None]) * HEAD_DIM + offs_d[None, :]
    o = tl.load(o_ptrs, mask=s_mask[:, None] & d_mask[None, :], other=0.0)
    # Empty splits never wrote their o_s: never let their uninitialised memory (possibly NaN)
    # reach the sum, even multiplied by a zero weight.
    o = tl.where(weight[:, None] > 0, o, 0.0)
    acc = tl.sum(o * weight[:, None], axis=0) / tl.sum(weight, axis=0)
    out_ptrs = out_ptr + token.to(tl.int64) * stride_ot + head * stride_oh + offs_d
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=d_mask)


def alloc_partials(
    rows: int, num_heads: int, num_splits: int, head_dim: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scratch for split-KV partials: o [rows, heads, splits, head_dim], lse [rows, heads, splits].

    Uninitialised on purpose (every lse is written; o only where lse is finite). Tests replace
    this function with a NaN-filled version to prove that nothing unwritten is ever consumed.
    """
    part_o = torch.empty(
        (rows, num_heads, num_splits, head_dim), dtype=torch.float32, device=device
    )
    part_lse = torch.empty((rows, num_heads, num_splits), dtype=torch.float32, device=device)
    return part_o, part_lse


def merge_splits(
    part_o: torch.Tensor,
    part_lse: torch.Tensor,
    out: torch.Tensor,
    query_start_loc: torch.Tensor,
    rows_are_seqs: bool,
    skip_decode: bool = False,
) -> None:
    """Combine partials into `out` in place.

    rows_are_seqs=True: partials are indexed by sequence (decode kernel).
    rows_are_seqs=False: partials are indexed by token (extend kernel).
    """
    rows, num_heads, num_splits, head_dim = part_o.shape
    if rows == 0:
        return
    _merge_kernel[(rows, num_heads)](
        part_o,
        part_lse,
        out,
        query_start_loc,
        query_start_loc.shape[0] - 1,
        out.stride(0),
        out.stride(1),
        HEAD_DIM=head_dim,
        BLOCK_D=next_power_of_2(head_dim),
        NUM_SPLITS=num_splits,
        BLOCK_S=max(2, next_power_of_2(num_splits)),
        ROWS_ARE_SEQS=rows_are_seqs,
        SKIP_DECODE=skip_decode,
        num_warps=4,
    )
