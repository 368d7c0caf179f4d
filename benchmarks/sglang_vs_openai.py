"""The same regex-constrained JSON work through SGLang's frontend, vLLM's OpenAI
``/v1/completions`` and raw ``/generate`` posts, on ONE plugin server.

    python benchmarks/sglang_vs_openai.py [--model real] [--programs 32] [--parallel 16]
        [--repeats 5] [--out benchmarks/results]

Issue #24 asks what the SGLang endpoint itself costs. One vLLM + radix-plugin server (the
``radix_sglang`` endpoint plugin loaded) serves three clients in turn, each doing the same
work: ``--programs`` requests, ``--parallel`` at a time, each a shared instruction plus one
record's text and one greedy regex-constrained JSON object.

- ``frontend``: an ``sgl.function`` with ``sgl.gen(regex=...)`` run by ``run_batch``
  (``num_threads=--parallel``) on ``sgl.RuntimeEndpoint``: SGLang's own client, including
  the prefix it traces and pre-caches (one ``max_new_tokens: 0`` request) before the batch.
- ``openai``: ``/v1/completions`` with ``structured_outputs: {"regex": ...}``.
- ``raw``: ``/generate`` with the body the frontend sends for each program (no pre-cache).

``openai`` and ``raw`` post with the frontend's own HTTP call (``sglang.utils.http_request``,
urllib, one connection per request) from a pool of ``--parallel`` threads, so the three
differ only in what the server runs. Each repeat runs the three from a flushed prefix cache,
in an order that rotates per repeat; outputs and completion-token counts must be equal.
Reported: wall time and requests/s per client, and the ratios frontend/OpenAI and
raw/OpenAI (throughput: above 1 is faster than OpenAI), median and range over repeats.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from results_io import machine, model_choices, write_results
from sglang_side_by_side import PLUGIN_FLAGS  # the same plugin server as the SGLang benchmark

MAX_MODEL_LEN = 1024
INSTRUCTION = "Write the record below as one JSON object with the person's first name and age.\n"
"""Over 64 characters: the frontend traces it as the batch's prefix and pre-caches it."""
REGEX = r'\{"age": [1-9][0-9]?\}'
MAX_TOKENS = 16
NAMES = ("Alice", "Bruno", "Chen", "Dana", "Emil", "Farah", "Goran", "Hana", "Ivan", "Jonas")
CITIES = ("Lisbon", "Oslo", "Kyoto", "Quito", "Dakar", "Perth", "Tallinn", "Porto", "Lima")
CLIENTS = ("frontend", "openai", "raw")


def records(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        f"Record: {rng.choice(NAMES)}, {rng.randint(18, 90)}, {rng.choice(CITIES)}.\nJSON: "
        for _ in range(n)
    ]


@contextlib.contextmanager
def plugin_server(args: argparse.Namespace) -> Iterator[str]:
    from radix_plugin.testing.models import get_model_path
    from radix_plugin.testing.server import (
        free_port,
        server_command,
        server_process,
        sglang_endpoint_env,
    )

    port = free_port()
    cmd = server_command(
        get_model_path(args.model),
        port,
        [
            "--max-num-seqs",
            str(args.parallel),
            "--max-num-batched-tokens",
            "2048",
            *PLUGIN_FLAGS,
        ],
        kv_blocks=args.kv_blocks,
        max_model_len=MAX_MODEL_LEN,
    )
    env = {**sglang_endpoint_env(), "VLLM_CPU_OMP_THREADS_BIND": "0"}
    Path(args.log).parent.mkdir(parents=True, exist_ok=True)
    with Path(args.log).open("w") as log, server_process(cmd, port, log, 600, env) as (base, _):
        yield base


def post(url: str, body: dict) -> dict:
    """One POST with the SGLang frontend's own HTTP call; raises on a non-200."""
    from sglang.utils import http_request

    res = http_request(url, json=body)
    if res.status_code != 200:
        raise RuntimeError(f"{url}: {res.status_code} {res.json()}")
    return res.json()


def run_frontend(base: str, texts: list[str], parallel: int) -> list[tuple[str, int]]:
    import sglang as sgl

    @sgl.function
    def extract(s, record):
        s += INSTRUCTION + record
        s += sgl.gen("json", max_tokens=MAX_TOKENS, regex=REGEX)

    backend = sgl.RuntimeEndpoint(base)
    states = extract.run_batch(
        [{"record": t} for t in texts], backend=backend, temperature=0, num_threads=parallel
    )
    errors = [s.error() for s in states if s.error() is not None]
    if errors:
        raise RuntimeError(f"{len(errors)} programs failed: {errors[0]!r}")
    return [(s["json"], s.get_meta_info("json")["completion_tokens"]) for s in states]


@contextlib.contextmanager
def frontend_posts() -> Iterator[list[dict]]:
    """The JSON bodies ``RuntimeEndpoint`` posts to ``/generate`` while the block runs."""
    from sglang.lang.backend import runtime_endpoint

    original, sent = runtime_endpoint.http_request, []

    def recording(url: str, json: Any = None, **kwargs: Any) -> Any:
        if url.endswith("/generate") and json is not None:
            sent.append(json)
        return original(url, json=json, **kwargs)

    runtime_endpoint.http_request = recording
    try:
        yield sent
    finally:
        runtime_endpoint.http_request = original


def frontend_body(text: str) -> dict:
    """What ``RuntimeEndpoint.generate`` posts for the program's ``sgl.gen`` (``measure``
    checks it against the bodies the frontend posts in the warm-up)."""
    from sglang.lang.global_config import global_config
    from sglang.lang.ir import SglSamplingParams

    params = SglSamplingParams(max_new_tokens=MAX_TOKENS, temperature=0, regex=REGEX)
    return {
        "text": INSTRUCTION + text,
        "sampling_params": {
            "skip_special_tokens": global_config.skip_special_tokens_in_output,
            "spaces_between_special_tokens": global_config.spaces_between_special_tokens_in_out,
            **params.to_srt_kwargs(),
        },
    }


def run_raw(base: str, texts: list[str], parallel: int) -> list[tuple[str, int]]:
    def one(text: str) -> tuple[str, int]:
        obj = post(base + "/generate", frontend_body(text))
        return obj["text"], obj["meta_info"]["completion_tokens"]

    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(one, texts))


def run_openai(base: str, texts: list[str], parallel: int, model: str) -> list[tuple[str, int]]:
    def one(text: str) -> tuple[str, int]:
        body = {
            "model": model,
            "prompt": INSTRUCTION + text,
            "max_tokens": MAX_TOKENS,
            "temperature": 0,
            "structured_outputs": {"regex": REGEX},
        }
        obj = post(base + "/v1/completions", body)
        return obj["choices"][0]["text"], obj["usage"]["completion_tokens"]

    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(one, texts))


def timed(run: Callable[[], list[tuple[str, int]]], base: str) -> tuple[float, list]:
    import requests

    requests.post(base + "/flush_cache", timeout=60).raise_for_status()
    start = time.perf_counter()
    out = run()
    return time.perf_counter() - start, out


def measure(
    args: argparse.Namespace, base: str, started: float, on_repeat: Callable[[list[dict]], None]
) -> list[dict]:
    """Warm-up, then up to ``--repeats`` repeats while the run stays within ``--budget-s``
    (counted from ``started``, the server's start); ``on_repeat`` gets the repeats so far."""
    import requests

    model = requests.get(base + "/v1/models", timeout=30).json()["data"][0]["id"]
    texts = records(args.programs, args.seed)
    runs: dict[str, Callable[[list[str]], list[tuple[str, int]]]] = {
        "frontend": lambda ts: run_frontend(base, ts, args.parallel),
        "openai": lambda ts: run_openai(base, ts, args.parallel, model),
        "raw": lambda ts: run_raw(base, ts, args.parallel),
    }
    warm = records(args.parallel, args.seed + 1000)
    with frontend_posts() as sent:  # grammar compilation, first-request paths: not timed
        runs["frontend"](warm)
    generations = [b for b in sent if b["sampling_params"].get("max_new_tokens") != 0]
    expected = [frontend_body(t) for t in warm]
    if sorted(map(json.dumps, generations)) != sorted(map(json.dumps, expected)):
        raise SystemExit(f"raw bodies differ from the frontend's: {generations[0]} {expected[0]}")
    for name in ("openai", "raw"):
        runs[name](warm[:2])
    repeats: list[dict] = []
    for r in range(args.repeats):
        spent = time.monotonic() - started
        if repeats and spent + spent / (len(repeats) + 1) > args.budget_s:
            print(f"stopping after {len(repeats)} repeats: --budget-s", file=sys.stderr)
            break
        order = CLIENTS[r % 3 :] + CLIENTS[: r % 3]
        walls, outs = {}, {}
        for name in order:
            walls[name], outs[name] = timed(lambda n=name: runs[n](texts), base)
            print(f"repeat {r}: {name} {walls[name]:.2f} s", file=sys.stderr, flush=True)
        same = {name: outs[name] == outs["openai"] for name in CLIENTS}
        repeats.append(
            {
                "order": list(order),
                "wall_s": walls,
                "completion_tokens": {n: sum(t for _, t in outs[n]) for n in CLIENTS},
                "same_as_openai": same,
                "example": outs["openai"][0][0],
            }
        )
        on_repeat(repeats)
    return repeats


def summary(repeats: list[dict], programs: int) -> dict:
    per_s = {n: [programs / r["wall_s"][n] for r in repeats] for n in CLIENTS}
    ratios = {
        f"{n}/openai": [r["wall_s"]["openai"] / r["wall_s"][n] for r in repeats]
        for n in ("frontend", "raw")
    }

    def stats(values: list[float]) -> dict:
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    return {
        "requests_per_s": {n: stats(v) for n, v in per_s.items()},
        "wall_s": {n: stats([r["wall_s"][n] for r in repeats]) for n in CLIENTS},
        "ratios": {k: {**stats(v), "values": v} for k, v in ratios.items()},
        "all_outputs_equal": all(all(r["same_as_openai"].values()) for r in repeats),
    }


def markdown(meta: dict, repeats: list[dict], s: dict) -> str:
    lines = [
        "# Same regex JSON work: SGLang frontend vs OpenAI /v1/completions vs raw /generate",
        "",
        f"Model `{meta['model']}` on {meta['machine']}; SGLang {meta['sglang']} frontend; one "
        f"vLLM + radix-plugin server ({' '.join(meta['server_flags'])}). {meta['programs']} "
        f"requests, {meta['parallel']} in parallel, {meta['repeats']} repeats (order rotating, "
        "flushed prefix cache before each client).",
        "",
        f"Command: `{meta['command']}`",
        "",
        "| client | requests/s median | min | max | wall s median |",
        "|---|---|---|---|---|",
    ]
    for n in CLIENTS:
        q = s["requests_per_s"][n]
        lines.append(
            f"| {n} | {q['median']:.3f} | {q['min']:.3f} | {q['max']:.3f} | "
            f"{s['wall_s'][n]['median']:.2f} |"
        )
    lines += [
        "",
        "| ratio (throughput) | median | worst | best | per repeat |",
        "|---|---|---|---|---|",
    ]
    for k, v in s["ratios"].items():
        per = ", ".join(f"{x:.3f}" for x in v["values"])
        lines.append(
            f"| {k} | **{v['median']:.3f}x** | {v['min']:.3f}x | {v['max']:.3f}x | {per} |"
        )
    tokens = repeats[0]["completion_tokens"]
    lines += [
        "",
        f"Outputs identical to OpenAI's in every repeat: {s['all_outputs_equal']}; completion "
        f"tokens per run: {tokens}. Example output: `{repeats[0]['example']}`",
    ]
    if meta.get("note"):
        lines += ["", meta["note"]]
    return "\n".join(lines)


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="real", choices=model_choices())
    ap.add_argument("--programs", type=int, default=32)
    ap.add_argument("--parallel", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--kv-blocks", type=int, default=128, help="32-token blocks in the KV pool")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log", default="/tmp/sglang_vs_openai/server.log")
    ap.add_argument("--out", default=None, help="write NAME.json and NAME.md here")
    ap.add_argument("--name", default=None, help="default: sglang_vs_openai_MODEL_cpu")
    ap.add_argument("--note", default="", help="a line added to the markdown")
    ap.add_argument(
        "--budget-s",
        type=float,
        default=420,
        help="start no repeat that would end past this many seconds after the server's start",
    )
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server on SIGTERM
    started = time.monotonic()
    with plugin_server(args) as base:
        repeats = measure(args, base, started, lambda done: report(args, argv, done))
    return 0 if summary(repeats, args.programs)["all_outputs_equal"] else 1


def report(args: argparse.Namespace, argv: list[str], repeats: list[dict]) -> None:
    """Print and (with ``--out``) write the result of the repeats so far."""
    s = summary(repeats, args.programs)
    meta = {
        "model": args.model,
        "programs": args.programs,
        "parallel": args.parallel,
        "repeats": len(repeats),
        "kv_blocks": args.kv_blocks,
        "regex": REGEX,
        "max_tokens": MAX_TOKENS,
        "server_flags": PLUGIN_FLAGS,
        "sglang": _version("sglang"),
        "machine": machine(),
        "command": "python benchmarks/sglang_vs_openai.py " + " ".join(argv),
        "note": args.note,
    }
    md = markdown(meta, repeats, s)
    print(md)
    if args.out:
        name = args.name or f"sglang_vs_openai_{args.model}_cpu"
        write_results(args.out, name, {"meta": meta, "summary": s, "repeats": repeats}, md)


if __name__ == "__main__":
    raise SystemExit(main())
