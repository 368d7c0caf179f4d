"""SGLang sampling parameters -> vLLM ``SamplingParams``, field by field.

SGLang semantics kept here:

- ``max_new_tokens: 0`` is a prefill-only request (SGLang's frontend sends it to cache a
  prefix before ``fork`` and ``select``). vLLM refuses ``max_tokens=0``, so it runs with
  ``max_tokens=1`` and the sampled token is dropped: vLLM samples the first token from the
  prefill step's last-position logits and the request finishes in that same step, so no
  decode step is added. Under the radix scheduler it also pins the prompt's cached prefix for
  a few seconds (``radix_pin`` + ``radix_pin_ttl``), so the branches that follow hit it even
  when other requests need the blocks meanwhile.
- ``max_new_tokens: null`` runs to the end of the context window.
- ``temperature`` below 1e-6 is greedy; ``top_k: -1`` is off.
- ``regex`` / ``json_schema`` / ``ebnf`` go through the plugin's grammar keys under the radix
  scheduler (strict JSON, jump-forward, unfinishable grammars refused) and through vLLM's own
  structured outputs otherwise; both are checked here first, so a bad one is a 400 naming it.
- Logprobs: ``return_logprob`` asks vLLM for the sampled token's logprob plus
  ``top_logprobs_num``; ``logprob_start_len >= 0`` also asks for prompt logprobs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from vllm import SamplingParams
from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

from radix_plugin.api_server.core.sglang_request import SglItem, SglRequestError
from radix_plugin.cache_manager.core.hints import (
    XARG_PIN,
    XARG_PIN_TTL,
    XARG_UNPIN,
    HintError,
    parse_hints,
)
from radix_plugin.logits.core.grammar_spec import (
    XARG_EBNF,
    XARG_JSON_SCHEMA,
    XARG_REGEX,
    GrammarSpecError,
    parse_grammar_spec,
)
from radix_plugin.logits.grammar.builder import build_grammar

PREFILL_PIN_TTL_ENV = "RADIX_SGLANG_PREFILL_PIN_TTL_S"
DEFAULT_PREFILL_PIN_TTL_S = 10.0
"""How long a ``max_new_tokens: 0`` prefix stays pinned (radix scheduler only; 0 = no pin):
long enough for the fork/select requests that follow it, short enough that an abandoned
program's prefix is soon evictable again."""

_GRAMMAR_KEYS = {"json_schema": XARG_JSON_SCHEMA, "regex": XARG_REGEX, "ebnf": XARG_EBNF}
GRAMMAR_FIELDS = tuple(_GRAMMAR_KEYS)
"""SGLang's grammar fields in ``sampling_params``."""


@dataclass(frozen=True)
class EngineLimits:
    """What the engine allows, read once at start-up."""

    max_model_len: int
    radix_scheduler: bool
    """Grammars as radix keys and prefill pins (True), or vLLM's structured outputs."""
    prefill_pin_ttl_s: float = DEFAULT_PREFILL_PIN_TTL_S


@dataclass(frozen=True)
class Plan:
    """How one item runs on vLLM and how its output is read back."""

    params: SamplingParams
    prefill_only: bool


def prefill_pin_ttl_from_env() -> float:
    raw = os.environ.get(PREFILL_PIN_TTL_ENV, "")
    if not raw:
        return DEFAULT_PREFILL_PIN_TTL_S
    try:
        ttl = float(raw)
    except ValueError:
        raise ValueError(f"{PREFILL_PIN_TTL_ENV} must be a number, got {raw!r}") from None
    if not 0 <= ttl <= 3600:
        raise ValueError(f"{PREFILL_PIN_TTL_ENV} must be in [0, 3600] seconds, got {ttl}")
    return ttl


def plan_item(
    item: SglItem,
    prompt_len: int,
    limits: EngineLimits,
    prefix: str = "sampling_params",
    *,
    final_only: bool = False,
) -> Plan:
    """The vLLM request for ``item`` (its prompt is ``prompt_len`` tokens long).

    ``final_only`` (a non-streaming request) asks vLLM for the finished output alone, as
    vLLM's own non-streaming completions do: otherwise its output processor builds, and the
    API server's event loop wakes for, a cumulative output per sequence per step, which
    on a CPU box takes time from the engine it shares cores with."""
    s = item.sampling
    input_name = "text" if item.text is not None else "input_ids"
    if prompt_len >= limits.max_model_len:
        raise SglRequestError(
            input_name,
            f"the input ({prompt_len} tokens) is longer than the model's context length "
            f"({limits.max_model_len} tokens)",
        )
    room = limits.max_model_len - prompt_len
    max_new = room if s.max_new_tokens is None else s.max_new_tokens
    if max_new > room:
        raise SglRequestError(
            f"{prefix}.max_new_tokens",
            f"{prompt_len} input tokens + {max_new} new tokens exceed the model's context "
            f"length of {limits.max_model_len} tokens",
        )
    prefill_only = max_new == 0
    extra = _extra_args(item, prefill_only, limits, prefix)
    structured = None
    if not limits.radix_scheduler:
        structured = _structured_outputs(extra)
    prompt_logprobs = item.return_logprob and 0 <= item.logprob_start_len < prompt_len
    params = SamplingParams(
        max_tokens=max(max_new, 1),
        min_tokens=min(s.min_new_tokens, max(max_new, 1)),
        stop=list(s.stop) or None,
        stop_token_ids=list(s.stop_token_ids) or None,
        temperature=0.0 if s.greedy else s.temperature,
        top_p=s.top_p,
        top_k=0 if s.top_k == -1 or s.greedy else s.top_k,
        min_p=s.min_p,
        frequency_penalty=s.frequency_penalty,
        presence_penalty=s.presence_penalty,
        repetition_penalty=s.repetition_penalty,
        ignore_eos=s.ignore_eos,
        skip_special_tokens=s.skip_special_tokens,
        spaces_between_special_tokens=s.spaces_between_special_tokens,
        include_stop_str_in_output=s.no_stop_trim,
        logit_bias=dict(s.logit_bias) or None,
        seed=s.sampling_seed,
        logprobs=item.top_logprobs_num if item.return_logprob else None,
        prompt_logprobs=item.top_logprobs_num if prompt_logprobs else None,
        structured_outputs=structured,
        extra_args=extra or None,
        output_kind=RequestOutputKind.FINAL_ONLY if final_only else RequestOutputKind.CUMULATIVE,
    )
    return Plan(params=params, prefill_only=prefill_only)


def _extra_args(
    item: SglItem, prefill_only: bool, limits: EngineLimits, prefix: str
) -> dict[str, Any]:
    extra = dict(item.xargs)
    unknown = [k for k in extra if not isinstance(k, str) or not k.startswith("radix_")]
    if unknown:
        raise SglRequestError("vllm_xargs", f"only radix_* hints are accepted, got {unknown[0]!r}")
    for name, key in _GRAMMAR_KEYS.items():
        if key in extra:
            raise SglRequestError("vllm_xargs", f"use sampling_params.{name}, not {key}")
        value = getattr(item.sampling, name)
        if value is not None:
            extra[key] = value
    try:
        spec = parse_grammar_spec(extra)
        if spec is not None:
            build_grammar(spec)
    except GrammarSpecError as exc:
        raise SglRequestError(_grammar_field(extra, prefix), sglang_names(str(exc))) from None
    pin = prefill_only and limits.radix_scheduler and limits.prefill_pin_ttl_s > 0
    if pin and not any(k in extra for k in (XARG_PIN, XARG_UNPIN)):
        extra[XARG_PIN] = True
        extra[XARG_PIN_TTL] = limits.prefill_pin_ttl_s
    try:
        parse_hints(extra)
    except HintError as exc:
        raise SglRequestError("vllm_xargs", str(exc)) from None
    return extra


def _grammar_field(extra: dict[str, Any], prefix: str) -> str:
    for name, key in _GRAMMAR_KEYS.items():
        if key in extra:
            return f"{prefix}.{name}"
    return "vllm_xargs"


def sglang_names(message: str) -> str:
    """Grammar errors name the radix key; SGLang clients sent the plain field."""
    for name, key in _GRAMMAR_KEYS.items():
        message = message.replace(key, name)
    return message


def _structured_outputs(extra: dict[str, Any]) -> StructuredOutputsParams | None:
    """Vanilla vLLM: the (already validated) grammar as vLLM's own structured output."""
    if XARG_JSON_SCHEMA in extra:
        return StructuredOutputsParams(json=extra.pop(XARG_JSON_SCHEMA))
    if XARG_REGEX in extra:
        return StructuredOutputsParams(regex=extra.pop(XARG_REGEX))
    if XARG_EBNF in extra:
        return StructuredOutputsParams(grammar=extra.pop(XARG_EBNF))
    return None
