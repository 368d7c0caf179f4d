"""Triton device functions shared by the attention kernels.

Kept separate so the extend kernel, the decode kernel and the split merge locate sequences and
multiply tiles in exactly the same way.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def mma(a, b, IEEE: tl.constexpr, UPCAST: tl.constexpr):
    """Tile product with fp32 accumulation.

    IEEE: fp32 inputs would otherwise run in TF32 on the GPU (~1e-3 relative error), which breaks
    the fp32 accuracy contract, so they ask for full-precision products.

    UPCAST: Triton 3.9's interpreter stores bf16 as raw uint16 and its `tl.dot` multiplies those
    bit patterns as integers; under the interpreter we multiply in fp32 after the operands have
    already been rounded to their storage dtype, which reproduces the GPU's bf16-in/fp32-acc
    numerics. It is False for every GPU launch.
    """
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    elif IEEE:
        return tl.dot(a, b, input_precision="ieee")
    else:
        return tl.dot(a, b)


@triton.jit
def _last_true(qsl_ptr, num_seqs, target, BLOCK_M: tl.constexpr, ADD_INDEX: tl.constexpr):
    """Largest i in [0, num_seqs) with key(i) <= target, for a non-decreasing key(i).

    key(i) = qsl[i] // BLOCK_M + (i if ADD_INDEX else 0); key(0) = 0 <= target always holds.
    """
    lo = 0
    hi = num_seqs
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        key = tl.load(qsl_ptr + mid) // BLOCK_M
        if ADD_INDEX:
            key += mid
        go_right = key <= target
        lo = tl.where(go_right, mid, lo)
        hi = tl.where(go_right, hi, mid)
    return lo


@triton.jit
def seq_of_tile(qsl_ptr, num_seqs, tile, BLOCK_M: tl.constexpr):
    """Sequence owning global query tile `tile` (see the extend kernel's grid).

    f(i) = qsl[i] // BLOCK_M + i is strictly increasing and over-counts each sequence's tiles by
    at most one, so a grid of num_tokens // BLOCK_M + num_seqs tiles covers every sequence and the
    owner of a tile is the last i with f(i) <= tile. Doing this on the device avoids a GPU->CPU
    sync per layer and stays valid under CUDA-graph replay.
    """
    return _last_true(qsl_ptr, num_seqs, tile, BLOCK_M, True)


@triton.jit
def seq_of_token(qsl_ptr, num_seqs, token):
    """Sequence owning query token `token`: the last i with qsl[i] <= token.

    Empty sequences (qsl[i] == qsl[i + 1]) are skipped because a later index wins the tie.
    """
    return _last_true(qsl_ptr, num_seqs, token, 1, False)


@triton.jit
def paged_kv_tile(
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
    PAGE: tl.constexpr,
    MASK_N: tl.constexpr,
):
    """K and V tiles [BLOCK_N, BLOCK_D] of key positions `offs_n` of one sequence and KV head.

    Position n lives in slot n % PAGE of page bt_row[n // PAGE]; `k_base`/`v_base` already
    point at the KV head and the head-dim offsets. MASK_N=False skips the position mask for
    tiles known to be whole (the hot loop over a cached prefix); masked rows read zeros.
    """
    slot = offs_n % PAGE
    if MASK_N:
        page = tl.load(bt_row + offs_n // PAGE, mask=n_mask, other=0).to(tl.int64)
        kv_mask = n_mask[:, None] & d_mask[None, :]
    else:
        page = tl.load(bt_row + offs_n // PAGE).to(tl.int64)
        kv_mask = d_mask[None, :]
    k = tl.load(
        k_base + page[:, None] * stride_kb + slot[:, None] * stride_ks, mask=kv_mask, other=0.0
    )
    v = tl.load(
        v_base + page[:, None] * stride_vb + slot[:, None] * stride_vs, mask=kv_mask, other=0.0
    )
    return k, v


@triton.jit
def online_softmax_step(
    q,
    k,
    v,
    m_i,
    l_i,
    acc,
    keep,
    sm_scale_log2,
    MASKED: tl.constexpr,
    IEEE: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """Fold one key tile into the running (max, sum, output) of base-2 online softmax.

    With MASKED, scores where `keep` is False are dropped, and a row that has seen no key yet
    (possible with split-KV) keeps exp2 away from -inf - -inf.
    """
    qk = mma(q, tl.trans(k), IEEE, UPCAST) * sm_scale_log2
    if MASKED:
        qk = tl.where(keep, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, axis=1))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
    else:
        m_new = tl.maximum(m_i, tl.max(qk, axis=1))
        m_ref = m_new
    p = tl.exp2(qk - m_ref[:, None])
    alpha = tl.exp2(m_i - m_ref)
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + mma(p.to(v.dtype), v, IEEE, UPCAST)
    return m_new, l_i, acc
