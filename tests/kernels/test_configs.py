"""Tile and split heuristics: shapes valid for tl.dot, and the split-KV decisions they were
designed to make on an H100 (132 SMs) for Llama-3-8B attention (32 q / 8 kv heads, d=128)."""

from __future__ import annotations

import pytest
import torch

from radix_plugin.kernels import configs

H100_SMS = 132


def _pow2(n: int) -> bool:
    return n >= 16 and n & (n - 1) == 0


@pytest.mark.parametrize("head_dim", [64, 80, 128, 256])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_tiles_are_valid_dot_shapes(head_dim: int, dtype: torch.dtype) -> None:
    cpu = torch.device("cpu")
    ext = configs.extend_config(head_dim, dtype, cpu)
    dec = configs.decode_config(head_dim, dtype, cpu)
    assert _pow2(ext.block_m) and _pow2(ext.block_n) and _pow2(dec.block_n)
    for cfg in (*configs.EXTEND_CANDIDATES, *configs.DECODE_CANDIDATES):
        assert all(_pow2(v) for k, v in vars(cfg).items() if k.startswith("block"))


def test_decode_splits_fill_the_gpu_only_when_needed() -> None:
    # batch 1 x 8 kv heads = 8 programs: split a 32k context into ~1k-key chunks
    assert configs.decode_splits(1, 8, H100_SMS, 32768, 64) == 33
    # short context: never chunks below 4 key tiles
    assert configs.decode_splits(1, 8, H100_SMS, 1024, 64) == 4
    # batch 256 x 8 = 2048 programs already fill the GPU
    assert configs.decode_splits(256, 8, H100_SMS, 32768, 64) == 1


def test_extend_splits_only_for_short_extends_on_long_prefixes() -> None:
    # 128 new tokens after a 32k prefix: 1 query tile x 32 heads -> split the keys
    assert configs.extend_splits(128, 32, H100_SMS, 32768 + 128, 128) == 9
    # 2k new tokens: 16 tiles x 32 heads = 512 programs -> no split
    assert configs.extend_splits(2048, 32, H100_SMS, 32768 + 2048, 128) == 1
    # short prefix: not worth splitting
    assert configs.extend_splits(128, 32, H100_SMS, 300, 128) == 1
