"""Bounded soak: mixed traffic against the README's full server under KV pressure.

Greedy and sampled, grammar (radix_* xargs and vLLM's own structured outputs) and plain,
workflow-tagged and pinned requests, plus clients that disconnect mid-stream, from several
concurrent clients for a fixed time, on a KV pool a few long prompts overflow. Reports
requests, errors (any 5xx or transport failure), stuck requests (no answer within the client
timeout, or still running after the load stops, or any line of the plugin's watchdog, which
runs in the server and fails the engine with the scheduler's view of a request that cannot
progress), and the idle KV usage and server RSS before and after. `make soak`; written to
benchmarks/results/soak.{json,md}.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.client
import json
import random
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import machine, write_results

from radix_plugin.cache_manager.core.workflow import AgentStepGraph
from radix_plugin.cache_manager.engine_core.watchdog import LOG_PREFIX
from radix_plugin.testing.models import get_model_path
from radix_plugin.testing.server import (
    free_port,
    full_plugin_flags,
    server_command,
    server_process,
)

SCHEMA = {
    "type": "object",
    "properties": {"status": {"enum": ["ok", "failed"]}, "count": {"type": "integer"}},
    "required": ["status", "count"],
}
GRAPH = AgentStepGraph.from_steps(["planner", "coder", "critic"], loop=True)
CLIENT_TIMEOUT_S = 180
# Alternate windows: all-greedy (jump-forward drafts run) and mixed (drafts must stop), so
# the switch between them, where issue 12's token-0 failures came from, happens often.
PHASE_S = 15
DRAFT_METRICS = ("vllm:spec_decode_num_draft_tokens", "vllm:spec_decode_num_accepted_tokens")


def _agent_prompt(agent: str, notes: int = 50) -> str:
    # ~12 tokens a note: three 600-token agents overflow the pool; pinned prompts (10 notes,
    # 3 blocks) fit the pin budget, so pins hold blocks, displace each other and expire.
    return " ".join(f"{agent} note {i}: value {i * 7 % 31}." for i in range(notes))


def _bodies(rng: random.Random, model: str, step: int) -> tuple[str, dict[str, Any]]:
    kind = rng.choice(
        ["grammar", "choice", "vllm_json", "sampled", "sampled", "workflow", "pin", "disconnect"]
    )
    base: dict[str, Any] = {"model": model, "prompt": f"Request {rng.random():.6f}: "}
    if kind == "grammar":
        body = {**base, "temperature": 0, "max_tokens": 40}
        body["vllm_xargs"] = {"radix_json_schema": json.dumps(SCHEMA)}
    elif kind == "choice":
        body = {**base, "temperature": 0, "max_tokens": 8}
        body["vllm_xargs"] = {"radix_choice": ["alpha", "beta", "gamma"]}
    elif kind == "vllm_json":
        body = {**base, "temperature": 0, "max_tokens": 40, "structured_outputs": {"json": SCHEMA}}
    elif kind == "sampled":
        body = {**base, "temperature": 0.8, "max_tokens": 32}
    elif kind == "workflow":
        current = step % len(GRAPH.steps)
        agent = sorted(GRAPH.steps[current])[0]
        body = {**base, "prompt": _agent_prompt(agent), "max_tokens": 8}
        body["temperature"] = rng.choice([0, 0.8])
        body["vllm_xargs"] = GRAPH.hints(f"wf{rng.randrange(3)}", current, agent)
    elif kind == "pin":
        prompt = _agent_prompt(f"pinned{rng.randrange(6)}", notes=10)
        body = {**base, "prompt": prompt, "max_tokens": 4, "temperature": 0}
        body["vllm_xargs"] = {"radix_pin": True, "radix_pin_ttl": rng.choice([20, 3600])}
    else:
        body = {**base, "prompt": _agent_prompt("stream"), "temperature": 0.8}
        body.update(max_tokens=64, stream=True)
    if int(time.monotonic() // PHASE_S) % 2 == 0:
        body["temperature"] = 0
    return kind, body


def _post(base: str, body: dict[str, Any]) -> tuple[int, str]:
    request = urllib.request.Request(
        base + "/v1/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=CLIENT_TIMEOUT_S) as reply:
            if body.get("stream"):
                reply.readline()  # first chunk, then hang up mid-stream
                return -1, ""
            reply.read()
            return reply.status, ""
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")[:200]


def _metric(base: str, name: str) -> float:
    text = urllib.request.urlopen(base + "/metrics", timeout=30).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


def _rss_mib(proc: psutil.Process) -> float:
    procs = [proc, *proc.children(recursive=True)]
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return round(total / 2**20, 1)


def _idle(base: str, timeout_s: float = 120) -> float:
    """Seconds until no request runs or waits (timeout_s if never)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        busy = _metric(base, "vllm:num_requests_running") + _metric(
            base, "vllm:num_requests_waiting"
        )
        if busy == 0:
            return time.monotonic() - start
        time.sleep(1)
    return timeout_s


def _snapshot(base: str, proc: psutil.Process) -> dict[str, float]:
    counters = ("vllm:prefix_cache_hits", "vllm:external_prefix_cache_hits", *DRAFT_METRICS)
    return {
        "kv_cache_usage_perc": _metric(base, "vllm:kv_cache_usage_perc"),
        "pinned_kv_blocks": _metric(base, "radix_plugin:pinned_kv_blocks"),
        "rss_mib": _rss_mib(proc),
        **{name.split(":")[1]: _metric(base, name + "_total") for name in counters},
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    flags = full_plugin_flags(max_num_seqs=args.concurrency)
    cmd = server_command(get_model_path(args.model), port, flags, kv_blocks=args.kv_blocks)
    log_path = Path(args.log)
    with open(log_path, "w") as log, server_process(cmd, port, log, 600) as (base, popen):
        proc = psutil.Process(popen.pid)
        model = json.loads(urllib.request.urlopen(base + "/v1/models").read())["data"][0]["id"]
        _post(base, {"model": model, "prompt": "warm up", "max_tokens": 4})
        before = _snapshot(base, proc)
        counts: collections.Counter[str] = collections.Counter()
        errors: list[str] = []
        stuck = 0
        lock = threading.Lock()
        deadline = time.monotonic() + args.duration

        def client(seed: int) -> None:
            nonlocal stuck
            rng = random.Random(seed)
            step = 0
            while time.monotonic() < deadline:
                kind, body = _bodies(rng, model, step)
                step += 1
                try:
                    status, detail = _post(base, body)
                except (TimeoutError, OSError, http.client.HTTPException) as exc:
                    with lock:
                        if isinstance(exc, TimeoutError) or "timed out" in str(exc):
                            stuck += 1
                        errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                    continue
                with lock:
                    counts[f"{kind}:{status}"] += 1
                    if status >= 500 or (status >= 400 and kind != "disconnect"):
                        errors.append(f"{kind}: HTTP {status} {detail}")

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.concurrency)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start
        drain_s = _idle(base)
        still_busy = _metric(base, "vllm:num_requests_running") + _metric(
            base, "vllm:num_requests_waiting"
        )
        after = _snapshot(base, proc)
        alive = popen.poll() is None
        _post(base, {"model": model, "prompt": "still there?", "max_tokens": 4})
    watchdog = watchdog_lines(log_path)
    total = sum(counts.values()) + len([e for e in errors if "HTTP" not in e])
    return {
        "machine": machine(),
        "model": args.model,
        "concurrency": args.concurrency,
        "kv_blocks": args.kv_blocks,
        "duration_s": round(elapsed, 1),
        "requests": total,
        "by_kind_status": dict(sorted(counts.items())),
        "errors": len(errors),
        "error_samples": errors[:10],
        "stuck": stuck + int(still_busy),
        "watchdog_lines": len(watchdog),
        "watchdog_samples": [line[:2000] for line in watchdog[:5]],
        "drain_s": round(drain_s, 1),
        "idle_before": before,
        "idle_after": after,
        "server_alive": alive,
    }


def watchdog_lines(log_path: Path) -> list[str]:
    """The plugin watchdog's lines in the server log (a stuck request, or a repaired one)."""
    with open(log_path, errors="replace") as log:
        return [line.rstrip() for line in log if LOG_PREFIX in line]


def markdown(result: dict[str, Any]) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in result["by_kind_status"].items())
    b, a = result["idle_before"], result["idle_after"]
    delta = {
        key: f"{a[key] - b[key]:.0f}"
        for key in b
        if key not in ("kv_cache_usage_perc", "pinned_kv_blocks")
    }
    return f"""# Soak: mixed traffic on the full plugin server

{result["machine"]}; model `{result["model"]}`, {result["concurrency"]} concurrent clients,
{result["kv_blocks"]}-block KV pool, {result["duration_s"]} s of load (`make soak`).
Greedy/sampled (alternating {PHASE_S} s windows: all greedy, then mixed), radix grammar /
vLLM structured output / plain, workflow-tagged, pinned, and mid-stream disconnects (`-1`:
the client hung up after the first chunk, by design).

| | value |
|---|---|
| requests | {result["requests"]} |
| errors (5xx, 4xx on valid requests, transport) | {result["errors"]} |
| stuck (client timeout, or still running after load) | {result["stuck"]} |
| watchdog lines in the server log (`{LOG_PREFIX}`) | {result["watchdog_lines"]} |
| drain after load (s) | {result["drain_s"]} |
| idle KV usage before / after | {b["kv_cache_usage_perc"]:.3f} / {a["kv_cache_usage_perc"]:.3f} |
| pinned KV blocks (`radix_pin`) before / after | {b["pinned_kv_blocks"]:.0f} \
/ {a["pinned_kv_blocks"]:.0f} |
| server RSS before / after (MiB) | {b["rss_mib"]} / {a["rss_mib"]} |
| server alive at the end | {result["server_alive"]} |
| jump-forward draft tokens (accepted) | {delta["spec_decode_num_draft_tokens"]} \
({delta["spec_decode_num_accepted_tokens"]}) |
| prefix-cache hit tokens: device / host tier | {delta["prefix_cache_hits"]} \
/ {delta["external_prefix_cache_hits"]} |

| kind:status | requests |
|---|---|
{rows}

Error samples: {result["error_samples"] or "none"}

Watchdog lines: {result["watchdog_samples"] or "none"}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--duration", type=float, default=300)
    parser.add_argument("--concurrency", type=int, default=12)
    parser.add_argument("--kv-blocks", type=int, default=64)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--log", default="/tmp/radix_soak_server.log")
    args = parser.parse_args()
    result = run(args)
    write_results(args.out, "soak", result, markdown(result))
    print(json.dumps({k: v for k, v in result.items() if k != "by_kind_status"}, indent=1))
    failed = result["errors"] or result["stuck"] or result["watchdog_lines"]
    if failed or not result["server_alive"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
