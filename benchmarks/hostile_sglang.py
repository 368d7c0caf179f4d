"""Hostile SGLang clients against a real server: every case of
``radix_plugin.testing.sglang_hostile`` in turn, while a well-behaved client keeps sending
short requests; then hundreds of mid-stream disconnects, and an SGLang program through
``sgl.RuntimeEndpoint`` at the end.

For each case: the status code, the error's ``param``, the latency, whether the answer is
what a correct server gives (a 4xx naming the field, or a 200 for valid input), the
longest latency the well-behaved client saw meanwhile, and the server's RSS change.
Written to benchmarks/results/hostile_sglang.{json,md}.

    python benchmarks/hostile_sglang.py [--model real] [--base http://host:port]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import machine, write_results

from radix_plugin.testing.sglang_hostile import (
    CASES,
    Bystander,
    check,
    disconnect_streams,
    normal,
    post,
    wait_drained,
)

CUT_WHEN = {True: "streams cut after the first chunk", False: "requests cut after sending"}
FLAGS_NOTE = "radix scheduler, workflow eviction, host tier, jump-forward drafts (K=8)"


def rss_mib(pid: int | None) -> float:
    if pid is None:
        return 0.0
    proc = psutil.Process(pid)
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return round(total / 2**20, 1)


def run_cases(base: str, pid: int | None) -> dict[str, Any]:
    rows = []
    with Bystander(base) as bystander:
        time.sleep(3)
        baseline = [s[1] for s in bystander.samples if s[2] == 200]
        for case in CASES:
            body = case.make()
            before = rss_mib(pid)
            start = time.monotonic()
            reply = post(base, body, timeout=300)
            end = time.monotonic()
            time.sleep(0.3)  # let a request that overlapped the end finish
            worst, failed = bystander.worst_between(start, end)
            error = reply.error()
            rows.append(
                {
                    "case": case.name,
                    "group": case.group,
                    "expect": case.expect if case.param is None else f"4xx {case.param}",
                    "status": reply.status,
                    "param": error.get("param"),
                    "message": (error.get("message") or "")[:160],
                    "seconds": round(reply.seconds, 3),
                    "body_bytes": len(body),
                    "problem": check(case, reply),
                    "bystander_worst_s": round(worst, 3),
                    "bystander_failed": failed,
                    "rss_delta_mib": round(rss_mib(pid) - before, 1),
                }
            )
            print(f"{rows[-1]['status']} {rows[-1]['seconds']:7.2f}s  {case.name}", flush=True)
        drained = disconnects(base, bystander)
    return {
        "bystander_baseline_s": round(statistics.median(baseline), 3) if baseline else None,
        "cases": rows,
        "disconnects": drained,
    }


def disconnects(base: str, bystander: Bystander) -> list[dict[str, Any]]:
    out = []
    for count, read_first in ((200, True), (200, False)):
        start = time.monotonic()
        accepted = disconnect_streams(base, count, read_first=read_first)
        hung_up = time.monotonic()
        drain_s, left = wait_drained(base, timeout_s=120)
        worst, failed = bystander.worst_between(start, time.monotonic())
        out.append(
            {
                "case": f"{count} {CUT_WHEN[read_first]}",
                "accepted": accepted,
                "open_s": round(hung_up - start, 2),
                "drained_s": round(drain_s, 2),
                "left_in_flight": left,
                "bystander_worst_s": round(worst, 3),
                "bystander_failed": failed,
            }
        )
        print(out[-1], flush=True)
    return out


def program_after(base: str) -> dict[str, Any]:
    """An SGLang program (gen + select + regex gen) through sgl.RuntimeEndpoint."""
    import sglang as sgl

    @sgl.function
    def quiz(s):
        s += "Q: What is the capital of France?\nA:"
        s += sgl.gen("answer", max_tokens=8, stop="\n", temperature=0)
        s += "\nIs that right? " + sgl.select("verdict", choices=["yes", "no"])
        s += "\nA number: " + sgl.gen("n", max_tokens=4, regex=r"[0-9]{1,3}", temperature=0)

    start = time.monotonic()
    state = quiz.run(backend=sgl.RuntimeEndpoint(base))
    return {
        "seconds": round(time.monotonic() - start, 2),
        "answer": state["answer"],
        "verdict": state["verdict"],
        "number": state["n"],
        "ok": state["verdict"] in ("yes", "no") and state["n"].isdigit(),
    }


def markdown(result: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {r['case'].replace('|', '/')} | {r['expect']} | {r['status']} | {r['param'] or ''} "
        f"| {r['seconds']} | {r['bystander_worst_s']} | {r['rss_delta_mib']} "
        f"| {'ok' if not r['problem'] else 'FAIL'} |"
        for r in result["cases"]
    )
    cuts = "\n".join(
        f"| {d['case']} | {d['accepted']} | {d['drained_s']} | {d['left_in_flight']} "
        f"| {d['bystander_worst_s']} |"
        for d in result["disconnects"]
    )
    failed = [r["case"] for r in result["cases"] if r["problem"]]
    failed_note = ": " + ", ".join(failed) if failed else ""
    rss = f"{result['rss_before_mib']} -> {result['rss_after_mib']} MiB"
    program = result["program"]
    return f"""# Hostile SGLang clients

{result["machine"]}; model `{result["model"]}`; server: {FLAGS_NOTE}, SGLang endpoint
(`radix_sglang`), 8 sequences, 256 KV blocks of 32, context 2048. Each case is one request,
sent while a well-behaved client keeps asking for 4 tokens (its median latency alone:
{result["bystander_baseline_s"]} s; "bystander worst" is its longest request overlapping the
case). {len(result["cases"])} cases, {len(failed)} not answered as expected{failed_note}.
`python benchmarks/hostile_sglang.py` ({result["duration_s"]} s).

| case | expected | status | error.param | seconds | bystander worst (s) | RSS change (MiB) | |
|---|---|---|---|---|---|---|---|
{rows}

| disconnects | accepted | drained after (s) | left in flight | bystander worst (s) |
|---|---|---|---|---|
{cuts}

Afterwards an SGLang program (gen, select, regex gen) through `sgl.RuntimeEndpoint`:
{"ran" if program["ok"] else "FAILED"} in {program["seconds"]} s (verdict {program["verdict"]!r},
number {program["number"]!r}). Server RSS {rss}.
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="real")
    parser.add_argument("--base", help="an already running server (not recorded)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--log", default="/tmp/radix_hostile_sglang_server.log")
    args = parser.parse_args()
    t0 = time.monotonic()
    if args.base:
        result = run_cases(args.base, None)
        result["program"] = program_after(args.base)
        print(json.dumps(result["program"]))
        return 0
    from radix_plugin.testing.models import get_model_path
    from radix_plugin.testing.server import (
        free_port,
        full_plugin_flags,
        server_command,
        server_process,
        sglang_endpoint_env,
    )

    port = free_port()
    cmd = server_command(
        get_model_path(args.model), port, full_plugin_flags(), kv_blocks=256, max_model_len=2048
    )
    with (
        open(args.log, "w") as log,
        server_process(cmd, port, log, 600, sglang_endpoint_env()) as (base, popen),
    ):
        normal(base)
        before = rss_mib(popen.pid)
        result = run_cases(base, popen.pid)
        result["program"] = program_after(base)
        result["rss_before_mib"], result["rss_after_mib"] = before, rss_mib(popen.pid)
        result["server_alive"] = popen.poll() is None
    result.update(machine=machine(), model=args.model, duration_s=round(time.monotonic() - t0))
    write_results(args.out, "hostile_sglang", result, markdown(result))
    bad = [r for r in result["cases"] if r["problem"]]
    return 1 if bad or not result["program"]["ok"] or not result["server_alive"] else 0


if __name__ == "__main__":
    sys.exit(main())
