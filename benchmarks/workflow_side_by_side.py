"""Agent workflows on a real engine: vanilla vLLM vs plugin LRU vs plugin workflow eviction.

    python benchmarks/workflow_side_by_side.py [--model small] [--agents 6] [--workflows 6]
        [--concurrency 1,4] [--out benchmarks/results]

Every workflow calls the same agents in a fixed order (each agent has a large fixed prompt,
followed by a short step-specific context); the KV pool holds only part of the agents'
prompts, so which prefixes survive between calls decides how much is recomputed. Requests of
the plugin engines carry the Agent Step Graph hints (``radix_plugin.workflow``); vanilla vLLM
ignores them. Reported: mean end-to-end workflow latency, hit ratio, ratios to vanilla.

Not measured here: KVFlow's host tier and overlapped prefetch (not built yet).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from typing import Any

from results_io import machine, write_results

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
}


def make_engine(model: str, kv_blocks: int, extra: dict) -> Any:
    from vllm import LLM

    from radix_plugin.testing.engine import cpu_llm_kwargs

    return LLM(
        **cpu_llm_kwargs(
            model,
            max_model_len=8192,
            max_num_seqs=16,
            num_kv_blocks=kv_blocks,
            enable_prefix_caching=True,
            max_num_batched_tokens=2048,
            **extra,
        )
    )


def agent_prompts(agents: int, vocab: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    lengths = [rng.randrange(2048, 4096) for _ in range(agents)]
    return [[rng.randrange(16, vocab) for _ in range(n)] for n in lengths]


def run(llm: Any, prompts: list[list[int]], workflows: int, concurrency: int) -> dict[str, float]:
    """Run ``workflows`` workflows, ``concurrency`` at a time; each calls every agent once."""
    from vllm import SamplingParams

    from radix_plugin.workflow import AgentStepGraph

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
        params = SamplingParams(
            temperature=0.0,
            max_tokens=8,
            ignore_eos=True,
            extra_args=graph.hints(f"wf{wf}", step, agents[step]),
        )
        rid = f"wf{wf}-s{step}"
        engine.add_request(rid, {"prompt_token_ids": prompts[step] + context}, params)
        active[rid] = (wf, step)
        totals["prompt"] += len(prompts[step]) + len(context)

    def start_more() -> None:
        while pending and len(started) - len(latencies) < concurrency:
            wf = pending.pop(0)
            started[wf] = time.perf_counter()
            submit(wf, 0)

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
    return {
        "wall_s": time.perf_counter() - t0,
        "workflow_latency_mean_s": statistics.fmean(latencies),
        "hit_ratio": totals["hits"] / totals["prompt"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="small")
    ap.add_argument("--agents", type=int, default=6)
    ap.add_argument("--workflows", type=int, default=6)
    ap.add_argument("--concurrency", default="1,4")
    ap.add_argument("--kv-blocks", type=int, default=400, help="32-token blocks in the pool")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    engines = {
        side: make_engine(args.model, args.kv_blocks, extra) for side, extra in SIDES.items()
    }
    vocab = next(iter(engines.values())).llm_engine.model_config.get_vocab_size()
    prompts = agent_prompts(args.agents, vocab)
    rows = []
    for conc in (int(c) for c in args.concurrency.split(",")):
        results = {}
        for side, llm in engines.items():
            assert llm.reset_prefix_cache()
            results[side] = run(llm, prompts, args.workflows, conc)
        rows.append({"concurrency": conc, "results": results})
    lines = [
        "| concurrent workflows | engine | workflow latency s | hit ratio | speed-up vs vanilla |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        base = row["results"]["vanilla"]["workflow_latency_mean_s"]
        for side, r in row["results"].items():
            lines.append(
                f"| {row['concurrency']} | {side} | {r['workflow_latency_mean_s']:.2f} | "
                f"{r['hit_ratio']:.3f} | {base / r['workflow_latency_mean_s']:.2f}x |"
            )
    table = "\n".join(lines)
    print(table)
    if args.out:
        meta = {
            "model": args.model,
            "agents": args.agents,
            "agent_prompt_tokens": [len(p) for p in prompts],
            "workflows": args.workflows,
            "kv_pool_tokens": args.kv_blocks * 32,
            "machine": machine(),
        }
        write_results(
            args.out,
            "workflow_side_by_side",
            {"meta": meta, "rows": rows},
            "# Agent workflows on a real engine (no host tier, no prefetch yet)\n\n"
            f"{meta}\n\n{table}",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
