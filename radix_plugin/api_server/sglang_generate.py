"""Runs SGLang ``/generate`` requests on vLLM's engine client (the server's own ``AsyncLLM``).

One vLLM request per sequence (a batch of prompts, or ``n`` samples); the responses come
back in SGLang's shape (``sglang_output``), whole or as server-sent events with cumulative
text. Request ids map to vLLM ids so ``/abort_request`` can stop them.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from vllm.outputs import RequestOutput
from vllm.utils.async_utils import merge_async_iterators

from radix_plugin.api_server.core.sglang_request import SglGenerate, SglItem, SglRequestError
from radix_plugin.api_server.errors import HttpError, http_error
from radix_plugin.api_server.sglang_output import ItemState, response
from radix_plugin.api_server.sglang_sampling import (
    GRAMMAR_FIELDS,
    EngineLimits,
    Plan,
    plan_item,
    sglang_names,
)


@dataclass
class Running:
    """rid -> vLLM request ids of the sequences in flight (for ``/abort_request``)."""

    by_rid: dict[str, str] = field(default_factory=dict)

    def all_ids(self) -> list[str]:
        return list(self.by_rid.values())


@dataclass
class Prepared:
    state: ItemState
    plan: Plan
    prompt_ids: list[int]
    grammar_field: str | None = None
    """The SGLang field holding the item's grammar (``sampling_params.regex``, ...)."""


class SequenceFailed(Exception):
    """vLLM's engine client raised for one sequence (``error``); ``prep`` says which."""

    def __init__(self, prep: Prepared, error: Exception) -> None:
        super().__init__(str(error))
        self.prep = prep
        self.error = error


class SglGenerator:
    """Turns parsed requests into engine requests and engine outputs into responses."""

    def __init__(self, engine: Any, tokenizer: Any, limits: EngineLimits, vocab_size: int) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.limits = limits
        self.vocab_size = vocab_size
        self.running = Running()

    def decode(self, ids: list[int]) -> list[str]:
        return self.tokenizer.batch_decode([[i] for i in ids])

    async def prepare(self, request: SglGenerate) -> list[Prepared]:
        """Tokenize and plan every sequence; raises ``SglRequestError`` for a bad one.
        Both run on a thread: a batch's tokenization and a grammar's check (seconds for a
        large schema) would otherwise stall every other client of the event loop."""
        texts = sorted({item.text for item in request.items if item.text is not None})
        encoded = dict(zip(texts, await asyncio.to_thread(self._encode, texts), strict=True))
        return await asyncio.to_thread(self._plan, request, encoded)

    def _plan(self, request: SglGenerate, encoded: dict[str, list[int]]) -> list[Prepared]:
        out = []
        for i, item in enumerate(request.items):
            ids = list(item.input_ids) if item.input_ids is not None else encoded[item.text]
            if item.input_ids is not None and max(ids) >= self.vocab_size:
                raise SglRequestError("input_ids", f"token ids must be below {self.vocab_size}")
            prefix = f"sampling_params[{i}]" if request.batched else "sampling_params"
            plan = plan_item(item, len(ids), self.limits, prefix, final_only=not request.stream)
            max_new = plan.params.max_tokens if not plan.prefill_only else 0
            state = ItemState(item, ids, plan.prefill_only, max_new or 0)
            out.append(Prepared(state, plan, ids, grammar_field(item, prefix)))
        return out

    def _encode(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return self.tokenizer(texts, add_special_tokens=True)["input_ids"]

    async def run_one(self, prep: Prepared) -> dict[str, Any]:
        """The final response of one sequence (non-streaming)."""
        final: RequestOutput | None = None
        async for out in self._stream(prep):
            final = out
        return self._final(prep, final)

    def _final(self, prep: Prepared, final: RequestOutput | None) -> dict[str, Any]:
        if final is None:  # aborted before any output
            return _aborted(prep.state)
        result = response(prep.state, final, self.decode)
        if not final.finished:
            result["meta_info"]["finish_reason"] = _aborted(prep.state)["meta_info"][
                "finish_reason"
            ]
        return result

    async def _stream(self, prep: Prepared) -> AsyncIterator[RequestOutput]:
        rid = prep.state.item.rid
        vllm_id = f"sgl-{rid}-{uuid.uuid4().hex[:8]}"
        self.running.by_rid[rid] = vllm_id
        try:
            async for out in self.generate_ids(prep.prompt_ids, prep.plan.params, vllm_id):
                yield out
        except Exception as exc:  # named per sequence: the endpoint answers in SGLang's shape
            raise SequenceFailed(prep, exc) from exc
        finally:
            if self.running.by_rid.get(rid) == vllm_id:
                del self.running.by_rid[rid]

    async def generate_ids(
        self, ids: list[int], params: Any, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        """vLLM's engine client on a tokenized prompt, rendered the way its own routes do."""
        renderer = self.engine.renderer
        (engine_input,) = await renderer.render_cmpl_async(
            [{"prompt_token_ids": ids}], renderer.default_cmpl_tok_params
        )
        async for out in self.engine.generate(engine_input, params, request_id):
            yield out

    async def run(self, preps: list[Prepared]) -> list[dict[str, Any]]:
        """All sequences' final responses; one failing (or a client gone) aborts the rest,
        before the answer goes out (a client retrying at once finds them gone)."""
        tasks = [asyncio.ensure_future(self.run_one(p)) for p in preps]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def sse(self, preps: list[Prepared], batched: bool) -> AsyncIterator[str]:
        """Server-sent events: cumulative text per sequence, then ``data: [DONE]``.

        A sequence that fails before the first event raises ``SequenceFailed`` (the endpoint
        then answers with an HTTP status); later, the failure is an error event."""
        streams = [self._stream(p) for p in preps]
        finished = [False] * len(preps)
        started = False
        try:
            async for i, out in merge_async_iterators(*streams):
                chunk = response(preps[i].state, out, self.decode)
                finished[i] = out.finished
                if batched:
                    chunk["index"] = i
                started = True
                yield _event(chunk)
        except SequenceFailed as failure:
            if not started:
                raise
            yield _event(error_body(failure))
        for i, done in enumerate(finished):
            if not done:
                chunk = _aborted(preps[i].state)
                if batched:
                    chunk["index"] = i
                yield _event(chunk)
        yield "data: [DONE]\n\n"

    async def abort(self, rid: str | None, abort_all: bool) -> list[str]:
        ids = self.running.all_ids() if abort_all else []
        if rid is not None:
            ids += [v for r, v in list(self.running.by_rid.items()) if r == rid]
        if ids:
            await self.engine.abort(ids)
        return ids


def grammar_field(item: SglItem, prefix: str) -> str | None:
    """``prefix.regex`` (or ``json_schema``, ``ebnf``) if the item has that grammar."""
    for name in GRAMMAR_FIELDS:
        if getattr(item.sampling, name) is not None:
            return f"{prefix}.{name}"
    return None


def failure_answer(failure: SequenceFailed) -> HttpError:
    """The HTTP answer for a failed sequence: ``errors.http_error``, a 400 naming the
    item's grammar field when the item has one (vLLM says "Invalid structured outputs" or
    names the plugin's key), a 500 for an exception vLLM does not classify."""
    answer = http_error(failure.error)
    if answer is None:
        return HttpError(500, f"{type(failure.error).__name__}: {failure.error}", "InternalError")
    field = failure.prep.grammar_field
    if answer.status == 400 and field is not None:
        message = f"{field}: {sglang_names(answer.message)}"
        return HttpError(400, message, answer.err_type, param=field)
    return answer


def error_body(failure: SequenceFailed) -> dict[str, Any]:
    answer = failure_answer(failure)
    body: dict[str, Any] = {"message": answer.message, "code": answer.status}
    if answer.param:
        body["param"] = answer.param
    return {"error": body}


def _aborted(state: ItemState) -> dict[str, Any]:
    return {
        "text": "",
        "output_ids": [],
        "meta_info": {
            "id": state.item.rid,
            "finish_reason": {
                "type": "abort",
                "message": "Aborted",
                "status_code": None,
                "err_type": None,
            },
            "prompt_tokens": state.prompt_len,
            "completion_tokens": 0,
            "cached_tokens": 0,
        },
    }


def _event(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
