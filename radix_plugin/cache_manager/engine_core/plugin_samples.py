"""The scheduler's metric samples: every ``plugin_metrics`` metric, read where it is counted.

Each count lives at its event (``RadixBlockPool.counters``, the tree's occupancy,
``WaitingQueueOrder``, ``JumpForwardDrafter``, ``HostTierStats``, the session policy, the
workflow learner); ``PluginSamples.read`` copies them into one flat ``dict[str, int]`` once
per step, in O(number of samples): no walk over the tree, the pool or the requests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from radix_plugin import plugin_metrics as m
from radix_plugin.cache_manager.core.policies.session import SessionPolicy
from radix_plugin.plugin_metrics import sample_key

if TYPE_CHECKING:
    from radix_plugin.cache_manager.engine_core.block_pool import RadixBlockPool
    from radix_plugin.cache_manager.engine_core.hint_feeder import HintFeeder
    from radix_plugin.cache_manager.engine_core.host_tier import HostTierScheduler
    from radix_plugin.cache_manager.engine_core.pins import PinManager
    from radix_plugin.cache_manager.engine_core.waiting_order import WaitingQueueOrder
    from radix_plugin.logits.engine_core.drafter import JumpForwardDrafter

_EVICTED = {
    reason: f"evicted_{reason}" for reason in m.EVICTION_REASONS
}  # reason -> PoolCounters field


class PluginSamples:
    """Reads one scheduler's counts; built once (sample keys are precomputed)."""

    def __init__(
        self,
        *,
        policy_name: str,
        pool: RadixBlockPool | None,
        order: WaitingQueueOrder | None,
        pins: PinManager | None,
        hints: HintFeeder,
        drafter: JumpForwardDrafter,
        host: HostTierScheduler | None,
        state_sizes: Callable[[], dict[str, int]],
    ) -> None:
        self._pool = pool
        self._order = order
        self._pins = pins
        self._hints = hints
        self._drafter = drafter
        self._host = host
        self._state_sizes = state_sizes
        policy = pool.tree.policy if pool is not None else None
        self._session = policy if isinstance(policy, SessionPolicy) else None
        self._evicted = {
            field: sample_key(m.EVICTED_BLOCKS, reason, policy_name)
            for reason, field in _EVICTED.items()
        }
        self._device_hits = sample_key(m.HIT_TOKENS, "device")
        self._host_hits = sample_key(m.HIT_TOKENS, "host")
        self._mode = {mode: sample_key(m.SESSION_MODE, mode) for mode in m.SESSION_MODES}
        self._structures: dict[str, str] = {}

    def read(self) -> dict[str, int]:
        out: dict[str, int] = {}
        pool = self._pool
        if pool is not None:
            tree = pool.tree.stats()
            out[m.CACHED_BLOCKS.name] = tree.cached_blocks
            out[m.EVICTABLE_BLOCKS.name] = tree.evictable_blocks
            out[m.TREE_NODES.name] = tree.num_nodes
            counters = pool.counters
            for field, key in self._evicted.items():
                out[key] = getattr(counters, field)
            out[m.LOOKUP_TOKENS.name] = counters.lookup_tokens
            out[self._device_hits] = counters.hit_tokens
        if self._pins is not None:
            pins = self._pins.stats()
            out[m.PINNED_BLOCKS.name] = pins.pinned_blocks
            out[m.PINNED_PREFIXES.name] = pins.pinned_prefixes
            out[m.PIN_BUDGET_BLOCKS.name] = pins.budget_blocks
        if self._order is not None:
            out[m.HELD_BACK.name] = self._order.held_back_total
            out[m.REORDERS.name] = self._order.reorders_total
            out[m.PROMOTED.name] = self._order.promoted_total
        drafter = self._drafter
        if drafter.jump_forward:
            out[m.JF_FORCED.name] = drafter.forced_total
            out[m.JF_VERIFIED.name] = drafter.verified_total
            out[m.JF_REJECTED.name] = drafter.rejected_total
            out[m.JF_STEPS_SAVED.name] = drafter.steps_saved_total
        if self._host is not None:
            self._read_host(self._host, out)
        if self._session is not None:
            self._read_session(self._session, out)
        learner = self._hints.learner
        out[m.WORKFLOW_AGENTS.name] = learner.num_agents
        out[m.WORKFLOWS_TRACKED.name] = len(self._hints.tracker)
        for structure, size in self._state_sizes().items():
            out[self._structure_key(structure)] = size
        return out

    def _read_host(self, host: HostTierScheduler, out: dict[str, int]) -> None:
        stats = host.stats
        out[m.HOST_SAVED.name] = stats.saved_blocks
        out[m.HOST_LOADED.name] = stats.loaded_blocks
        out[self._host_hits] = stats.hit_tokens
        out[m.HOST_PREFETCHED.name] = stats.prefetched_blocks
        out[m.HOST_PREFETCH_IN_TIME.name] = stats.prefetch_in_time_blocks
        out[m.HOST_PREFETCH_LATE.name] = stats.prefetch_late_blocks
        out[m.HOST_PREFETCH_WASTED.name] = stats.prefetch_wasted_blocks
        out[m.HOST_BYTES.name] = host.resident_bytes()
        out[m.HOST_CAPACITY_BYTES.name] = host.capacity_bytes()

    def _read_session(self, policy: SessionPolicy, out: dict[str, int]) -> None:
        out[self._mode["lru"]] = int(policy.lru_mode)
        out[self._mode["learned"]] = int(not policy.lru_mode)
        out[m.SESSION_SWITCHES.name] = policy.switches
        lead, margin = policy.guard_state()
        out[m.SESSION_LEAD.name] = round(lead)
        out[m.SESSION_MARGIN.name] = round(margin)
        out[m.SESSION_LIVE.name] = policy.live_sessions

    def _structure_key(self, structure: str) -> str:
        key = self._structures.get(structure)
        if key is None:
            key = self._structures[structure] = sample_key(m.STATE_ENTRIES, structure)
        return key
