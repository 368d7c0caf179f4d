"""JSON-schema decoding: vanilla vLLM (xgrammar) vs plugin masking vs plugin jump-forward.

    python benchmarks/structured_side_by_side.py [--model small] [--requests 16] [--repeats 2]
        [--out benchmarks/results]

All three engines live in this process and decode the same greedy requests under a key-heavy
schema: vanilla vLLM through ``structured_outputs`` (xgrammar backend, no free whitespace);
the plugin's logits processor through ``vllm_xargs`` (masking only); and RadixScheduler with
jump-forward (grammar-forced drafts, ``--speculative-config`` with the no-op proposer).
Reported: output tokens/s, model steps per request, and mask time per step (time inside
xgrammar bitmask filling and applying, measured by wrapping those calls).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Iterator
from typing import Any

from results_io import machine, write_results

SCHEMA = {
    "type": "object",
    "properties": {
        "customer_account_identifier": {"type": "string", "maxLength": 6},
        "preferred_delivery_window_description": {"type": "string", "maxLength": 8},
        "subscription_tier_classification": {"enum": ["basic", "premium", "enterprise"]},
        "requires_signature_on_delivery": {"type": "boolean"},
        "number_of_previous_orders_bucket": {"enum": ["none", "few", "many"]},
        "marketing_communication_opt_in_status": {"type": "boolean"},
    },
    "required": [
        "customer_account_identifier",
        "preferred_delivery_window_description",
        "subscription_tier_classification",
        "requires_signature_on_delivery",
        "number_of_previous_orders_bucket",
        "marketing_communication_opt_in_status",
    ],
    "additionalProperties": False,
}
DRAFTS = {
    "method": "custom_class",
    "model": "radix_plugin.engine_core.jump_forward_drafts.NoDraftProposer",
    "num_speculative_tokens": 16,
}
XGRAMMAR = {"backend": "xgrammar", "disable_any_whitespace": True}
SIDES = {
    "vanilla_xgrammar": {"structured_outputs_config": XGRAMMAR},
    "plugin_masking": {
        "scheduler_cls": "radix_plugin.RadixScheduler",
        "logits_processors": ["radix_plugin.worker.logits.processor:RadixGrammarLogitsProcessor"],
    },
    "plugin_jump_forward": {
        "scheduler_cls": "radix_plugin.RadixScheduler",
        "speculative_config": DRAFTS,
        "structured_outputs_config": XGRAMMAR,
    },
    "plugin_jump_forward_verify": {
        "scheduler_cls": "radix_plugin.RadixScheduler",
        "speculative_config": DRAFTS,
        "structured_outputs_config": XGRAMMAR,
        "additional_config": {"radix_plugin": {"jump_forward_mode": "verify"}},
    },
}


def make_engine(model: str, extra: dict) -> Any:
    from vllm import LLM

    from radix_plugin.testing.engine import cpu_llm_kwargs

    return LLM(
        **cpu_llm_kwargs(
            model, max_model_len=2048, max_num_seqs=16, enable_prefix_caching=True, **extra
        )
    )


def params_for(side: str) -> Any:
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    if side in ("vanilla_xgrammar",):
        return SamplingParams(
            temperature=0.0, max_tokens=256, structured_outputs=StructuredOutputsParams(json=SCHEMA)
        )
    return SamplingParams(
        temperature=0.0, max_tokens=256, extra_args={"radix_json_schema": json.dumps(SCHEMA)}
    )


@contextlib.contextmanager
def timed(owner: Any, name: str, into: list[float]) -> Iterator[None]:
    """Accumulate wall time spent in ``owner.name`` (instrumentation of the real call)."""
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            into.append(time.perf_counter() - t)

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        setattr(owner, name, original)


def run_once(llm: Any, side: str, requests: int) -> dict[str, float]:
    import xgrammar as xgr
    from vllm.v1.structured_output import StructuredOutputManager

    from radix_plugin.worker.logits.masking import BitmaskBuffer

    engine = llm.llm_engine
    scheduler = engine.engine_core.engine_core.scheduler
    params = params_for(side)
    prompts = [f"Customer profile #{i}:" for i in range(requests)]
    mask_s: list[float] = []
    steps = [0, 0]  # model steps, request-steps

    original_schedule = scheduler.schedule

    def counting(*args: Any, **kwargs: Any) -> Any:
        out = original_schedule(*args, **kwargs)
        if out.total_num_scheduled_tokens:
            steps[0] += 1
            steps[1] += len(out.num_scheduled_tokens)
        return out

    scheduler.schedule = counting
    outputs = {}
    try:
        with (
            timed(StructuredOutputManager, "grammar_bitmask", mask_s),
            timed(xgr, "apply_token_bitmask_inplace", mask_s),
            timed(BitmaskBuffer, "apply", mask_s),
        ):
            t0 = time.perf_counter()
            for i, p in enumerate(prompts):
                engine.add_request(f"{side}-{i}", p, params)
            while engine.has_unfinished_requests():
                for out in engine.step():
                    if out.finished:
                        outputs[out.request_id] = out.outputs[0]
            wall = time.perf_counter() - t0
    finally:
        del scheduler.schedule
    valid = sum(_valid(o.text) for o in outputs.values())
    tokens = sum(len(o.token_ids) for o in outputs.values())
    return {
        "wall_s": wall,
        "output_tokens": tokens,
        "tokens_per_s": tokens / wall,
        "model_steps": steps[0],
        "steps_per_request": steps[1] / requests,
        "mask_ms_per_step": 1e3 * sum(mask_s) / max(1, steps[0]),
        "valid_outputs": valid,
        "requests": requests,
    }


def _valid(text: str) -> bool:
    import jsonschema

    try:
        jsonschema.validate(json.loads(text), SCHEMA)
        return True
    except (ValueError, jsonschema.ValidationError):
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="small")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--sides", default=",".join(SIDES), help="comma-separated subset of sides")
    args = ap.parse_args(argv)
    sides = args.sides.split(",")
    engines = {side: make_engine(args.model, SIDES[side]) for side in sides}
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for _ in range(args.repeats):
        for side, llm in engines.items():
            assert llm.reset_prefix_cache()
            runs[side].append(run_once(llm, side, args.requests))
    summary = {
        side: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for side, rs in runs.items()
    }
    base = summary["vanilla_xgrammar"]
    lines = [
        "| engine | output tok/s | model steps/request | mask ms/step | valid JSON | "
        "tok/s vs vanilla | steps vs vanilla |",
        "|---|---|---|---|---|---|---|",
    ]
    for side, s in summary.items():
        lines.append(
            f"| {side} | {s['tokens_per_s']:.0f} | {s['steps_per_request']:.1f} | "
            f"{s['mask_ms_per_step']:.2f} | {int(s['valid_outputs'])}/{int(s['requests'])} | "
            f"{s['tokens_per_s'] / base['tokens_per_s']:.2f}x | "
            f"{base['steps_per_request'] / s['steps_per_request']:.2f}x fewer |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        meta = {
            "model": args.model,
            "requests": args.requests,
            "repeats": args.repeats,
            "machine": machine(),
        }
        write_results(
            args.out,
            "structured_side_by_side",
            {"meta": meta, "summary": summary, "runs": runs},
            "# JSON-schema decoding side by side (real engine, CPU)\n\n"
            f"{meta}\n\nKey-heavy schema (6 long keys), greedy.\n\n{table}",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
