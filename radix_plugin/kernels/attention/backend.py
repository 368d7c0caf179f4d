"""vLLM attention backend running the plugin's own Triton kernels.

Why our own backend: radix-cache hits turn most prefills into "extend" steps (a few new tokens
on a long cached prefix), which is exactly the shape `radix_plugin.kernels.prefix_attention`
is built for, and owning the kernels lets the plugin tune them without patching vLLM.

vLLM contract (0.32): the attention layer calls `do_kv_cache_update` (new K/V -> paged cache by
slot mapping) and then `forward` on the same step; the KV cache arrives as the logical tensor
[num_blocks, num_kv_heads, block_size, 2 * head_size] in whatever physical layout the engine
chose, so K and V are taken as strided views and the kernels read them through their strides.

Selection: `--attention-backend CUSTOM` on GPU (see `registration.py`), or on CPU, where vLLM
ignores the flag, the opt-in override `RADIX_PLUGIN_CPU_ATTENTION=triton` together with
`TRITON_INTERPRET=1` (correctness testing only; the interpreter is slow).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from vllm.v1.attention.backend import (
    AttentionBackend,
    AttentionCGSupport,
    AttentionImpl,
    AttentionLayer,
    AttentionMetadataBuilder,
    AttentionType,
    CommonAttentionMetadata,
    MultipleOf,
)

from radix_plugin.kernels.kv_cache_write import write_kv_cache
from radix_plugin.kernels.prefix_attention import prefix_attention

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.config.cache import CacheDType
    from vllm.v1.kv_cache_interface import AttentionSpec, KVCacheSpec


class RadixTritonAttentionBackend(AttentionBackend):
    """Paged causal attention for decoder layers (fp16/bf16/fp32, unquantized KV cache)."""

    # The KV write is a separate call (`do_kv_cache_update`), as for vLLM's Triton backend.
    forward_includes_kv_cache_update: bool = False

    supported_dtypes: ClassVar[list[torch.dtype]] = [torch.float16, torch.bfloat16, torch.float32]
    supported_kv_cache_dtypes: ClassVar[list[CacheDType]] = ["auto", "float16", "bfloat16"]

    @staticmethod
    def get_name() -> str:
        # The attention layer looks its backend up as AttentionBackendEnum[get_name()], so
        # this must be the enum member we are registered under.
        return "CUSTOM"

    @staticmethod
    def get_impl_cls() -> type[RadixTritonAttentionImpl]:
        return RadixTritonAttentionImpl

    @staticmethod
    def get_builder_cls() -> type[RadixTritonMetadataBuilder]:
        return RadixTritonMetadataBuilder

    @staticmethod
    def get_supported_kernel_block_sizes(
        kv_cache_spec: KVCacheSpec | None = None,
    ) -> list[int | MultipleOf]:
        # The kernels take any page size; 16 keeps page boundaries aligned with key tiles.
        return [MultipleOf(16)]

    @classmethod
    def supports_head_size(cls, head_size: int) -> bool:
        # Tiles are padded to a power of two; past 256 the Q tile no longer fits registers.
        return 32 <= head_size <= 256

    @classmethod
    def supports_non_causal(cls) -> bool:
        return True


@dataclass
class RadixTritonMetadata:
    """Per-step metadata: the device tensors the kernels read plus host-side launch hints."""

    num_actual_tokens: int
    max_query_len: int
    max_seq_len: int
    num_decodes: int  # sequences with exactly one query token (decode kernel)
    query_start_loc: torch.Tensor
    seq_lens: torch.Tensor
    block_table: torch.Tensor
    slot_mapping: torch.Tensor
    causal: bool


class RadixTritonMetadataBuilder(AttentionMetadataBuilder[RadixTritonMetadata]):
    """Builds `RadixTritonMetadata` from vLLM's CommonAttentionMetadata.

    The kernels decide decode-vs-extend per sequence on the device, so the batch does not have
    to be reordered (reorder_batch_threshold stays None). Host hints come from the CPU copy of
    query_start_loc, which vLLM already has, so building costs no device sync.
    """

    # Eager attention only until the kernels have been validated under graph capture on a GPU.
    _cudagraph_support: ClassVar[AttentionCGSupport] = AttentionCGSupport.NEVER

    def __init__(
        self,
        kv_cache_spec: AttentionSpec,
        layer_names: list[str],
        vllm_config: VllmConfig,
        device: torch.device,
    ) -> None:
        super().__init__(kv_cache_spec, layer_names, vllm_config, device)

    def build(
        self,
        common_prefix_len: int,
        common_attn_metadata: CommonAttentionMetadata,
        fast_build: bool = False,
    ) -> RadixTritonMetadata:
        cm = common_attn_metadata
        if isinstance(cm.causal, torch.Tensor):
            raise NotImplementedError("per-request causality is not supported by this backend")
        qsl_cpu = cm.query_start_loc_cpu[: cm.num_reqs + 1]
        q_lens = qsl_cpu[1:] - qsl_cpu[:-1]
        return RadixTritonMetadata(
            num_actual_tokens=cm.num_actual_tokens,
            max_query_len=cm.max_query_len,
            max_seq_len=cm.max_seq_len,
            num_decodes=int((q_lens == 1).sum()),
            query_start_loc=cm.query_start_loc,
            seq_lens=cm.seq_lens,
            block_table=cm.block_table_tensor,
            slot_mapping=cm.slot_mapping,
            causal=bool(cm.causal),
        )


class RadixTritonAttentionImpl(AttentionImpl[RadixTritonMetadata]):
    """Runs `write_kv_cache` and `prefix_attention` for one attention layer."""

    def __init__(
        self,
        num_heads: int,
        head_size: int,
        scale: float,
        num_kv_heads: int | None = None,
        alibi_slopes: list[float] | None = None,
        sliding_window: int | None = None,
        kv_cache_dtype: str = "auto",
        logits_soft_cap: float | None = None,
        attn_type: str = AttentionType.DECODER,
        kv_sharing_target_layer_name: str | None = None,
        sinks: torch.Tensor | None = None,
    ) -> None:
        # On CPU the platform hands out the overridden CPU_ATTN path without running
        # validate_configuration, so unsupported features must be refused here, loudly.
        unsupported = {
            "ALiBi": alibi_slopes is not None,
            "sliding window": sliding_window is not None,
            "logits soft cap": bool(logits_soft_cap),
            "attention sinks": sinks is not None,
            f"attention type {attn_type}": attn_type != AttentionType.DECODER,
            f"kv cache dtype {kv_cache_dtype}": kv_cache_dtype
            not in RadixTritonAttentionBackend.supported_kv_cache_dtypes,
            f"head size {head_size}": not RadixTritonAttentionBackend.supports_head_size(head_size),
        }
        refused = [name for name, bad in unsupported.items() if bad]
        if refused:
            raise NotImplementedError(
                "radix_plugin Triton attention does not support: " + ", ".join(refused)
            )
        self.num_heads = num_heads
        self.head_size = head_size
        self.scale = float(scale)
        self.num_kv_heads = num_kv_heads if num_kv_heads is not None else num_heads
        self.kv_cache_dtype = kv_cache_dtype
        self.attn_type = attn_type
        self.kv_sharing_target_layer_name = kv_sharing_target_layer_name

    def _kv_views(self, kv_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[blocks, kv_heads, block_size, 2*D] -> K, V views [blocks, block_size, kv_heads, D]."""
        kv = kv_cache.transpose(1, 2)
        return kv[..., : self.head_size], kv[..., self.head_size :]

    def do_kv_cache_update(
        self,
        layer: AttentionLayer,
        key: torch.Tensor,
        value: torch.Tensor,
        kv_cache: torch.Tensor,
        slot_mapping: torch.Tensor,
    ) -> None:
        """Write this step's K/V into the paged cache (padding slots are -1 and skipped)."""
        if kv_cache.numel() == 0:
            return
        k_cache, v_cache = self._kv_views(kv_cache)
        write_kv_cache(key, value, k_cache, v_cache, slot_mapping)

    def forward(
        self,
        layer: AttentionLayer,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        kv_cache: torch.Tensor,
        attn_metadata: RadixTritonMetadata,
        output: torch.Tensor,
        output_scale: torch.Tensor | None = None,
        output_block_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attention for the step's tokens over the paged cache, written into `output`."""
        if output_scale is not None or output_block_scale is not None:
            raise NotImplementedError("fused output quantization is not supported")
        if attn_metadata is None:
            # Profiling / dummy run: no cache yet, only shapes matter.
            return output.fill_(0)
        n = attn_metadata.num_actual_tokens
        k_cache, v_cache = self._kv_views(kv_cache)
        prefix_attention(
            query[:n],
            k_cache,
            v_cache,
            output[:n],
            attn_metadata.query_start_loc,
            attn_metadata.seq_lens,
            attn_metadata.block_table,
            self.scale,
            attn_metadata.causal,
            max_query_len=attn_metadata.max_query_len,
            max_seq_len=attn_metadata.max_seq_len,
            num_decodes=attn_metadata.num_decodes,
        )
        return output
