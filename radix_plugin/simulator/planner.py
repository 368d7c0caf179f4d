"""Capacity planning: replay one trace for every KV size under every policy, beside the exact
optimum (``belady``, which knows the future), so a user sees how close each policy comes and
where more KV stops paying."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from radix_plugin.simulator.kv_size import KvSize
from radix_plugin.simulator.replay import ReplayResult, run_policy
from radix_plugin.simulator.sessions import ClientHints, client_hints, trace_sessions
from radix_plugin.simulator.trace import TraceRequest

OPTIMUM = "belady"
DEFAULT_POLICIES = ("vllm", "lru", "lfu", "adaptive", "session")


@dataclass(frozen=True, slots=True)
class PlanCell:
    """One policy at one KV size, with the optimum at that size."""

    size: KvSize
    result: ReplayResult
    optimum: ReplayResult

    @property
    def of_optimum(self) -> float:
        """Share of the optimum's hit tokens this policy reaches (1.0 when both are 0)."""
        best = self.optimum.hit_tokens
        return self.result.hit_tokens / best if best else 1.0

    def to_dict(self) -> dict:
        return {
            "kv_size": self.size.label,
            "kv_blocks": self.size.blocks,
            **self.result.to_dict(),
            "prefill_tokens_saved": self.result.hit_tokens,
            "optimum_hit_tokens": self.optimum.hit_tokens,
            "optimum_hit_ratio": self.optimum.hit_ratio,
            "of_optimum": self.of_optimum,
        }


def largest_request_blocks(trace: Sequence[TraceRequest], block_size: int) -> int:
    """Blocks the biggest request holds while it runs (prompt and output)."""
    return max(-(-(r.input_length + r.output_length) // block_size) for r in trace)


def session_hints(trace: Sequence[TraceRequest], block_size: int) -> list[ClientHints] | None:
    """The session ids a client sends, where every request of the log names its session;
    otherwise ``None`` (the session policy then infers conversations from the prompts)."""
    if not trace or any("session" not in r.extra for r in trace):
        return None
    return client_hints(trace_sessions(trace, block_size))


def plan(
    trace: Sequence[TraceRequest],
    block_size: int,
    sizes: Sequence[KvSize],
    policies: Sequence[str],
    concurrency: int = 1,
    progress: Callable[[str], Callable[[], None]] | None = None,
) -> list[PlanCell]:
    """Every (size, policy) cell; ``progress(description)`` returns the per-request tick of
    that replay. Sizes smaller than the largest request are the caller's to refuse."""
    hints = session_hints(trace, block_size)
    cells = []
    for size in sizes:

        def replay(name: str, size: KvSize = size) -> ReplayResult:
            tick = progress(f"{name} @ {size.label}") if progress else None
            return run_policy(
                name,
                trace,
                block_size,
                size.blocks,
                concurrency,
                hints=hints if name == "session" else None,
                progress=tick,
            )

        optimum = replay(OPTIMUM)
        cells += [PlanCell(size, replay(p), optimum) for p in policies if p != OPTIMUM]
    return cells


def plan_table(cells: Sequence[PlanCell]) -> str:
    """Rows of (KV size, policy): hit ratio, prefill tokens saved, the optimum beside them."""
    header = (
        "KV size",
        "blocks",
        "policy",
        "hit ratio",
        "prefill tokens saved",
        "optimum hit ratio",
        "of optimum",
    )
    rows = [
        (
            c.size.label,
            f"{c.size.blocks:,}",
            "vllm (vanilla)" if c.result.policy == "vllm" else c.result.policy,
            f"{c.result.hit_ratio:.3f}",
            f"{c.result.hit_tokens:,}",
            f"{c.optimum.hit_ratio:.3f}",
            f"{100 * c.of_optimum:.1f}%",
        )
        for c in cells
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = []
    for i, row in enumerate([header, *rows]):
        if i > 1 and row[0] != rows[i - 2][0]:
            lines.append("")  # a blank line between KV sizes
        cols = [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].ljust(widths[2])]
        cols += [v.rjust(w) for v, w in zip(row[3:], widths[3:], strict=True)]
        lines.append("  ".join(cols).rstrip())
    return "\n".join(lines)
