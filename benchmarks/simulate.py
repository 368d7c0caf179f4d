"""Replay a prefix-cache trace on vLLM's own KV cache manager and on the radix tree.

    python benchmarks/simulate.py --trace FILE --format mooncake --block-size 512 \
        --capacity-blocks N [--concurrency W] [--limit K] \
        --policies vllm,lru,lfu,belady --json OUT

``--workload NAME`` replays a synthetic trace instead of ``--trace`` (see
``radix_plugin.simulator.generators``); ``--save-trace FILE`` writes it out as Mooncake JSONL.
"""

from __future__ import annotations

import argparse
import json
import sys

from radix_plugin.cache_manager.core.registry import UnknownPolicyError, eviction_policy_names
from radix_plugin.simulator.generators import WORKLOADS, generate
from radix_plugin.simulator.replay import footprint_blocks, run_policy
from radix_plugin.simulator.report import results_table
from radix_plugin.simulator.trace import TraceFormatError, load_mooncake, save_mooncake

FORMATS = ("mooncake",)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--trace", help="request trace file")
    src.add_argument("--workload", choices=sorted(WORKLOADS), help="synthetic workload")
    p.add_argument("--format", default="mooncake", choices=FORMATS)
    p.add_argument("--block-size", type=int, default=512)
    p.add_argument("--capacity-blocks", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--limit", type=int, default=None, help="replay only the first K requests")
    p.add_argument("--policies", default="vllm,lru,lfu,adaptive,belady")
    p.add_argument("--seed", type=int, default=0, help="seed for --workload")
    p.add_argument("--save-trace", help="write the (synthetic) trace as Mooncake JSONL")
    p.add_argument("--json", help="write results as JSON here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    valid = ["vllm", *eviction_policy_names()]
    bad = [p for p in policies if p not in valid]
    if bad:
        print(f"error: unknown policy {bad}; valid choices: {', '.join(valid)}", file=sys.stderr)
        return 2
    try:
        if args.trace:
            trace = load_mooncake(args.trace, args.block_size, args.limit)
        else:
            trace = generate(args.workload, block_size=args.block_size, seed=args.seed)
            trace = trace[: args.limit] if args.limit else trace
    except (OSError, TraceFormatError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.save_trace:
        save_mooncake(trace, args.save_trace)
    biggest = max(-(-(r.input_length + r.output_length) // args.block_size) for r in trace)
    if biggest > args.capacity_blocks:
        print(
            f"error: --capacity-blocks {args.capacity_blocks} is smaller than the largest "
            f"request ({biggest} blocks)",
            file=sys.stderr,
        )
        return 2
    print(
        f"{len(trace)} requests, footprint {footprint_blocks(trace, args.block_size)} blocks, "
        f"capacity {args.capacity_blocks} blocks, concurrency {args.concurrency}"
    )
    try:
        results = [
            run_policy(p, trace, args.block_size, args.capacity_blocks, args.concurrency)
            for p in policies
        ]
    except UnknownPolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(results_table(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(
                {
                    "source": args.trace or f"workload:{args.workload}",
                    "block_size": args.block_size,
                    "capacity_blocks": args.capacity_blocks,
                    "concurrency": args.concurrency,
                    "results": [r.to_dict() for r in results],
                },
                fh,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
