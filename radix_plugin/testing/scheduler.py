"""A scheduler without a model: vLLM's real ``Scheduler`` (or ``RadixScheduler``) built from a
real ``VllmConfig``, fed requests and hand-made ``ModelRunnerOutput``s, as vLLM's own
scheduler tests do. Used by unit tests of the scheduler's collaborators, the state-bound
tests and the scheduler-only benchmark; the CPU platform forces async scheduling off, so
``async_scheduling=True`` turns it on in the built config, as GPUs do by default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from vllm.engine.arg_utils import EngineArgs
from vllm.sampling_params import SamplingParams
from vllm.utils.hashing import get_hash_fn_by_name
from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
from vllm.v1.outputs import DraftTokenIds, ModelRunnerOutput
from vllm.v1.request import Request
from vllm.v1.structured_output import StructuredOutputManager

from radix_plugin.testing.engine import configure_cpu_env
from radix_plugin.testing.models import get_model_path

RADIX_SCHEDULER = "radix_plugin.RadixScheduler"


def build_scheduler(
    *,
    radix: Mapping[str, Any] | None = None,
    vanilla: bool = False,
    cls: type | None = None,
    async_scheduling: bool = False,
    blocks: int = 64,
    block_size: int = 32,
    max_model_len: int = 512,
    log_stats: bool = False,
    **engine_args: Any,
) -> Any:
    """vLLM's scheduler over ``blocks`` KV blocks: ``RadixScheduler`` with ``radix`` as its
    ``--additional-config`` (or ``cls``, a subclass), or vLLM's own with ``vanilla``."""
    configure_cpu_env()
    config = EngineArgs(
        model=str(get_model_path("tiny")),
        enforce_eager=True,
        block_size=block_size,
        max_model_len=max_model_len,
        enable_prefix_caching=True,
        scheduler_cls=None if vanilla else RADIX_SCHEDULER,
        additional_config={} if vanilla else {"radix_plugin": dict(radix or {})},
        **engine_args,
    ).create_engine_config()
    config.scheduler_config.async_scheduling = async_scheduling
    config.cache_config.num_gpu_blocks = blocks
    spec = FullAttentionSpec(
        block_size=block_size, num_kv_heads=2, head_size=64, dtype=torch.bfloat16
    )
    kv = KVCacheConfig(
        num_blocks=blocks,
        kv_cache_tensors=[],
        kv_cache_groups=[KVCacheGroupSpec(["model.layers.0.self_attn.attn"], spec)],
    )
    if cls is None:
        cls = config.scheduler_config.get_scheduler_cls()
    return cls(
        vllm_config=config,
        kv_cache_config=kv,
        structured_output_manager=StructuredOutputManager(config),
        block_size=block_size,
        hash_block_size=block_size,
        log_stats=log_stats,
    )


def make_request(
    rid: str,
    tokens: list[int],
    extra: Mapping[str, Any] | None = None,
    *,
    block_size: int = 32,
    max_tokens: int = 4,
    **params: Any,
) -> Request:
    """A vLLM ``Request`` with block hashes, as the engine core builds it."""
    hash_fn = get_hash_fn_by_name("sha256")
    init_none_hash(hash_fn)
    sampling = SamplingParams(
        max_tokens=max_tokens, extra_args=dict(extra) if extra else None, **params
    )
    return Request(
        rid, tokens, sampling, None, block_hasher=get_request_block_hasher(block_size, hash_fn)
    )


def runner_output(scheduler: Any, scheduler_output: Any, token: int = 7) -> ModelRunnerOutput:
    """What a model that samples ``token`` would return: nothing for a request still in
    its prefill (``schedule()`` already counted this step's tokens as computed), else
    ``token`` after each scheduled draft that equals it, up to the first that does not (the
    rejection sampler's rule)."""
    req_ids = list(scheduler_output.num_scheduled_tokens)
    drafts = scheduler_output.scheduled_spec_decode_tokens
    sampled: list[list[int]] = []
    for rid in req_ids:
        request = scheduler.requests[rid]
        if request.num_computed_tokens < request.num_prompt_tokens:
            sampled.append([])
            continue
        accepted = 0
        for draft in drafts.get(rid, ()):
            if draft != token:
                break
            accepted += 1
        sampled.append([token] * (accepted + 1))
    return ModelRunnerOutput(
        req_ids=req_ids,
        req_id_to_index={rid: i for i, rid in enumerate(req_ids)},
        sampled_token_ids=sampled,
    )


def masked_runner_output(scheduler: Any, scheduler_output: Any, token: int = 7) -> Any:
    """``runner_output`` under the grammars, as a greedy model with flat logits samples:
    each structured row's token is the lowest id its bitmask allows (the scheduler's own
    ``get_grammar_bitmask``, forced rows included), and a draft is accepted while it equals
    that; rows without a grammar sample ``token``. Called between ``schedule`` and
    ``update_from_output``, as EngineCore does."""
    grammar = scheduler.get_grammar_bitmask(scheduler_output)
    drafts = scheduler_output.scheduled_spec_decode_tokens
    rows: dict[str, list[int]] = {}
    if grammar is not None:
        at = 0
        for rid in grammar.structured_output_request_ids:
            n = 1 + len(drafts.get(rid, ()))
            rows[rid] = [_lowest_allowed(r) for r in grammar.grammar_bitmask[at : at + n]]
            at += n
    req_ids = list(scheduler_output.num_scheduled_tokens)
    sampled: list[list[int]] = []
    for rid in req_ids:
        request = scheduler.requests[rid]
        if request.num_computed_tokens < request.num_prompt_tokens:
            sampled.append([])
            continue
        picks = rows.get(rid)
        scheduled = list(drafts.get(rid, ()))
        out: list[int] = []
        for i in range(len(scheduled) + 1):
            pick = picks[i] if picks is not None else token
            out.append(pick)
            if i == len(scheduled) or scheduled[i] != pick:
                break
        sampled.append(out)
    return ModelRunnerOutput(
        req_ids=req_ids,
        req_id_to_index={rid: i for i, rid in enumerate(req_ids)},
        sampled_token_ids=sampled,
    )


def _lowest_allowed(row: Any) -> int:
    allowed = np.flatnonzero(np.unpackbits(np.asarray(row).view(np.uint8), bitorder="little"))
    return int(allowed[0])


def step(scheduler: Any, token: int = 7, *, masked: bool = False) -> Any:
    """One engine-core step: ``schedule``, then ``update_draft_token_ids`` with the
    model's drafts (none: the plugin's forced drafts are what is offered) when drafts are
    configured, and ``update_from_output``; returns the scheduler output. ``masked``
    samples under the grammars (``masked_runner_output``)."""
    out = scheduler.schedule()
    result = (masked_runner_output if masked else runner_output)(scheduler, out, token)
    scheduler.update_from_output(out, result)
    if scheduler.num_spec_tokens and out.total_num_scheduled_tokens:
        # EngineCore.post_step: the proposer's (empty) drafts, then the plugin's offer.
        ids = list(out.num_scheduled_tokens)
        scheduler.update_draft_token_ids(DraftTokenIds(ids, [[] for _ in ids]))
    return out


def run_steps(scheduler: Any, max_steps: int = 40, token: int = 7, *, masked: bool = False) -> int:
    """Step until no request is unfinished; returns the steps taken."""
    for n in range(max_steps):
        if not scheduler.has_unfinished_requests():
            return n
        step(scheduler, token, masked=masked)
    raise AssertionError(f"requests still unfinished after {max_steps} steps")
