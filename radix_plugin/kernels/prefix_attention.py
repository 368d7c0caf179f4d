"""Prefix ("extend") attention over a paged KV cache, and the public dispatcher.

The radix cache hands a request a cached prefix of KV blocks; only the new tokens are computed.
Their queries must attend to every cached prefix key and, causally, to the new keys (SGLang's
"extend" attention). vLLM writes the new K/V into the paged cache before attention runs, so
both parts are read from the cache through the block table: the kernel walks key positions
[0, seq_len) of its sequence, with no masking over the prefix part (every prefix key precedes
every new query) and a causal mask only on the tiles that straddle the diagonal.

`prefix_attention` is the entry point: it sends single-token queries to the split-KV decode
kernel and everything else to the extend kernel, deciding per sequence on the device, so a mixed
batch of long prefills and single-token decodes needs no reordering and no GPU->CPU sync.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from radix_plugin.kernels import split_merge
from radix_plugin.kernels._tl_helpers import online_softmax_step, paged_kv_tile, seq_of_tile
from radix_plugin.kernels._utils import (
    INTERPRET,
    check_launchable,
    device_sms,
    next_power_of_2,
    paged_cache_strides,
)
from radix_plugin.kernels.configs import (
    DecodeConfig,
    ExtendConfig,
    decode_config,
    decode_splits,
    extend_config,
    extend_splits,
)
from radix_plugin.kernels.decode_attention import decode_attention


@triton.jit
def _extend_kernel(
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
    num_seqs,
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
    PAGE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr,
    NUM_SPLITS: tl.constexpr,
    SKIP_DECODE: tl.constexpr,
    IEEE: tl.constexpr,
    UPCAST: tl.constexpr,
):
    # Heads vary fastest, so the `GROUP` programs sharing a KV head run side by side and
    # their K/V tile reads hit L2 instead of HBM.
    head = tl.program_id(0)
    tile = tl.program_id(1)
    split = tl.program_id(2)
    num_q_heads = tl.num_programs(0)
    kv_head = head // GROUP

    seq = seq_of_tile(qsl_ptr, num_seqs, tile, BLOCK_M)
    q_start = tl.load(qsl_ptr + seq)
    q_len = tl.load(qsl_ptr + seq + 1) - q_start
    m_start = (tile - (q_start // BLOCK_M + seq)) * BLOCK_M
    if m_start >= q_len:
        return  # spare tile of the over-provisioned grid
    # Nested on purpose: SKIP_DECODE is a constexpr, q_len a runtime scalar; Triton resolves
    # the outer branch at compile time, which an `and` would not let it do.
    if SKIP_DECODE:  # noqa: SIM102
        if q_len == 1:
            return  # owned by the decode kernel
    seq_len = tl.load(seq_lens_ptr + seq)
    prefix_len = seq_len - q_len

    offs_m = m_start + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_mask = offs_m < q_len
    d_mask = offs_d < HEAD_DIM
    q_pos = prefix_len + offs_m  # absolute position of each query row
    tokens = (q_start + offs_m).to(tl.int64)

    # Keys this tile can see: all of them, or (causal) up to its last row's position.
    if CAUSAL:
        kv_end = tl.minimum(seq_len, prefix_len + m_start + BLOCK_M)
        visible_to_all = prefix_len + m_start + 1  # keys below this need no causal mask
    else:
        kv_end = seq_len
        visible_to_all = seq_len
    if NUM_SPLITS > 1:
        chunk = tl.cdiv(tl.cdiv(kv_end, NUM_SPLITS), BLOCK_N) * BLOCK_N
        lo = split * chunk
        hi = tl.minimum(kv_end, lo + chunk)
    else:
        lo = 0
        hi = kv_end
    # [lo, full_end): whole tiles that every row may see. Chunk bounds are tile-aligned and
    # hi >= visible_to_all whenever hi is not, so these tiles need no mask at all.
    full_end = tl.maximum(lo, tl.minimum(hi, (visible_to_all // BLOCK_N) * BLOCK_N))

    if NUM_SPLITS > 1:
        lse_rows = (tokens * num_q_heads + head) * NUM_SPLITS + split
        if lo >= hi:
            tl.store(
                part_lse_ptr + lse_rows, tl.full([BLOCK_M], float("-inf"), tl.float32), mask=m_mask
            )
            return

    q_ptrs = q_ptr + tokens[:, None] * stride_qt + head * stride_qh + offs_d[None, :]
    q = tl.load(q_ptrs, mask=m_mask[:, None] & d_mask[None, :], other=0.0)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    bt_row = bt_ptr + seq.to(tl.int64) * stride_bt
    k_base = k_ptr + kv_head * stride_kh + offs_d[None, :]
    v_base = v_ptr + kv_head * stride_vh + offs_d[None, :]

    # Unmasked part: the cached prefix and any new keys below the tile's first query.
    for start in range(lo, full_end, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        k, v = paged_kv_tile(
            k_base,
            v_base,
            bt_row,
            offs_n,
            offs_n < hi,
            d_mask,
            stride_kb,
            stride_ks,
            stride_vb,
            stride_vs,
            PAGE,
            False,
        )
        m_i, l_i, acc = online_softmax_step(
            q, k, v, m_i, l_i, acc, None, sm_scale_log2, False, IEEE, UPCAST
        )

    # Masked part: tiles on the causal diagonal and the ragged end of the range.
    for start in range(full_end, hi, BLOCK_N):
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
        keep = n_mask[None, :]
        if CAUSAL:
            keep = keep & (offs_n[None, :] <= q_pos[:, None])
        m_i, l_i, acc = online_softmax_step(
            q, k, v, m_i, l_i, acc, keep, sm_scale_log2, True, IEEE, UPCAST
        )

    if NUM_SPLITS == 1:
        # Every real row sees at least its own key, so l_i > 0 on the rows that are stored.
        acc = acc / l_i[:, None]
        o_ptrs = out_ptr + tokens[:, None] * stride_ot + head * stride_oh + offs_d[None, :]
        tl.store(o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=m_mask[:, None] & d_mask[None, :])
    else:
        seen = l_i > 0
        acc = acc / tl.where(seen, l_i, 1.0)[:, None]
        lse = tl.where(seen, m_i + tl.log2(tl.where(seen, l_i, 1.0)), float("-inf"))
        tl.store(part_lse_ptr + lse_rows, lse, mask=m_mask)
        o_ptrs = part_o_ptr + lse_rows[:, None] * HEAD_DIM + offs_d[None, :]
        tl.store(o_ptrs, acc, mask=m_mask[:, None] & d_mask[None, :])


def extend_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    out: torch.Tensor,
    query_start_loc: torch.Tensor,
    seq_lens: torch.Tensor,
    block_table: torch.Tensor,
    softmax_scale: float,
    causal: bool,
    config: ExtendConfig,
    num_splits: int,
    skip_decode: bool,
) -> torch.Tensor:
    """Launch the extend kernel on every sequence (or only those with >1 query if skip_decode)."""
    check_launchable(q, k_cache, v_cache, out, query_start_loc, seq_lens, block_table)
    num_tokens, num_q_heads, head_dim = q.shape
    batch = seq_lens.shape[0]
    num_kv_heads, page = k_cache.shape[2], k_cache.shape[1]
    part_o = part_lse = out  # placeholders, never dereferenced when num_splits == 1
    if num_splits > 1:
        part_o, part_lse = split_merge.alloc_partials(
            num_tokens, num_q_heads, num_splits, head_dim, q.device
        )
    num_tiles = num_tokens // config.block_m + batch
    _extend_kernel[(num_q_heads, num_tiles, num_splits)](
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
        batch,
        q.stride(0),
        q.stride(1),
        out.stride(0),
        out.stride(1),
        *paged_cache_strides(k_cache, v_cache),
        block_table.stride(0),
        GROUP=num_q_heads // num_kv_heads,
        HEAD_DIM=head_dim,
        BLOCK_D=next_power_of_2(head_dim),
        PAGE=page,
        BLOCK_M=config.block_m,
        BLOCK_N=config.block_n,
        CAUSAL=causal,
        NUM_SPLITS=num_splits,
        SKIP_DECODE=skip_decode,
        IEEE=q.dtype == torch.float32,
        UPCAST=INTERPRET,
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )
    if num_splits > 1:
        split_merge.merge_splits(
            part_o, part_lse, out, query_start_loc, rows_are_seqs=False, skip_decode=skip_decode
        )
    return out


def _validate(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    out: torch.Tensor,
    query_start_loc: torch.Tensor,
    seq_lens: torch.Tensor,
    block_table: torch.Tensor,
) -> None:
    if q.dim() != 3 or out.shape != q.shape:
        raise ValueError(f"q and out must be [tokens, heads, head_dim], got {q.shape}, {out.shape}")
    if k_cache.dim() != 4 or v_cache.shape != k_cache.shape:
        raise ValueError("k_cache/v_cache must both be [num_blocks, block_size, kv_heads, dim]")
    if k_cache.shape[3] != q.shape[2]:
        raise ValueError("head_dim of q and the KV cache differ")
    if q.shape[1] % k_cache.shape[2] != 0:
        raise ValueError("num_q_heads must be a multiple of num_kv_heads")
    for name, t in (("q", q), ("out", out), ("k_cache", k_cache), ("v_cache", v_cache)):
        if t.stride(-1) != 1:
            raise ValueError(f"{name} must be contiguous in head_dim")
    if k_cache.dtype != q.dtype or v_cache.dtype != q.dtype:
        raise ValueError("q and the KV cache must have the same dtype (no quantized KV)")
    batch = seq_lens.shape[0]
    if query_start_loc.shape != (batch + 1,) or block_table.shape[0] < batch:
        raise ValueError("query_start_loc must be [batch+1] and block_table [>=batch, blocks]")
    for name, t in (("query_start_loc", query_start_loc), ("seq_lens", seq_lens)):
        if t.dtype != torch.int32:
            raise ValueError(f"{name} must be int32")
    if block_table.dtype != torch.int32 or block_table.stride(-1) != 1:
        raise ValueError("block_table must be int32 and contiguous per row")


def prefix_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    out: torch.Tensor,
    query_start_loc: torch.Tensor,
    seq_lens: torch.Tensor,
    block_table: torch.Tensor,
    softmax_scale: float,
    causal: bool = True,
    *,
    max_query_len: int | None = None,
    max_seq_len: int | None = None,
    num_decodes: int | None = None,
    extend_cfg: ExtendConfig | None = None,
    decode_cfg: DecodeConfig | None = None,
    extend_num_splits: int | None = None,
    decode_num_splits: int | None = None,
) -> torch.Tensor:
    """Attention of new tokens over their cached prefix plus themselves, written into `out`.

    Shapes (vLLM's): q/out [num_tokens, num_q_heads, head_dim]; k_cache/v_cache
    [num_blocks, block_size, num_kv_heads, head_dim] (any strides, head_dim contiguous);
    query_start_loc [batch + 1] int32; seq_lens [batch] int32 = cached prefix + new tokens;
    block_table [batch, max_blocks] int32. Query i of a sequence sits at position
    seq_len - q_len + i and (causal) sees keys at positions <= its own.

    The keyword-only host hints are what the vLLM metadata builder already knows on the CPU;
    passing them avoids device syncs. Left as None they are computed from the tensors (one sync).
    `num_decodes` only needs to say whether any sequence has exactly one query. The *_cfg and
    *_num_splits overrides exist for tests and benchmark sweeps.

    Rows of `out` beyond query_start_loc[-1] (padding) are not written.
    """
    _validate(q, k_cache, v_cache, out, query_start_loc, seq_lens, block_table)
    batch = seq_lens.shape[0]
    if batch == 0 or q.shape[0] == 0:
        return out
    if max_query_len is None or num_decodes is None or max_seq_len is None:
        q_lens = (query_start_loc[1:] - query_start_loc[:-1]).tolist()
        max_query_len = max(q_lens) if max_query_len is None else max_query_len
        num_decodes = sum(1 for n in q_lens if n == 1) if num_decodes is None else num_decodes
        max_seq_len = int(seq_lens.max()) if max_seq_len is None else max_seq_len

    head_dim = q.shape[2]
    sms = device_sms(q)
    run_decode = num_decodes > 0
    if run_decode:
        dcfg = decode_cfg or decode_config(head_dim, q.dtype, q.device)
        splits = decode_num_splits or decode_splits(
            batch, k_cache.shape[2], sms, max_seq_len, dcfg.block_n
        )
        decode_attention(
            q, k_cache, v_cache, out, query_start_loc, seq_lens, block_table,
            softmax_scale, dcfg, splits,
        )  # fmt: skip
    if max_query_len > 1:
        ecfg = extend_cfg or extend_config(head_dim, q.dtype, q.device)
        extend_tokens = q.shape[0] - (num_decodes if run_decode else 0)
        splits = extend_num_splits or extend_splits(
            extend_tokens, q.shape[1], sms, max_seq_len, ecfg.block_m
        )
        extend_attention(
            q, k_cache, v_cache, out, query_start_loc, seq_lens, block_table,
            softmax_scale, causal, ecfg, splits, skip_decode=run_decode,
        )  # fmt: skip
    return out
