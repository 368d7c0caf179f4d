"""Benchmark the plugin's Triton attention kernels on a GPU, in one call.

    python benchmarks/kernels/bench_attention.py [--out DIR] [--quick] [--sweep]

What it does, in order:

1. Correctness first: a grid of small cases (fp32/fp16/bf16, head_dim 64/128/256, GQA 1/4/8,
   page sizes 16/64, ragged mixed prefill+decode batches, forced split-KV) against the float64
   reference; any failure aborts before anything is timed. Every timed case is also checked
   against SDPA before it is timed.
2. Roofline of this machine: measured device-to-device copy bandwidth and bf16 matmul rate.
3. Llama-3-8B attention shapes (32 query heads, 8 KV heads, head_dim 128, bf16, page 16):
   extend with cached prefix 0/2k/8k/32k and 128/512/2048 new tokens; decode at batch
   1/8/32/128/256 with contexts 1k/4k/16k/32k (capped by --max-kv-tokens of KV in memory).
   Each is timed for our kernels and for `torch.nn.functional.scaled_dot_product_attention`
   (flash backend where torch can use it) on the same K/V gathered contiguous.
4. Reports TFLOP/s, GB/s, fraction of roofline and speed-up over SDPA; writes
   attention_<device>.json and attention_<device>.md under --out.

`--sweep` additionally times the tile candidates of `radix_plugin.kernels.configs` per case,
to re-derive the heuristics from measurements. `--smoke` runs the whole pipeline on CPU under
the Triton interpreter with toy shapes (timings meaningless) to check the script itself.

Without a CUDA device (and without --smoke) it exits with status 2 and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

Q_HEADS, KV_HEADS, HEAD_DIM, DTYPE = 32, 8, 128, torch.bfloat16
EXTEND_PREFIXES = (0, 2048, 8192, 32768)
EXTEND_NEW = (128, 512, 2048)
DECODE_BATCHES = (1, 8, 32, 128, 256)
DECODE_CONTEXTS = (1024, 4096, 16384, 32768)
SDPA_TOLERANCE = 2e-2  # two bf16 implementations, each rounding P and O to bf16
REF_TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-3, torch.bfloat16: 1e-2}


@dataclass
class Case:
    """One timed shape: a batch of sequences, each with `prefix` cached and `new` new tokens."""

    kind: str  # "extend" or "decode"
    batch: int
    prefix: int
    new: int
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        if self.kind == "decode":
            return f"decode b={self.batch} ctx={self.prefix + 1}"
        return f"extend prefix={self.prefix} new={self.new}"

    @property
    def kv_tokens(self) -> int:
        return self.batch * (self.prefix + self.new)

    def flops(self) -> float:
        """QK^T and PV over visible (query, key) pairs: 4 * head_dim flops per pair per head."""
        pairs = self.batch * (self.new * self.prefix + self.new * (self.new + 1) / 2)
        return 4.0 * HEAD_DIM * Q_HEADS * pairs

    def bytes(self, elem: int = 2) -> float:
        """Ideal traffic: Q and O once, every K/V element once."""
        q_and_o = 2 * self.batch * self.new * Q_HEADS * HEAD_DIM * elem
        kv = 2 * self.kv_tokens * KV_HEADS * HEAD_DIM * elem
        return float(q_and_o + kv)


def _fail(message: str, status: int) -> int:
    print(f"bench_attention: {message}", file=sys.stderr)
    return status


def _timer(smoke: bool) -> Callable[[Callable[[], Any]], float]:
    """Median milliseconds of `fn`: triton's do_bench on GPU, one wall-clock run in --smoke."""
    if smoke:

        def wall(fn: Callable[[], Any]) -> float:
            start = time.perf_counter()
            fn()
            return (time.perf_counter() - start) * 1e3

        return wall
    from triton.testing import do_bench

    def bench(fn: Callable[[], Any]) -> float:
        return float(do_bench(fn, warmup=25, rep=200, return_mode="median"))

    return bench


def _copy_gbps(device: torch.device, timer: Callable[[Callable[[], Any]], float]) -> float:
    """Device-to-device copy bandwidth (read + write bytes) of a 512 MiB buffer, beyond L2."""
    n = 1 << 28
    src = torch.empty(n, dtype=torch.bfloat16, device=device).normal_()
    dst = torch.empty_like(src)
    copy_ms = timer(lambda: dst.copy_(src))
    return 2 * n * 2 / (copy_ms * 1e-3) / 1e9


def measure_roofline(device: torch.device, smoke: bool) -> dict[str, float]:
    """Peak numbers *measured on this machine* (not datasheet): copy GB/s and bf16 TFLOP/s."""
    if smoke:
        return {"copy_gbps": 1.0, "bf16_tflops": 1.0, "measured": 0.0}
    timer = _timer(False)
    copy_gbps = _copy_gbps(device, timer)
    m = 8192
    a = torch.randn((m, m), dtype=torch.bfloat16, device=device)
    b = torch.randn((m, m), dtype=torch.bfloat16, device=device)
    mm_ms = timer(lambda: a @ b)
    return {
        "copy_gbps": copy_gbps,
        "bf16_tflops": 2 * m**3 / (mm_ms * 1e-3) / 1e12,
        "measured": 1.0,
    }


@dataclass
class Paged:
    """Paged inputs for our kernels plus the same K/V contiguous for SDPA."""

    q: torch.Tensor  # [tokens, Hq, D]
    k_cache: torch.Tensor
    v_cache: torch.Tensor
    query_start_loc: torch.Tensor
    seq_lens: torch.Tensor
    block_table: torch.Tensor
    k_dense: torch.Tensor  # [B, Hkv, L, D]
    v_dense: torch.Tensor
    max_query_len: int
    max_seq_len: int
    num_decodes: int


def build_uniform(
    batch: int, prefix: int, new: int, page: int, device: torch.device, dtype: torch.dtype
) -> Paged:
    """`batch` sequences of prefix+new keys, pages scattered over the cache in random order."""
    seq_len = prefix + new
    k_dense = torch.randn((batch, KV_HEADS, seq_len, HEAD_DIM), dtype=dtype, device=device)
    v_dense = torch.randn_like(k_dense)
    pages_per_seq = -(-seq_len // page)
    num_pages = batch * pages_per_seq
    perm = torch.randperm(num_pages, device=device).to(torch.int32)
    block_table = perm.view(batch, pages_per_seq)
    k_cache = torch.zeros((num_pages, page, KV_HEADS, HEAD_DIM), dtype=dtype, device=device)
    v_cache = torch.zeros_like(k_cache)
    padded = pages_per_seq * page
    for b in range(batch):  # one scatter per sequence keeps peak memory at ~2x the KV
        for dense, cache in ((k_dense, k_cache), (v_dense, v_cache)):
            src = torch.zeros((padded, KV_HEADS, HEAD_DIM), dtype=dtype, device=device)
            src[:seq_len] = dense[b].transpose(0, 1)
            cache[block_table[b].long()] = src.view(pages_per_seq, page, KV_HEADS, HEAD_DIM)
    q = torch.randn((batch * new, Q_HEADS, HEAD_DIM), dtype=dtype, device=device)
    qsl = torch.arange(0, batch * new + 1, new, dtype=torch.int32, device=device)
    seq_lens = torch.full((batch,), seq_len, dtype=torch.int32, device=device)
    return Paged(
        q, k_cache, v_cache, qsl, seq_lens, block_table, k_dense, v_dense,
        max_query_len=new, max_seq_len=seq_len, num_decodes=batch if new == 1 else 0,
    )  # fmt: skip


def make_sdpa(p: Paged, batch: int, prefix: int, new: int) -> tuple[Callable[[], Any], str]:
    """SDPA on the dense K/V, trying the flash backend first; returns (fn, backend label).

    Extend with a prefix needs a bottom-right-aligned causal mask (query i of the new tokens
    sees keys <= prefix + i): torch's `causal_lower_right` bias runs it on flash when it can.
    GQA uses `enable_gqa` so K/V are not expanded.
    """
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.bias import causal_lower_right

    q4 = p.q.view(batch, new, Q_HEADS, HEAD_DIM).transpose(1, 2)
    k4, v4 = p.k_dense, p.v_dense
    kv_len = prefix + new
    if new == 1:
        mask, causal = None, False
    elif prefix == 0:
        mask, causal = None, True
    else:
        mask, causal = causal_lower_right(new, kv_len), False
    attempts: list[tuple[str, list[Any], bool]] = [
        ("flash", [SDPBackend.FLASH_ATTENTION], True),
        ("efficient", [SDPBackend.EFFICIENT_ATTENTION], True),
        ("cudnn", [SDPBackend.CUDNN_ATTENTION], True),
    ]
    if q4.device.type == "cpu":
        attempts = [("cpu-default", [], True)]
    errors = []
    for label, backends, gqa in attempts:

        def run(backends: list[Any] = backends, gqa: bool = gqa) -> torch.Tensor:
            ctx = sdpa_kernel(backends) if backends else _null_ctx()
            with ctx:
                return F.scaled_dot_product_attention(
                    q4, k4, v4, attn_mask=mask, is_causal=causal, enable_gqa=gqa
                )

        try:
            run()
        except RuntimeError as exc:
            errors.append(f"{label}: {str(exc).splitlines()[0]}")
            continue
        return run, label
    raise RuntimeError("no SDPA backend ran: " + "; ".join(errors))


class _null_ctx:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    out64, ref64 = out.double(), ref.double()
    return float((out64 - ref64).norm() / ref64.norm())


def verify_small_grid(device: torch.device, smoke: bool) -> list[str]:
    """Compiled-kernel correctness on small shapes vs float64; returns failure descriptions.

    (--smoke keeps only the two cases small enough for the interpreter.)
    """
    from radix_plugin.kernels.prefix_attention import prefix_attention
    from radix_plugin.kernels.reference import prefix_attention_ref

    failures = []
    grid = [
        # dtype, head_dim, (hq, hkv), page, q_lens, prefix_lens, kwargs
        (torch.float32, 64, (4, 4), 16, [37, 1, 5], [0, 90, 31], {}),
        (torch.float32, 128, (8, 2), 64, [70, 1, 1], [200, 3, 1500], {}),
        (torch.float16, 128, (8, 1), 16, [129, 1], [77, 300], {}),
        (torch.bfloat16, 128, (32, 8), 16, [300, 1, 1, 17], [1000, 4000, 5, 0], {}),
        (torch.bfloat16, 256, (8, 8), 16, [65, 1], [33, 700], {}),
        (torch.bfloat16, 64, (16, 2), 64, [1, 1, 1], [50, 2049, 9], {"decode_num_splits": 7}),
        (torch.bfloat16, 128, (32, 8), 16, [40], [3000], {"extend_num_splits": 5}),
        (torch.float32, 80, (4, 1), 32, [12, 1], [19, 5], {}),
    ]
    if smoke:
        grid = [grid[0], grid[-1]]
    gen = torch.Generator(device="cpu").manual_seed(0)
    for dtype, d, (hq, hkv), page, q_lens, prefixes, kwargs in grid:
        batch = len(q_lens)
        seq_lens = [p + q for p, q in zip(prefixes, q_lens, strict=True)]
        pages = [-(-s // page) for s in seq_lens]
        width = max(pages)
        perm = torch.randperm(sum(pages) + 1, generator=gen)
        block_table = torch.zeros((batch, width), dtype=torch.int32)
        used = 0
        for b, n in enumerate(pages):
            block_table[b, :n] = perm[used : used + n].to(torch.int32)
            used += n
        shape = (sum(pages) + 1, page, hkv, d)
        k_cache = torch.randn(shape, generator=gen).to(dtype).to(device)
        v_cache = torch.randn(shape, generator=gen).to(dtype).to(device)
        q = torch.randn((sum(q_lens), hq, d), generator=gen).to(dtype).to(device)
        qsl = torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32)
        qsl, sl = qsl.to(device), torch.tensor(seq_lens, dtype=torch.int32, device=device)
        bt = block_table.to(device)
        out = torch.full_like(q, float("nan"))
        prefix_attention(q, k_cache, v_cache, out, qsl, sl, bt, d**-0.5, **kwargs)
        ref = prefix_attention_ref(q, k_cache, v_cache, qsl, sl, bt, d**-0.5)
        err = rel_error(out, ref)
        ok = err <= REF_TOLERANCE[dtype]
        label = f"{dtype} d={d} gqa={hq // hkv} page={page} q={q_lens} prefix={prefixes} {kwargs}"
        print(f"  verify {label}: rel err {err:.2e} {'ok' if ok else 'FAIL'}")
        if not ok:
            failures.append(f"{label}: {err:.3e}")
    return failures


def build_cases(args: argparse.Namespace) -> list[Case]:
    if args.smoke:
        return [Case("extend", 1, 40, 24), Case("decode", 2, 70, 1)]
    prefixes, news = EXTEND_PREFIXES, EXTEND_NEW
    batches, contexts = DECODE_BATCHES, DECODE_CONTEXTS
    if args.quick:
        prefixes, news = (0, 8192, 32768), (128, 2048)
        batches, contexts = (1, 32, 256), (1024, 16384)
    cases = [Case("extend", 1, p, n) for p in prefixes for n in news]
    cases += [
        Case("decode", b, c - 1, 1)
        for b in batches
        for c in contexts
        if b * c <= args.max_kv_tokens
    ]
    return cases


def run_case(
    case: Case, args: argparse.Namespace, device: torch.device, roof: dict[str, float]
) -> None:
    """Verify then time one case; fills case.results."""
    from radix_plugin.kernels.configs import DECODE_CANDIDATES, EXTEND_CANDIDATES
    from radix_plugin.kernels.prefix_attention import prefix_attention

    timer = _timer(args.smoke)
    p = build_uniform(case.batch, case.prefix, case.new, args.page, device, DTYPE)
    out = torch.empty_like(p.q)
    scale = HEAD_DIM**-0.5

    def ours(**overrides: Any) -> torch.Tensor:
        return prefix_attention(
            p.q, p.k_cache, p.v_cache, out, p.query_start_loc, p.seq_lens, p.block_table,
            scale, True, max_query_len=p.max_query_len, max_seq_len=p.max_seq_len,
            num_decodes=p.num_decodes, **overrides,
        )  # fmt: skip

    sdpa, sdpa_label = make_sdpa(p, case.batch, case.prefix, case.new)
    # verify before timing
    ours()
    expected = sdpa().transpose(1, 2).reshape(out.shape)
    err = rel_error(out, expected)
    if not err <= SDPA_TOLERANCE or not torch.isfinite(out).all():
        raise AssertionError(f"{case.name}: ours vs SDPA relative error {err:.3e}")

    ours_ms = timer(ours)
    sdpa_ms = timer(sdpa)
    flops, nbytes = case.flops(), case.bytes()
    roof_ms = max(
        flops / (roof["bf16_tflops"] * 1e12), nbytes / (roof["copy_gbps"] * 1e9)
    ) * 1e3  # fmt: skip
    case.results = {
        "ours_ms": ours_ms,
        "sdpa_ms": sdpa_ms,
        "sdpa_backend": sdpa_label,
        "rel_err_vs_sdpa": err,
        "tflops": flops / (ours_ms * 1e-3) / 1e12,
        "gbps": nbytes / (ours_ms * 1e-3) / 1e9,
        "sdpa_tflops": flops / (sdpa_ms * 1e-3) / 1e12,
        "roofline_ms": roof_ms,
        "bound": "compute"
        if flops / (roof["bf16_tflops"] * 1e12) > nbytes / (roof["copy_gbps"] * 1e9)
        else "memory",
        "fraction_of_roofline": roof_ms / ours_ms,
        "speedup_vs_sdpa": sdpa_ms / ours_ms,
    }
    if args.sweep:
        sweep = {}
        candidates = DECODE_CANDIDATES if case.kind == "decode" else EXTEND_CANDIDATES
        key = "decode_cfg" if case.kind == "decode" else "extend_cfg"
        for cfg in candidates:
            try:
                ours(**{key: cfg})
                if rel_error(out, expected) > SDPA_TOLERANCE:
                    sweep[str(asdict(cfg))] = "wrong result"
                    continue
                sweep[str(asdict(cfg))] = timer(lambda cfg=cfg: ours(**{key: cfg}))
            except Exception as exc:  # out of shared memory etc.: record, keep sweeping
                sweep[str(asdict(cfg))] = f"error: {type(exc).__name__}"
        case.results["sweep_ms"] = sweep


def write_reports(
    cases: list[Case], env: dict[str, Any], roof: dict[str, float], out_dir: Path
) -> tuple[Path, Path]:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", env["device"]).strip("_").lower()
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"attention_{slug}.json"
    md_path = out_dir / f"attention_{slug}.md"
    payload = {
        "environment": env,
        "roofline": roof,
        "shapes": {"q_heads": Q_HEADS, "kv_heads": KV_HEADS, "head_dim": HEAD_DIM,
                   "dtype": str(DTYPE)},
        "cases": [{"name": c.name, **asdict(c)} for c in cases],
    }  # fmt: skip
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    lines = [
        f"# Attention kernels on {env['device']}",
        "",
        f"Llama-3-8B attention: {Q_HEADS} q heads, {KV_HEADS} kv heads, head_dim {HEAD_DIM}, "
        f"bf16, page {env['page']}. Roofline measured here: copy "
        f"{roof['copy_gbps']:.0f} GB/s, bf16 matmul {roof['bf16_tflops']:.0f} TFLOP/s. "
        f"torch {env['torch']}, triton {env['triton']}.",
        "",
        "| case | ours ms | TFLOP/s | GB/s | bound | % roofline | SDPA ms (backend) "
        "| speed-up vs SDPA |",
        "|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for c in cases:
        r = c.results
        if "ours_ms" not in r:
            lines.append(f"| {c.name} | {r.get('error', 'not run')} |||||||")
            continue
        lines.append(
            f"| {c.name} | {r['ours_ms']:.3f} | {r['tflops']:.1f} | {r['gbps']:.0f} | "
            f"{r['bound']} | {100 * r['fraction_of_roofline']:.0f}% | "
            f"{r['sdpa_ms']:.3f} ({r['sdpa_backend']}) | {r['speedup_vs_sdpa']:.2f}x |"
        )
    md_path.write_text("\n".join(lines) + "\n")
    return json_path, md_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/kernels"))
    parser.add_argument("--page", type=int, default=16, help="KV page (block) size")
    parser.add_argument(
        "--max-kv-tokens",
        type=int,
        default=1 << 21,
        help="skip decode cases with more KV tokens (4 KiB each, twice: paged + SDPA copy)",
    )
    parser.add_argument("--quick", action="store_true", help="a subset of the shapes")
    parser.add_argument("--sweep", action="store_true", help="also time tile candidates")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="CPU + Triton interpreter, toy shapes: checks the script only",
    )
    args = parser.parse_args(argv)

    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before radix_plugin.kernels is imported
        device = torch.device("cpu")
    else:
        if not torch.cuda.is_available():
            return _fail(
                "no CUDA device available (torch.cuda.is_available() is False); this "
                "benchmark times Triton kernels on a GPU. Use --smoke to check the script "
                "on CPU under the Triton interpreter.",
                2,
            )
        device = torch.device("cuda")
    import triton

    from radix_plugin.kernels import _utils

    if args.smoke and not _utils.INTERPRET:
        return _fail("--smoke needs radix_plugin.kernels imported under TRITON_INTERPRET=1", 2)

    env = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu-smoke",
        "sms": _utils.device_sms(torch.empty(0, device=device)),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "page": args.page,
        "smoke": args.smoke,
    }
    print(f"device: {env['device']} ({env['sms']} SMs)")

    print("verifying kernels against the float64 reference ...")
    failures = verify_small_grid(device, args.smoke)
    if failures:
        for f in failures:
            print(f"FAILED {f}", file=sys.stderr)
        return _fail(f"{len(failures)} correctness check(s) failed; nothing was timed", 1)

    roof = measure_roofline(device, args.smoke)
    print(f"roofline: copy {roof['copy_gbps']:.0f} GB/s, bf16 {roof['bf16_tflops']:.0f} TFLOP/s")
    cases = build_cases(args)
    status = 0
    for case in cases:
        try:
            run_case(case, args, device, roof)
        except AssertionError as exc:  # wrong result: report and fail the run
            case.results = {"error": str(exc)}
            status = 1
        except torch.OutOfMemoryError:
            case.results = {"error": "out of memory"}
        except Exception as exc:  # e.g. a compile error: keep the report, fail the run
            case.results = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
            status = 1
        if device.type == "cuda":
            torch.cuda.empty_cache()
        r = case.results
        if "ours_ms" in r:
            print(
                f"{case.name:32s} ours {r['ours_ms']:8.3f} ms {r['tflops']:7.1f} TFLOP/s "
                f"{r['gbps']:7.0f} GB/s {100 * r['fraction_of_roofline']:5.1f}% roof | "
                f"SDPA[{r['sdpa_backend']}] {r['sdpa_ms']:8.3f} ms | x{r['speedup_vs_sdpa']:.2f}"
            )
        else:
            print(f"{case.name:32s} {r['error']}")
    json_path, md_path = write_reports(cases, env, roof, args.out)
    print(f"wrote {json_path} and {md_path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
