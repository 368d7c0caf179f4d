"""Plain-text and markdown tables for simulator results."""

from __future__ import annotations

from collections.abc import Sequence

from radix_plugin.simulator.replay import ReplayResult

COLUMNS = (
    ("policy", "{}"),
    ("prompt tokens", "{:,}"),
    ("hit tokens", "{:,}"),
    ("hit ratio", "{:.3f}"),
    ("recomputed tokens", "{:,}"),
    ("vs vllm", "{}"),
    ("manager µs/req", "{:.1f}"),
)


def _row(r: ReplayResult, baseline: ReplayResult | None) -> list[str]:
    ratio = "-"
    if baseline is not None and baseline.hit_tokens:
        ratio = f"{r.hit_tokens / baseline.hit_tokens:.3f}x hits"
    values = (
        r.policy,
        r.prompt_tokens,
        r.hit_tokens,
        r.hit_ratio,
        r.recomputed_tokens,
        ratio,
        r.us_per_request,
    )
    return [fmt.format(v) for (_, fmt), v in zip(COLUMNS, values, strict=True)]


def results_table(results: Sequence[ReplayResult], markdown: bool = False) -> str:
    """One row per policy; ``vs vllm`` compares hit tokens with the ``vllm`` row if present."""
    baseline = next((r for r in results if r.policy == "vllm"), None)
    header = [name for name, _ in COLUMNS]
    rows = [_row(r, baseline) for r in results]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return "\n".join([fmt.format(*header)] + [fmt.format(*row) for row in rows])
