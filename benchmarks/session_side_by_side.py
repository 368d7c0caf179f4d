"""Multi-turn chat under KV pressure on a real engine: vanilla vLLM vs the plugin's ``session``
eviction, in one run, with the same prompts and engine settings.

    python benchmarks/session_side_by_side.py [--model small|tiny|real] [--requests 120]
        [--kv-blocks 48] [--end-share 0.5] [--sides vanilla,plugin_session,...]
        [--out benchmarks/results]

The requests are the simulator's ``chat_sessions`` trace (``radix_plugin.simulator``), scaled
to a CPU engine: most conversations stop after a turn or two, a next turn re-sends the whole
history and comes 10-120 requests later, so the pool (a few requests' worth) cannot keep every
history the way LRU ranks them. Requests run one at a time in trace order. Every request
carries its conversation's ``session_id`` (vLLM's own field; vanilla ignores it); on
``plugin_session_end`` a share of the conversations also come from a client that knows when
they end and sends ``radix_session_end`` on every turn. The simulator replays the same trace
with the same policy code, and its prediction is printed next to the engine's numbers.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from results_io import machine, model_choices, result_name, run_in_child, write_results

from radix_plugin.simulator.generators import chat_sessions
from radix_plugin.simulator.replay import run_policy
from radix_plugin.simulator.sessions import ClientHints, client_hints, trace_sessions
from radix_plugin.simulator.trace import TraceRequest

BLOCK = 32
FIRST_ID = 16  # stay clear of special tokens
PLUGIN = "radix_plugin.RadixScheduler"
MODEL_NAMES = {"real": " (SmolLM2-135M-Instruct)"}
SIDES: dict[str, dict[str, Any]] = {
    "vanilla": {"engine": {}, "end_hints": False, "simulated": "vllm"},
    "plugin_lru": {
        "engine": {
            "scheduler_cls": PLUGIN,
            "additional_config": {"radix_plugin": {"eviction": "lru"}},
        },
        "end_hints": False,
        "simulated": "lru",
    },
    "plugin_session": {
        "engine": {
            "scheduler_cls": PLUGIN,
            "additional_config": {"radix_plugin": {"eviction": "session"}},
        },
        "end_hints": False,
        "simulated": "session",
    },
    "plugin_session_end": {
        "engine": {
            "scheduler_cls": PLUGIN,
            "additional_config": {"radix_plugin": {"eviction": "session"}},
        },
        "end_hints": True,
        "simulated": "session",
    },
}


def chat_trace(requests: int, seed: int) -> list[TraceRequest]:
    """The first ``requests`` of a scaled ``chat_sessions`` trace (32-token blocks)."""
    trace = chat_sessions(
        conversations=max(300, requests * 3),
        gap_requests=(10, 120),
        user_tokens=(60, 200),
        output_tokens=(16, 48),
        max_turns=8,
        block_size=BLOCK,
        seed=seed,
    )
    return trace[:requests]


def prompt_tokens(req: TraceRequest, vocab: int) -> list[int]:
    """Block ``h`` always gets the same tokens, so equal hash ids are equal prefixes."""
    out: list[int] = []
    for h in req.hash_ids:
        rng = random.Random(h)
        out.extend(rng.randrange(FIRST_ID, vocab) for _ in range(BLOCK))
    return out[: req.input_length]


def run_side(
    llm: Any,
    trace: list[TraceRequest],
    hints: list[ClientHints],
    max_tokens: int,
) -> dict[str, Any]:
    """Every request in trace order, one at a time; greedy, ``max_tokens`` at most."""
    from vllm import SamplingParams

    from radix_plugin.testing.engine import run_one

    engine = llm.llm_engine
    vocab = llm.llm_engine.model_config.get_vocab_size()
    prompts = [prompt_tokens(r, vocab) for r in trace]
    hit = total = 0
    outputs: list[list[int]] = []
    t0 = time.perf_counter()
    for i, (req, prompt, h) in enumerate(zip(trace, prompts, hints, strict=True)):
        xargs = None if h.session_end is None else {"radix_session_end": h.session_end}
        params = SamplingParams(
            temperature=0.0,
            max_tokens=min(max_tokens, req.output_length),
            ignore_eos=True,
            extra_args=xargs,
        )
        done = run_one(engine, f"r{i}", prompt, params, session_id=h.session)
        hit += done.num_cached_tokens or 0
        total += len(prompt)
        outputs.append(list(done.outputs[0].token_ids))
    wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "requests_per_s": len(trace) / wall,
        "prompt_tokens_per_s": total / wall,
        "prompt_tokens": total,
        "hit_tokens": hit,
        "hit_ratio": hit / total,
        "outputs": outputs,
    }


def make_engine(args: argparse.Namespace, extra: dict[str, Any]) -> Any:
    from vllm import LLM

    from radix_plugin.testing.engine import cpu_llm_kwargs

    return LLM(
        **cpu_llm_kwargs(
            args.model,
            dtype=args.dtype,
            max_model_len=args.max_model_len,
            block_size=BLOCK,
            max_num_seqs=4,
            num_kv_blocks=args.kv_blocks,
            enable_prefix_caching=True,
            **extra,
        )
    )


def child_side(
    args: argparse.Namespace, trace: list[TraceRequest], turns: list[Any], side: str
) -> dict[str, Any]:
    """One side in this process (its own process: engines built in one process differ)."""
    from radix_plugin.testing.engine import shutdown_llm

    spec = SIDES[side]
    hints = client_hints(turns, end_share=args.end_share if spec["end_hints"] else 0.0)
    llm = make_engine(args, spec["engine"])
    try:
        return run_side(llm, trace, hints, args.max_tokens)
    finally:
        shutdown_llm(llm)


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput, with every run's requests/s beside it."""
    ranked = sorted(runs, key=lambda r: r["requests_per_s"])
    chosen = dict(ranked[(len(ranked) - 1) // 2])
    chosen["requests_per_s_runs"] = [r["requests_per_s"] for r in runs]
    chosen["identical_outputs_across_runs"] = all(r["outputs"] == runs[0]["outputs"] for r in runs)
    return chosen


def markdown(meta: dict[str, Any], results: dict[str, dict[str, Any]]) -> str:
    base = results.get("vanilla") or next(iter(results.values()))
    lines = [
        "# Multi-turn chat under KV pressure: vanilla vLLM vs session-aware eviction (real engine)",
        "",
        f"Model `{meta['model']}`{MODEL_NAMES.get(meta['model'], '')} ({meta['dtype']}), "
        f"{meta['machine']}. Reproduce: "
        f"`{meta['command']}`.",
        "",
        f"{meta['requests']} requests of the simulator's `chat_sessions` trace scaled to a CPU "
        f"engine ({meta['conversations']} conversations, {meta['continued_share']:.0%} of "
        f"turns get a next turn, {meta['gap_p10']:.0f}-{meta['gap_p90']:.0f} requests later "
        "(p10-p90)), one at a time in trace order; prompts re-send the whole history (mean "
        f"{meta['mean_prompt_tokens']:.0f} tokens); at most {meta['max_tokens']} generated "
        f"tokens each. KV pool {meta['kv_blocks']} blocks of {BLOCK} tokens. Every request "
        "carries its `session_id`; `plugin_session_end`: "
        f"{meta['end_share']:.0%} of the conversations also send `radix_session_end` on every "
        "turn (true on the last). `simulated` is the trace simulator's hit ratio for the same "
        "trace and policy (same policy code, vLLM's own manager for vanilla). Each side runs "
        f"in its own process, {meta['repeats']} run(s) per side interleaved; the run with the "
        "median requests/s (the lower one of an even count) is shown, every run's in the "
        "last column.",
        "",
        "| engine | hit ratio | simulated | requests/s | prompt tok/s | throughput vs vanilla "
        "| greedy outputs = vanilla | requests/s of each run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for side, r in results.items():
        same = "yes" if r["outputs"] == base["outputs"] else "no"
        lines.append(
            f"| {side} | {r['hit_ratio']:.3f} | {r['simulated_hit_ratio']:.3f} | "
            f"{r['requests_per_s']:.3f} | {r['prompt_tokens_per_s']:.0f} | "
            f"**{r['requests_per_s'] / base['requests_per_s']:.2f}x** | {same} | "
            + ", ".join(f"{x:.3f}" for x in r["requests_per_s_runs"])
            + " |"
        )
    return "\n".join(lines) + "\n"


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sides = list(results)
    base = results["vanilla"]["requests_per_s"]
    fig, (hit_ax, speed_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    hit_ax.bar(sides, [results[s]["hit_ratio"] for s in sides])
    hit_ax.set_ylabel("prefix-cache hit ratio")
    speed_ax.bar(sides, [results[s]["requests_per_s"] / base for s in sides])
    speed_ax.axhline(1.0, color="grey", linewidth=0.8)
    speed_ax.set_ylabel("throughput vs vanilla vLLM")
    for ax in (hit_ax, speed_ax):
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="small", choices=model_choices())
    ap.add_argument("--requests", type=int, default=120)
    ap.add_argument("--kv-blocks", type=int, default=48, help="32-token blocks in the pool")
    ap.add_argument("--max-model-len", type=int, default=1024)
    ap.add_argument("--max-tokens", type=int, default=8, help="generated tokens per request")
    ap.add_argument("--end-share", type=float, default=0.5)
    ap.add_argument("--sides", default="vanilla,plugin_session,plugin_session_end")
    ap.add_argument("--dtype", default="float32", help="float32: comparable greedy outputs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1, help="runs per side, interleaved; median")
    ap.add_argument("--name", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sides = args.sides.split(",")
    unknown = [s for s in sides if s not in SIDES]
    if unknown:
        ap.error(f"unknown side(s) {unknown}; valid: {', '.join(SIDES)}")
    if args.kv_blocks < args.max_model_len // BLOCK + 1:
        ap.error(f"--kv-blocks must be >= {args.max_model_len // BLOCK + 1}")
    trace = chat_trace(args.requests, args.seed)
    if max(r.input_length for r in trace) + args.max_tokens > args.max_model_len:
        ap.error("--max-model-len is shorter than the longest conversation")
    turns = trace_sessions(trace, BLOCK)
    if args.child:
        print(json.dumps(child_side(args, trace, turns, args.child)))
        return 0
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    for repeat in range(args.repeats):  # interleaved: drift over time hits every side alike
        for side in sides:
            print(f"running {side} ({repeat + 1}/{args.repeats}) ...", file=sys.stderr, flush=True)
            runs[side].append(run_in_child(__file__, side, argv))
    results: dict[str, dict[str, Any]] = {}
    for side in sides:
        spec = SIDES[side]
        results[side] = median_run(runs[side])
        hints = client_hints(turns, end_share=args.end_share if spec["end_hints"] else 0.0)
        sim_hints = hints if spec["simulated"] == "session" else None
        sim = run_policy(spec["simulated"], trace, BLOCK, args.kv_blocks - 1, 1, sim_hints)
        results[side]["simulated_hit_ratio"] = sim.hit_ratio
        print(side, {k: v for k, v in results[side].items() if k != "outputs"}, flush=True)
    stats = {
        "conversations": len({t.session for t in turns}),
        "continued_share": sum(not t.last for t in turns) / len(turns),
    }
    gaps = sorted(t.gap for t in turns if t.gap is not None) or [0]
    meta = {
        "model": args.model,
        "dtype": args.dtype,
        "machine": machine(),
        "requests": len(trace),
        "kv_blocks": args.kv_blocks,
        "max_tokens": args.max_tokens,
        "end_share": args.end_share,
        "repeats": args.repeats,
        "mean_prompt_tokens": sum(r.input_length for r in trace) / len(trace),
        "gap_p10": gaps[len(gaps) // 10],
        "gap_p90": gaps[9 * len(gaps) // 10],
        "command": "python benchmarks/session_side_by_side.py " + " ".join(argv),
        **stats,
    }
    md = markdown(meta, results)
    print(md)
    if args.out:
        name = args.name or result_name("session_side_by_side", args.model)
        out = write_results(args.out, name, {"meta": meta, "results": results}, md)
        if "vanilla" in results:
            plot(results, out / f"{name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
