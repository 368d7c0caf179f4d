"""`make demo`: vanilla vLLM vs vLLM + radix_plugin on a real engine, side by side.

    python benchmarks/demo.py [--model real|small|tiny] [--out-dir demo-output]

Each side is one engine in its own child process (vanilla vLLM with prefix caching; the
same engine with ``scheduler_cls="radix_plugin.RadixScheduler"``), running in turn:

1. two chat questions, greedy, on the `real` model (SmolLM2-135M-Instruct): the plugin
   changes what is cached and which request runs when, not the text;
2. shared prefixes under KV pressure: groups of requests sharing a long prefix arrive
   interleaved into a pool that holds only a few groups (prefix-cache hit ratio,
   throughput, time to first token);
3. JSON output against a schema of long keys (xgrammar on both sides; the plugin's
   jump-forward appends the tokens the grammar forces without a model step).

The terminal shows one status line per side and the tables; the engines' own output (vLLM
logs, kernel messages) goes to ``OUT_DIR/demo.log``. The run ends with ``OUT_DIR/demo.png``
(the plugin/vanilla ratios) and ``demo.json`` / ``demo.md``. Sized to finish within 5
minutes after set-up on 2 cores (71 s on an AMX Xeon in bf16, 148 s there with oneDNN and
ATen held to AVX2 in float32, as an AVX2-only CPU runs it); the full benchmarks
are ``engine_side_by_side.py``, ``structured_side_by_side.py`` and
``workflow_side_by_side.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from engine_side_by_side import PLUGIN_ARGS
from quiet_child import Reporter, SideFailed, run_quiet
from results_io import DTYPE_HELP, machine, model_choices, resolve_dtype
from structured_side_by_side import XGRAMMAR

QUESTIONS = ("What is the capital of Japan?", "What is 2 + 3?")
ANSWER_TOKENS = 40
# Shared prefixes: 6 groups x 5 requests, 512-token prefixes; 64 blocks of 32 tokens hold
# about 3 groups (an engine needs ceil(max_model_len / 32) + 1 = 33 blocks at least).
PREFIX = {"scale": 0.5, "prefix_tokens": 512, "siblings": 5, "kv_blocks": 64}
STRUCTURED = {"workload": "key_heavy", "requests": 8, "batch": 8}
MAX_MODEL_LEN = 1024
SIDES = {
    "vanilla": ("vanilla vLLM", {"structured_outputs_config": XGRAMMAR}),
    "plugin": ("vLLM + plugin", {**PLUGIN_ARGS, "structured_outputs_config": XGRAMMAR}),
}


# --- the child: one engine, three steps ----------------------------------------------


def make_engine(model: str, side: str, dtype: str) -> Any:
    from vllm import LLM

    from radix_plugin.testing.engine import cpu_llm_kwargs

    kwargs = cpu_llm_kwargs(
        model,
        max_model_len=MAX_MODEL_LEN,
        block_size=32,
        max_num_seqs=16,
        num_kv_blocks=PREFIX["kv_blocks"],
        enable_prefix_caching=True,
        max_num_batched_tokens=2048,
        dtype=dtype,
        **SIDES[side][1],
    )
    return LLM(**kwargs)


def chat_answers(llm: Any, report: Reporter) -> list[str]:
    """Greedy chat answers with the model's own chat template."""
    from vllm import SamplingParams

    report.progress("chat answers", 0, len(QUESTIONS))
    params = SamplingParams(temperature=0.0, max_tokens=ANSWER_TOKENS)
    conversations = [[{"role": "user", "content": q}] for q in QUESTIONS]
    outs = llm.chat(conversations, params, use_tqdm=False)
    report.progress("chat answers", len(outs), len(QUESTIONS))
    return [" ".join(out.outputs[0].text.split()) for out in outs]


def shared_prefixes(llm: Any, report: Reporter) -> dict[str, float]:
    from engine_side_by_side import vocab_size
    from engine_workloads import count_requests, prefix_groups_kv_pressure, run

    workload = prefix_groups_kv_pressure(vocab_size(llm), **PREFIX)
    total, step = count_requests(workload), "shared prefixes under KV pressure"
    report.progress(step, 0, total)
    assert llm.reset_prefix_cache()
    return run(llm, workload, lambda n: report.progress(step, n, total)).to_dict()


def structured(llm: Any, side: str, report: Reporter) -> dict[str, Any]:
    from structured_side_by_side import run_once

    name = "vanilla_xgrammar" if side == "vanilla" else "plugin_jump_forward"
    n, step = STRUCTURED["requests"], "JSON output (jump-forward)"
    run_once(llm, name, STRUCTURED["workload"], 2, 2)  # warm-up: grammar compile, first steps
    report.progress(step, 0, n)
    assert llm.reset_prefix_cache()
    return run_once(
        llm,
        name,
        STRUCTURED["workload"],
        n,
        STRUCTURED["batch"],
        lambda k: report.progress(step, k, n),
    )


def run_child(side: str, model: str, dtype: str) -> None:
    report = Reporter()
    report.progress("loading the engine", 0, 1, "engine")
    t0 = time.perf_counter()
    llm = make_engine(model, side, dtype)
    result: dict[str, Any] = {"engine_start_s": time.perf_counter() - t0}
    result["answers"] = chat_answers(llm, report) if model == "real" else []
    result["prefix"] = shared_prefixes(llm, report)
    result["structured"] = structured(llm, side, report)
    report.result(result)


# --- the parent: sides in turn, then tables and the picture --------------------------


def ratios(v: dict[str, Any], p: dict[str, Any]) -> dict[str, float]:
    """plugin/vanilla, each oriented so that higher is better for the plugin."""
    return {
        "shared prefixes: throughput": p["prefix"]["throughput_tok_s"]
        / v["prefix"]["throughput_tok_s"],
        "shared prefixes: mean time to first token (speed-up)": v["prefix"]["ttft_mean_s"]
        / p["prefix"]["ttft_mean_s"],
        "JSON output: requests/s": p["structured"]["requests_per_s"]
        / v["structured"]["requests_per_s"],
        "JSON output: model steps per request (fewer)": v["structured"]["steps_per_request"]
        / p["structured"]["steps_per_request"],
    }


def table(rows: list[list[str]], markdown: bool = False) -> str:
    head = ["", "vanilla vLLM", "vLLM + plugin", "plugin / vanilla"]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|---|---|---|---|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    return "\n".join(
        "  ".join(
            [r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True))]
        ).rstrip()
        for r in [head, *rows]
    )


def prefix_rows(v: dict[str, float], p: dict[str, float]) -> list[list[str]]:
    return [
        ["prefix-cache hit ratio", f"{v['hit_ratio']:.2f}", f"{p['hit_ratio']:.2f}", ""],
        [
            "throughput, tokens/s",
            f"{v['throughput_tok_s']:.0f}",
            f"{p['throughput_tok_s']:.0f}",
            f"{p['throughput_tok_s'] / v['throughput_tok_s']:.2f}x",
        ],
        [
            "mean time to first token, s",
            f"{v['ttft_mean_s']:.2f}",
            f"{p['ttft_mean_s']:.2f}",
            f"{v['ttft_mean_s'] / p['ttft_mean_s']:.2f}x faster",
        ],
        ["wall time, s", f"{v['wall_s']:.1f}", f"{p['wall_s']:.1f}", ""],
    ]


def structured_rows(v: dict[str, Any], p: dict[str, Any]) -> list[list[str]]:
    return [
        [
            "requests/s",
            f"{v['requests_per_s']:.2f}",
            f"{p['requests_per_s']:.2f}",
            f"{p['requests_per_s'] / v['requests_per_s']:.2f}x",
        ],
        [
            "model steps per request",
            f"{v['steps_per_request']:.0f}",
            f"{p['steps_per_request']:.0f}",
            f"{v['steps_per_request'] / p['steps_per_request']:.2f}x fewer",
        ],
        [
            "valid JSON",
            f"{v['valid_outputs']}/{v['grammar_requests']}",
            f"{p['valid_outputs']}/{p['grammar_requests']}",
            "",
        ],
    ]


def plot(r: dict[str, float], hits: tuple[float, float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(r)
    labels[0] += f"\n(hit ratio {hits[0]:.2f} vanilla, {hits[1]:.2f} plugin)"
    fig, ax = plt.subplots(figsize=(9, 3.8))
    bars = ax.barh(labels[::-1], list(r.values())[::-1], color="tab:green")
    ax.bar_label(bars, fmt="%.2fx", padding=3)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("vLLM + radix_plugin / vanilla vLLM (higher is better; 1.0 = same)")
    ax.set_xlim(0, max(r.values()) * 1.18)
    fig.suptitle("\n".join(textwrap.wrap(title, 100)), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def side_summary(result: dict[str, Any]) -> str:
    prefix, struct = result["prefix"], result["structured"]
    return (
        f"done: {int(prefix['requests'])} shared-prefix requests "
        f"(hit ratio {prefix['hit_ratio']:.2f}), {struct['requests']} JSON requests"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="real", choices=model_choices())
    ap.add_argument("--out-dir", default="demo-output", help="log, results and picture")
    ap.add_argument("--dtype", default="native", help=DTYPE_HELP)
    ap.add_argument("--child", choices=list(SIDES), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    dtype = resolve_dtype(args.dtype)  # native: emulated bf16 is 3.4x slower without it
    if args.child:
        run_child(args.child, args.model, dtype)
        return 0
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "demo.log"
    log.write_text("")
    t0 = time.perf_counter()
    print(f"vanilla vLLM vs vLLM + radix_plugin, `{args.model}` model ({dtype}), one at a time")
    print(f"engine logs: {log}")
    results = {}
    for side, (label, _) in SIDES.items():
        cmd = [sys.executable, __file__, "--model", args.model, "--dtype", dtype, "--child", side]
        try:
            results[side] = run_quiet(cmd, log, label, summarize=side_summary)
        except SideFailed as exc:
            print(exc, file=sys.stderr)
            return 1
    v, p = results["vanilla"], results["plugin"]
    sections = []
    if v["answers"]:
        qa = ["Chat answers (greedy):"]
        for q, a_v, a_p in zip(QUESTIONS, v["answers"], p["answers"], strict=True):
            same = "same text on both" if a_v == a_p else f"plugin: {a_p}"
            qa += [f"  Q: {q}", f"  A: {a_v}", f"     ({same})"]
        sections.append("\n".join(qa))
    prefix_title = (
        f"Shared prefixes under KV pressure: {int(v['prefix']['requests'])} requests in groups "
        f"sharing a {PREFIX['prefix_tokens']}-token prefix, arriving interleaved; the KV pool "
        f"({PREFIX['kv_blocks']} blocks of 32 tokens) holds about 3 groups"
    )
    struct_title = (
        f"JSON output, schema with long keys: {STRUCTURED['requests']} requests, "
        f"{STRUCTURED['batch']} at a time (xgrammar both sides; plugin: jump-forward)"
    )
    prefix_table = prefix_rows(v["prefix"], p["prefix"])
    struct_table = structured_rows(v["structured"], p["structured"])
    for title, rows in ((prefix_title, prefix_table), (struct_title, struct_table)):
        sections.append(f"{title}\n{table(rows)}")
    print("\n" + "\n\n".join(sections))
    r = ratios(v, p)
    where = machine()
    png = out / "demo.png"
    title = f"make demo, `{args.model}` model ({dtype}), measured in this run: {where}"
    plot(r, (v["prefix"]["hit_ratio"], p["prefix"]["hit_ratio"]), png, title)
    meta = {
        "model": args.model,
        "dtype": dtype,
        "machine": where,
        "wall_s": time.perf_counter() - t0,
    }
    payload = {"meta": meta, "prefix": PREFIX, "structured": STRUCTURED, "ratios": r, **results}
    (out / "demo.json").write_text(json.dumps(payload, indent=1))
    md = [
        "# make demo: vanilla vLLM vs vLLM + radix_plugin",
        "",
        f"{meta}",
        "",
        prefix_title,
        "",
        table(prefix_table, markdown=True),
        "",
        struct_title,
        "",
        table(struct_table, markdown=True),
    ]
    (out / "demo.md").write_text("\n".join(md) + "\n")
    print(f"\npicture of the ratios: {png}  (tables: {out / 'demo.md'})")
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
