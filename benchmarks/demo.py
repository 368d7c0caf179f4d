"""`make demo`: vanilla vLLM vs vLLM + radix_plugin on a real engine, side by side.

By default on the `real` model (SmolLM2-135M-Instruct, built offline from its wheel): first a
few chat answers from both engines (the plugin changes what is cached and in which order
requests run, never the text), then a quick cut of ``engine_side_by_side.py`` (half-size
workloads, one run each), of ``workflow_side_by_side.py`` (an agent pipeline: vanilla vs
KVFlow eviction with the host tier and prefetch), then the trace simulator on a synthetic
few-shot trace. ``--model small`` runs the same on the random-weight benchmark model. Full
runs: ``python benchmarks/engine_side_by_side.py --model real --out benchmarks/results``,
``python benchmarks/workflow_side_by_side.py --out benchmarks/results`` and
``python benchmarks/sweep_policies.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import engine_side_by_side
import simulate
import workflow_side_by_side
from results_io import model_choices, resolve_dtype

QUESTIONS = (
    "What is the capital of France?",
    "What is 2 + 3?",
    "What colour is the sky on a clear day?",
)
WORKLOADS = "prefix_groups_kv_pressure,shared_system_prompt,multi_turn_chat"


def show_answers(engines: engine_side_by_side.Engines) -> None:
    """Greedy chat answers of both engines, with the model's own chat template."""
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=48)
    conversations = [[{"role": "user", "content": q}] for q in QUESTIONS]
    answers = {}
    for label, plugin in (("vanilla", False), ("plugin", True)):
        llm = engines.get(plugin, engine_side_by_side.DEFAULT_KV_BLOCKS)
        outs = llm.chat(conversations, params, use_tqdm=False)
        answers[label] = [out.outputs[0].text.strip() for out in outs]
    for i, question in enumerate(QUESTIONS):
        vanilla, plugin = answers["vanilla"][i], answers["plugin"][i]
        same = "same text" if vanilla == plugin else "TEXT DIFFERS"
        print(f"Q: {question}\n  vanilla: {vanilla}\n  plugin:  {plugin}   ({same})", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="real", choices=model_choices())
    ap.add_argument("--scale", type=float, default=0.5, help="engine workload size")
    args = ap.parse_args(argv)
    dtype = resolve_dtype("native")  # emulated bf16 is 3x slower on CPUs without it
    engines = engine_side_by_side.Engines(args.model, dtype)
    if args.model == "real":
        print("== Chat answers, greedy: vanilla vLLM vs vLLM + radix_plugin ==", flush=True)
        show_answers(engines)
    print(f"\n== Real vLLM engine (CPU, `{args.model}` model): vanilla vs plugin ==", flush=True)
    rows = [
        engine_side_by_side.compare_workload(engines, name, repeats=1, scale=args.scale)
        for name in WORKLOADS.split(",")
    ]
    print(engine_side_by_side.render_table(rows), flush=True)
    print("\n== Agent workflow (KVFlow): vanilla vs workflow eviction + host tier ==", flush=True)
    rc = workflow_side_by_side.main(
        [
            "--model",
            args.model,
            "--agents",
            "4",
            "--workflows",
            "3",
            "--concurrency",
            "1",
            "--kv-blocks",
            "300",
            "--sides",
            "vanilla,plugin_workflow,plugin_workflow_prefetch",
        ]
    )
    if rc:
        return rc
    print("\n== Trace simulator: vLLM's KVCacheManager vs radix policies ==", flush=True)
    return simulate.main(
        ["--workload", "few_shot", "--capacity-blocks", "110", "--concurrency", "4"]
    )


if __name__ == "__main__":
    sys.exit(main())
