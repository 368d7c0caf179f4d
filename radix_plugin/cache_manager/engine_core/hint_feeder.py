"""Request hints into the eviction policy: workflow steps and agents, and sessions.

Hints are parsed once per request, at ``add_request``, and kept until it is freed (the block
pool reads a request's priority whenever it caches blocks for it). A workflow request feeds
the workflow policy (and so the host tier's prefetch) its steps-to-execution: the
``radix_steps`` it sent, else those learned from the order of its workflow's tagged requests.
After each ``schedule()``, the cached path of a newly scheduled agent request is tagged with
its agent. The session policy learns of every new request and its session.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from radix_plugin.cache_manager.core.hints import RequestHints, RequestHintsMap, request_session
from radix_plugin.cache_manager.core.policies.base import EvictionPolicy
from radix_plugin.cache_manager.core.policies.session import SessionPolicy
from radix_plugin.cache_manager.core.policies.workflow import WorkflowPolicy, tag_agent
from radix_plugin.cache_manager.core.workflow.learner import StepOrderLearner
from radix_plugin.cache_manager.core.workflow.tracker import WorkflowTracker
from radix_plugin.cache_manager.engine_core.block_pool import RadixBlockPool


class HintFeeder:
    """The live requests' hints, and what the policy learns from them."""

    def __init__(self, pool: RadixBlockPool | None, policy: EvictionPolicy, block_size: int):
        self.hints = RequestHintsMap()
        self._pool = pool
        self._block_size = block_size
        if pool is not None:
            pool.request_hints = self.hints
        has_pool = pool is not None
        self._workflow = policy if has_pool and isinstance(policy, WorkflowPolicy) else None
        self._sessions = policy if has_pool and isinstance(policy, SessionPolicy) else None
        self.tracker = WorkflowTracker()
        self.learner = StepOrderLearner()

    def __len__(self) -> int:
        """Live requests whose hints are kept."""
        return len(self.hints)

    def state_sizes(self) -> dict[str, int]:
        """Entries of the per-request, per-workflow and (with the session policy)
        per-session structures (O(1))."""
        sizes = {
            "hints": len(self.hints),
            "workflow_tracker": len(self.tracker),
            "workflow_learner_workflows": self.learner.num_workflows,
            "workflow_learner_agents": self.learner.num_agents,
        }
        if self._sessions is not None:
            sizes.update(self._sessions.state_sizes())
        return sizes

    def on_add(self, request: Any, new: bool) -> RequestHints:
        """Parse ``request``'s hints (a streaming session's later parts keep its first
        ones) and feed the policy what a new request tells it."""
        hints = self.hints.add(request)
        if hints.workflow is not None and self._workflow is not None:
            self._feed_workflow_steps(hints, new)
        if new and self._sessions is not None:
            assert self._pool is not None
            session = request_session(request, hints)
            pages = self._pool.page_keys(request.block_hashes)
            self._sessions.note_request(
                request.request_id, session, pages, session_end=hints.session_end
            )
        return hints

    def after_schedule(self, scheduler_output: Any, requests: Mapping[str, Any]) -> None:
        """Record which agent's prompt each newly scheduled request's cached path serves."""
        if self._workflow is None:
            return
        assert self._pool is not None
        for new in scheduler_output.scheduled_new_reqs:
            request = requests.get(new.req_id)
            agent = self.hints.get(request).agent if request is not None else None
            if agent is None:
                continue
            n_prompt = request.num_prompt_tokens // self._block_size
            n_blocks, node = self._pool.cached_prefix_node(request.block_hashes[:n_prompt])
            if n_blocks:
                tag_agent(self._pool.tree, node, agent)

    def on_freed(self, request_id: str) -> None:
        self.hints.drop(request_id)
        if self._sessions is not None:
            self._sessions.forget_request(request_id)

    def _feed_workflow_steps(self, hints: RequestHints, new: bool) -> None:
        assert hints.workflow is not None and self._workflow is not None
        steps = hints.steps
        if new and hints.agent is not None:
            self.learner.observe(hints.workflow, hints.agent)
            if not steps:
                steps = self.learner.steps_to_execution(hints.workflow)
        if steps:
            self.tracker.update(hints.workflow, steps)
            self._workflow.update_steps(self.tracker.agent_steps())
