"""Deterministic token ids for trace requests.

Block ``h`` always gets the same ``block_size`` token ids, so equal hash ids are equal content
in both vLLM's hasher and the radix tree; output tokens are unique per request, so they can be
cached (as vLLM does) but never hit.
"""

from __future__ import annotations

from radix_plugin.simulator.trace import TraceRequest

_OUTPUT_BASE = 1 << 40


class TokenSynthesizer:
    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self._blocks: dict[int, list[int]] = {}

    def block(self, hash_id: int) -> list[int]:
        tokens = self._blocks.get(hash_id)
        if tokens is None:
            start = (hash_id + 1) * self.block_size
            tokens = list(range(start, start + self.block_size))
            self._blocks[hash_id] = tokens
        return tokens

    def prompt(self, req: TraceRequest) -> list[int]:
        out: list[int] = []
        for h in req.hash_ids:
            out.extend(self.block(h))
        return out[: req.input_length]

    def output(self, req: TraceRequest, index: int) -> list[int]:
        base = _OUTPUT_BASE + index * (1 << 20)
        return list(range(base, base + req.output_length))
