"""Vanilla vLLM (prefix caching on) vs vLLM + radix_plugin, in one run, on a real engine.

    python benchmarks/engine_side_by_side.py [--model small|tiny|real]
        [--workloads a,b] [--repeats 2]
        [--scale 1.0] [--scheduler-steps] [--out benchmarks/results]

Both engines live in this process and run each workload alternately (vanilla, plugin,
vanilla, ...) from an empty prefix cache; the table reports medians and the plugin/vanilla
ratio. ``--scheduler-steps`` also measures ``Scheduler.schedule()`` time per step with 64 and
256 running requests on each engine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from engine_workloads import WORKLOADS, RunStats, run
from results_io import (
    DTYPE_HELP,
    machine,
    model_choices,
    resolve_dtype,
    result_name,
    watched_env,
    write_results,
)

DEFAULT_KV_BLOCKS = 2048  # KV pool of workloads that do not set their own
PLUGIN_ARGS = {
    "scheduler_cls": "radix_plugin.RadixScheduler",
    "additional_config": {"radix_plugin": {"eviction": "adaptive", "schedule": "lpm"}},
}


def make_engine(
    model: str, plugin: bool, kv_blocks: int, max_num_seqs: int = 32, dtype: str = "auto"
) -> Any:
    from vllm import LLM

    from radix_plugin.testing.engine import cpu_llm_kwargs

    kwargs = cpu_llm_kwargs(
        model,
        max_model_len=4096,
        block_size=32,
        max_num_seqs=max_num_seqs,
        num_kv_blocks=kv_blocks,
        enable_prefix_caching=True,
        max_num_batched_tokens=2048,
        dtype=dtype,
        **(PLUGIN_ARGS if plugin else {}),
    )
    return LLM(**kwargs)


class Engines:
    """One vanilla and one plugin engine per KV size, built on first use."""

    def __init__(self, model: str, dtype: str = "auto") -> None:
        self.model = model
        self.dtype = dtype
        self._cache: dict[tuple[bool, int, int], Any] = {}

    def get(self, plugin: bool, kv_blocks: int, max_num_seqs: int = 32) -> Any:
        key = (plugin, kv_blocks, max_num_seqs)
        if key not in self._cache:
            self._cache[key] = make_engine(self.model, plugin, kv_blocks, max_num_seqs, self.dtype)
        return self._cache[key]


def vocab_size(llm: Any) -> int:
    return llm.llm_engine.model_config.get_vocab_size()


def compare_workload(engines: Engines, name: str, repeats: int, scale: float) -> dict:
    runs: dict[str, list[RunStats]] = {"vanilla": [], "plugin": []}
    probe = WORKLOADS[name](vocab=1000, scale=scale)
    kv_blocks = probe.kv_blocks or DEFAULT_KV_BLOCKS
    for _ in range(repeats):
        for label, plugin in (("vanilla", False), ("plugin", True)):
            llm = engines.get(plugin, kv_blocks)
            assert llm.reset_prefix_cache()
            workload = WORKLOADS[name](vocab=vocab_size(llm), scale=scale)
            runs[label].append(run(llm, workload))
    summary = {label: _median(rs) for label, rs in runs.items()}
    v, p = summary["vanilla"], summary["plugin"]
    return {
        "workload": name,
        "note": probe.note,
        "kv_blocks": kv_blocks,
        "repeats": repeats,
        "vanilla": v,
        "plugin": p,
        "ratio_throughput": p["throughput_tok_s"] / v["throughput_tok_s"],
        "ratio_ttft_mean": p["ttft_mean_s"] / v["ttft_mean_s"],
        "ratio_ttft_p99": p["ttft_p99_s"] / v["ttft_p99_s"],
    }


def _median(runs: list[RunStats]) -> dict[str, float]:
    dicts = [r.to_dict() for r in runs]
    return {k: statistics.median(d[k] for d in dicts) for k in dicts[0]}


def scheduler_step_times(engines: Engines, running: int) -> dict[str, float]:
    """Mean ``schedule()`` wall time per step with ``running`` decoding requests."""
    from vllm import SamplingParams

    out = {}
    for label, plugin in (("vanilla", False), ("plugin", True)):
        llm = engines.get(plugin, kv_blocks=4096, max_num_seqs=running)
        scheduler = llm.llm_engine.engine_core.engine_core.scheduler
        timings: list[float] = []
        original = scheduler.schedule

        def timed(
            *args: Any, _orig: Any = original, _into: list[float] = timings, **kwargs: Any
        ) -> Any:
            t = time.perf_counter()
            result = _orig(*args, **kwargs)
            _into.append(time.perf_counter() - t)
            return result

        scheduler.schedule = timed
        try:
            prompts = [{"prompt_token_ids": [16 + (i % 500)] * 24} for i in range(running)]
            params = SamplingParams(temperature=0.0, max_tokens=48, ignore_eos=True)
            llm.generate(prompts, params, use_tqdm=False)
        finally:
            del scheduler.schedule
        steady = timings[len(timings) // 4 :] or timings
        out[label] = 1e6 * statistics.fmean(steady)
    out["ratio"] = out["plugin"] / out["vanilla"]
    return out


def render_table(rows: list[dict]) -> str:
    head = (
        "| workload | engine | throughput tok/s | TTFT mean s | TTFT p99 s | hit ratio |\n"
        "|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        for label in ("vanilla", "plugin"):
            s = r[label]
            lines.append(
                f"| {r['workload']} | {label} | {s['throughput_tok_s']:.0f} | "
                f"{s['ttft_mean_s']:.3f} | {s['ttft_p99_s']:.3f} | {s['hit_ratio']:.3f} |"
            )
        lines.append(
            f"| {r['workload']} | **plugin/vanilla** | **{r['ratio_throughput']:.2f}x** | "
            f"{r['ratio_ttft_mean']:.2f}x | {r['ratio_ttft_p99']:.2f}x | |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="small", choices=model_choices())
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--scale", type=float, default=1.0, help="shrink/grow every workload")
    ap.add_argument("--scheduler-steps", action="store_true")
    ap.add_argument("--dtype", default="native", help=DTYPE_HELP)
    ap.add_argument("--out", default=None, help="write JSON + markdown here")
    args = ap.parse_args(argv)
    os.environ.update(watched_env())  # the plugin engine's watchdog (both live in here)
    names = [w for w in args.workloads.split(",") if w]
    bad = [w for w in names if w not in WORKLOADS]
    if bad:
        print(f"unknown workload(s) {bad}; valid: {', '.join(WORKLOADS)}", file=sys.stderr)
        return 2
    dtype = resolve_dtype(args.dtype)
    engines = Engines(args.model, dtype)
    rows = [compare_workload(engines, n, args.repeats, args.scale) for n in names]
    table = render_table(rows)
    print(table)
    steps = {}
    if args.scheduler_steps:
        for running in (64, 256):
            steps[running] = scheduler_step_times(engines, running)
            s = steps[running]
            print(
                f"schedule() per step at {running} running: vanilla {s['vanilla']:.0f} µs, "
                f"plugin {s['plugin']:.0f} µs ({s['ratio']:.2f}x)"
            )
    if args.out:
        meta = {
            "model": args.model,
            "dtype": dtype,
            "machine": machine(),
            "repeats": args.repeats,
            "scale": args.scale,
        }
        payload = {"meta": meta, "workloads": rows, "scheduler_step_us": steps}
        md = ["# vLLM vs vLLM + radix_plugin (real engine, CPU)", "", f"{meta}", "", table]
        if steps:
            md += ["", "| running requests | vanilla µs/step | plugin µs/step | ratio |"]
            md += ["|---|---|---|---|"]
            md += [
                f"| {k} | {v['vanilla']:.0f} | {v['plugin']:.0f} | {v['ratio']:.2f}x |"
                for k, v in steps.items()
            ]
        name = result_name("engine_side_by_side", args.model)
        write_results(args.out, name, payload, "\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
