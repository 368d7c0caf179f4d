"""Apply a packed token bitmask to logits in place (the compressed FSM's last step).

Layout is xgrammar's: row r of `bitmask` is ceil(vocab / 32) int32 words and bit j of word i
allows token 32 * i + j. Disallowed logits become -inf. The kernel never reads the logits: it
only stores -inf where a bit is 0, so an all-allowed row costs just its (tiny) bitmask read.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from radix_plugin.kernels._utils import INTERPRET, check_launchable
from radix_plugin.kernels.reference import apply_token_bitmask_ref


@triton.jit
def _bitmask_kernel(
    logits_ptr,
    bitmask_ptr,
    indices_ptr,
    vocab_size,
    stride_logits,
    stride_bitmask,
    HAS_INDICES: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    pid = tl.program_id(0)
    block = tl.program_id(1)
    if HAS_INDICES:  # noqa: SIM108 (a constexpr branch, resolved at compile time)
        row = tl.load(indices_ptr + pid).to(tl.int64)
    else:
        row = pid.to(tl.int64)
    offs = block * BLOCK_V + tl.arange(0, BLOCK_V)
    in_vocab = offs < vocab_size
    words = tl.load(bitmask_ptr + row * stride_bitmask + offs // 32, mask=in_vocab, other=-1)
    allowed = (words >> (offs % 32)) & 1
    neg_inf = tl.full([BLOCK_V], float("-inf"), logits_ptr.dtype.element_ty)
    tl.store(logits_ptr + row * stride_logits + offs, neg_inf, mask=in_vocab & (allowed == 0))


def apply_token_bitmask_inplace(
    logits: torch.Tensor,
    bitmask: torch.Tensor,
    indices: torch.Tensor | None = None,
    vocab_size: int | None = None,
) -> None:
    """Mask `logits` [batch, vocab] with `bitmask` [batch, ceil(vocab/32)] int32, in place.

    `indices` (int32/int64) restricts the operation to those rows; logits row indices[k] is
    masked with bitmask row indices[k] (xgrammar's semantics). `vocab_size` defaults to
    min(logits.shape[-1], 32 * bitmask.shape[-1]); columns beyond it are left alone.

    CPU tensors outside the Triton interpreter use the torch reference, so CPU engines can call
    this unconditionally.
    """
    if logits.dim() != 2 or bitmask.dim() != 2 or bitmask.dtype != torch.int32:
        raise ValueError("expected logits [batch, vocab] and an int32 bitmask [batch, words]")
    if logits.stride(-1) != 1 or bitmask.stride(-1) != 1:
        raise ValueError("logits and bitmask rows must be contiguous")
    if vocab_size is None:
        vocab_size = min(logits.shape[-1], bitmask.shape[-1] * 32)
    num_rows = logits.shape[0] if indices is None else indices.shape[0]
    if num_rows == 0 or vocab_size == 0:
        return
    if logits.device.type == "cpu" and not INTERPRET:
        apply_token_bitmask_ref(logits, bitmask, indices, vocab_size)
        return
    tensors = [logits, bitmask] if indices is None else [logits, bitmask, indices]
    check_launchable(*tensors)
    block_v = 4096
    grid = (num_rows, triton.cdiv(vocab_size, block_v))
    _bitmask_kernel[grid](
        logits,
        bitmask,
        indices if indices is not None else bitmask,
        vocab_size,
        logits.stride(0),
        bitmask.stride(0),
        HAS_INDICES=indices is not None,
        BLOCK_V=block_v,
        num_warps=4,
    )
