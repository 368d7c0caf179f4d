"""``RadixHostTierConnector``: KVFlow's host tier and prefetch as an out-of-tree KV connector.

Written against vLLM 0.32.0's and 0.33.0's ``KVConnectorBase_V1``. Enable it with one flag
beside the scheduler's (the plugin then supplies the ``--kv-transfer-config`` below; see
``plugin.py``)::

    --scheduler-cls radix_plugin.RadixScheduler
    --additional-config '{"radix_plugin": {"eviction": "workflow", "host_tier_gib": 8}}'

(or ``"host_tier": true`` for twice the device pool), or name it yourself::

    --kv-transfer-config '{"kv_connector": "RadixHostTierConnector",
        "kv_connector_module_path": "radix_plugin.cache_manager.connector",
        "kv_role": "kv_both"}'

Why a connector and not vLLM's ``OffloadingConnector``: that one stores blocks as they are
computed and chooses host victims by its own cache policy; the host tier here is fed by the
radix pool's evictions (in the workflow order) and prefetches by steps-to-execution, which
needs the radix tree and the agent hints, both scheduler-side. The connector is the seam that
gives both processes a role and a per-step channel between them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
    KVConnectorWorkerMetadata,
)
from vllm.v1.metrics.cache_hit_source import CacheHitSource

from radix_plugin.cache_manager.connector.metadata import HostTierMetadata
from radix_plugin.compat import step_connector_metadata
from radix_plugin.config import RadixPluginConfig

if TYPE_CHECKING:
    import torch
    from vllm.config import VllmConfig
    from vllm.distributed.kv_events import KVCacheEvent
    from vllm.forward_context import ForwardContext
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks, KVCacheManager
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.outputs import KVConnectorOutput
    from vllm.v1.request import Request

    from radix_plugin.cache_manager.engine_core.host_tier import HostTierScheduler
    from radix_plugin.cache_manager.worker.host_tier import HostTierWorker


def host_slots(config: RadixPluginConfig, kv_cache_config: KVCacheConfig) -> int:
    """Host slots: ``host_tier_gib`` worth of blocks, or twice the device pool."""
    if config.host_tier_gib > 0:
        return max(1, int(config.host_tier_gib * 2**30) // _block_bytes(kv_cache_config))
    return 2 * (kv_cache_config.num_blocks - 1)


def _block_bytes(kv_cache_config: KVCacheConfig) -> int:
    from radix_plugin.cache_manager.worker.host_store import block_bytes

    return block_bytes(kv_cache_config)


class RadixHostTierConnector(KVConnectorBase_V1):
    _cache_hit_source = CacheHitSource.HOST

    def __init__(
        self, vllm_config: VllmConfig, role: KVConnectorRole, kv_cache_config: KVCacheConfig
    ) -> None:
        super().__init__(vllm_config, role, kv_cache_config)
        config = RadixPluginConfig.from_vllm_config(vllm_config)
        slots = host_slots(config, kv_cache_config)
        self.scheduler_side: HostTierScheduler | None = None
        self.worker_side: HostTierWorker | None = None
        self._worker_meta: KVConnectorWorkerMetadata | None = None
        # Each role imports only its own process's side (the API server imports this module
        # too, and builds neither).
        if role == KVConnectorRole.SCHEDULER:
            from radix_plugin.cache_manager.engine_core.host_tier import HostTierScheduler

            self.scheduler_side = HostTierScheduler(
                block_size=vllm_config.cache_config.block_size,
                num_slots=slots,
                prefetch=config.prefetch,
                load_ahead_steps=config.load_ahead_steps,
                num_workers=vllm_config.parallel_config.world_size,
                block_bytes=_block_bytes(kv_cache_config),
            )
        else:
            from radix_plugin.cache_manager.worker.host_tier import HostTierWorker

            self.worker_side = HostTierWorker(kv_cache_config, slots)

    @classmethod
    def supports_sleep_mode(cls, kv_transfer_config: Any) -> bool:
        """No: vLLM 0.33.0 asks before it allows ``--enable-sleep-mode`` (and refuses the
        combination on False); 0.32.0 has no sleep hooks for connectors and does not ask.

        The worker side keeps strided byte views into the engine's KV tensors, written by a
        background load thread, and the scheduler side believes the device blocks it loaded
        hold their content. Sleep frees or remaps that memory and discards the content, so
        the views would dangle and the loaded blocks would be wrong; rebuilding both after a
        wake-up (``unregister_kv_caches`` / ``restore_kv_caches``) is not implemented.
        """
        return False

    @property
    def _sched(self) -> HostTierScheduler:
        assert self.scheduler_side is not None, "scheduler-side call on a worker connector"
        return self.scheduler_side

    @property
    def _work(self) -> HostTierWorker:
        assert self.worker_side is not None, "worker-side call on a scheduler connector"
        return self.worker_side

    # --- scheduler side ------------------------------------------------------------------

    def bind_kv_cache_manager(self, kv_cache_manager: KVCacheManager) -> None:
        super().bind_kv_cache_manager(kv_cache_manager)
        self._sched.bind(kv_cache_manager.block_pool)

    def on_new_request(self, request: Request) -> None:
        self._sched.on_new_request(request)

    def get_num_new_matched_tokens(
        self, request: Request, num_computed_tokens: int
    ) -> tuple[int | None, bool]:
        return self._sched.get_num_new_matched_tokens(request, num_computed_tokens)

    def update_state_after_alloc(
        self, request: Request, blocks: KVCacheBlocks, num_external_tokens: int
    ) -> None:
        self._sched.update_state_after_alloc(request, blocks, num_external_tokens)

    def build_connector_meta(self, scheduler_output: SchedulerOutput) -> KVConnectorMetadata:
        return self._sched.build_meta()

    def update_connector_output(self, connector_output: KVConnectorOutput) -> None:
        self._sched.on_output(connector_output)

    def request_finished(
        self, request: Request, block_ids: list[int]
    ) -> tuple[bool, dict[str, Any] | None]:
        return self._sched.request_finished(request), None

    def has_pending_push_work(self) -> bool:
        """Keep the engine stepping while a prefetch is in flight: only a step reports it
        done, and until then it holds device blocks (an idle engine would keep them)."""
        return self._sched.has_prefetches_in_flight()

    def reset_cache(self) -> bool:
        return self._sched.reset()

    def take_events(self) -> list[KVCacheEvent]:
        """Host-tier KV events of this step (vLLM publishes them after the device pool's)."""
        return self._sched.take_events()

    # --- worker side ---------------------------------------------------------------------

    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        self._work.register_kv_caches(kv_caches)

    def handle_preemptions(self, kv_connector_metadata: KVConnectorMetadata) -> None:
        assert isinstance(kv_connector_metadata, HostTierMetadata)
        self._work.save(kv_connector_metadata)

    def start_load_kv(self, forward_context: ForwardContext, **kwargs: Any) -> None:
        meta = step_connector_metadata(self)
        assert isinstance(meta, HostTierMetadata)
        self._work.start_loads(meta)

    def wait_for_layer_load(self, layer_name: str) -> None:
        """Loads serve requests that are not in this batch; nothing to wait for."""

    def save_kv_layer(self, layer_name: str, kv_layer: Any, attn_metadata: Any, **kw: Any) -> None:
        """Saves happen on eviction (``handle_preemptions``), not as layers are computed."""

    def wait_for_save(self) -> None:
        """Saves are synchronous; nothing is pending here."""

    def get_finished(self, finished_req_ids: set[str]) -> tuple[set[str] | None, set[str] | None]:
        recving, self._worker_meta = self._work.take_finished()
        return None, recving or None

    def build_connector_worker_meta(self) -> KVConnectorWorkerMetadata | None:
        meta, self._worker_meta = self._worker_meta, None
        return meta

    def get_block_ids_with_load_errors(self) -> set[int]:
        return self._work.take_load_errors()

    def shutdown(self) -> None:
        if self.worker_side is not None:
            self.worker_side.shutdown()
