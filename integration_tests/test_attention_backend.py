"""Our Triton attention backend inside a real vLLM CPU engine is as exact as vLLM's CPU_ATTN.

Each backend's every attention call (every layer, every step) is compared with a float64
reference computed on that call's own inputs (query, and the K/V the call's sequences read
through the block table), with a bound derived from the dtype, not from one machine: CPU_ATTN
picks a different kernel per ISA (AMX on Sapphire Rapids, AVX-512 elsewhere), and comparing the
two backends with each other layer after layer compounds both errors. Greedy tokens must agree
across backends only in float32, where rounding cannot flip a choice.

How the backend gets into a CPU engine: vLLM's CPU platform ignores `--attention-backend` and
always returns `AttentionBackendEnum.CPU_ATTN.get_path()`, which honours registry overrides.
With RADIX_PLUGIN_CPU_ATTENTION=triton our general plugin overrides CPU_ATTN with
`RadixTritonAttentionBackend`; TRITON_INTERPRET=1 runs its kernels in the Triton interpreter.
vLLM's own HAS_TRITON=False on this wheel only gates vLLM's kernels (it swaps in placeholders
inside `vllm.triton_utils`); our modules import `triton` directly, so the interpreter works.

Each engine runs in a child process: the override is process-global registry state and must
not leak into other engine tests, and TRITON_INTERPRET must be set before Triton kernels are
decorated. The child also wraps the backend's kernel entry point to prove the Triton path ran
and to record which batch shapes it saw (prefix hits, mixed prefill+decode batches).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

pytestmark = [pytest.mark.engine, pytest.mark.timeout(600)]

MAX_TOKENS = 12


def _prompts() -> tuple[list[list[int]], list[list[int]]]:
    """Token-id prompts: a first wave, then a second wave that shares long prefixes with it.

    The second wave hits the prefix cache (block size 32), so its prefills are extends on a
    cached prefix; its long prompt is chunked (max_num_batched_tokens=64) while the short ones
    already decode, so batches mix multi-token extends with single-token decodes.
    """
    import random

    rng = random.Random(7)

    def ids(n: int) -> list[int]:
        return [rng.randrange(10, 4000) for _ in range(n)]

    shared = ids(75)
    first = [[1, *shared, *ids(6)], [1, *ids(40)]]
    second = [[1, *shared, *ids(9)], [1, *shared, *ids(150)], [1, *ids(3)], [1, *ids(33)]]
    return first, second


def _error_vs_float64(
    impl: Any,
    shadow: dict[int, tuple[torch.Tensor, torch.Tensor]],
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    kv_cache: torch.Tensor,
    metadata: Any,
    output: torch.Tensor,
) -> tuple[float, int]:
    """Relative error of one call's output vs float64 attention, and its longest sequence.

    Both backends take the logical cache [blocks, kv_heads, block_size, 2 * head_dim] and the
    same metadata fields; the reference reads K/V through the block table from the shadow.
    """
    n = metadata.num_actual_tokens
    heads, dim = impl.num_heads, impl.head_size
    block_size = kv_cache.shape[2]
    if id(impl) not in shadow:
        slots = kv_cache.shape[0] * block_size
        shadow[id(impl)] = (
            torch.zeros(slots, impl.num_kv_heads, dim, dtype=torch.float64),
            torch.zeros(slots, impl.num_kv_heads, dim, dtype=torch.float64),
        )
    k_all, v_all = shadow[id(impl)]
    slot_mapping = metadata.slot_mapping[:n].long()
    valid = slot_mapping >= 0
    k_all[slot_mapping[valid]] = key[:n][valid].double()
    v_all[slot_mapping[valid]] = value[:n][valid].double()
    q = query[:n].reshape(n, heads, dim).double()
    ref = torch.empty_like(q)
    qsl, seq_lens = metadata.query_start_loc.tolist(), metadata.seq_lens.tolist()
    group = heads // impl.num_kv_heads
    for i, seq_len in enumerate(seq_lens):
        start, end = qsl[i], qsl[i + 1]
        positions = torch.arange(seq_len)
        slots = metadata.block_table[i, positions // block_size].long() * block_size
        slots += positions % block_size
        k = k_all[slots].repeat_interleave(group, dim=1)  # [seq, heads, dim]
        v = v_all[slots].repeat_interleave(group, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q[start:end], k) * impl.scale
        q_pos = torch.arange(seq_len - (end - start), seq_len)
        scores.masked_fill_(positions[None, None, :] > q_pos[None, :, None], float("-inf"))
        ref[start:end] = torch.einsum("hqk,khd->qhd", scores.softmax(dim=-1), v)
    mine = output[:n].reshape(n, heads, dim).double()
    return float((mine - ref).norm() / ref.norm()), max(seq_lens)


def error_bound(dtype: torch.dtype, reduction_len: int) -> float:
    """Relative error allowed for attention in `dtype` over `reduction_len` keys.

    Rounding P and the output to the model dtype costs at most u each (u: the dtype's unit
    roundoff), independent of length because P sums to one; float32 accumulation over L keys
    adds about sqrt(L) float32 roundoffs. Both terms get 2x headroom. Measured on AVX-512
    (no AMX), bf16: CPU_ATTN 1.8e-3, Triton 6.0e-3 against 1.6e-2; float32: about 2e-7.
    """
    u = torch.finfo(dtype).eps / 2
    u32 = torch.finfo(torch.float32).eps / 2
    return 4 * u + 4 * reduction_len**0.5 * u32


def _child(mode: str, dtypes: list[str]) -> None:
    """Run one engine per dtype and print greedy tokens and kernel statistics as JSON lines."""
    stats: dict[str, int] = {}
    if mode == "triton":
        import radix_plugin.kernels.attention.backend as backend

        real = backend.prefix_attention

        def traced(*args: Any, **kwargs: Any) -> Any:
            qsl, seq_lens = args[4].tolist(), args[5].tolist()
            q_lens = [b - a for a, b in itertools.pairwise(qsl)]
            stats["calls"] += 1
            stats["extend_on_prefix"] += sum(
                1 for q, s in zip(q_lens, seq_lens, strict=True) if q > 1 and s > q
            )
            if kwargs["num_decodes"] and kwargs["max_query_len"] > 1:
                stats["mixed"] += 1
            if kwargs["max_query_len"] == 1:
                stats["decode_only"] += 1
            return real(*args, **kwargs)

        backend.prefix_attention = traced

    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    from radix_plugin.testing.engine import cpu_llm_kwargs, shutdown_llm

    # Every attention call's output against a float64 reference on the same inputs. The
    # shadow cache holds, per layer, the K/V of every slot written so far (the cache stores
    # them in the model dtype, so upcasting the layer's inputs gives the cached values).
    errors: list[tuple[float, int]] = []
    shadow: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    if mode == "triton":
        from radix_plugin.kernels.attention.backend import RadixTritonAttentionImpl as impl_cls
    else:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackendImpl as impl_cls
    original_forward = impl_cls.forward

    def checking_forward(
        self: Any,
        layer: Any,
        query: Any,
        key: Any,
        value: Any,
        kv_cache: Any,
        attn_metadata: Any,
        output: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        result = original_forward(
            self, layer, query, key, value, kv_cache, attn_metadata, output, *args, **kwargs
        )
        if attn_metadata is not None:
            errors.append(
                _error_vs_float64(self, shadow, query, key, value, kv_cache, attn_metadata, output)
            )
        return result

    impl_cls.forward = checking_forward

    for dtype in dtypes:
        stats.update(calls=0, extend_on_prefix=0, mixed=0, decode_only=0)
        errors.clear()
        shadow.clear()
        kwargs = cpu_llm_kwargs(
            "tiny", dtype=dtype, max_num_batched_tokens=64, enable_prefix_caching=True,
            max_model_len=512,
        )  # fmt: skip
        llm = LLM(**kwargs)
        params = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True)
        tokens: list[list[int]] = []
        hits: list[int] = []
        for wave in _prompts():
            prompts = [TokensPrompt(prompt_token_ids=p) for p in wave]
            outs = llm.generate(prompts, params, use_tqdm=False)
            tokens += [list(o.outputs[0].token_ids) for o in outs]
            hits = [o.num_cached_tokens or 0 for o in outs]
        shutdown_llm(llm)
        result = {
            "dtype": dtype,
            "tokens": tokens,
            "stats": dict(stats),
            "cpu_attn_path": AttentionBackendEnum.CPU_ATTN.get_path(),
            "hits": hits,
            "errors": errors,
        }
        print("RESULT " + json.dumps(result), flush=True)


def _start_child(mode: str, dtypes: list[str]) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env.pop("RADIX_PLUGIN_CPU_ATTENTION", None)
    if mode == "triton":
        env["RADIX_PLUGIN_CPU_ATTENTION"] = "triton"
        env["TRITON_INTERPRET"] = "1"
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), mode, *dtypes],
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _collect(mode: str, proc: subprocess.Popen[str]) -> dict[str, dict[str, Any]]:
    try:
        stdout, stderr = proc.communicate(timeout=540)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    results = {}
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
            results[result["dtype"]] = result
    if proc.returncode != 0 or not results:
        raise AssertionError(f"{mode} engine failed (rc={proc.returncode}):\n{stderr[-6000:]}")
    return results


DTYPES = ["float32", "bfloat16"]


@pytest.fixture(scope="module")
def engine_runs(tiny_model_path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Both engines per dtype; the two children run concurrently (each uses one thread)."""
    procs = {mode: _start_child(mode, DTYPES) for mode in ("native", "triton")}
    return {mode: _collect(mode, proc) for mode, proc in procs.items()}


@pytest.mark.parametrize("mode", ["native", "triton"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_attention_call_matches_float64(
    engine_runs: dict[str, dict[str, dict[str, Any]]], dtype: str, mode: str
) -> None:
    run = engine_runs[mode][dtype]
    errors = run["errors"]
    assert len(errors) >= 2 * 2 * MAX_TOKENS  # 2 layers, 2 waves, every decode step
    worst = max(errors, key=lambda e: e[0] / error_bound(getattr(torch, dtype), e[1]))
    bound = error_bound(getattr(torch, dtype), worst[1])
    print(f"{mode} {dtype}: worst relative error vs float64 {worst[0]:.2e} (bound {bound:.2e})")
    assert worst[0] <= bound, (worst, bound)


@pytest.mark.parametrize("dtype", DTYPES)
def test_triton_backend_runs_every_batch_shape(
    engine_runs: dict[str, dict[str, dict[str, Any]]], dtype: str
) -> None:
    baseline = engine_runs["native"][dtype]
    triton = engine_runs["triton"][dtype]
    assert "cpu_attn.CPUAttentionBackend" in baseline["cpu_attn_path"]
    assert (
        triton["cpu_attn_path"]
        == "radix_plugin.kernels.attention.backend.RadixTritonAttentionBackend"
    )
    stats = triton["stats"]
    # The Triton kernels really ran, on every batch shape this test is meant to cover.
    assert stats["calls"] > 0 and stats["decode_only"] > 0, stats
    assert stats["extend_on_prefix"] > 0, stats
    assert stats["mixed"] > 0, stats
    assert len(triton["errors"]) == stats["calls"]  # every call was checked
    assert min(triton["hits"][:2]) >= 64, triton["hits"]  # second wave reused the prefix
    assert all(len(t) == MAX_TOKENS for t in triton["tokens"])


def test_float32_greedy_tokens_match_cpu_attn(
    engine_runs: dict[str, dict[str, dict[str, Any]]],
) -> None:
    assert engine_runs["triton"]["float32"]["tokens"] == engine_runs["native"]["float32"]["tokens"]


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2:])
