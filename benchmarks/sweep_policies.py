"""Every policy on every synthetic workload at several capacities; writes the committed
results (JSON, markdown table, hit-ratio-vs-capacity plot) under benchmarks/results/.

    python benchmarks/sweep_policies.py [--out benchmarks/results] [--quick]

Capacities are fractions of each trace's footprint (distinct full prompt blocks), floored at
what ``concurrency`` of its largest requests need. ``gap closed`` is the share of the
LRU-to-Belady hit-ratio gap that the best online plugin policy recovers.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

from results_io import machine, write_results

from radix_plugin.simulator.generators import generate
from radix_plugin.simulator.replay import footprint_blocks, run_policy

POLICIES = ("vllm", "lru", "lfu", "priority", "pinned", "adaptive", "workflow", "belady")
ONLINE = ("lru", "lfu", "priority", "pinned", "adaptive", "workflow")
WORKLOAD_ARGS = {
    "multi_turn_chat": {"conversations": 200},
    "few_shot": {"requests": 1500, "tasks": 60},
    "tree_of_thought": {"problems": 80},
    "multi_agent": {"workflows": 60, "agents": 12},
    "agent_pipeline": {"concurrent_workflows": 1},
    "agent_pipeline_x16": {"concurrent_workflows": 16, "workflows": 64},
}
FRACTIONS = (0.03, 0.06, 0.12, 0.2, 0.3, 0.5)


def sweep(block_size: int, concurrency: int, quick: bool) -> list[dict]:
    rows = []
    for workload, kwargs in WORKLOAD_ARGS.items():
        trace = generate(workload.removesuffix("_x16"), block_size=block_size, **kwargs)
        if quick:
            trace = trace[:150]
        fp = footprint_blocks(trace, block_size)
        floor = concurrency * max(
            -(-(r.input_length + r.output_length) // block_size) for r in trace
        )
        for cap in sorted({max(int(fp * f), floor) for f in FRACTIONS}):
            results = {p: run_policy(p, trace, block_size, cap, concurrency) for p in POLICIES}
            lru, bel = results["lru"].hit_ratio, results["belady"].hit_ratio
            best = max(ONLINE, key=lambda p: results[p].hit_ratio)
            gap = (results[best].hit_ratio - lru) / (bel - lru) if bel - lru > 1e-9 else None
            adaptive_gap = (
                (results["adaptive"].hit_ratio - lru) / (bel - lru) if bel - lru > 1e-9 else None
            )
            rows.append(
                {
                    "workload": workload,
                    "requests": len(trace),
                    "footprint_blocks": fp,
                    "capacity_blocks": cap,
                    "capacity_fraction": cap / fp,
                    "results": {p: r.to_dict() for p, r in results.items()},
                    "best_online": best,
                    "gap_closed_best": gap,
                    "gap_closed_adaptive": adaptive_gap,
                }
            )
            print(
                f"{workload:16s} cap={cap:5d} "
                + " ".join(f"{p}={results[p].hit_ratio:.3f}" for p in POLICIES),
                flush=True,
            )
    return rows


def markdown(rows: list[dict], block_size: int, concurrency: int) -> str:
    head = ["workload", "capacity (blocks, share)", *POLICIES, "best online", "gap closed"]
    lines = [
        "# Hit ratio per policy (trace simulator)",
        "",
        f"Block size {block_size}, concurrency {concurrency}; `vllm` is vLLM 0.32's own "
        "KVCacheManager; `gap closed` = (best online - lru) / (belady - lru); "
        "`adaptive` is our general online policy; `workflow` (KVFlow) uses the agent-step hints "
        "the trace carries (other workloads have none, so it is LRU there).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in rows:
        res = row["results"]
        gap = row["gap_closed_best"]
        lines.append(
            "| "
            + " | ".join(
                [
                    row["workload"],
                    f"{row['capacity_blocks']} ({row['capacity_fraction']:.0%})",
                    *(f"{res[p]['hit_ratio']:.3f}" for p in POLICIES),
                    row["best_online"],
                    "n/a (no gap)" if gap is None else f"{gap:+.2f}",
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    ncols = 3
    nrows = -(-len(workloads) // ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.8 * nrows), squeeze=False)
    axes = [ax for row in grid for ax in row]
    for ax in axes[len(workloads) :]:
        ax.set_visible(False)
    for ax, wl in zip(axes, workloads, strict=False):
        pts = [r for r in rows if r["workload"] == wl]
        xs = [r["capacity_fraction"] for r in pts]
        for p in POLICIES:
            style = "--" if p in ("vllm", "belady") else "-"
            ax.plot(xs, [r["results"][p]["hit_ratio"] for r in pts], style, marker="o", label=p)
        ax.set_title(wl)
        ax.set_xlabel("capacity / footprint")
        ax.set_ylabel("prompt-token hit ratio")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--block-size", type=int, default=512)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="150 requests per workload")
    args = ap.parse_args()
    rows = sweep(args.block_size, args.concurrency, args.quick)
    meta = {"machine": machine(), "python": platform.python_version()}
    out = write_results(
        args.out,
        "policy_sweep",
        {"meta": meta, "rows": rows},
        markdown(rows, args.block_size, args.concurrency),
    )
    plot(rows, out / "policy_sweep.png")
    print(f"wrote {out}/policy_sweep.{{json,md,png}}")


if __name__ == "__main__":
    main()
