"""Scale-out side by side: 2 replicas behind vllm-router, vanilla vLLM vs the plugin.

Each engine kind (vanilla vLLM, the plugin's RadixScheduler, optionally with another eviction
policy) gets two replicas (one core each); each router policy (`round_robin`, `cache_aware`,
`kv_aware`) then serves the same multi-tenant workload, with every replica's prefix cache
emptied in between: several tenants, each with its own system prompt, each with multi-turn
sessions whose next turn resends the whole history (previous answers included). The KV pool
per replica is sized to hold about half of the tenants' system prompts plus the active
sessions, so placement decides what stays cached.

Reported per (engine, policy): aggregate throughput (requests/s, prompt and output tokens/s),
TTFT (mean, p50, p90), the cluster-wide prefix hit ratio (sum of both replicas' vLLM
`prefix_cache_hits` over `prefix_cache_queries`, in tokens), each replica's share of requests,
and the router's own KV placement lookups. Ratios: plugin / vanilla under the same routing,
and each policy / round_robin for the same engine, all from one run.

    python benchmarks/scale_out.py --model real --dtype float32

On a small box, run it in parts (each engine kind in its own call, same workload) and let
``--merge`` add each part to the result file: every cell of one engine kind still runs
back to back on the same replicas, and the ratios are computed over the merged cells.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from results_io import DTYPE_HELP, machine, model_choices, resolve_dtype, write_results
from scale_out_sim import pool_window, window_markdown

from radix_plugin.testing.cluster import (
    BLOCK_SIZE,
    ROUTER_POLICIES,
    Replica,
    kv_lookups,
    metric,
    reset_prefix_cache,
    running_replicas,
    running_router,
    scrape,
)
from radix_plugin.testing.models import get_model_path

NAME = "model"
REPLICA_FLAGS = ("--return-tokens-as-token-ids", "--max-num-seqs")
ENGINES = {
    "vanilla": (False, []),
    "plugin": (True, []),
    # Eviction that follows what keeps arriving: the prefixes the router keeps sending here.
    "plugin-pinned": (
        True,
        ["--additional-config", json.dumps({"radix_plugin": {"eviction": "pinned"}})],
    ),
    "plugin-adaptive": (
        True,
        ["--additional-config", json.dumps({"radix_plugin": {"eviction": "adaptive"}})],
    ),
}


@dataclass(frozen=True)
class Session:
    tenant: int
    system: list[int]
    turns: list[list[int]]


def build_sessions(args: argparse.Namespace, vocab: int) -> list[Session]:
    """Tenants' system prompts and sessions' user turns as token ids, interleaved by tenant."""
    rng = random.Random(args.seed)

    def ids(n: int) -> list[int]:
        return [rng.randrange(100, vocab - 100) for _ in range(n)]

    systems = [ids(args.system_tokens) for _ in range(args.tenants)]
    sessions = [
        Session(t, systems[t], [ids(args.user_tokens) for _ in range(args.turns)])
        for _ in range(args.sessions_per_tenant)
        for t in range(args.tenants)
    ]
    return sessions


def stream_completion(url: str, prompt: list[int], max_tokens: int) -> tuple[float, list[int]]:
    """One streamed completion: (seconds to the first token, generated token ids).

    The ids come from the sampled tokens' logprobs, which the replicas spell `token_id:N`
    (`--return-tokens-as-token-ids`): `return_token_ids` would be simpler, but vllm-router
    0.1.17 then skips its KV lookup and places the request by load alone.
    """
    body = {
        "model": NAME,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "min_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
        "logprobs": 1,
    }
    req = urllib.request.Request(
        url + "/v1/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    start = time.perf_counter()
    ttft = None
    out: list[int] = []
    with urllib.request.urlopen(req, timeout=600) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[6:]).get("choices", []):
                tokens = (choice.get("logprobs") or {}).get("tokens") or []
                if (tokens or choice.get("text")) and ttft is None:
                    ttft = time.perf_counter() - start
                out.extend(int(t.removeprefix("token_id:")) for t in tokens)
    if ttft is None:
        raise RuntimeError("stream ended without a token")
    return ttft, out


def run_sessions(url: str, sessions: Sequence[Session], args: argparse.Namespace) -> dict:
    """Play every session turn by turn; `concurrency` sessions at a time."""
    records: list[dict] = []
    lock = threading.Lock()

    def play(session: Session) -> None:
        history = list(session.system)
        for user in session.turns:
            history += user
            ttft, out = stream_completion(url, history, args.output_tokens)
            with lock:
                records.append({"prompt": len(history), "output": len(out), "ttft": ttft})
            history += out

    start = time.perf_counter()
    with ThreadPoolExecutor(args.concurrency) as pool:
        list(pool.map(play, sessions))
    wall = time.perf_counter() - start
    ttfts = sorted(r["ttft"] for r in records)
    return {
        "requests": len(records),
        "wall_s": wall,
        "requests_per_s": len(records) / wall,
        "prompt_tokens_per_s": sum(r["prompt"] for r in records) / wall,
        "output_tokens_per_s": sum(r["output"] for r in records) / wall,
        "ttft_mean_s": statistics.fmean(ttfts),
        "ttft_p50_s": ttfts[len(ttfts) // 2],
        "ttft_p90_s": ttfts[int(len(ttfts) * 0.9)],
    }


def replica_counters(replicas: Sequence[Replica]) -> list[dict[str, float]]:
    out = []
    for r in replicas:
        text = scrape(r.url)
        out.append(
            {
                "hits": metric(text, "vllm:prefix_cache_hits_total"),
                "queries": metric(text, "vllm:prefix_cache_queries_total"),
                "requests": metric(text, "vllm:request_success_total"),
            }
        )
    return out


def run_policy(
    policy: str, replicas: Sequence[Replica], sessions: Sequence[Session], args, log_dir: Path
) -> dict:
    with running_router(
        policy, replicas, served_name=NAME, log=log_dir / f"router-{policy}.log"
    ) as router:
        # After the router is up (and, for kv_aware, in sync with every replica's events):
        # the resets' AllBlocksCleared reach it with the replicas' next steps.
        for r in replicas:
            reset_prefix_cache(r.url)
        before, lookups_before = replica_counters(replicas), kv_lookups(router)
        result = run_sessions(router.url, sessions, args)
        after, lookups_after = replica_counters(replicas), kv_lookups(router)
        (log_dir / f"router-{policy}.metrics").write_text(scrape(router.metrics_url))
    delta = [{k: a[k] - b[k] for k in a} for a, b in zip(after, before, strict=True)]
    hits, queries = sum(d["hits"] for d in delta), sum(d["queries"] for d in delta)
    result["hit_ratio"] = hits / queries if queries else 0.0
    result["replica_requests"] = [d["requests"] for d in delta]
    result["replica_hit_ratio"] = [d["hits"] / d["queries"] if d["queries"] else 0.0 for d in delta]
    result["router_kv_lookups"] = {k: lookups_after[k] - lookups_before[k] for k in lookups_after}
    return result


def warm_up(replicas: Sequence[Replica]) -> None:
    """One short request per replica, so the first timed request pays no first-call cost."""
    for r in replicas:
        stream_completion(r.url, list(range(100, 100 + 2 * BLOCK_SIZE)), 2)


MECHANISM = """\
## Why the plugin's eviction matters behind a KV-aware router

`kv_aware` sends each request to the replica whose KV events show the longest cached prefix
of it, so every tenant's system prompt settles on one replica and every later request of
that tenant arrives there: the router's choice turns into hits *on that replica's copy*.
Each replica still evicts on its own. Once the prefixes a replica is routed (its tenants'
system prompts plus its live sessions) exceed its pool, vanilla vLLM's LRU cycles: the
tenants come round in turn, and the prompt evicted is always the one needed next, after
finished sessions' histories (never used again) that were touched more recently. The
router then sees the `BlockRemoved`, the prefix is recomputed, and placement no longer
buys anything.

`plugin-adaptive` (`{"eviction": "adaptive"}`) ranks a leaf by recency plus a frequency
credit: a node's hit count is exactly how often the router sent a request for that prefix
here, so the prefixes the router keeps sending are the last to go, and one-off session
tails go first. The credit is tuned online (ghost hits), so it falls back to LRU where
frequency does not pay. Compare `plugin-adaptive / vanilla, kv_aware` (same routing, same
pool) in the ratio table: the hit-ratio difference is the eviction's, the throughput ratio
what it buys. The gain exists only under pressure: with a pool that holds every routed
prefix, LRU loses nothing; with a pool far too small, no ranking keeps enough.
"""

SCALING = """\
## Many replicas: what grows with N

- **Router index memory**: one entry per (cached block, replica) in the router's tree, so it
  grows with the cluster's total KV capacity (N x pool blocks), not with traffic; here 2 x
  {kv_blocks} blocks at most.
- **Event traffic**: one ZMQ stream per replica, a `BlockStored` per newly cached run of
  blocks and a `BlockRemoved` per eviction: the router's ingest grows linearly with N and
  with each replica's cache churn (the eviction above lowers churn, so also traffic).
- **Per-request lookup**: one walk of the request's blocks in the router's tree (independent
  of N) plus scoring the replicas that hold the prefix, at most N; text and chat requests
  add one render (tokenization) call to a replica, token-id prompts none.
- **Placement quality** does not degrade with N: a shared prefix is computed once per
  replica that holds it, and under `kv_aware` that is one replica until its load makes
  another one cheaper. What degrades is `round_robin`: each prefix is recomputed on up to N
  replicas, so its hit ratio falls as N grows, while `kv_aware`'s stays.
- **Per replica**, nothing grows with N: the plugin's eviction is local and needs no
  coordination; each replica's pool only has to hold the prefixes routed to it.
"""


def markdown(payload: dict) -> str:
    res, args = payload["results"], payload["args"]
    lines = [
        "# Scale-out: 2 replicas behind vllm-router, vanilla vLLM vs radix-plugin",
        "",
        f"Model `{args['model']}` ({args['dtype']}), {payload['machine']}; "
        f"vllm-router {payload['router']}.",
        f"Workload: {args['tenants']} tenants x {args['sessions_per_tenant']} sessions x "
        f"{args['turns']} turns; system prompt {args['system_tokens']} tokens, user turn "
        f"{args['user_tokens']}, answer {args['output_tokens']} tokens (in the next turn's "
        f"history); {args['concurrency']} sessions at a time; KV pool {args['kv_blocks']} "
        f"blocks x {BLOCK_SIZE} tokens per replica; each replica pinned to its own core. "
        "Token-id prompts; each replica's prefix cache is emptied before each routing policy.",
        "",
        "| engine | routing | req/s | prompt tok/s | out tok/s | TTFT mean s | TTFT p50 s "
        "| TTFT p90 s | cluster hit ratio | requests per replica | router KV lookups hit/miss |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for engine, per_policy in res.items():
        for policy, r in per_policy.items():
            kv = r["router_kv_lookups"]
            lines.append(
                f"| {engine} | {policy} | {r['requests_per_s']:.3f} | "
                f"{r['prompt_tokens_per_s']:.0f} | {r['output_tokens_per_s']:.1f} | "
                f"{r['ttft_mean_s']:.3f} | {r['ttft_p50_s']:.3f} | {r['ttft_p90_s']:.3f} | "
                f"{r['hit_ratio']:.3f} | {'/'.join(f'{n:.0f}' for n in r['replica_requests'])} "
                f"| {kv['hit']:.0f}/{kv['miss']:.0f} |"
            )
    lines += ["", "## Ratios (same workload, back to back)", ""]
    lines += ["| comparison | throughput (req/s) | TTFT mean | hit ratio |", "|---|---|---|---|"]
    for comp, r in payload["ratios"].items():
        lines.append(
            f"| {comp} | {r['throughput']:.2f}x | {r['ttft_mean']:.2f}x | "
            f"{r['hit_ratio_points']:+.3f} |"
        )
    window = {int(pool): r for pool, r in payload["simulated"].items()}
    lines += ["", MECHANISM, window_markdown(window, args["kv_blocks"] - 1), ""]
    lines += [SCALING.format(kv_blocks=args["kv_blocks"]), "## Commands", ""]
    lines += [f"    {c}" for c in payload.get("commands", [])]
    return "\n".join(lines)


def ratios(results: dict) -> dict:
    """Each engine / vanilla (and / plugin) per policy, and policy / round_robin per engine."""

    def ratio(a: dict, b: dict) -> dict:
        return {
            "throughput": a["requests_per_s"] / b["requests_per_s"],
            "ttft_mean": a["ttft_mean_s"] / b["ttft_mean_s"],
            "hit_ratio_points": a["hit_ratio"] - b["hit_ratio"],
        }

    out = {}
    base = results.get("vanilla", {})
    for engine, per_policy in results.items():
        for policy, r in per_policy.items():
            for other in ("vanilla", "plugin"):
                if engine not in (other, "vanilla") and policy in results.get(other, {}):
                    out[f"{engine} / {other}, {policy}"] = ratio(r, results[other][policy])
            if policy != "round_robin" and "round_robin" in per_policy:
                out[f"{engine}: {policy} / round_robin"] = ratio(r, per_policy["round_robin"])
    if "kv_aware" in results.get("plugin", {}) and "round_robin" in base:
        out["plugin kv_aware / vanilla round_robin"] = ratio(
            results["plugin"]["kv_aware"], base["round_robin"]
        )
    return out


def plot(payload: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = payload["results"]
    engines = list(res)
    policies = [p for p in ROUTER_POLICIES if any(p in res[e] for e in engines)]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    panels = [
        ("requests_per_s", "throughput (requests/s)"),
        ("ttft_mean_s", "mean TTFT (s)"),
        ("hit_ratio", "cluster prefix hit ratio"),
    ]
    width = 0.8 / len(engines)
    for ax, (key, title) in zip(axes, panels, strict=True):
        for i, engine in enumerate(engines):
            cells = [(j, res[engine][p][key]) for j, p in enumerate(policies) if p in res[engine]]
            xs = [j + i * width for j, _ in cells]
            ax.bar(xs, [v for _, v in cells], width, label=engine)
        ax.set_xticks([j + width * (len(engines) - 1) / 2 for j in range(len(policies))])
        ax.set_xticklabels(policies)
        ax.set_title(title)
    axes[0].legend()
    fig.suptitle(
        f"2 replicas behind vllm-router, {payload['args']['model']} ({payload['machine']})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="real", choices=model_choices())
    p.add_argument("--engines", default="vanilla,plugin", help=f"of {', '.join(ENGINES)}")
    p.add_argument("--policies", default=",".join(ROUTER_POLICIES))
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--kv-blocks", type=int, default=78, help="KV pool per replica, in blocks")
    p.add_argument("--max-model-len", type=int, default=1024)
    p.add_argument("--dtype", default="native", help=DTYPE_HELP)
    p.add_argument("--tenants", type=int, default=10)
    p.add_argument("--sessions-per-tenant", type=int, default=3)
    p.add_argument("--turns", type=int, default=2)
    p.add_argument("--system-tokens", type=int, default=384)
    p.add_argument("--user-tokens", type=int, default=96)
    p.add_argument("--output-tokens", type=int, default=16)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--name", default=None, help="result file base name")
    p.add_argument("--merge", action="store_true", help="add to the existing result file")
    p.add_argument("--log-dir", default="/tmp/scale_out")
    args = p.parse_args(argv)
    args.dtype = resolve_dtype(args.dtype)
    return args


WORKLOAD_KEYS = (
    "model", "dtype", "replicas", "kv_blocks", "max_model_len", "tenants", "sessions_per_tenant",
    "turns", "system_tokens", "user_tokens", "output_tokens", "concurrency", "seed",
)  # fmt: skip
"""Settings every merged part must share: the cells it adds are then comparable."""


def earlier_run(path: Path, args: argparse.Namespace) -> dict:
    """The payload of the result file at `path`, which must have the same workload."""
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    for key in WORKLOAD_KEYS:
        if old["args"].get(key) != getattr(args, key):
            raise SystemExit(
                f"--merge: {path} has {key}={old['args'].get(key)!r}, "
                f"this run {getattr(args, key)!r}"
            )
    return old


def main(argv: Sequence[str] | None = None) -> None:
    # `timeout`/bench-run stop with SIGTERM: exit through the context managers, which stop
    # the replicas and the router (Python's default SIGTERM action would orphan them).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    engines = args.engines.split(",")
    policies = args.policies.split(",")
    for e in engines:
        if e not in ENGINES:
            raise SystemExit(f"unknown engine {e!r}; valid: {', '.join(ENGINES)}")
    from transformers import AutoConfig

    model_path = get_model_path(args.model)
    vocab = AutoConfig.from_pretrained(model_path).vocab_size
    sessions = build_sessions(args, vocab)
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    name = args.name or f"scale_out_{args.model}_cpu"
    path = Path(args.out) / f"{name}.json"
    earlier = earlier_run(path, args) if args.merge else {}
    results: dict[str, dict] = earlier.get("results", {})
    commands = [*earlier.get("commands", []), "python benchmarks/scale_out.py " + " ".join(argv)]
    simulated = earlier.get("simulated") or simulate(sessions, args)
    for engine in engines:
        plugin, extra = ENGINES[engine]
        flags = [*REPLICA_FLAGS, str(args.concurrency), "--dtype", args.dtype, *extra]
        with running_replicas(
            model_path,
            args.replicas,
            plugin=plugin,
            kv_blocks=args.kv_blocks,
            max_model_len=args.max_model_len,
            served_name=NAME,
            extra=flags,
            log_dir=log_dir,
        ) as replicas:
            warm_up(replicas)
            for policy in policies:
                r = run_policy(policy, replicas, sessions, args, log_dir)
                results.setdefault(engine, {})[policy] = r
                print(engine, policy, json.dumps(r), flush=True)
                # Written after every cell, so a cut-short run keeps what it measured.
                payload = _payload(args, results, commands, simulated)
                out = write_results(args.out, name, payload, markdown(payload))
                plot(payload, out / f"{name}.png")
    print(markdown(_payload(args, results, commands, simulated)))


def simulate(sessions: Sequence[Session], args: argparse.Namespace) -> dict[str, dict]:
    """Simulated hit ratios for pool sizes around the measured one (JSON keys: strings)."""
    usable = args.kv_blocks - 1  # vLLM keeps one block aside (the null block)
    window = pool_window(
        sessions,
        [usable + d for d in (-16, -8, 0, 8, 16) if usable + d > 0],
        replicas=args.replicas,
        concurrency=args.concurrency,
        output_tokens=args.output_tokens,
        block_size=BLOCK_SIZE,
    )
    return {str(pool): r for pool, r in window.items()}


def _payload(args: argparse.Namespace, results: dict, commands: list[str], simulated: dict) -> dict:
    from importlib.metadata import version

    return {
        "machine": machine(),
        "router": version("vllm-router"),
        "args": vars(args),
        "commands": commands,
        "results": results,
        "ratios": ratios(results),
        "simulated": simulated,
    }


if __name__ == "__main__":
    main()
