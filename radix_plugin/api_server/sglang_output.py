"""vLLM ``RequestOutput`` -> SGLang's ``/generate`` response (``text``, ``output_ids``,
``meta_info``), in the shape SGLang 0.5's tokenizer manager builds.

Logprob rows are ``[logprob, token_id, text]`` (text ``None`` unless
``return_text_in_logprobs``). ``input_token_logprobs`` covers prompt positions
``logprob_start_len`` .. end, and its first row's logprob is ``None``, exactly as SGLang
returns it (SGLang computes logprobs from the token after the start position); the
frontend's ``select`` scoring skips ``None`` rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vllm.outputs import RequestOutput

from radix_plugin.api_server.core.sglang_request import SglItem

Decode = Callable[[list[int]], list[str]]
"""Token ids -> one text per id (the tokenizer's ``batch_decode`` of single ids)."""


@dataclass
class ItemState:
    """One sequence in flight: what it asked for and what is needed to answer it."""

    item: SglItem
    prompt_ids: list[int]
    prefill_only: bool
    max_new_tokens: int
    arrival: float = field(default_factory=time.monotonic)

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_ids)


def response(state: ItemState, out: RequestOutput, decode: Decode) -> dict[str, Any]:
    """The SGLang response object for ``out`` (cumulative: the text so far)."""
    comp = out.outputs[0]
    finished = out.finished
    token_ids = [] if state.prefill_only else list(comp.token_ids)
    text = "" if state.prefill_only else comp.text
    meta: dict[str, Any] = {
        "id": state.item.rid,
        "finish_reason": _finish_reason(state, comp, len(token_ids)) if finished else None,
        "prompt_tokens": state.prompt_len,
        "completion_tokens": len(token_ids),
        "cached_tokens": out.num_cached_tokens or 0,
    }
    if finished:
        meta["e2e_latency"] = time.monotonic() - state.arrival
    if state.item.return_logprob:
        _add_logprobs(meta, state, out, token_ids, decode)
    return {"text": text, "output_ids": token_ids, "meta_info": meta}


def _finish_reason(state: ItemState, comp: Any, completion_tokens: int) -> dict[str, Any]:
    if state.prefill_only:
        return {"type": "length", "length": 0}
    reason = comp.finish_reason
    if reason == "length":
        return {"type": "length", "length": state.max_new_tokens}
    if reason == "stop":
        matched = comp.stop_reason
        if matched is None and completion_tokens:  # EOS (or another stop token id)
            matched = comp.token_ids[-1]
        return {"type": "stop", "matched": matched}
    return {"type": "abort", "message": "Aborted", "status_code": None, "err_type": None}


def _add_logprobs(
    meta: dict[str, Any], state: ItemState, out: RequestOutput, ids: list[int], decode: Decode
) -> None:
    item = state.item
    with_text = item.return_text_in_logprobs
    comp = out.outputs[0]
    out_rows = [] if state.prefill_only else (comp.logprobs or [])[: len(ids)]
    meta["output_token_logprobs"] = _rows(
        [
            (step[tid].logprob if tid in step else None)
            for tid, step in zip(ids, out_rows, strict=False)
        ],
        ids,
        with_text,
        decode,
    )
    meta["output_token_logprobs_length"] = len(meta["output_token_logprobs"])
    input_values, input_top = _input_logprobs(state, out)
    start = max(item.logprob_start_len, 0)
    input_ids = state.prompt_ids[start:] if input_values is not None else []
    meta["input_token_logprobs"] = _rows(input_values or [], input_ids, with_text, decode)
    if item.top_logprobs_num > 0:
        meta["output_top_logprobs"] = [
            _top(step, item.top_logprobs_num, with_text, decode) for step in out_rows
        ]
        meta["input_top_logprobs"] = [
            None if step is None else _top(step, item.top_logprobs_num, with_text, decode)
            for step in (input_top or [])
        ]


def _input_logprobs(
    state: ItemState, out: RequestOutput
) -> tuple[list[float | None] | None, list[Any] | None]:
    """Prompt logprob values and top dicts for positions ``logprob_start_len`` .. end.

    vLLM computes prompt logprobs for every position (such requests skip reading the prefix
    cache), ``None`` at position 0. SGLang's first row (position ``start``) is ``None``.
    """
    item = state.item
    if not (item.return_logprob and 0 <= item.logprob_start_len < state.prompt_len):
        return None, None
    plp = out.prompt_logprobs or []
    if len(plp) != state.prompt_len:  # only the final output of a stream carries them all
        return None, None
    start = item.logprob_start_len
    values: list[float | None] = [None]
    tops: list[Any] = [None]
    for pos in range(start + 1, state.prompt_len):
        step = plp[pos]
        tid = state.prompt_ids[pos]
        values.append(step[tid].logprob if step is not None and tid in step else None)
        tops.append(step)
    return values, tops


def _rows(
    values: Sequence[float | None], ids: Sequence[int], with_text: bool, decode: Decode
) -> list[list[Any]]:
    texts: Sequence[str | None] = decode(list(ids)) if with_text and ids else [None] * len(ids)
    return [[v, t, s] for v, t, s in zip(values, ids, texts, strict=True)]


def _top(step: dict[int, Any] | None, k: int, with_text: bool, decode: Decode) -> list[Any]:
    if not step:
        return []
    ranked = sorted(step.items(), key=lambda kv: (kv[1].rank or 0, -kv[1].logprob))[:k]
    return _rows([lp.logprob for _, lp in ranked], [tid for tid, _ in ranked], with_text, decode)
