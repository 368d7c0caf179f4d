"""Soak, side by side: the README's full plugin server and vanilla vLLM at the same time,
each on its own core, under the same mixed load, watching memory.

Each side gets the same clients with the same seeds, so the same requests in the same
order (each side at its own pace): greedy and sampled (alternating windows: all greedy,
where jump-forward drafts run, then mixed, where they must stop), radix grammars (the
vanilla side gets vLLM's own structured outputs for the same schema or choices) and
vLLM's own JSON outputs, workflow-tagged agent prompts, chat sessions with ids and end
hints, pins with TTLs, SGLang programs (gen, select, regex gen) through the plugin's
``/generate`` and their vanilla equivalent through ``/v1/completions``, and clients that
hang up mid-stream, on a KV pool the agent prompts overflow. Cache hints travel in
``vllm_xargs`` on the plugin side only.

Each server is pinned to its own core (``taskset`` and ``VLLM_CPU_OMP_THREADS_BIND``). The
RSS of every server process (API server and EngineCore) is sampled every 10 s; after
warm-up the slope (MiB/min) is fitted with a 90% bootstrap interval and per-window slopes,
for both sides. ``--tracemalloc`` also snapshots every plugin server process once a
minute and reports the largest growths by source line across the soak (it slows the
plugin side, so its throughput is not comparable then). The plugin's watchdog is on: any
``radix_plugin watchdog:`` line in its log fails the soak, as do errors (a 5xx, a 4xx on a
valid request, a transport failure), stuck requests (no answer within the client timeout,
or still running after the load stops) and a dead server.

    python benchmarks/soak.py --duration 1800            # `make soak SOAK_S=1800`

Written to benchmarks/results/soak_<name>.{json,md,png} (name: ``--name``, default the
duration in minutes).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import machine, write_results
from soak_memory import (
    RssSampler,
    engine_core_pid,
    plot,
    slope_report,
    tracemalloc_diff,
    tracemalloc_env,
)

from radix_plugin.cache_manager.core.workflow import AgentStepGraph
from radix_plugin.cache_manager.engine_core.watchdog import LOG_PREFIX
from radix_plugin.testing.models import get_model_path
from radix_plugin.testing.server import (
    free_port,
    full_plugin_flags,
    server_command,
    server_process,
    sglang_endpoint_env,
)

SIDES = ("plugin", "vanilla")
SCHEMA = {
    "type": "object",
    "properties": {"status": {"enum": ["ok", "failed"]}, "count": {"type": "integer"}},
    "required": ["status", "count"],
}
CHOICES = ["alpha", "beta", "gamma"]
GRAPH = AgentStepGraph.from_steps(["planner", "coder", "critic"], loop=True)
CLIENT_TIMEOUT_S = 180
PHASE_S = 15
KINDS = [
    "grammar",
    "choice",
    "vllm_json",
    "sampled",
    "sampled",
    "workflow",
    "session",
    "session",
    "pin",
    "sglang",
    "disconnect",
]
COUNTERS = ("vllm:prefix_cache_hits", "vllm:spec_decode_num_draft_tokens")


def _agent_prompt(agent: str, notes: int = 50) -> str:
    # ~12 tokens a note: three 600-token agents overflow the pool; pinned prompts (10 notes,
    # 3 blocks) fit the pin budget, so pins hold blocks, displace each other and expire.
    return " ".join(f"{agent} note {i}: value {i * 7 % 31}." for i in range(notes))


class Client:
    """One client's request stream: the same seed gives the same stream on both sides."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.step = 0
        self.session = 0
        self.turns: list[str] = []

    def next(self) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        kind = rng.choice(KINDS)
        self.step += 1
        base: dict[str, Any] = {"prompt": f"Request {rng.random():.6f}: "}
        if kind == "grammar":
            body = {**base, "temperature": 0, "max_tokens": 40}
            body["vllm_xargs"] = {"radix_json_schema": json.dumps(SCHEMA)}
        elif kind == "choice":
            body = {**base, "temperature": 0, "max_tokens": 8}
            body["vllm_xargs"] = {"radix_choice": CHOICES}
        elif kind == "vllm_json":
            body = {**base, "temperature": 0, "max_tokens": 40}
            body["structured_outputs"] = {"json": SCHEMA}
        elif kind == "sampled":
            body = {**base, "temperature": 0.8, "max_tokens": 32}
        elif kind == "workflow":
            current = self.step % len(GRAPH.steps)
            agent = sorted(GRAPH.steps[current])[0]
            body = {"prompt": _agent_prompt(agent), "max_tokens": 8}
            body["temperature"] = rng.choice([0, 0.8])
            body["vllm_xargs"] = GRAPH.hints(f"wf{rng.randrange(3)}", current, agent)
        elif kind == "session":
            body = self._turn(rng)
        elif kind == "pin":
            prompt = _agent_prompt(f"pinned{rng.randrange(6)}", notes=10)
            body = {"prompt": prompt, "max_tokens": 4, "temperature": 0}
            body["vllm_xargs"] = {"radix_pin": True, "radix_pin_ttl": rng.choice([20, 3600])}
        elif kind == "sglang":
            body = {"question": f"What is {rng.randrange(100)} plus {rng.randrange(100)}?"}
        else:
            body = {"prompt": _agent_prompt("stream"), "temperature": 0.8}
            body.update(max_tokens=64, stream=True)
        if int(time.monotonic() // PHASE_S) % 2 == 0 and "temperature" in body:
            body["temperature"] = 0
        return kind, body

    def _turn(self, rng: random.Random) -> dict[str, Any]:
        """The next turn of this client's chat: the history grows, ends 30% of the time."""
        self.turns.append(f"User turn {len(self.turns)}: tell me about {rng.randrange(1000)}.")
        end = rng.random() < 0.3 or len(self.turns) >= 8
        body: dict[str, Any] = {"prompt": "\n".join(self.turns), "max_tokens": 16}
        body["temperature"] = rng.choice([0, 0.8])
        sid = f"c{self.seed}-s{self.session}"
        body["vllm_xargs"] = {"session_id": sid, "radix_session_end": end}
        if end:
            self.session += 1
            self.turns = []
        return body


def vanilla_body(body: dict[str, Any]) -> dict[str, Any]:
    """The same request for vanilla vLLM: radix grammars as vLLM structured outputs, no
    cache hints."""
    body = dict(body)
    xargs = body.pop("vllm_xargs", None) or {}
    if "radix_json_schema" in xargs:
        body["structured_outputs"] = {"json": json.loads(xargs["radix_json_schema"])}
    elif "radix_choice" in xargs:
        body["structured_outputs"] = {"choice": xargs["radix_choice"]}
    return body


def _post(base: str, body: dict[str, Any], model: str) -> tuple[int, str]:
    data = json.dumps({"model": model, **body}).encode()
    request = urllib.request.Request(
        base + "/v1/completions", data, {"Content-Type": "application/json"}
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


def _sglang_program(base: str, question: str) -> tuple[int, str]:
    """gen, select and a regex gen through ``sgl.RuntimeEndpoint`` (the plugin's /generate)."""
    import sglang as sgl

    @sgl.function
    def quiz(s, q):
        s += f"Q: {q}\nA:"
        s += sgl.gen("answer", max_tokens=8, stop="\n", temperature=0)
        s += "\nIs that right? " + sgl.select("verdict", choices=["yes", "no"])
        s += "\nA number: " + sgl.gen("n", max_tokens=4, regex=r"[0-9]{1,3}", temperature=0)

    state = quiz.run(q=question, backend=sgl.RuntimeEndpoint(base))
    if state["verdict"] not in ("yes", "no") or not state["n"].isdigit():
        return 500, f"program answered {state['verdict']!r} / {state['n']!r}"
    return 200, ""


def _vanilla_program(base: str, question: str, model: str) -> tuple[int, str]:
    """The same program's requests on vanilla vLLM (choice and regex as structured outputs)."""
    prompt = f"Q: {question}\nA:"
    for body in (
        {"prompt": prompt, "max_tokens": 8, "stop": "\n", "temperature": 0},
        {"prompt": prompt + "\nIs that right? ", "structured_outputs": {"choice": ["yes", "no"]}},
        {
            "prompt": prompt + "\nA number: ",
            "max_tokens": 4,
            "temperature": 0,
            "structured_outputs": {"regex": "[0-9]{1,3}"},
        },
    ):
        status, detail = _post(base, body, model)
        if status != 200:
            return status, detail
    return 200, ""


def _metric(base: str, name: str) -> float:
    text = urllib.request.urlopen(base + "/metrics", timeout=30).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


def _busy(base: str) -> float:
    return _metric(base, "vllm:num_requests_running") + _metric(base, "vllm:num_requests_waiting")


def _idle(base: str, timeout_s: float = 120) -> float:
    """Seconds until no request runs or waits (timeout_s if never)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if _busy(base) == 0:
            return time.monotonic() - start
        time.sleep(1)
    return timeout_s


class Side:
    """One server's load: its clients, counts and errors."""

    def __init__(self, name: str, base: str, model: str) -> None:
        self.name = name
        self.base = base
        self.model = model
        self.counts: collections.Counter[str] = collections.Counter()
        self.errors: list[str] = []
        self.stuck = 0
        self.lock = threading.Lock()

    def send(self, kind: str, body: dict[str, Any]) -> tuple[int, str]:
        if kind == "sglang":
            if self.name == "plugin":
                return _sglang_program(self.base, body["question"])
            return _vanilla_program(self.base, body["question"], self.model)
        return _post(self.base, body if self.name == "plugin" else vanilla_body(body), self.model)

    def client(self, seed: int, deadline: float) -> None:
        stream = Client(seed)
        while time.monotonic() < deadline:
            kind, body = stream.next()
            try:
                status, detail = self.send(kind, body)
            except Exception as exc:  # a transport failure, or an SGLang program's error
                with self.lock:
                    self.stuck += isinstance(exc, TimeoutError) or "timed out" in str(exc)
                    self.errors.append(f"{kind}: {type(exc).__name__}: {exc}"[:300])
                continue
            with self.lock:
                self.counts[f"{kind}:{status}"] += 1
                if status >= 500 or (status >= 400 and kind != "disconnect"):
                    self.errors.append(f"{kind}: HTTP {status} {detail}"[:300])


@contextlib.contextmanager
def servers(args: argparse.Namespace, log_dir: Path, trace_dir: Path | None) -> Iterator[dict]:
    """Both servers at once, side i on core i; yields side -> (base URL, Popen)."""
    model = get_model_path(args.model)
    flags = {
        "plugin": full_plugin_flags(max_num_seqs=args.max_num_seqs),
        "vanilla": ["--max-num-seqs", str(args.max_num_seqs)],
    }
    contexts = {}
    for core, side in enumerate(SIDES):
        port = free_port()
        cmd = server_command(model, port, flags[side], kv_blocks=args.kv_blocks)
        env = sglang_endpoint_env()
        if side == "vanilla":
            env["VLLM_PLUGINS"] = ""  # none of the plugin's entry points load
        env["VLLM_CPU_OMP_THREADS_BIND"] = str(core)
        if side == "plugin" and trace_dir is not None:
            env.update(tracemalloc_env(trace_dir, args.tracemalloc_s, env.get("PYTHONPATH", "")))
        log = (log_dir / f"{side}.log").open("w")
        cmd = ["taskset", "-c", str(core % (os.cpu_count() or 1)), *cmd]
        contexts[side] = server_process(cmd, port, log, timeout_s=900, env=env)
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(len(contexts)) as pool:
        starts = {side: pool.submit(cm.__enter__) for side, cm in contexts.items()}
        started, failures = {}, []
        for side, start in starts.items():
            try:
                started[side] = start.result()
                stack.push(contexts[side])
            except RuntimeError as exc:
                tail = (log_dir / f"{side}.log").read_text()[-3000:]
                failures.append(f"{side} server: {exc}\n{tail}")
        if failures:
            raise RuntimeError("\n".join(failures))
        yield started


def _snapshot(base: str) -> dict[str, float]:
    return {
        "kv_cache_usage_perc": _metric(base, "vllm:kv_cache_usage_perc"),
        **{name.split(":")[1]: _metric(base, name + "_total") for name in COUNTERS},
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    trace_dir = Path(tempfile.mkdtemp(prefix="radix_soak_trace_")) if args.tracemalloc else None
    warmup_s = args.warmup if args.warmup is not None else max(60.0, 0.2 * args.duration)
    with servers(args, log_dir, trace_dir) as started:
        sides = {}
        for side, (base, _) in started.items():
            model = json.loads(urllib.request.urlopen(base + "/v1/models").read())["data"][0]
            sides[side] = Side(side, base, model["id"])
            _post(base, {"prompt": "warm up", "max_tokens": 4}, model["id"])
        before = {side: _snapshot(s.base) for side, s in sides.items()}
        pids = {side: popen.pid for side, (_, popen) in started.items()}
        with RssSampler(pids, args.rss_every) as sampler:
            start = time.monotonic()
            warm_wall = time.time() + warmup_s
            deadline = start + args.duration
            threads = [
                threading.Thread(target=s.client, args=(seed, deadline))
                for s in sides.values()
                for seed in range(args.concurrency)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.monotonic() - start
            drain = {side: _idle(s.base) for side, s in sides.items()}
        report: dict[str, Any] = {}
        for side, s in sides.items():
            still_busy = _busy(s.base)
            alive = started[side][1].poll() is None
            after_ok = _post(s.base, {"prompt": "still there?", "max_tokens": 4}, s.model)[0]
            report[side] = {
                "requests": sum(s.counts.values()) + sum("HTTP" not in e for e in s.errors),
                "by_kind_status": dict(sorted(s.counts.items())),
                "errors": len(s.errors),
                "error_samples": s.errors[:10],
                "stuck": s.stuck + int(still_busy),
                "drain_s": round(drain[side], 1),
                "idle_before": before[side],
                "idle_after": _snapshot(s.base),
                "server_alive": alive and after_ok == 200,
            }
    watchdog = watchdog_lines(log_dir / "plugin.log")
    memory = {}
    for side in SIDES:
        core = engine_core_pid(sampler.samples[side], sampler.names[side])
        memory[side] = {
            "processes": {str(pid): name for pid, name in sampler.names[side].items()},
            "engine_core_pid": core,
            "all_processes": slope_report(sampler.samples[side], warmup_s),
            "engine_core": slope_report(sampler.samples[side], warmup_s, key=core or ""),
        }
    result = {
        "machine": machine(),
        "model": args.model,
        "concurrency_per_side": args.concurrency,
        "max_num_seqs": args.max_num_seqs,
        "kv_blocks": args.kv_blocks,
        "duration_s": round(elapsed, 1),
        "warmup_s": warmup_s,
        "rss_every_s": args.rss_every,
        "sides": report,
        "watchdog_lines": len(watchdog),
        "watchdog_samples": [line[:2000] for line in watchdog[:5]],
        "memory": memory,
        "rss": sampler.samples,
    }
    if trace_dir is not None:
        result["tracemalloc"] = tracemalloc_diff(trace_dir, sampler.names["plugin"], warm_wall)
    return result


def watchdog_lines(log_path: Path) -> list[str]:
    """The plugin watchdog's lines in the server log (a stuck request, or a repaired one)."""
    with open(log_path, errors="replace") as log:
        return [line.rstrip() for line in log if LOG_PREFIX in line]


def failed(result: dict[str, Any]) -> list[str]:
    """What makes the soak fail (empty: it passed)."""
    problems = [f"{result['watchdog_lines']} watchdog lines"] if result["watchdog_lines"] else []
    for side, r in result["sides"].items():
        for key in ("errors", "stuck"):
            if r[key]:
                problems.append(f"{side}: {r[key]} {key}")
        if not r["server_alive"]:
            problems.append(f"{side}: server not serving at the end")
    return problems


def _slope_cell(report: dict[str, Any]) -> str:
    if report.get("slope_mib_per_min") is None:
        return "n/a (too few samples)"
    lo, hi = report["bootstrap_90"]
    windows = ", ".join(f"{w:+.2f}" for w in report["window_slopes"])
    return f"{report['slope_mib_per_min']:+.2f} [{lo:+.2f}, {hi:+.2f}] (windows: {windows})"


def markdown(result: dict[str, Any]) -> str:
    sides = result["sides"]
    mem = result["memory"]

    def row(label: str, get: Callable[[str], Any]) -> str:
        return f"| {label} | " + " | ".join(str(get(side)) for side in SIDES) + " |"

    kinds = sorted({k for side in SIDES for k in sides[side]["by_kind_status"]})
    kind_rows = "\n".join(
        row(k, lambda side, k=k: sides[side]["by_kind_status"].get(k, 0)) for k in kinds
    )
    traces = ""
    for proc in result.get("tracemalloc", []):
        lines = "\n".join(
            f"| `{g['where']}` | {g['size_diff_kib']} | {g['count_diff']} |"
            for g in proc["top_growth"]
        )
        traces += (
            f"\n### tracemalloc, plugin {proc['process']} (pid {proc['pid']}), "
            f"{proc['seconds_apart']} s apart, traced {proc['traced_mib'][0]} -> "
            f"{proc['traced_mib'][1]} MiB\n\n| where | KiB | blocks |\n|---|---|---|\n{lines}\n"
        )
    return f"""# Soak: plugin server and vanilla vLLM side by side

{result["machine"]}; model `{result["model"]}`, {result["concurrency_per_side"]} clients per
side (same seeds: the same requests), `--max-num-seqs {result["max_num_seqs"]}`,
{result["kv_blocks"]}-block KV pool, {result["duration_s"]} s of load; each server on its own
core (`taskset`, `VLLM_CPU_OMP_THREADS_BIND`). Plugin: the README's full setup (radix
scheduler, workflow eviction, host tier, jump-forward drafts) with the SGLang endpoint and
the watchdog; vanilla: no plugin (`VLLM_PLUGINS=""`). RSS of every server process every
{result["rss_every_s"]} s; slopes fitted after {result["warmup_s"]:.0f} s of warm-up (90%
bootstrap interval, then the slope of each fifth). `python benchmarks/soak.py --duration
{result["duration_s"]:.0f}`. Mid-stream disconnects count as `-1` (the client hung up by
design).

| | plugin | vanilla |
|---|---|---|
{row("requests", lambda s: sides[s]["requests"])}
{row("errors (5xx, 4xx on valid requests, transport)", lambda s: sides[s]["errors"])}
{row("stuck (client timeout, or still running after load)", lambda s: sides[s]["stuck"])}
{row("drain after load (s)", lambda s: sides[s]["drain_s"])}
{row("serving at the end", lambda s: sides[s]["server_alive"])}
{row("RSS after warm-up -> end, all processes (MiB)", lambda s: _ends(mem[s]["all_processes"]))}
{row("slope, all processes (MiB/min)", lambda s: _slope_cell(mem[s]["all_processes"]))}
{row("RSS after warm-up -> end, EngineCore (MiB)", lambda s: _ends(mem[s]["engine_core"]))}
{row("slope, EngineCore (MiB/min)", lambda s: _slope_cell(mem[s]["engine_core"]))}
{row("idle KV usage after", lambda s: f"{sides[s]['idle_after']['kv_cache_usage_perc']:.3f}")}

Watchdog lines in the plugin's log (`{LOG_PREFIX}`): {result["watchdog_lines"]}
{result["watchdog_samples"] or ""}

![RSS over time](soak_{result["name"]}.png)

| kind:status | plugin | vanilla |
|---|---|---|
{kind_rows}

Error samples: plugin {sides["plugin"]["error_samples"] or "none"};
vanilla {sides["vanilla"]["error_samples"] or "none"}
{traces}"""


def _ends(report: dict[str, Any]) -> str:
    if report.get("start_mib") is None:
        return "n/a"
    return f"{report['start_mib']} -> {report['end_mib']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--duration", type=float, default=300)
    parser.add_argument("--warmup", type=float, help="seconds (default: max(60, 20%%))")
    parser.add_argument("--concurrency", type=int, default=6, help="clients per side")
    parser.add_argument("--max-num-seqs", type=int, default=8)
    parser.add_argument("--kv-blocks", type=int, default=64)
    parser.add_argument("--rss-every", type=float, default=10.0)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--tracemalloc-s", type=float, default=60.0)
    parser.add_argument("--name", help="results name (default: <minutes>min)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--log-dir", default="/tmp/radix_soak_logs")
    args = parser.parse_args()
    psutil.Process().cpu_affinity()  # fails early where affinity (taskset) is unavailable
    result = run(args)
    result["name"] = args.name or f"{round(args.duration / 60)}min"
    out = write_results(args.out, f"soak_{result['name']}", result, markdown(result))
    plot(result, out / f"soak_{result['name']}.png")
    summary = {
        side: {k: v for k, v in r.items() if k != "by_kind_status"}
        for side, r in result["sides"].items()
    }
    print(
        json.dumps(
            {
                "sides": summary,
                "memory": {
                    side: {k: m[k] for k in ("all_processes", "engine_core")}
                    for side, m in result["memory"].items()
                },
            },
            indent=1,
        )
    )
    problems = failed(result)
    if problems:
        print("SOAK FAILED: " + "; ".join(problems), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
