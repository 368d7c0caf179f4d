"""Token-bitmask apply against our reference and xgrammar's own torch implementation."""

from __future__ import annotations

import pytest
import torch
from xgrammar.kernels.apply_token_bitmask_inplace_torch import (
    apply_token_bitmask_inplace_torch as xgrammar_apply,
)

from radix_plugin.kernels import token_bitmask
from radix_plugin.kernels.reference import apply_token_bitmask_ref
from radix_plugin.kernels.token_bitmask import apply_token_bitmask_inplace


def _random_bitmask(rows: int, vocab: int, gen: torch.Generator) -> torch.Tensor:
    words = -(-vocab // 32)
    bits = torch.randint(0, 2**32, (rows, words), generator=gen, dtype=torch.int64)
    mask = bits.to(torch.uint32).view(torch.int32)  # full 32-bit range, sign bit included
    mask[0] = -1  # all allowed
    if rows > 1:
        mask[1] = 0  # nothing allowed
    return mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    ("batch", "vocab", "logits_pad", "use_indices"),
    [(3, 1000, 0, False), (5, 32 * 150, 24, True), (2, 4096 + 7, 0, False), (4, 31, 1, True)],
)
def test_bitmask_matches_references(
    dtype: torch.dtype, batch: int, vocab: int, logits_pad: int, use_indices: bool
) -> None:
    gen = torch.Generator().manual_seed(vocab)
    logits = torch.randn((batch, vocab + logits_pad), generator=gen).to(dtype)
    bitmask = _random_bitmask(batch, vocab, gen)
    indices = torch.tensor([batch - 1, 0], dtype=torch.int32) if use_indices else None
    ours, ref, xgr = logits.clone(), logits.clone(), logits.clone()

    apply_token_bitmask_inplace(ours, bitmask, indices, vocab_size=vocab)
    apply_token_bitmask_ref(ref, bitmask, indices, vocab_size=vocab)
    xgrammar_apply(
        xgr,
        bitmask,
        vocab_size=vocab,
        indices=None if indices is None else [int(i) for i in indices],
    )

    assert torch.equal(ours, ref)
    assert torch.equal(ours, xgr)
    # spot-check the bit order by hand: bit j of word i governs token 32 * i + j
    row = 2 if batch > 2 and not use_indices else 0
    for token in (0, 5, 31, min(32, vocab - 1), vocab - 1):
        allowed = (int(bitmask[row, token // 32]) >> (token % 32)) & 1
        assert (ours[row, token] == float("-inf")) == (allowed == 0)
    assert torch.equal(ours[:, vocab:], logits[:, vocab:])  # padding columns untouched


def test_cpu_without_interpreter_uses_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """CPU engines call this without the interpreter; it must not try to launch Triton."""
    monkeypatch.setattr(token_bitmask, "INTERPRET", False)
    launched = []
    monkeypatch.setattr(token_bitmask, "_bitmask_kernel", launched)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn((2, 100), generator=gen)
    bitmask = _random_bitmask(2, 100, gen)
    expected = logits.clone()
    apply_token_bitmask_ref(expected, bitmask)
    apply_token_bitmask_inplace(logits, bitmask)
    assert torch.equal(logits, expected) and not launched
