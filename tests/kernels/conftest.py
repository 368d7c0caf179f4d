"""Run the Triton kernels on CPU through the Triton interpreter, and build paged test inputs.

Triton fixes compile-vs-interpret when `@triton.jit` runs (module import), so the flag is set
here, before any test module imports the kernels. If something in the same pytest process
imported them earlier without the flag, they are re-imported with it: without the interpreter
they cannot run on a CPU-only machine at all.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch

_KERNEL_MODULES = (
    "radix_plugin.kernels._utils",
    "radix_plugin.kernels._tl_helpers",
    "radix_plugin.kernels.configs",
    "radix_plugin.kernels.reference",
    "radix_plugin.kernels.split_merge",
    "radix_plugin.kernels.decode_attention",
    "radix_plugin.kernels.prefix_attention",
    "radix_plugin.kernels.kv_cache_write",
    "radix_plugin.kernels.token_bitmask",
)

if "radix_plugin.kernels._utils" in sys.modules and not sys.modules[_KERNEL_MODULES[0]].INTERPRET:
    for _name in _KERNEL_MODULES:
        if _name in sys.modules:
            importlib.reload(sys.modules[_name])

from radix_plugin.kernels import _utils  # noqa: E402

assert _utils.INTERPRET, "TRITON_INTERPRET=1 did not take effect for radix_plugin.kernels"


@dataclass
class PagedBatch:
    """A random batch laid out the way vLLM hands it to an attention backend."""

    q: torch.Tensor
    k_cache: torch.Tensor
    v_cache: torch.Tensor
    query_start_loc: torch.Tensor
    seq_lens: torch.Tensor
    block_table: torch.Tensor
    num_tokens: int  # real tokens; q may carry padding rows after them


def make_paged_batch(
    q_lens: list[int],
    prefix_lens: list[int],
    num_q_heads: int,
    num_kv_heads: int,
    head_dim: int,
    block_size: int,
    dtype: torch.dtype,
    pad_tokens: int = 0,
    seed: int = 0,
) -> PagedBatch:
    """Random q/K/V with each sequence's blocks scattered over the cache in shuffled order.

    Every cache slot that no sequence owns is NaN, and block-table entries past a sequence's
    last block point at an all-NaN block, so a kernel that reads one key too many (wrong mask,
    wrong block index) turns its output NaN and the comparison fails.
    """
    gen = torch.Generator().manual_seed(seed)
    seq_lens = [p + q for p, q in zip(prefix_lens, q_lens, strict=True)]
    blocks_per_seq = [-(-s // block_size) for s in seq_lens]
    width = max(max(blocks_per_seq), 1) + 2
    total = sum(blocks_per_seq) + 3  # spare blocks stay NaN
    perm = torch.randperm(total, generator=gen).tolist()
    nan_block = perm.pop()
    block_table = torch.full((len(q_lens), width), nan_block, dtype=torch.int32)
    shape = (total, block_size, num_kv_heads, head_dim)
    k_cache = torch.full(shape, float("nan"), dtype=dtype)
    v_cache = torch.full(shape, float("nan"), dtype=dtype)
    for b, (n_blocks, seq_len) in enumerate(zip(blocks_per_seq, seq_lens, strict=True)):
        for i in range(n_blocks):
            block = perm.pop()
            block_table[b, i] = block
            used = min(block_size, seq_len - i * block_size)
            fill = (used, num_kv_heads, head_dim)
            k_cache[block, :used] = torch.randn(fill, generator=gen).to(dtype)
            v_cache[block, :used] = torch.randn(fill, generator=gen).to(dtype)
    num_tokens = sum(q_lens)
    q = torch.randn((num_tokens + pad_tokens, num_q_heads, head_dim), generator=gen).to(dtype)
    qsl = [0]
    for n in q_lens:
        qsl.append(qsl[-1] + n)
    return PagedBatch(
        q=q,
        k_cache=k_cache,
        v_cache=v_cache,
        query_start_loc=torch.tensor(qsl, dtype=torch.int32),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32),
        block_table=block_table,
        num_tokens=num_tokens,
    )


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64; NaN anywhere in `out` gives NaN (fails any bound)."""
    out64 = out.to(torch.float64)
    return float(torch.linalg.vector_norm(out64 - ref) / torch.linalg.vector_norm(ref))


@pytest.fixture
def paged_batch() -> Callable[..., PagedBatch]:
    """The `make_paged_batch` factory, for tests."""
    return make_paged_batch


@pytest.fixture
def rel_err() -> Callable[[torch.Tensor, torch.Tensor], float]:
    """The `rel_error` metric, for tests."""
    return rel_error


@pytest.fixture(autouse=True)
def nan_split_scratch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Split-KV scratch starts as NaN instead of whatever torch.empty returns, so a merge that
    consumed a partial no program wrote fails deterministically."""
    from radix_plugin.kernels import split_merge

    def alloc(
        rows: int, num_heads: int, num_splits: int, head_dim: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        nan = float("nan")
        part_o = torch.full((rows, num_heads, num_splits, head_dim), nan, device=device)
        part_lse = torch.full((rows, num_heads, num_splits), nan, device=device)
        return part_o, part_lse

    monkeypatch.setattr(split_merge, "alloc_partials", alloc)
