"""SGLang's native HTTP API on vLLM's OpenAI server: a ``vllm.endpoint_plugins`` entry point.

With it, ``sgl.RuntimeEndpoint("http://host:port")`` runs SGLang programs (gen, select,
fork/join, regex/JSON gen, chat, run_batch, streaming) against vLLM + radix-plugin. Routes:
``GET /get_model_info`` (also ``/model_info``), ``/server_info``, ``/health_generate``;
``POST /generate``, ``/abort_request``, ``/flush_cache``. Requests run on the server's own
engine client (no second engine). vLLM loads the plugin only when ``VLLM_PLUGINS`` names it
(``radix_sglang``), and that list then filters our other entry points too, so building the
app fails unless it names all of them (``core.plugin_allowlist``).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from argparse import Namespace
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from vllm import SamplingParams
from vllm.entrypoints.serve.utils.api_utils import with_cancellation

from radix_plugin.api_server.core.sglang_request import SglRequestError, parse_generate
from radix_plugin.api_server.sglang_generate import (
    SequenceFailed,
    SglGenerator,
    error_body,
    failure_answer,
)
from radix_plugin.api_server.sglang_sampling import EngineLimits, prefill_pin_ttl_from_env
from radix_plugin.compat import check_vllm_seams
from radix_plugin.plugin_allowlist import SGLANG_ENDPOINT_PLUGIN, check_allowlist

HEALTH_TIMEOUT_S = 30.0
MAX_BODY_BYTES = 16 * 1024 * 1024
"""Largest ``/generate`` body read: a full batch of prompts at the context length fits;
the body is read in chunks and refused (413) once past it, so it is never held whole."""


class SglangEndpointPlugin:
    """The ``radix_sglang`` endpoint plugin (vLLM's ``EndpointPlugin`` protocol)."""

    name = SGLANG_ENDPOINT_PLUGIN
    required_tasks = ("generate",)

    def attach_router(self, app: FastAPI) -> None:
        check_allowlist()  # raises here: vLLM does not catch errors from attach_router
        check_vllm_seams("api_server")  # the vLLM names this endpoint uses
        app.include_router(router)

    async def init_state(self, engine_client: Any, state: Any, args: Namespace) -> None:
        if engine_client is None:
            return
        vllm_config = engine_client.vllm_config
        model_config = vllm_config.model_config
        limits = EngineLimits(
            max_model_len=model_config.max_model_len,
            radix_scheduler=_is_radix_scheduler(vllm_config.scheduler_config.scheduler_cls),
            prefill_pin_ttl_s=prefill_pin_ttl_from_env(),
        )
        tokenizer = engine_client.renderer.get_tokenizer()
        state.sglang = SglGenerator(
            engine_client, tokenizer, limits, vocab_size=model_config.get_vocab_size()
        )
        state.sglang_model_info = model_info(args, model_config, tokenizer)
        state.sglang_server_info = server_info(args, vllm_config, limits)


router = APIRouter()


def _generator(request: Request) -> SglGenerator:
    gen = getattr(request.app.state, "sglang", None)
    if gen is None:
        raise RuntimeError("the SGLang endpoint needs an engine (this server has none)")
    return gen


@router.get("/get_model_info")
@router.get("/model_info")
async def get_model_info(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.sglang_model_info)


@router.get("/server_info")
@router.get("/get_server_info")
async def get_server_info(request: Request) -> JSONResponse:
    """The settings, plus the endpoint's sequences in flight (its only per-request state)."""
    in_flight = len(_generator(request).running.by_rid)
    return JSONResponse(
        {**request.app.state.sglang_server_info, "sglang_requests_in_flight": in_flight}
    )


@router.get("/health_generate")
async def health_generate(request: Request) -> Response:
    """200 once the engine generates a token, 503 otherwise (SGLang's readiness probe)."""
    gen = _generator(request)
    params = SamplingParams(max_tokens=1, temperature=0.0)

    async def one_token() -> None:
        async for _ in gen.generate_ids([0], params, f"sgl-health-{uuid.uuid4().hex}"):
            pass

    try:
        await asyncio.wait_for(one_token(), HEALTH_TIMEOUT_S)
    except Exception:
        return Response(status_code=503)
    return Response(status_code=200)


@router.post("/generate")
async def generate(raw_request: Request) -> Response:
    try:
        body = await _json_body(raw_request)
    except ValueError as exc:
        return _error(exc)
    # The body is read first: with_cancellation then listens for the client going away
    # (which aborts the engine requests) and would otherwise consume body chunks.
    return await _generate(body, raw_request)


@with_cancellation
async def _generate(body: Any, raw_request: Request) -> Response:
    gen = _generator(raw_request)
    try:
        request = parse_generate(
            body,
            vocab_size=gen.vocab_size,
            max_top_logprobs=_max_logprobs(raw_request),
        )
        preps = await gen.prepare(request)
    except (SglRequestError, ValueError) as exc:
        return _error(exc)
    if request.stream:
        events = gen.sse(preps, request.batched)
        try:  # the first event decides the status: a request vLLM refuses is not a 200
            first = await anext(events)
        except SequenceFailed as failure:
            return _failure(failure)
        return StreamingResponse(_resume(first, events), media_type="text/event-stream")
    try:
        results = await gen.run(preps)
    except SequenceFailed as failure:  # vLLM refused or failed a sequence (errors.py)
        return _failure(failure)
    return JSONResponse(results if request.batched else results[0])


async def _resume(first: str, events: AsyncIterator[str]) -> AsyncIterator[str]:
    yield first
    async for event in events:
        yield event


@router.post("/abort_request")
async def abort_request(raw_request: Request) -> Response:
    try:
        body = await _json_body(raw_request)
    except ValueError as exc:
        return _error(exc)
    rid = body.get("rid") if isinstance(body, dict) else None
    abort_all = bool(body.get("abort_all")) if isinstance(body, dict) else False
    if rid is not None and not isinstance(rid, str):
        return _error(SglRequestError("rid", "must be a string"))
    await _generator(raw_request).abort(rid, abort_all)
    return Response(status_code=200)


@router.post("/flush_cache")
@router.get("/flush_cache")
async def flush_cache(raw_request: Request) -> Response:
    """Empty the prefix cache (SGLang refuses while requests run; so does vLLM)."""
    ok = await _generator(raw_request).engine.reset_prefix_cache()
    text = "Cache flushed.\n" if ok else "Cache not flushed: requests are running.\n"
    return Response(content=text, status_code=200 if ok else 400)


class BodyTooLarge(SglRequestError):
    """HTTP 413: the body is larger than ``MAX_BODY_BYTES``."""

    status = 413


async def _json_body(request: Request) -> Any:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BodyTooLarge("body", f"is {declared} bytes; at most {MAX_BODY_BYTES}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BodyTooLarge("body", f"is over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise SglRequestError("body", f"is not valid JSON: {exc}") from None


def _failure(failure: SequenceFailed) -> JSONResponse:
    """SGLang's error shape with the status ``errors.http_error`` gives (``Retry-After`` on
    a 503 the server can serve later)."""
    answer = failure_answer(failure)
    headers = {"Retry-After": str(answer.retry_after_s)} if answer.retry_after_s else None
    return JSONResponse(error_body(failure), status_code=answer.status, headers=headers)


def _error(exc: Exception) -> JSONResponse:
    message = str(exc)
    field = getattr(exc, "field", None)
    status = getattr(exc, "status", 400)
    payload: dict[str, Any] = {"error": {"message": message, "code": status}}
    if field:
        payload["error"]["param"] = field
    return JSONResponse(payload, status_code=status)


def _max_logprobs(request: Request) -> int:
    gen = _generator(request)
    return int(getattr(gen.engine.vllm_config.model_config, "max_logprobs", 20) or 20)


def _is_radix_scheduler(scheduler_cls: Any) -> bool:
    """Whether the engine runs ``RadixScheduler`` (or a subclass), by name or class."""
    if isinstance(scheduler_cls, str):
        if scheduler_cls.startswith("radix_plugin."):
            return True
        try:
            from vllm.utils.import_utils import resolve_obj_by_qualname

            scheduler_cls = resolve_obj_by_qualname(scheduler_cls)
        except Exception:
            return False
    mro = getattr(scheduler_cls, "__mro__", ())
    return any(
        c.__name__ == "RadixScheduler" and c.__module__.startswith("radix_plugin.") for c in mro
    )


def model_info(args: Namespace, model_config: Any, tokenizer: Any) -> dict[str, Any]:
    """SGLang's ``/get_model_info``. ``model_path`` is the served model name (SGLang's
    frontend picks its chat template from it); ``chat_template_name`` is the SGLang template
    that renders like the model's own one, for ``RuntimeEndpoint(url, chat_template_name=)``."""
    served = getattr(args, "served_model_name", None)
    name = served[0] if served else model_config.model
    hf = model_config.hf_config
    return {
        "model_path": name,
        "tokenizer_path": model_config.tokenizer,
        "is_generation": True,
        "preferred_sampling_params": None,
        "weight_version": "default",
        "has_image_understanding": False,
        "has_audio_understanding": False,
        "model_type": getattr(hf, "model_type", None),
        "architectures": getattr(hf, "architectures", None),
        "chat_template_name": detect_chat_template(tokenizer),
    }


def server_info(args: Namespace, vllm_config: Any, limits: EngineLimits) -> dict[str, Any]:
    """SGLang's ``/server_info``: the settings an SGLang client or router reads."""
    return {
        "model_path": vllm_config.model_config.model,
        "context_length": limits.max_model_len,
        "max_total_num_tokens": None,
        "page_size": vllm_config.cache_config.block_size,
        "enable_prefix_caching": bool(vllm_config.cache_config.enable_prefix_caching),
        "scheduler_cls": str(vllm_config.scheduler_config.scheduler_cls),
        "radix_scheduler": limits.radix_scheduler,
        "prefill_pin_ttl_s": limits.prefill_pin_ttl_s,
        "additional_config": vllm_config.additional_config or {},
    }


_PROBE = [
    {"role": "system", "content": "S"},
    {"role": "user", "content": "U"},
    {"role": "assistant", "content": "A"},
]
_KNOWN_TEMPLATES = {
    "chatml": "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
    "<|im_start|>assistant\nA<|im_end|>\n",
    "llama-3-instruct": "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nA<|eot_id|>",
}


def detect_chat_template(tokenizer: Any) -> str | None:
    """The SGLang chat template whose rendering of a probe conversation equals the model's
    own template's (a leading BOS aside), or None."""
    try:
        text = tokenizer.apply_chat_template(_PROBE, tokenize=False)
    except Exception:
        return None
    bos = getattr(tokenizer, "bos_token", None) or ""
    for name, rendered in _KNOWN_TEMPLATES.items():
        if text in (rendered, bos + rendered):
            return name
    return None
