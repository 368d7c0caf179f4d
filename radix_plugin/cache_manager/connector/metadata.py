"""What the host tier's scheduler side tells the workers each step, and what they answer."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorMetadata,
    KVConnectorWorkerMetadata,
)


@dataclass(frozen=True)
class LoadJob:
    """Copy host ``slots[i]`` into device block ``block_ids[i]``, in the background.

    A demand load is named by its request id and reported through vLLM's
    ``finished_recving``; a prefetch has no request yet and is reported in
    :class:`HostTierWorkerMetadata`."""

    slots: tuple[int, ...]
    block_ids: tuple[int, ...]
    prefetch: bool = False


@dataclass
class HostTierMetadata(KVConnectorMetadata):
    saves: list[tuple[int, int]] = field(default_factory=list)
    """(device block id, host slot): evicted blocks to copy out before they are overwritten."""
    loads: dict[str, LoadJob] = field(default_factory=dict)
    """Job id -> load started this step."""


@dataclass
class HostTierWorkerMetadata(KVConnectorWorkerMetadata):
    """Prefetch jobs each worker finished (or failed) this step, counted over workers so the
    scheduler adopts a prefetch only when every tensor-parallel shard has it."""

    finished: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)

    def aggregate(self, other: KVConnectorWorkerMetadata) -> KVConnectorWorkerMetadata:
        assert isinstance(other, HostTierWorkerMetadata)
        return HostTierWorkerMetadata(self.finished + other.finished, self.failed + other.failed)
