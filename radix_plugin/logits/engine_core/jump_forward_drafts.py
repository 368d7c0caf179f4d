"""Scheduler-side glue for jump-forward as speculative drafts (vLLM 0.32 / 0.33, V1 runner).

Why drafts: the V1 worker keeps its own copy of every request's tokens and never reads tokens
the scheduler appends (`CachedRequestData.new_token_ids` is only filled under pipeline
parallelism), so "append the forced text and re-prefill" needs worker changes. Drafts are
already plumbed end to end: `request.spec_token_ids` -> `scheduled_spec_decode_tokens` -> one
forward pass over all of them -> the rejection sampler keeps the prefix the model agrees with.
Outputs stay exactly those of ordinary decoding; only the number of steps drops.

What an engine needs for this route:

* `--speculative-config '{"method": "custom_class", "model":
  "radix_plugin.logits.engine_core.jump_forward_drafts.NoDraftProposer",
  "num_speculative_tokens": K}'`
  turns the draft machinery on without a draft model (this proposer never proposes).
* The scheduler overrides `update_draft_token_ids` (called after every step, once grammars
  have accepted the step's tokens) to put `forced_draft_tokens(...)` into
  `request.spec_token_ids`.
* With speculative decoding on, vLLM refuses custom logits processors, so per-request grammars
  must be enforced scheduler-side by vLLM's `StructuredOutputManager` (whose bitmask also
  covers every draft position). `attach_xargs_grammar` converts the `radix_*` xargs into a
  vLLM structured-output request; call it from the scheduler's `add_request`.
"""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from radix_plugin.compat import (
    BitmaskLayout,
    grammar_constrains_next_token,
    hold_until_grammar_compiled,
    init_scheduler_grammar,
    mark_xgrammar_backend,
)
from radix_plugin.logits.core.grammar_spec import (
    XARG_ANY_WHITESPACE,
    XARG_JSON_SCHEMA,
    GrammarSpecError,
    has_grammar_keys,
    parse_grammar_spec,
)
from radix_plugin.logits.grammar.builder import build_grammar
from radix_plugin.logits.grammar.jump_forward import find_forced_tokens, prefix_token_ids
from radix_plugin.logits.grammar.satisfiable import analyse

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.v1.request import Request
    from vllm.v1.structured_output import StructuredOutputManager

logger = logging.getLogger(__name__)

# Per request: may jump-forward ask xgrammar for its forced string? (see `_grammar_finishes`)
_FINISHES: weakref.WeakKeyDictionary[Request, bool] = weakref.WeakKeyDictionary()


class NoDraftProposer:
    """A `custom_class` proposer that proposes nothing: every draft comes from the grammar."""

    def __init__(self, vllm_config: VllmConfig) -> None:
        self.vllm_config = vllm_config

    def load_model(self, *args: Any, **kwargs: Any) -> None:
        """No draft model to load (the CPU runner calls this on every drafter)."""

    def propose(
        self, sampled_token_ids: list[list[int]], *args: Any, **kwargs: Any
    ) -> list[list[int]]:
        """One empty draft per request in the batch."""
        return [[] for _ in sampled_token_ids]


class MemoTokenizer:
    """A tokenizer proxy that memoizes ``encode`` and ``decode`` (what forced-text search
    spends its time in: 0.25 ms a call on SmolLM2's tokenizer, mostly tokenizer calls).

    Every request under one schema forces the same strings (keys, ``","``, ``":"``) after
    the same few value tokens, so the tokenizations repeat across requests and steps. Other
    attributes pass through to the wrapped tokenizer.
    """

    def __init__(self, tokenizer: Any, maxsize: int = 8192) -> None:
        self._tokenizer = tokenizer
        self.all_special_ids = list(getattr(tokenizer, "all_special_ids", ()) or ())
        self._encode = functools.lru_cache(maxsize)(self._encode_uncached)
        self._decode = functools.lru_cache(maxsize)(self._decode_uncached)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self._encode(text, add_special_tokens))

    def decode(self, token_ids: Sequence[int]) -> str:
        return self._decode(tuple(token_ids))

    def cache_sizes(self) -> dict[str, int]:
        """Memoized tokenizations kept (each at most ``maxsize``; O(1))."""
        return {
            "tokenizer_memo_encode": self._encode.cache_info().currsize,
            "tokenizer_memo_decode": self._decode.cache_info().currsize,
        }

    def _encode_uncached(self, text: str, add_special_tokens: bool) -> tuple[int, ...]:
        return tuple(self._tokenizer.encode(text, add_special_tokens=add_special_tokens))

    def _decode_uncached(self, token_ids: tuple[int, ...]) -> str:
        return self._tokenizer.decode(list(token_ids))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)


def attach_xargs_grammar(request: Request, manager: StructuredOutputManager) -> bool:
    """Give a request carrying `radix_*` xargs a vLLM structured-output grammar.

    Call before `Scheduler.add_request`. Returns True when a grammar was attached
    (compilation starts asynchronously, and vLLM's scheduler holds the request until it is
    ready; a grammar that cannot start fails the request, see `_install_grammar`). Requests
    that already use vLLM's own
    `structured_outputs`, or carry no grammar keys, are left alone. The grammar is the same
    strict EBNF the logits processor uses, so JSON strings still exclude raw control
    characters. Malformed keys (only possible if admission validation was bypassed) are
    logged and ignored rather than raised, because this runs inside the engine core.
    """
    params = request.sampling_params
    if params is None or request.structured_output_request is not None:
        return False
    if not has_grammar_keys(params.extra_args):
        return False
    try:
        spec = parse_grammar_spec(params.extra_args)
        assert spec is not None
        ebnf = str(build_grammar(spec))
    except GrammarSpecError as exc:
        logger.error("request %s: ignoring radix grammar: %s", request.request_id, exc)
        return False
    _install_grammar(request, manager, ebnf, spec.kind.value)
    return True


def make_vllm_json_strict(request: Request, manager: StructuredOutputManager) -> bool:
    """Swap a vLLM ``structured_outputs.json`` grammar for the plugin's strict one.

    vLLM 0.32's xgrammar JSON-schema grammars let a byte-level BPE model put raw control
    characters inside strings (with ``maxLength``), so outputs can fail ``json.loads``. The
    plugin's grammar for the same schema (same whitespace setting) excludes them. Call from
    the scheduler's ``add_request``: vLLM already started compiling its own grammar, which is
    dropped (xgrammar caches compilations, so a repeated schema costs nothing more). Returns
    True when the grammar was replaced; other requests, other backends and schemas the
    plugin cannot build are left to vLLM.
    """
    params = request.sampling_params
    structured = getattr(params, "structured_outputs", None)
    if structured is None or request.structured_output_request is None:
        return False
    if structured.json is None or manager.backend is None:
        return False
    if type(manager.backend).__name__ != "XgrammarBackend":
        return False
    schema = structured.json
    any_whitespace = not manager.vllm_config.structured_outputs_config.disable_any_whitespace
    try:
        spec = parse_grammar_spec({XARG_JSON_SCHEMA: schema, XARG_ANY_WHITESPACE: any_whitespace})
        assert spec is not None
        ebnf = str(build_grammar(spec))
    except GrammarSpecError as exc:
        logger.debug("request %s: keeping vLLM's JSON grammar: %s", request.request_id, exc)
        return False
    _install_grammar(request, manager, ebnf, "structured_outputs.json")
    return True


def _install_grammar(
    request: Request, manager: StructuredOutputManager, ebnf: str, name: str
) -> None:
    """Make ``ebnf`` (the request's ``name`` grammar) its vLLM structured-output grammar,
    compiled by xgrammar in the manager's pool; the request waits for it as vLLM's own
    structured requests do. Where the grammar cannot start (the manager latched another
    backend; vLLM 0.33's ``grammar_init`` raises), vLLM fails the request at its next step
    instead of this raising in the engine core (``compat.init_scheduler_grammar``)."""
    from vllm.sampling_params import StructuredOutputsParams
    from vllm.v1.structured_output.request import StructuredOutputRequest

    structured = StructuredOutputsParams(grammar=ebnf)
    mark_xgrammar_backend(structured)
    request.sampling_params.structured_outputs = structured
    request.structured_output_request = StructuredOutputRequest(params=structured)
    hold_until_grammar_compiled(request)
    init_scheduler_grammar(request, manager, name)


def forced_draft_tokens(
    request: Request,
    manager: StructuredOutputManager,
    max_tokens: int,
    *,
    prefix_tokens: frozenset[int] | None = None,
    tokenizer: Any = None,
) -> list[int]:
    """Tokens the request's grammar forces next, ready for `request.spec_token_ids`.

    Empty unless the request uses an xgrammar grammar that is compiled, active (not still
    inside a reasoning section) and not terminated. Append-only: the committed output is never
    rewritten, so a boundary that would fuse canonically is kept as the model produced it.
    """
    structured = request.structured_output_request
    if structured is None or max_tokens <= 0 or not structured.is_grammar_ready:
        return []
    grammar = structured.grammar
    matcher = getattr(grammar, "matcher", None)
    if matcher is None or grammar.is_terminated():
        return []
    if not grammar_constrains_next_token(request, manager):
        return []
    if not _grammar_finishes(request, grammar):
        return []
    if tokenizer is None:
        tokenizer = manager.tokenizer
    if tokenizer is None:
        return []
    forced = find_forced_tokens(
        matcher,
        tokenizer,
        request.output_token_ids,
        max_tokens=max_tokens,
        prefix_tokens=prefix_tokens if prefix_tokens is not None else prefix_token_ids(tokenizer),
    )
    return manager.validate_tokens(request, list(forced.token_ids)) if forced else []


def _grammar_finishes(request: Request, grammar: Any) -> bool:
    """Whether every rule of the request's grammar can end, checked once per request.

    `find_jump_forward_string()` never returns on a rule without a finite derivation (it
    allocates until the process dies), and vLLM's own `structured_outputs` grammars reach the
    engine without our admission check. Undecided grammars get no jump-forward either; they
    are still masked by vLLM as usual.
    """
    known = _FINISHES.get(request)
    if known is None:
        compiled = getattr(grammar, "ctx", None)
        finiteness = analyse(str(compiled.grammar)) if compiled is not None else None
        known = finiteness is not None and finiteness.ok
        if not known:
            why = finiteness.problem() if finiteness is not None else "not analysable"
            logger.warning("request %s: no jump-forward, its grammar %s", request.request_id, why)
        _FINISHES[request] = known
    return known


# --- forced mode (SGLang semantics) ----------------------------------------------------------


def one_hot_rows(token_ids: list[int], num_words: int) -> np.ndarray:
    """Bitmask rows (xgrammar layout: int32 words, bit set = allowed) each allowing one token."""
    rows = np.zeros((len(token_ids), num_words), dtype=np.uint32)
    _set_one_hot(rows, token_ids)
    return rows.view(np.int32)


def _set_one_hot(rows: np.ndarray, token_ids: list[int]) -> None:
    """Write one-hot rows for ``token_ids`` into zeroed uint32 ``rows`` (vectorized)."""
    tokens = np.asarray(token_ids, dtype=np.uint32)
    rows[np.arange(len(token_ids)), tokens >> 5] = np.left_shift(np.uint32(1), tokens & 31)


def advance_through_drafts(
    requests: dict[str, Request], spec_tokens: dict[str, list[int]]
) -> dict[str, list[int]]:
    """Advance each structured request's grammar through its scheduled forced drafts.

    Returns the drafts of every request advanced (all of its drafts were grammatical); the
    caller must `rollback_drafts` them once the bitmask is built. Requests with padding or a
    draft the grammar rejects are left alone (vLLM builds their rows as usual). The drafts
    were validated against this very grammar state when they were offered, so they are
    accepted directly (a failure is rolled back).
    """
    advanced: dict[str, list[int]] = {}
    for req_id, tokens in spec_tokens.items():
        request = requests.get(req_id)
        if not tokens or request is None or not request.use_structured_output:
            continue
        structured = request.structured_output_request
        if structured is None or not structured.is_grammar_ready or -1 in tokens:
            continue
        grammar = structured.grammar
        if grammar.is_terminated():
            continue
        before = grammar.num_processed_tokens
        ok = grammar.accept_tokens(req_id, tokens)
        moved = grammar.num_processed_tokens - before
        if ok and moved == len(tokens):
            advanced[req_id] = tokens
        elif moved:
            grammar.rollback(moved)
    return advanced


def rollback_drafts(requests: dict[str, Request], advanced: dict[str, list[int]]) -> None:
    for req_id, tokens in advanced.items():
        structured = requests[req_id].structured_output_request
        assert structured is not None
        structured.grammar.rollback(len(tokens))


def splice_forced_rows(
    bitmask: np.ndarray,
    request_ids: list[str],
    other_spec_tokens: dict[str, list[int]],
    forced: dict[str, list[int]],
    layout: BitmaskLayout,
) -> np.ndarray:
    """vLLM's bitmask with one-hot rows for each forced draft before its request's bonus row.

    `bitmask` was built by vLLM with the forced requests' drafts hidden (their grammars
    advanced past them), so vLLM wrote one row for each forced request: the mask after its
    drafts. ``layout`` (``compat.grammar_bitmask_layout``) says where vLLM's rows are and where
    the worker reads them. A new array either way: vLLM's is a view of its persistent buffer.
    """
    if layout is BitmaskLayout.PACKED:
        return _splice_packed(bitmask, request_ids, other_spec_tokens, forced)
    return _splice_request_blocks(bitmask, request_ids, forced)


def _splice_packed(
    bitmask: np.ndarray,
    request_ids: list[str],
    other_spec_tokens: dict[str, list[int]],
    forced: dict[str, list[int]],
) -> np.ndarray:
    """Packed rows (vLLM 0.32.0): each request's ``1 + len(drafts)`` rows back to back, so
    the forced rows are inserted and every later request's rows move down."""
    total = bitmask.shape[0] + sum(len(forced[rid]) for rid in request_ids if rid in forced)
    out = np.empty((total, bitmask.shape[1]), dtype=bitmask.dtype)
    row = dst = 0
    for req_id in request_ids:
        drafts = forced.get(req_id)
        if drafts is not None:
            block = out[dst : dst + len(drafts)].view(np.uint32)
            block.fill(0)
            _set_one_hot(block, drafts)
            dst += len(drafts)
            n = 1
        else:
            n = 1 + len(other_spec_tokens.get(req_id, ()))
        out[dst : dst + n] = bitmask[row : row + n]
        row += n
        dst += n
    return out


def _splice_request_blocks(
    bitmask: np.ndarray, request_ids: list[str], forced: dict[str, list[int]]
) -> np.ndarray:
    """One block per request (vLLM 0.33.0): request ``i`` owns rows ``[i*S, (i+1)*S)``, with
    ``S`` = rows / requests as vLLM's readers derive it, and its rows start the block.

    The shape stays; only forced requests' blocks change: ``k`` one-hot rows, vLLM's row (at
    the block's start) moved to ``i*S + k``, the rest of the block allow-all (vLLM leaves
    rows it does not write as an earlier step left them; no reader applies them)."""
    stride, rest = divmod(bitmask.shape[0], len(request_ids))
    if rest:
        raise ValueError(f"{bitmask.shape[0]} bitmask rows for {len(request_ids)} requests")
    out = bitmask.copy()
    for i, req_id in enumerate(request_ids):
        drafts = forced.get(req_id)
        if drafts is None:
            continue
        start, k = i * stride, len(drafts)
        if k >= stride:
            raise ValueError(f"request {req_id}: {k} forced drafts in a block of {stride} rows")
        out[start + k] = bitmask[start]
        block = out[start : start + k].view(np.uint32)
        block.fill(0)
        _set_one_hot(block, drafts)
        out[start + k + 1 : start + stride] = -1
    return out
