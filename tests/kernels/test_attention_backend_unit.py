"""The vLLM backend without an engine: registration gating, refused features, and one
write + forward step driven by vLLM's real CommonAttentionMetadata and our builder, on both
physical KV-cache layouts vLLM may choose (the engine test in integration_tests covers the
end-to-end path inside a CPU engine)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from radix_plugin.kernels.attention import registration
from radix_plugin.kernels.reference import prefix_attention_ref

BACKEND = "radix_plugin.kernels.attention.backend.RadixTritonAttentionBackend"


@pytest.fixture
def clean_registry() -> Iterator[Any]:
    """Give each test an unregistered CUSTOM/CPU_ATTN and restore whatever was there before."""
    from vllm.v1.attention.backends import registry

    enum = registry.AttentionBackendEnum
    saved = {m: registry._ATTN_OVERRIDES.get(m) for m in (enum.CUSTOM, enum.CPU_ATTN)}
    for member in saved:
        member.clear_override()
    yield enum
    for member, path in saved.items():
        member.clear_override()
        if path is not None:
            registry._ATTN_OVERRIDES[member] = path


def test_registration_without_env_only_makes_custom_selectable(
    clean_registry: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(registration.CPU_OVERRIDE_ENV, raising=False)
    registration.register_attention_backends()
    assert clean_registry.CUSTOM.get_path() == BACKEND
    assert not clean_registry.CPU_ATTN.is_overridden()


def test_cpu_override_is_opt_in_and_needs_the_interpreter(
    clean_registry: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(registration.CPU_OVERRIDE_ENV, "triton")
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        registration.register_attention_backends()
    assert not clean_registry.CPU_ATTN.is_overridden()

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    registration.register_attention_backends()
    assert clean_registry.CPU_ATTN.get_path() == BACKEND

    monkeypatch.setenv(registration.CPU_OVERRIDE_ENV, "tritno")
    with pytest.raises(ValueError, match="expected 'triton'"):
        registration.register_attention_backends()


def test_custom_claimed_by_someone_else_is_left_alone(clean_registry: Any) -> None:
    from vllm.v1.attention.backends.registry import register_backend

    register_backend(clean_registry.CUSTOM, "other.plugin.Backend")
    registration.register_attention_backends()
    assert clean_registry.CUSTOM.get_path() == "other.plugin.Backend"


@pytest.mark.parametrize(
    "kwargs",
    [{"alibi_slopes": [1.0] * 4}, {"sliding_window": 128}, {"logits_soft_cap": 30.0},
     {"kv_cache_dtype": "fp8"}, {"attn_type": "encoder_only"}],
)  # fmt: skip
def test_impl_refuses_unsupported_features(kwargs: dict[str, Any]) -> None:
    from radix_plugin.kernels.attention.backend import RadixTritonAttentionImpl

    with pytest.raises(NotImplementedError, match="does not support"):
        RadixTritonAttentionImpl(4, 64, 0.125, 2, **kwargs)


@pytest.mark.parametrize("layout", ["LBNHC", "LBHNC"])
def test_write_and_forward_with_vllm_metadata(layout: str, rel_err: Any) -> None:
    from vllm.v1.attention.backend import CommonAttentionMetadata

    from radix_plugin.kernels.attention.backend import (
        RadixTritonAttentionImpl,
        RadixTritonMetadataBuilder,
    )

    gen = torch.Generator().manual_seed(3)
    num_blocks, block_size, hq, hkv, d = 12, 16, 4, 2, 64
    # Logical [blocks, kv_heads, block_size, 2*d] in either physical order vLLM may pick.
    if layout == "LBNHC":
        kv_cache = torch.randn((num_blocks, block_size, hkv, 2 * d), generator=gen).transpose(1, 2)
    else:
        kv_cache = torch.randn((num_blocks, hkv, block_size, 2 * d), generator=gen)
    # request 0: 20 cached + 9 new tokens; request 1: decode at position 33; request 2: 5 new
    q_lens, seq_lens = [9, 1, 5], [29, 34, 5]
    block_table = torch.tensor([[7, 2, 0], [5, 9, 11], [3, 0, 0]], dtype=torch.int32)
    slots = []
    for b, (q, s) in enumerate(zip(q_lens, seq_lens, strict=True)):
        slots += [int(block_table[b, p // block_size]) * block_size + p % block_size
                  for p in range(s - q, s)]  # fmt: skip
    num_tokens = sum(q_lens)
    pad = 3  # vLLM pads the batch; padded slots are -1
    slot_mapping = torch.tensor([*slots, -1, -1, -1], dtype=torch.int64)
    qsl = torch.tensor([0, 9, 10, 15], dtype=torch.int32)
    common = CommonAttentionMetadata(
        query_start_loc=qsl,
        query_start_loc_cpu=qsl.clone(),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32),
        num_reqs=3,
        num_actual_tokens=num_tokens,
        max_query_len=9,
        max_seq_len=34,
        block_table_tensor=block_table,
        slot_mapping=slot_mapping,
    )
    builder = RadixTritonMetadataBuilder(None, ["layer.0"], None, torch.device("cpu"))  # type: ignore[arg-type]
    metadata = builder.build(0, common)
    assert metadata.num_decodes == 1

    impl = RadixTritonAttentionImpl(hq, d, d**-0.5, hkv)
    query = torch.randn((num_tokens + pad, hq, d), generator=gen)
    key = torch.randn((num_tokens + pad, hkv, d), generator=gen)
    value = torch.randn((num_tokens + pad, hkv, d), generator=gen)
    impl.do_kv_cache_update(None, key, value, kv_cache, slot_mapping)  # type: ignore[arg-type]
    output = torch.full_like(query, float("nan"))
    impl.forward(None, query, key, value, kv_cache, metadata, output)  # type: ignore[arg-type]

    k_cache, v_cache = kv_cache.transpose(1, 2).split(d, dim=-1)
    flat = torch.tensor(slots)
    assert torch.equal(k_cache.reshape(-1, hkv, d)[flat], key[:num_tokens])
    assert torch.equal(v_cache.reshape(-1, hkv, d)[flat], value[:num_tokens])
    ref = prefix_attention_ref(query, k_cache, v_cache, qsl, common.seq_lens, block_table, d**-0.5)
    assert rel_err(output[:num_tokens], ref) <= 1e-4
    assert torch.isnan(output[num_tokens:]).all()
