"""Structured decoding side by side: vanilla vLLM (xgrammar) vs the plugin, per workload.

    python benchmarks/structured_side_by_side.py [--model small|real|PATH] [--requests 16]
        [--repeats 1] [--batches 1,16] [--workloads ...] [--sides ...] [--dtype native]
        [--out DIR]

Engines (each side in its own process, one after another per repeat; greedy requests):

- ``vanilla_xgrammar``: plain vLLM, ``structured_outputs`` (xgrammar, no free whitespace).
- ``plugin_masking``: RadixScheduler + the plugin's logits processor, grammars through
  ``vllm_xargs`` (masking only, no jump-forward).
- ``plugin_jump_forward``: only ``--scheduler-cls radix_plugin.RadixScheduler`` (the plugin
  supplies the draft config) and the same ``structured_outputs`` requests as vanilla; the
  default ``auto`` mode (forced runs of 4+ tokens appended unverified, shorter ones verified).
- ``plugin_jump_forward_forced``: the same with ``jump_forward_mode: forced`` (SGLang's
  semantics for every forced run).
- ``plugin_jump_forward_verify``: the same with ``jump_forward_mode: verify`` (the model
  verifies every forced token; outputs identical to plain greedy decoding).

Workloads: ``key_heavy`` (six long keys, short values), ``array_of_objects``, ``free_text``
(one long free string), ``regex`` (fixed words around short fields), ``mixed`` (half
key_heavy, half requests without a grammar in the same batch) and ``plain`` (no grammar).
Batch ``b``: at most ``b`` requests in flight (a new one starts when one finishes).

Reported per engine: output tokens/s, output characters/s and requests/s (forced mode
emits the canonical tokenization of forced text, usually fewer tokens for the same text, so
tokens/s understates it), model steps per request, and time per model step broken down into
forward (``execute_model``), sampling (``sample_tokens``: logits bitmask, rejection sampler),
grammar masks (``get_grammar_bitmask``), drafts (``update_draft_token_ids``) and the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from results_io import (
    DTYPE_HELP,
    machine,
    model_choices,
    resolve_dtype,
    run_in_child,
    write_results,
)

KEY_HEAVY = {
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
SCHEMA = KEY_HEAVY  # the key-heavy schema under its old name
ARRAY_OF_OBJECTS = {
    "type": "object",
    "properties": {
        "order_line_items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "product_display_name": {"type": "string", "maxLength": 10},
                    "quantity_ordered": {"type": "integer", "minimum": 1, "maximum": 99},
                    "is_gift_wrapped": {"type": "boolean"},
                },
                "required": ["product_display_name", "quantity_ordered", "is_gift_wrapped"],
                "additionalProperties": False,
            },
            "minItems": 2,
            "maxItems": 3,
        }
    },
    "required": ["order_line_items"],
    "additionalProperties": False,
}
FREE_TEXT = {
    "type": "object",
    "properties": {"story": {"type": "string", "minLength": 150, "maxLength": 300}},
    "required": ["story"],
    "additionalProperties": False,
}
REGEX = (
    r"Order #[0-9]{4,6} was shipped on 2026-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]) "
    r"by (ground|air|sea) freight to warehouse [A-Z]{2}\."
)
WORKLOADS: dict[str, dict[str, Any]] = {
    "key_heavy": {"schema": KEY_HEAVY, "prompt": "Customer profile #{i}:"},
    "array_of_objects": {"schema": ARRAY_OF_OBJECTS, "prompt": "Order #{i} contents as JSON:"},
    "free_text": {"schema": FREE_TEXT, "prompt": "Write a short story #{i} as JSON:"},
    "regex": {"regex": REGEX, "prompt": "Shipping notice {i}:"},
    "mixed": {"schema": KEY_HEAVY, "prompt": "Customer profile #{i}:", "plain_share": 0.5},
    "plain": {"prompt": "Tell me about city number {i}.", "plain_share": 1.0},
}
MAX_TOKENS = {"free_text": 512}
PLAIN_TOKENS = 64

XGRAMMAR = {"backend": "xgrammar", "disable_any_whitespace": True}
RADIX = "radix_plugin.RadixScheduler"
SIDES = {
    "vanilla_xgrammar": {"structured_outputs_config": XGRAMMAR},
    "plugin_masking": {
        "scheduler_cls": RADIX,
        "logits_processors": ["radix_plugin.logits.worker.processor:RadixGrammarLogitsProcessor"],
    },
    # One flag: no speculative config here, the plugin supplies it.
    "plugin_jump_forward": {"scheduler_cls": RADIX, "structured_outputs_config": XGRAMMAR},
    **{
        f"plugin_jump_forward_{mode}": {
            "scheduler_cls": RADIX,
            "structured_outputs_config": XGRAMMAR,
            "additional_config": {"radix_plugin": {"jump_forward_mode": mode}},
        }
        for mode in ("forced", "verify")
    },
}
XARGS_SIDES = ("plugin_masking",)


def resolve_model(name: str) -> str:
    """A test model's name (built on demand, cached) or a model directory."""
    from pathlib import Path

    from radix_plugin.testing.models import get_model_path

    if Path(name).is_dir():
        return name
    if name not in model_choices():
        raise SystemExit(f"--model {name!r}: expected one of {', '.join(model_choices())}")
    return str(get_model_path(name))


def make_engine(model: str, extra: dict, dtype: str = "auto") -> Any:
    from vllm import LLM

    from radix_plugin.testing.engine import cpu_llm_kwargs

    return LLM(
        **cpu_llm_kwargs(
            model,
            max_model_len=2048,
            max_num_seqs=16,
            enable_prefix_caching=True,
            dtype=dtype,
            **extra,
        )
    )


def params_for(side: str, workload: str, plain: bool) -> Any:
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    if plain:
        return SamplingParams(temperature=0.0, max_tokens=PLAIN_TOKENS, ignore_eos=True)
    spec = WORKLOADS[workload]
    max_tokens = MAX_TOKENS.get(workload, 256)
    if side in XARGS_SIDES:
        if "regex" in spec:
            extra = {"radix_regex": spec["regex"]}
        else:
            extra = {"radix_json_schema": json.dumps(spec["schema"])}
        return SamplingParams(temperature=0.0, max_tokens=max_tokens, extra_args=extra)
    if "regex" in spec:
        structured = StructuredOutputsParams(regex=spec["regex"])
    else:
        structured = StructuredOutputsParams(json=spec["schema"])
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, structured_outputs=structured)


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
        delattr(owner, name)  # an instance attribute: the class's method shows through again


def run_once(
    llm: Any,
    side: str,
    workload: str,
    requests: int,
    batch: int,
    on_finish: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """``requests`` greedy requests, at most ``batch`` in flight; ``on_finish`` gets the
    number finished so far, after each one."""
    engine = llm.llm_engine
    core = engine.engine_core.engine_core
    scheduler = core.scheduler
    spec = WORKLOADS[workload]
    share = spec.get("plain_share", 0.0)
    plain = [i < round(share * requests) for i in range(requests)]
    todo = [
        (f"{side}-{workload}-{i}", spec["prompt"].format(i=i), params_for(side, workload, p), p)
        for i, p in enumerate(plain)
    ]
    parts: dict[str, list[float]] = {k: [] for k in ("forward", "sample", "mask", "drafts")}
    steps = [0, 0, 0]  # model steps, request-steps, scheduled positions
    original_schedule = scheduler.schedule

    def counting(*args: Any, **kwargs: Any) -> Any:
        out = original_schedule(*args, **kwargs)
        if out.total_num_scheduled_tokens:
            steps[0] += 1
            steps[1] += len(out.num_scheduled_tokens)
            steps[2] += out.total_num_scheduled_tokens
        return out

    scheduler.schedule = counting
    outputs: dict[str, Any] = {}
    finished_at: dict[str, float] = {}
    in_flight = 0
    try:
        with (
            timed(core.model_executor, "execute_model", parts["forward"]),
            timed(core.model_executor, "sample_tokens", parts["sample"]),
            timed(scheduler, "get_grammar_bitmask", parts["mask"]),
            timed(scheduler, "update_draft_token_ids", parts["drafts"]),
        ):
            t0 = time.perf_counter()
            queue = list(todo)
            while queue or engine.has_unfinished_requests():
                while queue and in_flight < batch:
                    rid, prompt, params, _ = queue.pop(0)
                    engine.add_request(rid, prompt, params)
                    in_flight += 1
                for out in engine.step():
                    if out.finished:
                        outputs[out.request_id] = out.outputs[0]
                        finished_at[out.request_id] = time.perf_counter() - t0
                        in_flight -= 1
                        if on_finish is not None:
                            on_finish(len(outputs))
            wall = time.perf_counter() - t0
    finally:
        del scheduler.schedule
    grammar_outs = [outputs[rid] for rid, _, _, p in todo if not p]
    plain_ids = [rid for rid, _, _, p in todo if p]
    # Requests without a grammar: their tokens over the time until the last of them finished.
    plain_tps = (
        sum(len(outputs[r].token_ids) for r in plain_ids) / max(finished_at[r] for r in plain_ids)
        if plain_ids
        else 0.0
    )
    valid = sum(_valid(workload, o.text) for o in grammar_outs)
    tokens = sum(len(o.token_ids) for o in outputs.values())
    chars = sum(len(o.text) for o in outputs.values())
    n_steps = max(1, steps[0])
    per_step = {k: 1e3 * sum(v) / n_steps for k, v in parts.items()}
    per_step["other"] = 1e3 * wall / n_steps - sum(per_step.values())
    return {
        "wall_s": wall,
        "output_tokens": tokens,
        "output_chars": chars,
        "tokens_per_s": tokens / wall,
        "chars_per_s": chars / wall,
        "requests_per_s": requests / wall,
        "plain_tokens_per_s": plain_tps,
        "model_steps": steps[0],
        "steps_per_request": steps[1] / requests,
        "positions_per_step": steps[2] / n_steps,
        "ms_per_step": 1e3 * wall / n_steps,
        **{f"{k}_ms_per_step": v for k, v in per_step.items()},
        "valid_outputs": valid,
        "grammar_requests": len(grammar_outs),
        "requests": requests,
        "texts": [o.text for o in grammar_outs[:2]],
    }


def run_side(
    side: str, model: str, dtype: str, cells: list[tuple[str, str, int]], args: Any
) -> dict[str, dict[str, Any]]:
    """One pass over every cell on one engine, in this (child) process."""
    llm = make_engine(model, SIDES[side], dtype)
    run_once(llm, side, "key_heavy", 2, 2)  # warm-up: first-request costs are not measured
    out = {}
    for key, workload, batch in cells:
        assert llm.reset_prefix_cache()
        n = args.batch1_requests if batch == 1 else args.requests
        out[key] = run_once(llm, side, workload, n, batch)
    return out


def _valid(workload: str, text: str) -> bool:
    import jsonschema

    spec = WORKLOADS[workload]
    if "regex" in spec:
        return re.fullmatch(spec["regex"], text) is not None
    try:
        jsonschema.validate(json.loads(text), spec["schema"])
        return True
    except (ValueError, jsonschema.ValidationError):
        return False


def table(summary: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = [
        "| workload, batch | engine | tok/s | chars/s | req/s | steps/req | positions/step | "
        "ms/step: fwd + sample + mask + drafts + other | valid | tok/s vs vanilla | "
        "req/s vs vanilla | steps vs vanilla | no-grammar requests' tok/s vs vanilla |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, sides in summary.items():
        base = sides.get("vanilla_xgrammar")
        for side, s in sides.items():
            plain = (
                f"{s['plain_tokens_per_s'] / base['plain_tokens_per_s']:.2f}x"
                if base and s.get("plain_tokens_per_s") and base.get("plain_tokens_per_s")
                else "-"
            )
            ratio = (
                (
                    f"{s['tokens_per_s'] / base['tokens_per_s']:.2f}x | "
                    f"{s['requests_per_s'] / base['requests_per_s']:.2f}x | "
                    f"{base['steps_per_request'] / s['steps_per_request']:.2f}x fewer"
                )
                if base
                else "- | - | -"
            )
            lines.append(
                f"| {key} | {side} | {s['tokens_per_s']:.0f} | {s['chars_per_s']:.0f} | "
                f"{s['requests_per_s']:.2f} | {s['steps_per_request']:.1f} | "
                f"{s['positions_per_step']:.1f} | "
                f"{s['ms_per_step']:.1f}: {s['forward_ms_per_step']:.1f} + "
                f"{s['sample_ms_per_step']:.1f} + {s['mask_ms_per_step']:.1f} + "
                f"{s['drafts_ms_per_step']:.1f} + {s['other_ms_per_step']:.1f} | "
                f"{int(s['valid_outputs'])}/{int(s['grammar_requests'])} | {ratio} | {plain} |"
            )
    return "\n".join(lines)


def plot(summary: dict[str, dict[str, dict[str, Any]]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(summary)
    sides = list(next(iter(summary.values())))
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
    width = 0.8 / len(sides)
    for j, side in enumerate(sides):
        for ax, metric in zip(axes, ("requests_per_s", "tokens_per_s"), strict=True):
            vals = [
                summary[k][side][metric] / summary[k]["vanilla_xgrammar"][metric]
                if side in summary[k] and "vanilla_xgrammar" in summary[k]
                else 0.0
                for k in keys
            ]
            ax.bar([i + j * width for i in range(len(keys))], vals, width, label=side)
    for ax, metric in zip(axes, ("requests/s", "output tokens/s"), strict=True):
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(keys))])
        ax.set_xticklabels(keys, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(f"{metric} vs vanilla xgrammar")
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="small", help="small, tiny, real or a model directory")
    ap.add_argument("--requests", type=int, default=16, help="requests per run at batch 16")
    ap.add_argument("--batch1-requests", type=int, default=4, help="requests per run at batch 1")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--batches", default="16")
    ap.add_argument("--workloads", default="key_heavy")
    ap.add_argument("--sides", default=",".join(SIDES), help="comma-separated subset of sides")
    ap.add_argument("--dtype", default="native", help=DTYPE_HELP)
    ap.add_argument("--out", default=None)
    ap.add_argument("--name", default="structured_side_by_side")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    model = resolve_model(args.model)
    sides = args.sides.split(",")
    cells = [
        (f"{workload}, b={batch}", workload, batch)
        for workload in args.workloads.split(",")
        for batch in (int(b) for b in args.batches.split(","))
    ]
    dtype = resolve_dtype(args.dtype)
    if args.child:
        print(json.dumps(run_side(args.child, model, dtype, cells, args)))
        return 0
    runs: dict[str, dict[str, list[dict]]] = {key: {s: [] for s in sides} for key, _, _ in cells}
    argv = sys.argv[1:] if argv is None else argv
    for _ in range(args.repeats):
        for side in sides:
            for key, result in run_in_child(__file__, side, argv).items():
                runs[key][side].append(result)
        for key in runs:
            print(key, {s: round(r[-1]["requests_per_s"], 3) for s, r in runs[key].items()})
    summary = {
        key: {
            side: {
                k: (statistics.median(r[k] for r in rs) if k != "texts" else rs[0][k])
                for k in rs[0]
            }
            for side, rs in by_side.items()
        }
        for key, by_side in runs.items()
    }
    text = table(summary)
    print(text)
    if args.out:
        meta = {
            "model": args.model,
            "model_path": model,
            "dtype": dtype,
            "requests": args.requests,
            "batch1_requests": args.batch1_requests,
            "repeats": args.repeats,
            "machine": machine(),
        }
        out = write_results(
            args.out,
            args.name,
            {"meta": meta, "summary": summary, "runs": runs},
            f"# Structured decoding side by side (real engine, CPU)\n\n{meta}\n\n"
            "Greedy requests. Forced runs are emitted in the canonical tokenization of the "
            "forced text (usually fewer tokens for the same text), so compare requests/s "
            "and chars/s, not only tokens/s. `plugin_jump_forward` is the default `auto` "
            "mode (forced runs of 4+ tokens unverified, shorter ones verified).\n\n" + text,
        )
        plot(summary, str(out / f"{args.name}.png"), f"{args.model}: {meta['machine']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
