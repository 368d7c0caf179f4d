"""The capacity planner's picture: hit ratio against KV size, one line per policy and the
exact optimum dashed above them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from radix_plugin.simulator.planner import PlanCell


def plot_plan(cells: Sequence[PlanCell], path: str | Path, title: str) -> None:
    """Write the PNG; matplotlib is needed only here (an optional dependency)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({c.size for c in cells}, key=lambda s: s.blocks)
    x = [s.blocks for s in sizes]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    optimum = {c.size: c.optimum.hit_ratio for c in cells}
    ax.plot(x, [optimum[s] for s in sizes], "k--", marker="o", label="optimum (belady)")
    for policy in dict.fromkeys(c.result.policy for c in cells):
        by_size = {c.size: c.result.hit_ratio for c in cells if c.result.policy == policy}
        label = "vllm (vanilla)" if policy == "vllm" else policy
        ax.plot(x, [by_size[s] for s in sizes], marker=".", label=label)
    ax.set_xscale("log" if x[-1] >= 4 * x[0] else "linear")
    ax.set_xticks(x, [s.label for s in sizes], rotation=30, ha="right", fontsize=8)
    ax.minorticks_off()
    ax.set_xlabel("KV cache size")
    ax.set_ylabel("prefix-cache hit ratio (prompt tokens)")
    ax.set_ylim(0, max(1e-3, max(optimum.values())) * 1.1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
