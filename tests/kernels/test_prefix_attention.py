"""Paged prefix/extend + decode attention against a float64 reference (Triton interpreter).

Every run starts from an all-NaN output, and every cache slot no sequence owns is NaN, so an
element the kernel forgot to write, or a key it read past a sequence's end, fails the check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from radix_plugin.kernels.configs import DecodeConfig, ExtendConfig
from radix_plugin.kernels.prefix_attention import extend_attention, prefix_attention
from radix_plugin.kernels.reference import prefix_attention_ref

F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16
TOLERANCE = {F32: 1e-4, BF16: 1e-2, F16: 1e-3}


@dataclass
class Case:
    q_lens: list[int]
    prefix_lens: list[int]
    num_q_heads: int = 4
    num_kv_heads: int = 1
    head_dim: int = 64
    block_size: int = 16
    dtype: torch.dtype = F32
    causal: bool = True
    pad_tokens: int = 0
    kwargs: dict[str, Any] = field(default_factory=dict)


CASES: dict[str, Case] = {
    # prefix 0 to several blocks, lengths on and off block boundaries
    "no_prefix": Case([37], [0], num_kv_heads=4),
    "prefix_exactly_one_block": Case([20], [16]),
    "prefix_not_block_multiple_gqa8": Case([33], [45], num_q_heads=8),
    "prefix_several_blocks_page32": Case([24], [150], block_size=32, num_kv_heads=2),
    "ragged_batch_page64": Case([5, 64, 2, 17], [100, 0, 31, 7], block_size=64),
    "zero_query_and_padding_rows": Case([9, 0, 40], [20, 13, 0], pad_tokens=5),
    # mixed prefill + decode, decode rows not in front (no reordering needed)
    "mixed_prefill_decode": Case([1, 30, 1, 1, 12], [70, 33, 0, 129, 5], block_size=32),
    "decode_only_gqa1": Case([1, 1, 1], [63, 200, 0], num_q_heads=2, num_kv_heads=2),
    "decode_only_gqa8": Case([1, 1], [90, 17], num_q_heads=8),
    # tile geometry: key tile inside a page, key tile spanning 8 pages, several query tiles
    "tile_n16_in_page128": Case(
        [40], [150], block_size=128, kwargs={"extend_cfg": ExtendConfig(32, 16, 4, 1)}
    ),
    "tile_n128_over_page16": Case(
        [50, 1],
        [99, 77],
        kwargs={"extend_cfg": ExtendConfig(16, 128, 4, 1), "decode_cfg": DecodeConfig(128, 4, 1)},
    ),
    "many_query_tiles": Case([70, 45], [3, 40], kwargs={"extend_cfg": ExtendConfig(16, 32, 4, 1)}),
    # split-KV: forced (uneven, some splits empty) and chosen by the heuristics (seq > 1k)
    "extend_split3": Case([20, 6], [300, 41], kwargs={"extend_num_splits": 3}),
    # split boundary inside the causal diagonal: early rows see no key of the last split
    "extend_split_inside_diagonal": Case([60], [10], kwargs={"extend_num_splits": 2}),
    "decode_split5_some_empty": Case([1, 1, 1], [250, 40, 3], kwargs={"decode_num_splits": 5}),
    "heuristic_splits_long_context": Case([1, 1, 18], [1500, 1100, 1030], num_q_heads=2),
    # non-causal (bidirectional over prefix + new tokens)
    "non_causal": Case([21, 1, 8], [30, 10, 0], causal=False),
    # head dims 128 / 256 / non power of two
    "head_dim_128": Case([17, 1], [40, 60], head_dim=128, block_size=32),
    "head_dim_256": Case([9, 1], [20, 33], head_dim=256, num_q_heads=2),
    "head_dim_80": Case([12, 1], [19, 5], head_dim=80),
    # low precision
    "bf16_mixed_gqa4": Case([26, 1, 1], [50, 64, 7], dtype=BF16, block_size=32),
    "bf16_head_dim_128_split": Case(
        [1, 1], [300, 90], dtype=BF16, head_dim=128, kwargs={"decode_num_splits": 4}
    ),
    "fp16_mixed_gqa8": Case([19, 1], [37, 50], dtype=F16, num_q_heads=8),
}


def _run(case: Case, make: Any) -> tuple[torch.Tensor, torch.Tensor, Any]:
    batch = make(
        case.q_lens,
        case.prefix_lens,
        case.num_q_heads,
        case.num_kv_heads,
        case.head_dim,
        case.block_size,
        case.dtype,
        pad_tokens=case.pad_tokens,
    )
    out = torch.full_like(batch.q, float("nan"))
    scale = case.head_dim**-0.5
    prefix_attention(
        batch.q, batch.k_cache, batch.v_cache, out, batch.query_start_loc, batch.seq_lens,
        batch.block_table, scale, case.causal, **case.kwargs,
    )  # fmt: skip
    ref = prefix_attention_ref(
        batch.q, batch.k_cache, batch.v_cache, batch.query_start_loc, batch.seq_lens,
        batch.block_table, scale, case.causal,
    )  # fmt: skip
    return out, ref, batch


@pytest.mark.parametrize("name", list(CASES))
def test_prefix_attention_matches_float64_reference(
    name: str, paged_batch: Any, rel_err: Any, record_property: Any
) -> None:
    case = CASES[name]
    out, ref, batch = _run(case, paged_batch)
    err = rel_err(out[: batch.num_tokens], ref)
    record_property("rel_error", err)
    assert err <= TOLERANCE[case.dtype], f"{name}: relative error {err:.3e}"
    # padding rows after the real tokens belong to nobody and must stay untouched
    assert torch.isnan(out[batch.num_tokens :]).all()


def test_unwritten_rows_are_caught(paged_batch: Any, rel_err: Any) -> None:
    """The NaN poisoning is what makes the other tests able to fail: running only the extend
    kernel with `skip_decode` leaves the decode row unwritten, and the check must notice."""
    batch = paged_batch([5, 1], [10, 20], 4, 1, 64, 16, F32)
    out = torch.full_like(batch.q, float("nan"))
    extend_attention(
        batch.q, batch.k_cache, batch.v_cache, out, batch.query_start_loc, batch.seq_lens,
        batch.block_table, 0.125, True, ExtendConfig(64, 64, 4, 1), 1, skip_decode=True,
    )  # fmt: skip
    ref = prefix_attention_ref(
        batch.q, batch.k_cache, batch.v_cache, batch.query_start_loc, batch.seq_lens,
        batch.block_table, 0.125,
    )  # fmt: skip
    assert not rel_err(out, ref) <= 1e-4
    assert torch.isnan(out[5]).all() and not torch.isnan(out[:5]).any()


def test_host_hints_match_computed_hints(paged_batch: Any) -> None:
    """The backend passes host-side hints; they must not change the result."""
    batch = paged_batch([1, 14, 1], [40, 9, 0], 4, 2, 64, 16, F32)
    args = (batch.q, batch.k_cache, batch.v_cache)
    meta = (batch.query_start_loc, batch.seq_lens, batch.block_table, 0.125)
    out_a = torch.full_like(batch.q, float("nan"))
    out_b = torch.full_like(batch.q, float("nan"))
    prefix_attention(*args, out_a, *meta)
    prefix_attention(*args, out_b, *meta, max_query_len=14, max_seq_len=41, num_decodes=2)
    assert torch.equal(out_a, out_b)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: setattr(b, "seq_lens", b.seq_lens.long()), "int32"),
        (lambda b: setattr(b, "q", b.q[:, :3]), "multiple"),
        (lambda b: setattr(b, "k_cache", b.k_cache.to(torch.float16)), "dtype"),
    ],
)
def test_rejects_bad_inputs(paged_batch: Any, mutate: Any, message: str) -> None:
    batch = paged_batch([3], [5], 4, 2, 64, 16, F32)
    mutate(batch)
    out = torch.empty_like(batch.q)
    with pytest.raises(ValueError, match=message):
        prefix_attention(
            batch.q, batch.k_cache, batch.v_cache, out, batch.query_start_loc, batch.seq_lens,
            batch.block_table, 0.1,
        )  # fmt: skip


@settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    seqs=st.lists(
        st.tuples(st.sampled_from([0, 1, 1, 2, 7, 16, 33]), st.integers(0, 120)),
        min_size=1,
        max_size=4,
    ),
    group=st.sampled_from([1, 2, 4]),
    block_size=st.sampled_from([16, 32, 64]),
    causal=st.booleans(),
    extend_splits=st.sampled_from([None, 2]),
    decode_splits=st.sampled_from([None, 3]),
    seed=st.integers(0, 2**16),
)
def test_random_batches(
    paged_batch: Any,
    rel_err: Any,
    seqs: list[tuple[int, int]],
    group: int,
    block_size: int,
    causal: bool,
    extend_splits: int | None,
    decode_splits: int | None,
    seed: int,
) -> None:
    q_lens = [q for q, _ in seqs]
    prefix_lens = [p if q > 0 else max(p, 1) for q, p in seqs]
    if sum(q_lens) == 0:
        q_lens[0] = 1
    batch = paged_batch(q_lens, prefix_lens, 2 * group, 2, 32, block_size, F32, seed=seed)
    out = torch.full_like(batch.q, float("nan"))
    prefix_attention(
        batch.q, batch.k_cache, batch.v_cache, out, batch.query_start_loc, batch.seq_lens,
        batch.block_table, 0.2, causal, extend_num_splits=extend_splits,
        decode_num_splits=decode_splits,
    )  # fmt: skip
    ref = prefix_attention_ref(
        batch.q, batch.k_cache, batch.v_cache, batch.query_start_loc, batch.seq_lens,
        batch.block_table, 0.2, causal,
    )  # fmt: skip
    assert rel_err(out, ref) <= 1e-4
