"""SGLang programs through ``sgl.RuntimeEndpoint`` on vanilla vLLM vs vLLM + radix-plugin.

    python benchmarks/sglang_side_by_side.py [--model real] [--workloads a,b] [--scale 1.0]
        [--kv-blocks 96] [--quick] [--merge] [--out benchmarks/results]

Two OpenAI API servers with the plugin's SGLang endpoint run side by side, each bound to its
own core (``VLLM_CPU_OMP_THREADS_BIND``), with identical flags except the plugin's: vanilla
vLLM (automatic prefix caching, FCFS, xgrammar masking) and vLLM + ``RadixScheduler`` (radix
eviction, longest-prefix-match order, jump-forward). Each workload of ``sglang_programs``
runs with ``run_batch`` on one server, then the other (the order alternates per workload),
from a flushed cache, with the same seeded arguments. Reported per workload: programs/s,
latency per program (mean, p50, p90), prefix-cache hit ratio and prefill tokens computed
(from each server's ``/metrics``), preemptions, output validity and correctness, and the
plugin/vanilla ratios. ``--merge`` adds this run's workloads to an existing result file (to
split a long benchmark into calls of a few minutes; each workload is still one side-by-side).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import signal
import statistics
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from results_io import machine, model_choices, write_results

PLUGIN_FLAGS = [
    "--scheduler-cls",
    "radix_plugin.RadixScheduler",
    "--additional-config",
    json.dumps({"radix_plugin": {"eviction": "adaptive", "schedule": "lpm"}}),
]
SIDES = {"vanilla": [], "plugin": PLUGIN_FLAGS}
MAX_MODEL_LEN = 2048
METRICS = (
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:num_preemptions_total",
)


def common_flags(max_num_seqs: int) -> list[str]:
    return ["--max-num-seqs", str(max_num_seqs), "--max-num-batched-tokens", "2048"]


@contextlib.contextmanager
def servers(args: argparse.Namespace, log_dir: Path) -> Iterator[dict[str, str]]:
    """One server per side, started at once, side i bound to core i; yields side -> URL."""
    from radix_plugin.testing.models import get_model_path
    from radix_plugin.testing.server import (
        free_port,
        server_command,
        server_process,
        sglang_endpoint_env,
    )

    model = get_model_path(args.model)
    log_dir.mkdir(parents=True, exist_ok=True)
    contexts = {}
    for core, (side, flags) in enumerate(SIDES.items()):
        port = free_port()
        cmd = server_command(
            model,
            port,
            [*common_flags(args.max_num_seqs), *flags],
            kv_blocks=args.kv_blocks,
            max_model_len=MAX_MODEL_LEN,
        )
        env = {**sglang_endpoint_env(), "VLLM_CPU_OMP_THREADS_BIND": str(core)}
        log = (log_dir / f"{side}.log").open("w")
        contexts[side] = server_process(cmd, port, log, timeout_s=600, env=env)
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(len(contexts)) as pool:
        starts = {side: pool.submit(cm.__enter__) for side, cm in contexts.items()}
        bases, failures = {}, []
        for side, start in starts.items():
            try:
                bases[side] = start.result()[0]
                stack.push(contexts[side])
            except RuntimeError as exc:
                tail = (log_dir / f"{side}.log").read_text()[-3000:]
                failures.append(f"{side} server: {exc}\n{tail}")
        if failures:
            raise RuntimeError("\n".join(failures))
        yield bases


@contextlib.contextmanager
def timed_programs() -> Iterator[None]:
    """Record each program's latency on its state (``latency_s``).

    ``run_batch`` runs every program with ``interpreter.run_program`` on a thread pool of
    ``num_threads``; timing that call gives the program's latency from start to last output
    without changing the programs.
    """
    from sglang.lang import interpreter

    original = interpreter.run_program

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        state = original(*args, **kwargs)
        state.latency_s = time.perf_counter() - start
        return state

    interpreter.run_program = timed
    try:
        yield
    finally:
        interpreter.run_program = original


def flush_cache(base: str) -> None:
    import requests

    requests.post(base + "/flush_cache", timeout=60).raise_for_status()


def program_kwargs(arguments: list[dict]) -> list[dict]:
    """The program's own arguments (keys starting with ``_`` are the checks' ground truth)."""
    return [{k: v for k, v in a.items() if not k.startswith("_")} for a in arguments]


def run_programs(workload: Any, program_args: list[dict], backend: Any) -> list[Any]:
    """``run_batch`` with greedy sampling; an error in any program is raised, not skipped
    (SGLang's executor only warns and leaves the program's variables unset)."""
    states = workload.program.run_batch(
        program_args, backend=backend, temperature=0, num_threads=workload.parallel
    )
    errors = [s.error() for s in states if s.error() is not None]
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(states)} programs failed: {errors[0]!r}")
    return states


def run_workload(backend: Any, base: str, workload: Any, arguments: list[dict]) -> dict:
    """One ``run_batch`` of ``workload`` from a flushed cache; its measurements."""
    from radix_plugin.testing.server import metric_totals

    program_args = program_kwargs(arguments)
    flush_cache(base)
    before = metric_totals(base, METRICS)
    with timed_programs():
        start = time.perf_counter()
        states = run_programs(workload, program_args, backend)
        wall = time.perf_counter() - start
    after = metric_totals(base, METRICS)
    delta = {
        name.split(":")[1].removesuffix("_total"): after[name] - before[name] for name in METRICS
    }
    latencies = sorted(s.latency_s for s in states)
    checks = (
        [workload.check(s, a) for s, a in zip(states, arguments, strict=True)]
        if workload.check
        else []
    )
    result = {
        "programs": len(states),
        "wall_s": wall,
        "programs_per_s": len(states) / wall,
        "latency_mean_s": statistics.fmean(latencies),
        "latency_p50_s": _quantile(latencies, 0.5),
        "latency_p90_s": _quantile(latencies, 0.9),
        "hit_ratio": delta["prefix_cache_hits"] / max(delta["prefix_cache_queries"], 1),
        "prefill_tokens_computed": int(delta["prefix_cache_queries"] - delta["prefix_cache_hits"]),
        **{k: int(v) for k, v in delta.items()},
        "example": states[0].text()[-300:],
    }
    for key in ("valid", "correct"):
        marks = [c[key] for c in checks if key in c]
        if marks:
            result[key] = sum(marks) / len(marks)
    return result


def _quantile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile (the programs are few; no interpolation)."""
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def warm_up(backends: dict[str, Any], names: list[str], seed: int) -> None:
    """One program of every workload on every server (the servers in parallel), with other
    arguments than the measured ones: grammar compilation and first-request paths are not
    paid inside the measured run."""
    from sglang_programs import WORKLOADS

    def one_server(backend: Any) -> None:
        for name in names:
            arguments = WORKLOADS[name].make_arguments(1, random.Random(seed + 1000))
            run_programs(WORKLOADS[name], program_kwargs(arguments), backend)

    with ThreadPoolExecutor(len(backends)) as pool:
        for done in [pool.submit(one_server, backend) for backend in backends.values()]:
            done.result()


def chat_template(base: str, args: argparse.Namespace) -> str:
    """``--chat-template``, else the SGLang template name the endpoint detects for the model
    (SGLang's frontend guesses from the model path, which names no family here)."""
    import requests

    if args.chat_template:
        return args.chat_template
    return requests.get(base + "/get_model_info", timeout=30).json()["chat_template_name"]


def compare(args: argparse.Namespace, names: list[str]) -> Iterator[dict]:
    """Yield each workload's row as soon as both sides have run it."""
    import sglang as sgl
    from sglang_programs import WORKLOADS

    with servers(args, Path(args.log_dir)) as bases:
        backends = {
            side: sgl.RuntimeEndpoint(base, chat_template_name=chat_template(base, args))
            for side, base in bases.items()
        }
        warm_up(backends, names, args.seed)
        for i, name in enumerate(names):
            workload = WORKLOADS[name]
            arguments = workload.arguments(args.scale, args.seed)
            order = list(SIDES) if i % 2 == 0 else list(reversed(SIDES))
            results = {}
            try:
                for side in order:
                    print(f"{name}: {side} ...", file=sys.stderr, flush=True)
                    results[side] = run_workload(backends[side], bases[side], workload, arguments)
            except RuntimeError as exc:  # a failed program: report it, measure the rest
                print(f"{name}: FAILED on {side}: {exc}", file=sys.stderr, flush=True)
                continue
            yield {
                "workload": name,
                "what": workload.what,
                "parallel": workload.parallel,
                "results": {side: results[side] for side in SIDES},
            }


def ratios(row: dict) -> dict[str, float]:
    v, p = row["results"]["vanilla"], row["results"]["plugin"]
    return {
        "throughput": p["programs_per_s"] / v["programs_per_s"],
        "latency_mean": v["latency_mean_s"] / p["latency_mean_s"],
        "latency_p90": v["latency_p90_s"] / p["latency_p90_s"],
        "prefill_computed": p["prefill_tokens_computed"] / max(v["prefill_tokens_computed"], 1),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| workload | engine | programs/s | latency mean s | p50 s | p90 s | hit ratio "
        "| prefill tokens computed | preemptions | valid | correct |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        for side, r in row["results"].items():
            lines.append(
                f"| {row['workload']} | {side} | {r['programs_per_s']:.3f} | "
                f"{r['latency_mean_s']:.2f} | {r['latency_p50_s']:.2f} | "
                f"{r['latency_p90_s']:.2f} | {r['hit_ratio']:.3f} | "
                f"{r['prefill_tokens_computed']} | {r['num_preemptions']} | "
                f"{_share(r, 'valid')} | {_share(r, 'correct')} |"
            )
        x = ratios(row)
        lines.append(
            f"| {row['workload']} | **plugin/vanilla** | **{x['throughput']:.2f}x** | "
            f"{x['latency_mean']:.2f}x faster | | {x['latency_p90']:.2f}x faster | | "
            f"{x['prefill_computed']:.2f}x | | | |"
        )
    return "\n".join(lines)


def _share(result: dict, key: str) -> str:
    return f"{result[key]:.0%}" if key in result else "-"


def plot(rows: list[dict], path: Path) -> None:
    """Throughput and mean-latency ratios per workload, and both sides' hit ratios."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [row["workload"] for row in rows]
    xs = range(len(rows))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.4
    left.bar(
        [x - width / 2 for x in xs],
        [ratios(r)["throughput"] for r in rows],
        width,
        label="programs/s",
    )
    left.bar(
        [x + width / 2 for x in xs],
        [ratios(r)["latency_mean"] for r in rows],
        width,
        label="mean latency (speed-up)",
    )
    left.axhline(1.0, color="grey", linewidth=0.8)
    left.set_ylabel("plugin / vanilla vLLM")
    left.legend(fontsize=8)
    for side, offset in (("vanilla", -width / 2), ("plugin", width / 2)):
        right.bar(
            [x + offset for x in xs],
            [r["results"][side]["hit_ratio"] for r in rows],
            width,
            label=side,
        )
    right.set_ylabel("prefix-cache hit ratio")
    right.set_ylim(0, 1)
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.set_xticks(list(xs))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def merged(path: Path, meta: dict) -> list[dict]:
    """Rows of an earlier run at ``path``, which must have used the same settings."""
    if not path.is_file():
        return []
    old = json.loads(path.read_text())
    for key in ("model", "kv_blocks", "scale", "seed", "max_num_seqs", "server_flags"):
        if old["meta"].get(key) != meta.get(key):
            raise SystemExit(
                f"--merge: {path} has {key}={old['meta'].get(key)!r}, this run {meta.get(key)!r}"
            )
    return old["rows"]


def main(argv: list[str] | None = None) -> int:
    from sglang_programs import WORKLOADS

    from radix_plugin.testing.server import sglang_endpoint_env

    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="real", choices=model_choices())
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help=", ".join(WORKLOADS))
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies the program counts")
    ap.add_argument("--quick", action="store_true", help="smoke check: --scale 0.15")
    ap.add_argument("--kv-blocks", type=int, default=96, help="32-token blocks in each KV pool")
    ap.add_argument("--max-num-seqs", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chat-template", default=None, help="default: what /get_model_info says")
    ap.add_argument("--log-dir", default="/tmp/sglang_side_by_side")
    ap.add_argument("--out", default=None)
    ap.add_argument("--name", default=None, help="default: sglang_programs_MODEL_cpu")
    ap.add_argument("--merge", action="store_true", help="add to the existing result file")
    args = ap.parse_args(argv)
    if args.quick:
        args.scale = 0.15
    names = args.workloads.split(",")
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workload(s) {unknown}; valid: {', '.join(WORKLOADS)}")
    min_blocks = MAX_MODEL_LEN // 32 + 1
    if args.kv_blocks < min_blocks:
        ap.error(f"--kv-blocks must be >= {min_blocks} (one {MAX_MODEL_LEN}-token request)")
    meta = {
        "model": args.model,
        "kv_blocks": args.kv_blocks,
        "kv_pool_tokens": args.kv_blocks * 32,
        "scale": args.scale,
        "seed": args.seed,
        "max_num_seqs": args.max_num_seqs,
        "server_flags": {"common": common_flags(args.max_num_seqs), **SIDES},
        "server_env": {k: sglang_endpoint_env()[k] for k in ("VLLM_PLUGINS", "OMP_NUM_THREADS")},
        "sglang": _version("sglang"),
        "machine": machine(),
        "command": "python benchmarks/sglang_side_by_side.py " + " ".join(argv),
    }
    name = args.name or f"sglang_programs_{args.model}_cpu"
    out = Path(args.out) if args.out else None
    earlier = merged(out / f"{name}.json", meta) if out and args.merge else []
    # `timeout` and bench-run limits send SIGTERM: exit through the finally blocks that stop
    # the servers, instead of leaving them running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rows: list[dict] = []
    for row in compare(args, names):
        rows.append(row)
        if out:  # after every workload, so a cut-short run keeps what it measured
            report(out, name, meta, [r for r in earlier if r["workload"] not in names] + rows)
    print(table(rows))
    return 0


def workload_table(rows: list[dict], scale: float) -> str:
    """What each measured workload does and how many programs it ran (``run_batch``)."""
    from sglang_programs import WORKLOADS

    lines = ["| workload | programs | in parallel | what |", "|---|---|---|---|"]
    for row in rows:
        w = WORKLOADS[row["workload"]]
        programs = max(2, round(w.programs * scale))
        lines.append(f"| {row['workload']} | {programs} | {w.parallel} | {w.what} |")
    return "\n".join(lines)


def report(out: Path, name: str, meta: dict, rows: list[dict]) -> None:
    write_results(
        out,
        name,
        {"meta": meta, "rows": rows},
        "# SGLang programs via sgl.RuntimeEndpoint: vanilla vLLM vs vLLM + radix-plugin\n\n"
        f"Model `{meta['model']}` on {meta['machine']}; SGLang {meta['sglang']} frontend; "
        f"{meta['kv_pool_tokens']}-token KV pool per server. Each workload ran on both servers "
        "in one invocation (order alternating), from a flushed cache.\n\n"
        f"{workload_table(rows, meta['scale'])}\n\n{table(rows)}\n\n"
        f"```json\n{json.dumps(meta, indent=1)}\n```",
    )
    plot(rows, out / f"{name}.png")


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":
    sys.exit(main())
