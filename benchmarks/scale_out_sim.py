"""The scale-out workload replayed in the simulator: where per-replica eviction can matter.

Behind `kv_aware` every tenant settles on one replica, so each replica sees the requests of
its own tenants. This replays exactly that (tenant t on replica t mod N, the sessions in the
order `concurrency` client threads send them) through vLLM's real KV cache manager and the
plugin's radix tree under each eviction policy, for a range of pool sizes, in a second. The
benchmark runs one pool size on real engines; this table shows where that size sits: a pool
that holds every routed prefix leaves LRU nothing to lose, one far too small leaves no
ranking anything to keep.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from radix_plugin.simulator.replay import run_policy
from radix_plugin.simulator.trace import TraceRequest

SIM_POLICIES = ("vllm", "lru", "adaptive")
"""`vllm` is vLLM's own KV cache manager (vanilla replicas); the others the plugin's tree."""


class SessionLike(Protocol):
    tenant: int
    system: list[int]
    turns: list[list[int]]


def sticky_traces(
    sessions: Sequence[SessionLike],
    *,
    replicas: int,
    concurrency: int,
    output_tokens: int,
    block_size: int,
) -> list[list[TraceRequest]]:
    """Per replica, its tenants' requests in arrival order, as Mooncake-style traces.

    A block's hash id names its content and its prefix (a chain over the token ids); an
    answer's tokens are unique to its session turn, as generated text is.
    """
    chain_ids: dict[tuple, int] = {}
    events = sorted(
        ((i // concurrency) * len(s.turns) + k, i % concurrency, i, k)
        for i, s in enumerate(sessions)
        for k in range(len(s.turns))
    )
    histories: dict[int, list] = {}
    traces: list[list[TraceRequest]] = [[] for _ in range(replicas)]
    for _, _, i, k in events:
        session = sessions[i]
        history = histories.get(i, list(session.system)) + list(session.turns[k])
        ids, parent = [], 0
        for start in range(0, len(history), block_size):
            key = (parent, tuple(history[start : start + block_size]))
            parent = chain_ids.setdefault(key, len(chain_ids) + 1)
            ids.append(parent)
        traces[session.tenant % replicas].append(
            TraceRequest(0, len(history), output_tokens, tuple(ids))
        )
        histories[i] = history + [("answer", i, k, j) for j in range(output_tokens)]
    return traces


def pool_window(
    sessions: Sequence[SessionLike],
    pools: Sequence[int],
    *,
    replicas: int,
    concurrency: int,
    output_tokens: int,
    block_size: int,
) -> dict[int, dict[str, float]]:
    """Cluster hit ratio (hit tokens / prompt tokens) per pool size and policy."""
    traces = sticky_traces(
        sessions,
        replicas=replicas,
        concurrency=concurrency,
        output_tokens=output_tokens,
        block_size=block_size,
    )
    per_replica = max(1, concurrency // replicas)
    out: dict[int, dict[str, float]] = {}
    for pool in pools:
        out[pool] = {}
        for policy in SIM_POLICIES:
            runs = [run_policy(policy, t, block_size, pool, per_replica) for t in traces if t]
            hits = sum(r.hit_tokens for r in runs)
            out[pool][policy] = hits / sum(r.prompt_tokens for r in runs)
    return out


def window_markdown(window: dict[int, dict[str, float]], measured_pool: int) -> str:
    """The table the benchmark's markdown shows under its real-engine results."""
    lines = [
        "## Simulated pool sizes (tenant-sticky placement, as kv_aware settles)",
        "",
        "Cluster hit ratio replayed in `radix_plugin.simulator` (vanilla = vLLM's own KV",
        "cache manager); the real-engine run above used the marked size.",
        "",
        "| usable blocks per replica | " + " | ".join(SIM_POLICIES) + " | adaptive - vllm |",
        "|---|" + "---|" * (len(SIM_POLICIES) + 1),
    ]
    for pool, ratios in window.items():
        mark = " (measured)" if pool == measured_pool else ""
        cells = " | ".join(f"{ratios[p]:.3f}" for p in SIM_POLICIES)
        lines.append(f"| {pool}{mark} | {cells} | {ratios['adaptive'] - ratios['vllm']:+.3f} |")
    return "\n".join(lines)
