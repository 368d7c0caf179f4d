"""Requests that cannot progress: the always-on repair of a lost sample, and the opt-in
watchdog that fails the engine with the scheduler's view of a stuck request.

Why a scheduler collaborator: only EngineCore sees a request's computed positions, drafts,
grammar and queue; the API server sees tokens arrive or not. Everything here reads vLLM
0.32's public ``Request`` fields and the scheduler's ``running`` / ``waiting``.

**The lost sample.** In sync scheduling (the CPU platform forces it) a RUNNING request
whose every position is computed (``num_computed_tokens >= num_tokens``) has no sample
pending: vLLM computes 0 new tokens for it and skips it in every later step, silently, while
``has_requests()`` keeps the engine stepping (``tests/cache_manager/test_livelock_scenarios``
shows it in vLLM's own scheduler). It happens when a step that computed its last position
returns no token for it (an empty sampled row; then vLLM also skips the draft rollback,
leaving ``num_computed_tokens`` ``K`` past the end).
:func:`recompute_last_token` repairs it the way vLLM rolls back rejected drafts: one
position back, drafts dropped, so the next step recomputes the last token (same KV, same
slot) and samples; the worker follows ``num_computed_tokens`` from the scheduler and trims
output tokens the scheduler does not have. The repair is sync-only: under async scheduling
``num_output_placeholders`` keeps such a request scheduled.

**The watchdog** (``watchdog`` setting or ``RADIX_PLUGIN_WATCHDOG=1``) raises
:class:`StuckRequestError` after logging the dump, so a benchmark or soak fails with the
cause instead of spinning:

- *zero progress*, at once: a RUNNING request with nothing left to compute after a step
  (before the repair), i.e. the state above;
- *step bound* per request: ``scheduled_steps <= positions + max_tokens``, where
  ``positions`` adds ``num_tokens`` at every admission (first, and after each preemption)
  and the positions a discarded sample rolled back. Each scheduled step either computes at
  least one of those positions (a prefill chunk, a recompute) or samples at least one token
  (drafts only add tokens to a step: verified or forced, a decode step yields 1 to 1+K),
  and at most ``max_tokens`` are sampled. Hold-backs and waiting for blocks are steps the
  request is not scheduled, so they do not count; the plugin bounds its own reordering by
  ``max_wait_steps`` (``waiting_order``), and waiting for blocks is bounded by the requests
  that hold them;
- *no engine progress*: ``idle_steps`` consecutive steps, lasting at least ``idle_s``
  seconds, in which requests are unfinished and nothing is scheduled (a waiting request
  that can never be admitted; a grammar or KV load that never completes).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from vllm.v1.request import RequestStatus

logger = logging.getLogger(__name__)

IDLE_STEPS = 1000
IDLE_S = 60.0
"""No-progress bound: a slow grammar compile or host-tier load is seconds; this is not."""
LOG_PREFIX = "radix_plugin watchdog:"
"""Every watchdog log line starts with this (the soak greps the server log for it)."""


class StuckRequestError(RuntimeError):
    """A request could not progress; the message is the scheduler's view of it."""


def nothing_to_compute(request: Any) -> bool:
    """RUNNING with every position computed and no sample pending: vLLM will skip it in
    every later step."""
    return (
        request.status == RequestStatus.RUNNING
        and request.num_computed_tokens >= request.num_tokens + request.num_output_placeholders
    )


def recompute_last_token(request: Any) -> None:
    """Make the next step recompute the last token and sample after it (sync scheduling)."""
    request.num_computed_tokens = request.num_tokens - 1
    request.spec_token_ids = []


def without_sample(scheduled: Mapping[str, int], model_runner_output: Any) -> list[str]:
    """The scheduled requests the step returned no token for: the only ones a step can
    leave with nothing to compute (a request that got a token has that token to compute
    next, or finished). Decode steps give every row a token, so this is usually empty and
    costs one pass over the rows, not a look at every request."""
    index = model_runner_output.req_id_to_index
    rows = model_runner_output.sampled_token_ids
    if not rows:
        return list(scheduled)
    missing = list(scheduled.keys() - index.keys())
    if all(len(row) for row in rows):
        return missing
    return missing + [rid for rid in scheduled if rid in index and not len(rows[index[rid]])]


def repair_lost_samples(scheduled: Iterable[str], requests: Mapping[str, Any]) -> list[str]:
    """Repair every request of ``scheduled`` (see :func:`without_sample`) left with nothing
    to compute (sync scheduling); returns their ids. One warning each, with the state
    before the repair."""
    repaired = []
    for rid in scheduled:
        request = requests.get(rid)
        if request is not None and nothing_to_compute(request):
            logger.warning(
                "%s request %s got no token for its last position; recomputing it: %s",
                LOG_PREFIX,
                rid,
                json.dumps(request_view(request, "running")),
            )
            recompute_last_token(request)
            repaired.append(rid)
    return repaired


def request_view(request: Any, where: str) -> dict[str, Any]:
    """What the scheduler knows about ``request``, for a log line."""
    grammar = None
    structured = getattr(request, "structured_output_request", None)
    if structured is not None:
        compiled = structured.grammar if structured.is_grammar_ready else None
        grammar = {
            "ready": compiled is not None,
            "terminated": compiled.is_terminated() if compiled is not None else None,
            "processed_tokens": getattr(compiled, "num_processed_tokens", None),
        }
    return {
        "request_id": request.request_id,
        "where": where,
        "status": str(request.status),
        "prompt_tokens": request.num_prompt_tokens,
        "num_tokens": request.num_tokens,
        "output_tokens": request.num_output_tokens,
        "max_tokens": request.max_tokens,
        "computed_tokens": request.num_computed_tokens,
        "output_placeholders": request.num_output_placeholders,
        "spec_token_ids": list(request.spec_token_ids[:16]),
        "preemptions": request.num_preemptions,
        "grammar": grammar,
    }


@dataclass
class RequestWatch:
    """One request's steps as the watchdog counted them."""

    scheduled_steps: int = 0
    positions: int = 0
    """Positions it had to compute: ``num_tokens`` per admission, plus rolled-back ones."""
    admissions: int = 0
    preemptions_seen: int = 0
    held_back: int = 0
    zero_progress: int = 0

    def bound(self, max_tokens: int) -> int:
        return self.positions + max_tokens


class StepWatchdog:
    """Counts every request's steps and fails the engine on the states described above.

    ``wait_steps`` reports how often the waiting-queue order passed a request over (for
    the dump); ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        *,
        wait_steps: Callable[[str], int] = lambda rid: 0,
        idle_steps: int = IDLE_STEPS,
        idle_s: float = IDLE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_steps = idle_steps
        self.idle_s = idle_s
        self.clock = clock
        self._wait_steps = wait_steps
        self._watches: dict[str, RequestWatch] = {}
        # id(scheduler output) -> request id -> (computed tokens, output tokens) after it
        self._at_schedule: dict[int, dict[str, tuple[int, int]]] = {}
        self._idle = 0
        self._idle_since = 0.0

    def __len__(self) -> int:
        """Requests watched (live ones: each is forgotten when freed)."""
        return len(self._watches)

    def after_schedule(
        self,
        output: Any,
        requests: Mapping[str, Any],
        held_back: Iterable[Any],
        queues: Callable[[], Iterable[tuple[Any, str]]],
    ) -> None:
        """Count the step just scheduled; fail if the engine made no progress for too
        long (``queues`` lists every unfinished request with where it is)."""
        for request in held_back:
            self._watch(request.request_id).held_back += 1
        computed: dict[str, tuple[int, int]] = {}
        for rid in output.num_scheduled_tokens:
            request = requests[rid]
            watch = self._watch(rid)
            if watch.admissions == 0 or request.num_preemptions != watch.preemptions_seen:
                watch.admissions += 1
                watch.preemptions_seen = request.num_preemptions
                watch.positions += request.num_tokens
            watch.scheduled_steps += 1
            computed[rid] = (request.num_computed_tokens, request.num_output_tokens)
            if watch.scheduled_steps > watch.bound(request.max_tokens):
                self._fail(
                    f"request {rid} scheduled {watch.scheduled_steps} times, past its bound "
                    f"{watch.bound(request.max_tokens)} (positions {watch.positions} + "
                    f"max_tokens {request.max_tokens})",
                    [(request, "running")],
                )
        self._at_schedule[id(output)] = computed
        if output.total_num_scheduled_tokens or not requests:
            self._idle = 0
            return
        unfinished = list(queues())
        if not unfinished:
            self._idle = 0
            return
        if self._idle == 0:
            self._idle_since = self.clock()
        self._idle += 1
        waited = self.clock() - self._idle_since
        if self._idle >= self.idle_steps and waited >= self.idle_s:
            self._fail(
                f"no request progressed for {self._idle} steps ({waited:.0f} s) while "
                f"{len(unfinished)} are unfinished",
                unfinished,
            )

    def after_step(self, output: Any, requests: Mapping[str, Any], running: Iterable[Any]) -> None:
        """After ``update_from_output`` (and before any repair): fail on a request with
        nothing left to compute; credit positions a discarded sample rolled back."""
        for rid, (computed, outputs) in self._at_schedule.pop(id(output), {}).items():
            request = requests.get(rid)
            # No token, and positions rolled back: vLLM discarded the step (a failed KV
            # load) and computes them again. (Rejected drafts roll back only with a token.)
            if (
                request is not None
                and request.num_output_tokens == outputs
                and request.num_computed_tokens < computed
            ):
                self._watch(rid).positions += computed - request.num_computed_tokens
        stuck = [r for r in running if nothing_to_compute(r)]
        for request in stuck:
            self._watch(request.request_id).zero_progress += 1
        if stuck:
            self._fail(
                f"{len(stuck)} running request(s) with every position computed and no "
                "token pending (vLLM would skip them forever)",
                [(r, "running") for r in stuck],
            )

    def forget(self, request_id: str) -> None:
        self._watches.pop(request_id, None)

    def _watch(self, request_id: str) -> RequestWatch:
        watch = self._watches.get(request_id)
        if watch is None:
            watch = self._watches[request_id] = RequestWatch()
        return watch

    def _fail(self, why: str, requests: Iterable[tuple[Any, str]]) -> None:
        views = []
        for request, where in requests:
            view = request_view(request, where)
            watch = self._watches.get(request.request_id)
            view["watch"] = asdict(watch) if watch is not None else None
            view["wait_steps"] = self._wait_steps(request.request_id)
            views.append(view)
        dump = json.dumps(views[:32], default=str)
        logger.error("%s %s: %s", LOG_PREFIX, why, dump)
        raise StuckRequestError(f"{why}: {dump}")
