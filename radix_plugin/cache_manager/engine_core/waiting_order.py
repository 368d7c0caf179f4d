"""The waiting queue in cache-aware order, before each ``schedule()``.

vLLM admits from the head of ``self.waiting`` and stops at the first request it cannot
place, so the order is the policy. ``WaitingQueueOrder`` reorders the queue in place by the
configured ordering (``lpm``, ``dfs``, ``fcfs``), puts requests passed over
``max_wait_steps`` times first (in arrival order), and holds back a request whose new
prefix another request is prefilling right now (in-batch sharing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vllm.v1.core.sched.request_queue import FCFSRequestQueue

from radix_plugin.cache_manager.core.orderings import SchedulingPolicy
from radix_plugin.cache_manager.core.radix_tree import RadixNode
from radix_plugin.cache_manager.engine_core.block_pool import RadixBlockPool

HOLD_BACK_WINDOW = 128
"""Only the head of the queue can be admitted in one step; beyond it, looking every waiter
up each step would cost more than it saves (as SGLang's LPM fallback)."""


class WaitingQueueOrder:
    """Orders vLLM's waiting queue for the step about to be scheduled."""

    def __init__(
        self,
        pool: RadixBlockPool,
        ordering: SchedulingPolicy,
        *,
        block_size: int,
        max_wait_steps: int,
        in_batch_sharing: bool,
    ) -> None:
        self._pool = pool
        self.ordering = ordering
        self._block_size = block_size
        self.max_wait_steps = max_wait_steps
        self._in_batch_sharing = in_batch_sharing
        self._wait_steps: dict[str, int] = {}  # waiting request id -> steps passed over
        # Waiting request id -> (cached blocks, node ending them, step last checked).
        self._memo: dict[str, tuple[int, RadixNode, int]] = {}
        self._step = 0
        # Cumulative counts for /metrics.
        self.held_back_total = 0
        self.reorders_total = 0
        self.promoted_total = 0

    def __len__(self) -> int:
        """Requests whose waiting steps are counted (those waiting at the last step)."""
        return len(self._wait_steps)

    def state_sizes(self) -> dict[str, int]:
        """Entries of the per-request structures (O(1))."""
        return {"wait_steps": len(self._wait_steps), "lookup_memo": len(self._memo)}

    def wait_steps(self, request_id: str) -> int:
        """Steps ``request_id`` has been passed over while waiting (0 if not waiting)."""
        return self._wait_steps.get(request_id, 0)

    def lookup(self, request: Any) -> tuple[int, RadixNode]:
        """Cached prefix of a waiting request (blocks, the node ending it).

        Remembered across steps while the request waits: a later step only checks that the
        prefix is still exactly that long (two index probes, :meth:`RadixBlockPool.
        still_cached_prefix`) instead of searching again."""
        key = request.request_id
        memo = self._memo.get(key)
        if memo is not None:
            n, node, step = memo
            if step == self._step:
                return n, node
            if self._pool.still_cached_prefix(request.block_hashes, n, node):
                self._memo[key] = (n, node, self._step)
                return n, node
        n, node = self._pool.cached_prefix_node(request.block_hashes)
        self._memo[key] = (n, node, self._step)
        return n, node

    def reorder(self, waiting: Any, running: Sequence[Any], token_budget: int) -> list[Any]:
        """Reorder ``waiting`` in place; returns the requests held back for this step
        (the caller puts them back at the head after ``schedule()``)."""
        self._step += 1
        if not isinstance(waiting, FCFSRequestQueue) or not waiting:
            self._memo = {}  # nothing waits: old lookups would keep finished requests' nodes
            self._wait_steps.clear()
            return []
        current = list(waiting)
        old = self._wait_steps
        steps = self._wait_steps = {r.request_id: old.get(r.request_id, -1) + 1 for r in current}
        memo = self._memo
        self._memo = {rid: memo[rid] for rid in steps if rid in memo}  # only waiting requests
        limit = self.max_wait_steps
        # Overdue requests go first in arrival order (the queue itself is already reordered).
        overdue = sorted(
            (r for r in current if steps[r.request_id] >= limit), key=lambda r: r.arrival_time
        )
        rest = [r for r in current if steps[r.request_id] < limit]
        ordered = overdue + self.ordering.order(rest, self.lookup)
        self.promoted_total += len(overdue)
        self.reorders_total += any(a is not b for a, b in zip(ordered, current, strict=True))
        held_back: list[Any] = []
        if self._in_batch_sharing:
            ordered, held_back = self._hold_back_followers(ordered, overdue, running, token_budget)
            self.held_back_total += len(held_back)
        waiting.clear()
        waiting.extend(ordered)
        return held_back

    def _hold_back_followers(
        self,
        ordered: list[Any],
        overdue: list[Any],
        running: Sequence[Any],
        token_budget: int,
    ) -> tuple[list[Any], list[Any]]:
        """Hold back a request whose first uncached block another request is computing.

        vLLM caches blocks as soon as they are scheduled, so a follower admitted after its
        leader in the same step hits what the leader was given; but a leader that cannot
        prefill the shared part in one step (chunked prefill), or that is already running,
        would otherwise compute the same blocks twice. The follower waits until they are
        cached, bounded by ``max_wait_steps``.
        """
        in_progress: set[Any] = set()
        block_size = self._block_size
        for r in [r for r in running if r.num_computed_tokens < r.num_prompt_tokens]:
            in_progress.update(r.block_hashes[r.num_computed_tokens // block_size :])
        overdue_ids = {id(r) for r in overdue}
        keep, held = [], []
        window, tail = ordered[:HOLD_BACK_WINDOW], ordered[HOLD_BACK_WINDOW:]
        for r in window:
            hit, _ = self.lookup(r)
            hashes = r.block_hashes
            first_new = hashes[hit] if hit < len(hashes) else None
            if first_new is not None and first_new in in_progress and id(r) not in overdue_ids:
                held.append(r)
                continue
            keep.append(r)
            if r.num_prompt_tokens - hit * self._block_size > token_budget:
                in_progress.update(hashes[hit:])
        return keep + tail, held
