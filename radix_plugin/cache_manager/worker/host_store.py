"""Worker side of the host tier: host copies of KV blocks, and the copies to and from them.

Layout-agnostic: vLLM's ``KVCacheConfig`` says where the page of block ``b`` of each layer
starts in the backing allocation (``offset + l * layer_stride + b * block_stride`` bytes) and
how long it is (the spec's ``page_size_bytes``). Every layer's pages are viewed as a
``[num_blocks, page_bytes]`` byte tensor over the engine's own KV memory, whatever the
attention backend's tensor shape, so one copy routine serves the CPU and GPU layouts.
Host memory is one ``[num_slots, num_layers, page_bytes]`` byte tensor, pinned on GPU, and
every copy reads or writes its slots in place (a slot is contiguous), never through a
pageable temporary, so ``non_blocking`` copies really are asynchronous.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from vllm.v1.kv_cache_interface import KVCacheConfig, KVCacheGroupSpec


class HostTierLayoutError(ValueError):
    """The KV cache layout is one the host tier cannot copy blocks of."""


def block_bytes(kv_cache_config: KVCacheConfig) -> int:
    """Bytes one block takes over all layers (what one host slot must hold)."""
    group = _single_group(kv_cache_config)
    return group.kv_cache_spec.page_size_bytes * len(group.layer_names)


def _single_group(kv_cache_config: KVCacheConfig) -> KVCacheGroupSpec:
    groups = kv_cache_config.kv_cache_groups
    if len(groups) != 1:
        raise HostTierLayoutError(
            f"the radix host tier supports models with one KV cache group (full attention "
            f"in every layer); this model has {len(groups)}"
        )
    return groups[0]


def page_views(
    kv_caches: Mapping[str, torch.Tensor], kv_cache_config: KVCacheConfig
) -> list[torch.Tensor]:
    """One ``[num_blocks, page_bytes]`` uint8 view per layer, over the engine's KV memory."""
    group = _single_group(kv_cache_config)
    page = group.kv_cache_spec.page_size_bytes
    num_blocks = kv_cache_config.num_blocks
    stride_of = {
        layer: t.block_stride for t in kv_cache_config.kv_cache_tensors for layer in t.layers
    }
    views = []
    for layer in group.layer_names:
        if layer not in kv_caches or layer not in stride_of:
            raise HostTierLayoutError(f"no KV cache registered for layer {layer!r}")
        tensor = kv_caches[layer]
        storage = tensor.untyped_storage()
        start = tensor.storage_offset() * tensor.element_size()
        block_stride = stride_of[layer]
        end = start + (num_blocks - 1) * block_stride + page
        if end > storage.nbytes():
            raise HostTierLayoutError(
                f"layer {layer!r}: {num_blocks} pages of {page} bytes every {block_stride} "
                f"bytes from byte {start} overrun its {storage.nbytes()}-byte allocation"
            )
        raw = torch.empty(0, dtype=torch.uint8, device=tensor.device)
        raw.set_(storage, 0, (storage.nbytes(),))
        views.append(raw.as_strided((num_blocks, page), (block_stride, 1), start))
    return views


class HostStore:
    """Host copies of blocks, addressed by slot; copies between them and the device pages."""

    def __init__(self, pages: Sequence[torch.Tensor], num_slots: int) -> None:
        if not pages:
            raise HostTierLayoutError("no KV cache layers to mirror")
        self.pages = list(pages)
        self.device = self.pages[0].device
        page_bytes = self.pages[0].shape[1]
        self.host = torch.empty(
            (num_slots, len(self.pages), page_bytes),
            dtype=torch.uint8,
            pin_memory=self.device.type == "cuda",
        )

    def save(self, block_ids: Sequence[int], slots: Sequence[int]) -> None:
        """Copy device blocks into host slots, enqueued on the current (compute) stream ahead
        of this step's forward pass, which overwrites the blocks.

        One gather of every layer, then one copy per block straight into its pinned host slot:
        no host synchronisation (a load that reads the slot later is ordered after this by
        the compute-stream event it waits on)."""
        if not block_ids:
            return
        ids = torch.tensor(block_ids, dtype=torch.long, device=self.device)
        gathered = torch.stack([pages.index_select(0, ids) for pages in self.pages], dim=1)
        for i, slot in enumerate(slots):
            self.host[slot].copy_(gathered[i], non_blocking=True)

    def load(self, slots: Sequence[int], block_ids: Sequence[int]) -> None:
        """Copy host slots into device blocks, enqueued on the current stream (the caller's
        side stream on GPU). Each slot is read straight from pinned memory, so the copies are
        asynchronous; the slots stay reserved until the load is reported finished."""
        ids = torch.tensor(block_ids, dtype=torch.long, device=self.device)
        chunk = torch.empty(
            (len(slots), *self.host.shape[1:]), dtype=self.host.dtype, device=self.device
        )
        for i, slot in enumerate(slots):
            chunk[i].copy_(self.host[slot], non_blocking=True)
        for layer, pages in enumerate(self.pages):
            pages.index_copy_(0, ids, chunk[:, layer])
