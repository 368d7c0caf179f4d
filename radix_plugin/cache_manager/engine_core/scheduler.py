"""``--scheduler-cls radix_plugin.RadixScheduler``: vLLM's scheduler with the radix cache.

Written against vLLM 0.32.0 and 0.33.0. It does not fork vLLM's scheduling logic: it builds
vLLM's own scheduler with a ``RadixBlockPool`` (see ``radix_plugin.compat``) and wraps a few
of its methods, each override delegating to one collaborator per concern:

- ``waiting_order.WaitingQueueOrder``: the waiting queue in cache-aware order before each
  ``schedule()``, the starvation bound, hold-back of followers (in-batch sharing);
- ``hint_feeder.HintFeeder``: request hints, parsed once per request, into the workflow
  policy (``radix_steps``, or steps learned from tags) and the session policy;
- ``pins.PinManager``: ``radix_pin`` / ``radix_unpin`` and their TTLs;
- ``logits.engine_core.drafter.JumpForwardDrafter``: jump-forward drafts and the bitmask
  rows that force them;
- ``watchdog``: the repair of a lost sample, and (opt-in) ``StepWatchdog``, which fails the
  engine with the scheduler's view of a request that cannot progress.

``make_stats`` adds the plugin's metrics (``plugin_samples.PluginSamples``, read from where
each is counted, and sent as ``plugin_metrics.StepChanges``) to vLLM's scheduler stats,
which carry them to the API server's stat logger (``compat.put_plugin_stats``).

``RadixScheduler`` (or a user's subclass) builds its async variant by itself when vLLM runs
with async scheduling (the GPU default), so users pass one class name everywhere.
"""

from __future__ import annotations

import logging
from typing import Any

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.scheduler import Scheduler

from radix_plugin.cache_manager.core.pin_stats import PinStats
from radix_plugin.cache_manager.core.registry import make_eviction_policy, make_ordering
from radix_plugin.cache_manager.engine_core.block_pool import RadixBlockPool
from radix_plugin.cache_manager.engine_core.hint_feeder import HintFeeder
from radix_plugin.cache_manager.engine_core.host_tier import HostTierScheduler
from radix_plugin.cache_manager.engine_core.pins import PinManager
from radix_plugin.cache_manager.engine_core.plugin_samples import PluginSamples
from radix_plugin.cache_manager.engine_core.waiting_order import WaitingQueueOrder
from radix_plugin.cache_manager.engine_core.watchdog import (
    StepWatchdog,
    repair_lost_samples,
    without_sample,
)
from radix_plugin.compat import (
    SchedulerSeam,
    check_vllm_seams,
    install_lookup_patch,
    put_plugin_stats,
    radix_block_pool,
)
from radix_plugin.config import JUMP_FORWARD_PROPOSER, RadixConfigError, RadixPluginConfig
from radix_plugin.logits.engine_core.drafter import JumpForwardDrafter
from radix_plugin.plugin_allowlist import GENERAL_PLUGIN, check_allowlist
from radix_plugin.plugin_metrics import StepChanges

logger = logging.getLogger(__name__)


class RadixSchedulerMixin(SchedulerSeam):
    """The plugin's additions; mixed into vLLM's ``Scheduler`` and ``AsyncScheduler``.

    Each concern is one collaborator, built once here: ``radix_order`` (the waiting
    queue's cache-aware order and hold-back), ``radix_hints`` (request hints into the
    workflow and session policies), ``radix_pins`` (``radix_pin`` / ``radix_unpin``),
    ``radix_drafter`` (jump-forward drafts and their bitmask rows). The overrides below
    only call them around vLLM's own methods; ``radix_watchdog`` (opt-in) watches them all.
    """

    radix_config: RadixPluginConfig
    radix_pool: RadixBlockPool | None
    radix_order: WaitingQueueOrder | None
    radix_hints: HintFeeder
    radix_pins: PinManager | None
    radix_drafter: JumpForwardDrafter
    radix_host: HostTierScheduler | None
    radix_watchdog: StepWatchdog | None

    def __init__(self, vllm_config: Any, *args: Any, **kwargs: Any) -> None:
        check_vllm_seams("scheduler")  # before anything is patched
        # VLLM_PLUGINS without our general plugin would silently drop what it installs.
        check_allowlist((GENERAL_PLUGIN,))
        try:
            config = RadixPluginConfig.from_vllm_config(vllm_config)
        except RadixConfigError as exc:
            # The engine core dies with this; make the cause one readable line in its log.
            logger.error("radix_plugin: bad --additional-config: %s", exc)
            raise
        self.radix_config = config
        policy = make_eviction_policy(config.eviction, online=True, **config.eviction_options)
        if vllm_config.cache_config.enable_prefix_caching:
            install_lookup_patch(RadixBlockPool)
            with radix_block_pool(RadixBlockPool, policy=policy):
                super().__init__(vllm_config, *args, **kwargs)  # type: ignore[call-arg]
        else:
            logger.warning("radix_plugin: prefix caching is off, so the radix cache is idle")
            super().__init__(vllm_config, *args, **kwargs)  # type: ignore[call-arg]
        vllm = self._vllm()
        pool = vllm.kv_cache_manager.block_pool
        self.radix_pool = pool if isinstance(pool, RadixBlockPool) else None
        self.radix_order = self.radix_pins = None
        if self.radix_pool is not None:
            self.radix_order = WaitingQueueOrder(
                self.radix_pool,
                make_ordering(config.schedule, **config.schedule_options),
                block_size=vllm.block_size,
                max_wait_steps=config.max_wait_steps,
                in_batch_sharing=config.in_batch_sharing,
            )
            self.radix_pins = PinManager(
                self.radix_pool,
                block_size=vllm.block_size,
                pin_share=config.pin_share,
                default_ttl_s=config.pin_ttl_s,
            )
        self.radix_hints = HintFeeder(self.radix_pool, policy, vllm.block_size)
        self.radix_drafter = JumpForwardDrafter(
            vllm.structured_output_manager,
            draft_engine=_uses_forced_drafts(vllm_config),
            jump_forward=config.jump_forward,
            num_spec_tokens=vllm.num_spec_tokens,
            default_mode=config.jump_forward_mode,
            min_forced_tokens=config.jump_forward_min_forced_tokens,
            on_cpu=_on_cpu(),
        )
        self.radix_host = _host_tier(getattr(vllm, "connector", None))
        self._radix_samples = PluginSamples(
            policy_name=config.eviction,
            pool=self.radix_pool,
            order=self.radix_order,
            pins=self.radix_pins,
            hints=self.radix_hints,
            drafter=self.radix_drafter,
            host=self.radix_host,
            state_sizes=self.radix_state_sizes,
        )
        self._radix_changes = StepChanges()
        self.radix_watchdog = None
        if config.watchdog_on:
            order = self.radix_order
            self.radix_watchdog = StepWatchdog(
                wait_steps=order.wait_steps if order is not None else lambda rid: 0
            )
        logger.info(
            "radix_plugin enabled: eviction=%s schedule=%s in_batch_sharing=%s watchdog=%s",
            config.eviction,
            config.schedule,
            config.in_batch_sharing,
            self.radix_watchdog is not None,
        )

    def _vllm(self) -> Scheduler:
        """``self`` as the vLLM scheduler it is mixed into (for its attributes' types)."""
        return self  # type: ignore[return-value]

    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        vllm = self._vllm()
        if self.radix_pins is not None:
            self.radix_pins.expire()
        self.radix_drafter.before_schedule(vllm.requests.values(), vllm.running)
        held_back = []
        if self.radix_order is not None:
            held_back = self.radix_order.reorder(
                vllm.waiting, vllm.running, vllm.max_num_scheduled_tokens
            )
        try:
            output = super().schedule(*args, **kwargs)  # type: ignore[misc]
        finally:
            if held_back:
                vllm.waiting.prepend_requests(held_back)
        idle = not output.total_num_scheduled_tokens and not vllm.running
        if self.radix_pins is not None and idle and vllm.waiting:
            self.radix_pins.yield_to(vllm.waiting)
        self.radix_hints.after_schedule(output, vllm.requests)
        if self.radix_watchdog is not None:
            self.radix_watchdog.after_schedule(output, vllm.requests, held_back, self._queues)
        return output

    def _queues(self) -> list[tuple[Any, str]]:
        """Every unfinished request, with the queue it is in (for the watchdog's dump)."""
        vllm = self._vllm()
        return [
            *((r, "running") for r in vllm.running),
            *((r, "waiting") for r in vllm.waiting),
            *((r, "kv_holding_waiting") for r in vllm.kv_holding_waiting),
        ]

    def add_request(self, request: Any) -> None:
        new = request.request_id not in self._vllm().requests
        hints = self.radix_hints.on_add(request, new)
        if new and self.radix_pins is not None:
            self.radix_pins.on_add(request, hints)
        self.radix_drafter.on_add(request)
        super().add_request(request)  # type: ignore[misc]

    def update_draft_token_ids(self, draft_token_ids: Any) -> None:
        """After each step, offer every grammar-forced continuation as draft tokens."""
        super().update_draft_token_ids(draft_token_ids)  # type: ignore[misc]
        self.radix_drafter.offer(draft_token_ids.req_ids, self._vllm().requests)

    def get_grammar_bitmask(self, scheduler_output: Any) -> Any:
        """vLLM's bitmask, with one-hot rows for the drafts of forced runs."""
        return self.radix_drafter.grammar_bitmask(
            scheduler_output,
            self._vllm().requests,
            super().get_grammar_bitmask,  # type: ignore[misc]
        )

    def update_from_output(self, scheduler_output: Any, model_runner_output: Any) -> Any:
        requests = self._vllm().requests
        before = self.radix_drafter.outputs_before(scheduler_output, requests)
        result = super().update_from_output(scheduler_output, model_runner_output)  # type: ignore[misc]
        if self.radix_watchdog is not None:
            self.radix_watchdog.after_step(scheduler_output, requests, self._vllm().running)
        if not isinstance(self, AsyncScheduler):
            scheduled = scheduler_output.num_scheduled_tokens
            repair_lost_samples(without_sample(scheduled, model_runner_output), requests)
        self.radix_drafter.observe(before, requests)
        if self.radix_pins is not None:
            self.radix_pins.after_step(scheduler_output.num_scheduled_tokens, requests)
        return result

    def radix_pin_stats(self) -> PinStats:
        """The pins now: blocks and prefixes held, and the budget that bounds them."""
        return self.radix_pins.stats() if self.radix_pins is not None else PinStats()

    def radix_samples(self) -> dict[str, int]:
        """Every plugin metric now (``plugin_metrics`` sample key -> value)."""
        return self._radix_samples.read()

    def radix_state_sizes(self) -> dict[str, int]:
        """Entries of the plugin's per-request and per-session structures, by structure:
        each collaborator reports its own (O(1) each; bounds in docs/bounded-state.md)."""
        sizes: dict[str, int] = {}
        if self.radix_order is not None:
            sizes.update(self.radix_order.state_sizes())
        if self.radix_pins is not None:
            sizes.update(self.radix_pins.state_sizes())
        sizes.update(self.radix_hints.state_sizes())
        sizes.update(self.radix_drafter.state_sizes())
        if self.radix_host is not None:
            sizes.update(self.radix_host.state_sizes())
        if self.radix_watchdog is not None:
            sizes["watchdog_requests"] = len(self.radix_watchdog)
        return sizes

    def make_stats(self, *args: Any, **kwargs: Any) -> Any:
        """vLLM's scheduler stats, carrying what changed of the plugin's metrics since the
        last stats to the API server's stat logger."""
        stats = super().make_stats(*args, **kwargs)  # type: ignore[misc]
        if stats is not None:
            put_plugin_stats(stats, self._radix_changes.take(self.radix_samples()))
        return stats

    def on_request_freed(self, request: Any) -> None:
        """Every finished request (done or aborted) drops what the plugin kept for it."""
        self.radix_hints.on_freed(request.request_id)
        self.radix_drafter.forget(request.request_id)
        if self.radix_pins is not None:
            self.radix_pins.on_freed(request)
        if self.radix_watchdog is not None:
            self.radix_watchdog.forget(request.request_id)

    def reset_prefix_cache(self, *args: Any, **kwargs: Any) -> bool:
        ok = super().reset_prefix_cache(*args, **kwargs)  # type: ignore[misc]
        if ok and self.radix_pins is not None:
            self.radix_pins.on_reset()
        return ok


def _uses_forced_drafts(vllm_config: Any) -> bool:
    """Jump-forward runs as drafts from our no-op proposer (see ``logits.jump_forward_drafts``)."""
    spec = getattr(vllm_config, "speculative_config", None)
    return spec is not None and getattr(spec, "model", None) == JUMP_FORWARD_PROPOSER


def _host_tier(connector: Any) -> HostTierScheduler | None:
    """The host tier's scheduler side, when vLLM's connector is ``RadixHostTierConnector``."""
    side = getattr(connector, "scheduler_side", None)
    return side if isinstance(side, HostTierScheduler) else None


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


class RadixScheduler(RadixSchedulerMixin, Scheduler):
    """The class users name (and subclass): the plugin on vLLM's scheduler.

    With async scheduling on (the GPU default), constructing it, or a subclass of it, builds
    that class's async variant (:func:`async_variant`), a subclass that also derives from
    vLLM's ``AsyncScheduler``; so ``isinstance(x, cls)`` holds either way.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> RadixScheduler:
        vllm_config = kwargs.get("vllm_config", args[0] if args else None)
        if not issubclass(cls, AsyncScheduler) and _async_scheduling(vllm_config):
            cls = async_variant(cls)
        return super().__new__(cls)


class RadixAsyncScheduler(RadixScheduler, AsyncScheduler):
    """The plugin on vLLM's async scheduler: what ``RadixScheduler`` builds when async
    scheduling is on."""


_ASYNC_VARIANTS: dict[type[RadixScheduler], type[RadixScheduler]] = {
    RadixScheduler: RadixAsyncScheduler
}


def async_variant(cls: type[RadixScheduler]) -> type[RadixScheduler]:
    """``cls`` on vLLM's ``AsyncScheduler``, built on first use and cached per class.

    Its MRO runs through ``cls`` and the plugin before ``AsyncScheduler`` and ``Scheduler``,
    so a user's overrides and the plugin's wrap vLLM's async scheduling."""
    variant = _ASYNC_VARIANTS.get(cls)
    if variant is None:
        variant = type(
            f"{cls.__name__}Async",
            (cls, AsyncScheduler),
            {"__module__": cls.__module__, "__doc__": f"{cls.__qualname__} on AsyncScheduler."},
        )
        _ASYNC_VARIANTS[cls] = variant
    return variant


def _async_scheduling(vllm_config: Any) -> bool:
    try:
        return bool(vllm_config.scheduler_config.async_scheduling)
    except AttributeError as exc:
        raise RadixConfigError(f"RadixScheduler needs a VllmConfig, got {vllm_config!r}") from exc
