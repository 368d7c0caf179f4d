"""The `session` policy without hints against LRU on every workload generator we have.

    python benchmarks/session_vs_lru.py [--seeds 5] [--block-size 64] [--out benchmarks/results]

"Never worse than LRU beyond noise, on any trace": each generator (`WORKLOADS`, default
sizes) and the short tree-of-thought trace (40 problems) that the first guard lost on, at
several capacities (a share of the trace's distinct prompt blocks), one replay per seed. The
session policy gets no session ids and no hints: it infers conversations from the prompts.
Reported: prompt-token hits relative to LRU, mean / worst / best seed.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

from results_io import machine, write_results

from radix_plugin.simulator.generators import WORKLOADS, generate
from radix_plugin.simulator.replay import footprint_blocks, run_policy
from radix_plugin.simulator.trace import TraceRequest

FRACTIONS = (0.02, 0.03, 0.05, 0.10, 0.25)


def traces(block_size: int) -> dict[str, Callable[[int], list[TraceRequest]]]:
    out: dict[str, Callable[[int], list[TraceRequest]]] = {
        name: (lambda seed, name=name: generate(name, block_size=block_size, seed=seed))
        for name in WORKLOADS
    }
    out["tree_of_thought, 40 problems"] = lambda seed: generate(
        "tree_of_thought", block_size=block_size, problems=40, seed=seed
    )
    return out


def compare(trace: list[TraceRequest], block_size: int, fraction: float) -> float:
    """Session hits over LRU hits, minus one (prompt tokens; LRU's counted as at least 1)."""
    cap = max(4, int(footprint_blocks(trace, block_size) * fraction))
    lru = run_policy("lru", trace, block_size, cap).hit_tokens
    own = run_policy("session", trace, block_size, cap).hit_tokens
    return own / max(lru, 1) - 1.0


def sweep(block_size: int, seeds: int) -> list[dict]:
    rows = []
    for name, make in traces(block_size).items():
        made = [make(seed) for seed in range(seeds)]
        for fraction in FRACTIONS:
            rel = [compare(trace, block_size, fraction) for trace in made]
            rows.append(
                {
                    "trace": name,
                    "requests": len(made[0]),
                    "capacity_fraction": fraction,
                    "relative_hits": rel,
                    "mean": statistics.mean(rel),
                    "worst": min(rel),
                    "best": max(rel),
                }
            )
            r = rows[-1]
            print(
                f"{name} {fraction:.0%}: mean {r['mean']:+.2%} worst {r['worst']:+.2%}",
                flush=True,
            )
    return rows


def markdown(rows: list[dict], block_size: int, seeds: int, cpu: str) -> str:
    lines = [
        "# `session` eviction without hints vs LRU on every workload generator (simulator)",
        "",
        f"Simulator, block size {block_size}, concurrency 1, {seeds} seeds per cell, on {cpu}. "
        "Reproduce: `python benchmarks/session_vs_lru.py`. Prompt-token hits of the `session` "
        "policy (no session ids, no hints) relative to LRU: mean / worst seed / best seed. "
        "Capacity is a share of the trace's distinct prompt blocks. Where LRU hits nothing "
        "(a pipeline whose steps never fit) the ratio is huge and says only that LRU thrashes.",
        "",
        "| trace | requests | " + " | ".join(f"{f:.0%}" for f in FRACTIONS) + " |",
        "|" + "---|" * (len(FRACTIONS) + 2),
    ]
    by_trace: dict[str, list[dict]] = {}
    for row in rows:
        by_trace.setdefault(row["trace"], []).append(row)
    for name, cells in by_trace.items():
        lines.append(
            f"| {name} | {cells[0]['requests']} | "
            + " | ".join(
                f"{c['mean']:+.1%} / {c['worst']:+.1%} / {c['best']:+.1%}"
                if abs(c["best"]) < 10
                else f"LRU ~0: {c['worst']:+.0%} worst"
                for c in cells
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--block-size", type=int, default=64)
    ap.add_argument("--out", default=None, help="write JSON + markdown here")
    args = ap.parse_args()
    rows = sweep(args.block_size, args.seeds)
    cpu = machine()
    md = markdown(rows, args.block_size, args.seeds, cpu)
    print(md)
    if args.out:
        payload = {"machine": cpu, "block_size": args.block_size, "rows": rows}
        path = write_results(args.out, "session_vs_lru", payload, md)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
