"""Tile shapes and split-KV heuristics for the attention kernels.

Why heuristics instead of `triton.autotune`: autotuning picks a config by timing every candidate
on the first call for each key, which (a) would run every candidate under the CPU interpreter,
(b) cannot run inside CUDA-graph capture, and (c) makes the grid (which depends on BLOCK_M)
unknowable before the call. The values below are the standard FlashAttention-2 tiles for
Hopper/Ampere per head dimension; `benchmarks/kernels/bench_attention.py --sweep` times the
alternatives in `EXTEND_CANDIDATES` / `DECODE_CANDIDATES` on a GPU so the table can be revised
from measurements rather than guesses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from radix_plugin.kernels._utils import INTERPRET, next_power_of_2


@dataclass(frozen=True)
class ExtendConfig:
    """Tiles of the prefill/extend kernel: BLOCK_M query tokens x BLOCK_N keys per step."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


@dataclass(frozen=True)
class DecodeConfig:
    """Tiles of the split-KV decode kernel: BLOCK_N keys per step for one KV-head group."""

    block_n: int
    num_warps: int
    num_stages: int


def _capability(device: torch.device) -> tuple[int, int]:
    if device.type != "cuda":
        return (9, 0)  # the interpreter mimics the Hopper choices
    return torch.cuda.get_device_capability(device)


def extend_config(head_dim: int, dtype: torch.dtype, device: torch.device) -> ExtendConfig:
    """Pick extend tiles per head_dim.

    Hopper keeps a 128-row Q tile in registers across 8 warps (two warpgroups) for d <= 128, so
    each K/V tile streamed through shared memory is reused by 128 queries; d = 256 halves the Q
    tile to stay inside the register file. fp32 inputs double the bytes per tile, so they get
    half-size tiles. Under the interpreter, large tiles simply mean fewer Python-level programs.
    """
    d = next_power_of_2(head_dim)
    if INTERPRET and device.type == "cpu":
        return ExtendConfig(block_m=64, block_n=64, num_warps=4, num_stages=1)
    major, _ = _capability(device)
    stages = 3 if major >= 9 else 2
    if dtype == torch.float32:
        # Twice the bytes per element: half the key tile; d=256 needs 8 warps for the fp32
        # accumulator plus fp32 Q not to spill.
        return ExtendConfig(
            block_m=64,
            block_n=32 if d >= 128 else 64,
            num_warps=8 if d >= 256 else 4,
            num_stages=2,
        )
    if d <= 64:
        return ExtendConfig(block_m=128, block_n=64, num_warps=4, num_stages=stages)
    if d <= 128:
        return ExtendConfig(block_m=128, block_n=64, num_warps=8, num_stages=stages)
    return ExtendConfig(block_m=64, block_n=64, num_warps=8, num_stages=2)


def decode_config(head_dim: int, dtype: torch.dtype, device: torch.device) -> DecodeConfig:
    """Pick decode tiles per head_dim.

    Decode is bandwidth-bound: what matters is enough bytes in flight per SM, so the tile is
    sized to ~16 KiB of K (+ the same of V) per pipeline stage.
    """
    d = next_power_of_2(head_dim)
    if INTERPRET and device.type == "cpu":
        return DecodeConfig(block_n=64, num_warps=4, num_stages=1)
    major, _ = _capability(device)
    stages = 3 if major >= 9 else 2
    elem = 4 if dtype == torch.float32 else 2
    block_n = max(16, min(128, 16384 // (d * elem)))
    return DecodeConfig(block_n=block_n, num_warps=4, num_stages=stages)


def decode_splits(
    batch: int, num_kv_heads: int, num_sms: int, max_seq_len: int | None, block_n: int
) -> int:
    """How many KV chunks each decode (sequence, KV head) is split into.

    One program per (sequence, KV head) leaves most SMs idle at small batch (batch 1 x 8 KV
    heads = 8 programs on 132 SMs), so the context is cut into chunks processed in parallel and
    merged afterwards. Aim for ~2 waves; never make a chunk shorter than 4 key tiles, since the
    merge pass costs about as much as reading one tile.
    """
    programs = max(1, batch * num_kv_heads)
    splits = max(1, -(-2 * num_sms // programs))
    if max_seq_len is not None:
        splits = min(splits, max(1, max_seq_len // (4 * block_n)))
    return int(min(splits, 64))


def extend_splits(
    extend_tokens: int, num_q_heads: int, num_sms: int, max_seq_len: int, block_m: int
) -> int:
    """Split the KV range of extend programs when there are too few of them to fill the GPU.

    The case that needs it is a short extend on a long cached prefix (128 new tokens after a
    32k-token prefix: 1-2 query tiles x 32 heads = 64 programs, each streaming 32k keys). Each
    split keeps at least 512 keys so the partial-result traffic stays small.
    """
    programs = max(1, -(-extend_tokens // block_m)) * num_q_heads
    if programs >= num_sms:
        return 1
    splits = -(-2 * num_sms // programs)
    splits = min(splits, max(1, max_seq_len // 512), 16)
    return int(max(1, splits))


EXTEND_CANDIDATES: tuple[ExtendConfig, ...] = tuple(
    ExtendConfig(m, n, w, s)
    for m, n, w, s in [
        (64, 64, 4, 2),
        (64, 64, 4, 3),
        (128, 32, 4, 3),
        (128, 64, 4, 3),
        (128, 64, 8, 3),
        (128, 128, 8, 2),
        (128, 128, 8, 3),
        (64, 128, 4, 3),
    ]
)

DECODE_CANDIDATES: tuple[DecodeConfig, ...] = tuple(
    DecodeConfig(n, w, s)
    for n, w, s in [(32, 4, 2), (64, 4, 2), (64, 4, 3), (128, 4, 3), (64, 8, 3), (128, 8, 3)]
)
