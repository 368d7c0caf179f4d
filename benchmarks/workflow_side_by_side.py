"""Agent workflows on a real engine: vanilla vLLM vs the plugin's LRU, workflow eviction,
workflow eviction + host tier, and workflow eviction + host tier + prefetch, in one run;
workflow eviction with an explicit Agent Step Graph and with tags alone (``_tags`` sides).

    python benchmarks/workflow_side_by_side.py [--model small|tiny|real]
        [--agents 6] [--workflows 6]
        [--concurrency 1,16] [--sides vanilla,plugin_workflow,...] [--out benchmarks/results]

Every workflow calls the same agents in a fixed order (each agent has a large fixed prompt,
followed by a short step-specific context); the KV pool holds only part of the agents'
prompts, so which prefixes survive between calls decides how much is recomputed. Requests of
the plugin engines carry the Agent Step Graph hints
(``radix_plugin.cache_manager.core.workflow``); those of the ``_tags`` sides carry only
``radix_workflow`` and ``radix_agent`` (the scheduler learns the step order); vanilla vLLM
ignores them. Reported: mean end-to-end workflow latency, hit ratio
(device + host), throughput, ratios to vanilla. Each engine runs in its own child process
(vLLM keeps the worker's KV connector in a process global, so two connector engines cannot
share a process); the sides run one after another with the same prompts and engine settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from results_io import (
    DTYPE_HELP,
    machine,
    model_choices,
    resolve_dtype,
    result_name,
    run_in_child,
    write_results,
)

MAX_MODEL_LEN = 8192
BLOCK = 32
HOST_TIER = {
    "kv_connector": "RadixHostTierConnector",
    "kv_connector_module_path": "radix_plugin.cache_manager.connector",
    "kv_role": "kv_both",
}
SIDES = {
    "vanilla": {},
    "plugin_lru": {
        "scheduler_cls": "radix_plugin.RadixScheduler",
        "additional_config": {"radix_plugin": {"eviction": "lru"}},
    },
    "plugin_workflow": {
        "scheduler_cls": "radix_plugin.RadixScheduler",
        "additional_config": {"radix_plugin": {"eviction": "workflow"}},
    },
    "plugin_workflow_tags": {
        "scheduler_cls": "radix_plugin.RadixScheduler",
        "additional_config": {"radix_plugin": {"eviction": "workflow"}},
    },
    "plugin_workflow_host": {
        "scheduler_cls": "radix_plugin.RadixScheduler",
        "additional_config": {"radix_plugin": {"eviction": "workflow", "prefetch": False}},
        "kv_transfer_config": HOST_TIER,
    },
    "plugin_workflow_prefetch": {
        "scheduler_cls": "radix_plugin.RadixScheduler",
        "additional_config": {"radix_plugin": {"eviction": "workflow", "prefetch": True}},
        "kv_transfer_config": HOST_TIER,
    },
    "plugin_workflow_tags_prefetch": {
        "scheduler_cls": "radix_plugin.RadixScheduler",
        "additional_config": {"radix_plugin": {"eviction": "workflow", "prefetch": True}},
        "kv_transfer_config": HOST_TIER,
    },
}
TAGS_ONLY_SUFFIX = "_tags"
"""Sides whose name contains this send workflow and agent tags without ``radix_steps``."""


def make_engine(args: argparse.Namespace, extra: dict) -> Any:
    from vllm import LLM
    from vllm.config import KVTransferConfig

    from radix_plugin.testing.engine import cpu_llm_kwargs

    extra = dict(extra)
    if "kv_transfer_config" in extra:
        extra["kv_transfer_config"] = KVTransferConfig(**extra["kv_transfer_config"])
    return LLM(
        **cpu_llm_kwargs(
            args.model,
            dtype=args.dtype,
            max_model_len=args.max_model_len,
            max_num_seqs=16,
            num_kv_blocks=args.kv_blocks,
            enable_prefix_caching=True,
            max_num_batched_tokens=2048,
            **extra,
        )
    )


def agent_prompts(
    agents: int, vocab: int, lengths: tuple[int, int], seed: int = 0
) -> list[list[int]]:
    rng = random.Random(seed)
    lengths = [rng.randrange(*lengths) for _ in range(agents)]
    return [[rng.randrange(16, vocab) for _ in range(n)] for n in lengths]


def run(
    llm: Any, prompts: list[list[int]], workflows: int, concurrency: int, tags_only: bool
) -> dict[str, float]:
    """Run ``workflows`` workflows, ``concurrency`` at a time; each calls every agent once.
    ``tags_only``: requests name their workflow and agent but send no ``radix_steps``."""
    from vllm import SamplingParams

    from radix_plugin.cache_manager.core.workflow import AgentStepGraph

    agents = [f"agent{i}" for i in range(len(prompts))]
    graph = AgentStepGraph.from_steps(agents, loop=True)
    rng = random.Random(1)
    engine = llm.llm_engine
    pending = list(range(workflows))
    active: dict[str, tuple[int, int]] = {}  # request id -> (workflow, step)
    started: dict[int, float] = {}
    latencies: list[float] = []
    totals = {"prompt": 0, "hits": 0}

    def submit(wf: int, step: int) -> None:
        context = [rng.randrange(16, 1000) for _ in range(128)]
        hints = graph.hints(f"wf{wf}", step, agents[step])
        if tags_only:
            del hints["radix_steps"]
        params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True, extra_args=hints)
        rid = f"wf{wf}-s{step}"
        engine.add_request(rid, {"prompt_token_ids": prompts[step] + context}, params)
        active[rid] = (wf, step)
        totals["prompt"] += len(prompts[step]) + len(context)

    def start_more() -> None:
        while pending and len(started) - len(latencies) < concurrency:
            wf = pending.pop(0)
            started[wf] = time.perf_counter()
            submit(wf, 0)

    host = getattr(engine.engine_core.engine_core.scheduler.connector, "scheduler_side", None)
    host_before = dataclasses.asdict(host.stats) if host is not None else {}
    t0 = time.perf_counter()
    start_more()
    while active:
        for out in engine.step():
            if not out.finished or out.request_id not in active:
                continue
            wf, step = active.pop(out.request_id)
            totals["hits"] += out.num_cached_tokens or 0
            if step + 1 < len(prompts):
                submit(wf, step + 1)
            else:
                latencies.append(time.perf_counter() - started[wf])
        start_more()
    wall = time.perf_counter() - t0
    result: dict[str, Any] = {
        "wall_s": wall,
        "requests_per_s": workflows * len(prompts) / wall,
        "workflow_latency_mean_s": statistics.fmean(latencies),
        "hit_ratio": totals["hits"] / totals["prompt"],
    }
    if host is not None:
        after = dataclasses.asdict(host.stats)
        result["host_tier"] = {k: after[k] - host_before[k] for k in after}
    return result


def run_side(side: str, args: argparse.Namespace, concurrencies: list[int]) -> dict[str, Any]:
    """One engine, every concurrency level; called in a child process."""
    from radix_plugin.testing.engine import drain

    llm = make_engine(args, SIDES[side])
    vocab = llm.llm_engine.model_config.get_vocab_size()
    prompts = agent_prompts(args.agents, vocab, _prompt_range(args))
    out = {}
    for conc in concurrencies:
        drain(llm)
        assert llm.reset_prefix_cache()
        tags_only = TAGS_ONLY_SUFFIX in side
        out[str(conc)] = run(llm, prompts, max(args.workflows, conc), conc, tags_only)
    return {"results": out, "agent_prompt_tokens": [len(p) for p in prompts]}


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Per engine, one group of bars per concurrency: speed-up over vanilla and hit ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sides = list(rows[0]["results"])
    fig, (speed_ax, hit_ax) = plt.subplots(1, 2, figsize=(12, 4))
    width = 0.8 / len(sides)
    for i, side in enumerate(sides):
        speedups = [
            row["results"]["vanilla"]["workflow_latency_mean_s"]
            / row["results"][side]["workflow_latency_mean_s"]
            for row in rows
        ]
        xs = [j + i * width for j in range(len(rows))]
        speed_ax.bar(xs, speedups, width, label=side)
        hit_ax.bar(xs, [row["results"][side]["hit_ratio"] for row in rows], width, label=side)
    speed_ax.axhline(1.0, color="grey", linewidth=0.8)
    for ax in (speed_ax, hit_ax):
        ax.set_xticks([j + width * (len(sides) - 1) / 2 for j in range(len(rows))])
        ax.set_xticklabels([f"{row['concurrency']} concurrent" for row in rows])
    speed_ax.set_ylabel("end-to-end workflow speed-up vs vanilla vLLM")
    hit_ax.set_ylabel("prefix-cache hit ratio (device + host)")
    speed_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _prompt_range(args: argparse.Namespace) -> tuple[int, int]:
    text, longest = args.prompt_tokens, args.max_model_len - 256
    low, high = (int(x) for x in text.split(","))
    if not BLOCK <= low < high <= longest:
        raise SystemExit(f"--prompt-tokens {text!r}: need {BLOCK} <= MIN < MAX <= {longest}")
    return low, high


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="small", choices=model_choices())
    ap.add_argument("--agents", type=int, default=6)
    ap.add_argument("--workflows", type=int, default=6, help="at least the concurrency")
    ap.add_argument("--concurrency", default="1,16")
    ap.add_argument("--sides", default=",".join(SIDES), help=f"from {', '.join(SIDES)}")
    ap.add_argument("--kv-blocks", type=int, default=400, help="32-token blocks in the pool")
    ap.add_argument("--prompt-tokens", default="2048,4096", help="MIN,MAX agent prompt")
    ap.add_argument("--max-model-len", type=int, default=MAX_MODEL_LEN)
    ap.add_argument("--dtype", default="native", help=DTYPE_HELP)
    ap.add_argument(
        "--name", default=None, help="result file name (default: workflow_side_by_side[_MODEL])"
    )
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.dtype = resolve_dtype(args.dtype)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    args.name = args.name or result_name("workflow_side_by_side", args.model)
    if args.child:
        print(json.dumps(run_side(args.child, args, concurrencies)))
        return 0
    _prompt_range(args)
    min_blocks = args.max_model_len // BLOCK + 1
    if args.kv_blocks < min_blocks:
        ap.error(f"--kv-blocks must be >= {min_blocks} (one {args.max_model_len}-token request)")
    sides = args.sides.split(",")
    unknown = [s for s in sides if s not in SIDES]
    if unknown:
        ap.error(f"unknown side(s) {unknown}; valid: {', '.join(SIDES)}")
    per_side = {}
    for side in sides:
        print(f"running {side} ...", file=sys.stderr, flush=True)
        per_side[side] = run_in_child(__file__, side, argv)
    prompts_tokens = next(iter(per_side.values()))["agent_prompt_tokens"]
    rows = [
        {
            "concurrency": conc,
            "workflows": max(args.workflows, conc),
            "results": {side: r["results"][str(conc)] for side, r in per_side.items()},
        }
        for conc in concurrencies
    ]
    lines = [
        "| concurrent workflows | engine | workflow latency s | hit ratio (device + host) "
        "| host blocks loaded / prefetched | speed-up vs vanilla | requests/s "
        "| throughput vs vanilla |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        results = row["results"]
        base_side = "vanilla" if "vanilla" in results else next(iter(results))
        base = results[base_side]["workflow_latency_mean_s"]
        base_rps = results[base_side]["requests_per_s"]
        for side, r in results.items():
            host = r.get("host_tier")
            moved = f"{host['loaded_blocks']} / {host['prefetched_blocks']}" if host else "-"
            lines.append(
                f"| {row['concurrency']} | {side} | {r['workflow_latency_mean_s']:.2f} | "
                f"{r['hit_ratio']:.3f} | {moved} | {base / r['workflow_latency_mean_s']:.2f}x | "
                f"{r['requests_per_s']:.3f} | {r['requests_per_s'] / base_rps:.2f}x |"
            )
    table = "\n".join(lines)
    print(table)
    if args.out:
        meta = {
            "model": args.model,
            "agents": args.agents,
            "agent_prompt_tokens": prompts_tokens,
            "workflows": args.workflows,
            "kv_pool_tokens": args.kv_blocks * BLOCK,
            "max_model_len": args.max_model_len,
            "dtype": args.dtype,
            "host_tier": "default size (twice the device pool)",
            "hints": "explicit Agent Step Graph (radix_steps); *_tags sides: radix_workflow "
            "and radix_agent only, step order learned by the scheduler",
            "command": "python benchmarks/workflow_side_by_side.py " + " ".join(argv),
            "machine": machine(),
        }
        write_results(
            args.out,
            args.name,
            {"meta": meta, "rows": rows},
            "# Agent workflows on a real engine: vanilla vs plugin (device pool, host tier, "
            f"prefetch)\n\n{meta}\n\n{table}",
        )
        if "vanilla" in sides:
            plot(rows, Path(args.out) / f"{args.name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
