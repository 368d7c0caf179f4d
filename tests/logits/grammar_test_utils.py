"""Small helpers shared by the grammar unit tests (bitmask decoding, simulated decoding)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

STOP_IDS = (2, 4)  # tiny model: <|end_of_text|>, <|im_end|> (generation_config eos)
TINY_VOCAB = 4096


def allowed_ids(bitmask: torch.Tensor, index: int, vocab_size: int) -> set[int]:
    """Token ids whose bit is set in `bitmask[index]`."""
    words = bitmask[index].to(torch.int64) & 0xFFFFFFFF
    bits = (words.unsqueeze(1) >> torch.arange(32)) & 1
    return {i for i in bits.flatten().nonzero().flatten().tolist() if i < vocab_size}


def sample_row(logits: torch.Tensor, generator: torch.Generator, greedy: bool) -> int:
    """Sample one id from a (masked) logits row; fails loudly if every token is masked."""
    if torch.isneginf(logits).all():
        raise AssertionError("grammar masked every token")
    if greedy:
        return int(torch.argmax(logits))
    return int(torch.multinomial(torch.softmax(logits.float(), dim=-1), 1, generator=generator))


def simulate_decoding(
    apply: Callable[[torch.Tensor], torch.Tensor],
    outputs: Sequence[list[int]],
    vocab_size: int,
    *,
    steps: int,
    seed: int = 0,
    greedy: bool = False,
    bias: torch.Tensor | None = None,
    after_step: Callable[[], Any] | None = None,
) -> list[bool]:
    """Drive a processor like the V1 runner: random logits, apply, sample, append to the live
    output lists. Returns, per row, whether the row ended with a stop token."""
    generator = torch.Generator().manual_seed(seed)
    done = [False] * len(outputs)
    for _ in range(steps):
        if all(done):
            break
        logits = torch.randn(len(outputs), vocab_size, generator=generator) * 3
        if bias is not None:
            logits += bias
        logits = apply(logits)
        for i, out in enumerate(outputs):
            if done[i]:
                continue
            token = sample_row(logits[i], generator, greedy)
            out.append(token)
            done[i] = token in STOP_IDS
        if after_step is not None:
            after_step()
    return done
