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
