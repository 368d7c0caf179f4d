"""``radix-plugin simulate``: a capacity planner over the user's own request log.

    radix-plugin simulate LOG [--format auto|mooncake|openai] [--model DIR]
        (--kv-sizes 1GiB,4GiB | --kv-blocks 2000,8000) [--policies vllm,lru,...]
        [--block-size N] [--concurrency W] [--plot hit_ratio.png] [--json OUT]

Replays the log once per KV size and policy through the simulator (vLLM's own KV cache
manager for ``vllm``, the plugin's radix tree for the others) and prints, per size, each
policy's prefix-cache hit ratio and the prefill tokens it saves, beside the exact optimum
(``belady``: evicts the block used farthest in the future), then draws hit ratio against KV
size. Bad lines are reported with their line numbers and skipped; the rest still counts.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from radix_plugin.cache_manager.core.registry import eviction_policy_names
from radix_plugin.simulator.kv_size import (
    KvSize,
    KvSizeError,
    bytes_per_block,
    kv_sizes,
    load_model_config,
)
from radix_plugin.simulator.planner import (
    DEFAULT_POLICIES,
    OPTIMUM,
    PlanCell,
    largest_request_blocks,
    plan,
    plan_table,
)
from radix_plugin.simulator.request_log import (
    FORMATS,
    RequestLog,
    UnknownFormatError,
    detect_format,
    load_request_log,
    load_tokenizer,
)
from radix_plugin.simulator.trace import TraceRequest

DEFAULT_BLOCK_SIZE = {"mooncake": 512, "openai": 16}
"""Mooncake's published traces hash 512-token blocks; 16 is vLLM's block size on GPU."""
SHOWN_ERRORS = 10


class UsageError(Exception):
    """A bad argument or input; printed as ``error: ...`` with exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="radix-plugin", description="radix-plugin tools")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "simulate",
        help="replay a request log for several KV sizes and eviction policies",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("log", help="request log, JSON lines")
    p.add_argument("--format", default="auto", choices=["auto", *FORMATS])
    p.add_argument(
        "--model",
        help="local model directory: its tokenizer (openai format) and config.json (--kv-sizes)",
    )
    p.add_argument("--tokenizer", help="tokenizer directory, if not the --model one")
    p.add_argument(
        "--block-size",
        type=int,
        help="tokens per KV block (default: 512 for mooncake, the traces' hash block; 16 "
        "for openai, vLLM's GPU default)",
    )
    p.add_argument("--kv-sizes", help="KV cache sizes in bytes, e.g. 512MiB,2GiB,8GiB")
    p.add_argument("--kv-blocks", help="KV cache sizes in blocks, e.g. 1000,4000")
    p.add_argument("--kv-dtype", default="auto", help="KV cache dtype (auto: the model's)")
    p.add_argument("--bytes-per-block", type=int, help="instead of the model's config.json")
    p.add_argument(
        "--policies",
        default=",".join(DEFAULT_POLICIES),
        help="vllm (vanilla vLLM) and plugin eviction policies; belady is always shown",
    )
    p.add_argument("--concurrency", type=int, default=1, help="requests in flight at once")
    p.add_argument(
        "--output-tokens",
        type=int,
        default=0,
        help="openai format: output tokens of a line without output/output_length",
    )
    p.add_argument("--limit", type=int, help="replay only the first N requests")
    p.add_argument("--plot", default="hit_ratio.png", help="PNG of hit ratio against KV size")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--json", help="write every cell as JSON here")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return simulate(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def simulate(args: argparse.Namespace) -> int:
    policies = _policies(args.policies)
    if args.concurrency < 1:
        raise UsageError(f"--concurrency must be >= 1, got {args.concurrency}")
    fmt = _format(args.log, args.format)
    block_size = args.block_size or DEFAULT_BLOCK_SIZE[fmt]
    if block_size < 1:
        raise UsageError(f"--block-size must be >= 1, got {block_size}")
    sizes = _sizes(args, block_size)
    log = _load(args, fmt, block_size)
    _report_errors(log)
    if not log.requests:
        raise UsageError(f"{args.log}: no request could be read")
    trace = log.requests
    sizes = _fitting(sizes, trace, block_size)
    print(
        f"{len(trace):,} requests from {args.log} ({fmt}), {sum(r.input_length for r in trace):,}"
        f" prompt tokens, block size {block_size}, concurrency {args.concurrency}"
    )
    with _bar(len(trace) * len(sizes) * (len(policies) + 1), "replay", args) as bar:
        cells = plan(trace, block_size, sizes, policies, args.concurrency, _ticker(bar))
    print(plan_table(cells))
    if args.json:
        _write_json(args, fmt, block_size, log, cells)
        print(f"results: {args.json}")
    if not args.no_plot:
        _plot(cells, args.plot, f"{Path(args.log).name}: {len(trace):,} requests ({fmt})")
        print(f"hit ratio against KV size: {args.plot}")
    return 0


def _policies(text: str) -> list[str]:
    policies = [p.strip() for p in text.split(",") if p.strip()]
    valid = ["vllm", *eviction_policy_names()]
    bad = [p for p in policies if p not in valid]
    if bad or not policies:
        raise UsageError(f"unknown policy {bad or text!r}; valid choices: {', '.join(valid)}")
    return [p for p in dict.fromkeys(policies) if p != OPTIMUM]


def _format(path: str, fmt: str) -> str:
    if not Path(path).is_file():
        raise UsageError(f"no such file: {path}")
    try:
        return detect_format(path) if fmt == "auto" else fmt
    except UnknownFormatError as exc:
        raise UsageError(str(exc)) from None


def _sizes(args: argparse.Namespace, block_size: int) -> list[KvSize]:
    try:
        per_block = args.bytes_per_block
        if per_block is None and args.kv_sizes and args.model:
            config = load_model_config(args.model)
            per_block = bytes_per_block(config, block_size, args.kv_dtype)
        if per_block is not None and per_block < 1:
            raise UsageError(f"--bytes-per-block must be >= 1, got {per_block}")
        return kv_sizes(args.kv_sizes, args.kv_blocks, per_block)
    except KvSizeError as exc:
        raise UsageError(str(exc)) from None


def _load(args: argparse.Namespace, fmt: str, block_size: int) -> RequestLog:
    tokenizer = None
    if fmt == "openai":
        source = args.tokenizer or args.model
        if source is None:
            raise UsageError("the openai format needs the model's tokenizer: --model DIR")
        try:
            tokenizer = load_tokenizer(source)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot load a tokenizer from {source}: {exc}") from None
    with _bar(Path(args.log).stat().st_size, "read", args, unit="B") as bar:
        return load_request_log(
            args.log,
            fmt,
            block_size,
            tokenizer=tokenizer,
            output_tokens=args.output_tokens,
            limit=args.limit,
            on_bytes=bar.update,
        )


def _report_errors(log: RequestLog) -> None:
    if not log.errors:
        return
    print(f"{len(log.errors)} bad line(s) skipped, the rest still counts:", file=sys.stderr)
    for err in log.errors[:SHOWN_ERRORS]:
        print(f"  line {err.line}: {err.message}", file=sys.stderr)
    if len(log.errors) > SHOWN_ERRORS:
        print(f"  ... and {len(log.errors) - SHOWN_ERRORS} more", file=sys.stderr)


def _fitting(sizes: list[KvSize], trace: list[TraceRequest], block_size: int) -> list[KvSize]:
    """Sizes that hold the largest request; the others are named and dropped."""
    need = largest_request_blocks(trace, block_size)
    small = [s for s in sizes if s.blocks < need]
    if small:
        names = ", ".join(f"{s.label} ({s.blocks:,} blocks)" for s in small)
        print(f"skipped KV sizes below the largest request ({need:,} blocks): {names}")
    fitting = [s for s in sizes if s.blocks >= need]
    if not fitting:
        raise UsageError(f"every KV size is smaller than the largest request ({need:,} blocks)")
    return fitting


def _bar(total: int, desc: str, args: argparse.Namespace, unit: str = "req") -> Any:
    """A tqdm bar on stderr; off with --no-progress and when stderr is not a terminal."""
    from tqdm import tqdm

    disable = True if args.no_progress else None
    scale = unit == "B"
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=scale, disable=disable, leave=False)


def _ticker(bar: Any) -> Callable[[str], Callable[[], None]]:
    def start(description: str) -> Callable[[], None]:
        bar.set_description(description, refresh=False)
        return lambda: bar.update(1)

    return start


def _plot(cells: Sequence[PlanCell], path: str, title: str) -> None:
    try:
        from radix_plugin.simulator.plot import plot_plan

        plot_plan(cells, path, title)
    except ImportError as exc:
        raise UsageError(f"the plot needs matplotlib ({exc}); or pass --no-plot") from None


def _write_json(
    args: argparse.Namespace, fmt: str, block_size: int, log: RequestLog, cells: Sequence[PlanCell]
) -> None:
    payload = {
        "log": args.log,
        "format": fmt,
        "block_size": block_size,
        "concurrency": args.concurrency,
        "requests": len(log.requests),
        "bad_lines": [{"line": e.line, "error": e.message} for e in log.errors],
        "optimum": OPTIMUM,
        "cells": [c.to_dict() for c in cells],
    }
    Path(args.json).write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    sys.exit(main())
