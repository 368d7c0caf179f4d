"""Our Triton attention backend inside a real vLLM CPU engine gives CPU_ATTN's greedy tokens.

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


def _child(mode: str, out_dir: str, dtypes: list[str]) -> None:
    """Run one engine per dtype and print greedy tokens and kernel statistics as JSON lines."""
    stats: dict[str, int] = {}
    if mode == "triton":
        import radix_plugin.worker.attention.backend as backend

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

    # Record every attention layer output of every step, to compare the two backends call by
    # call: the random-weight tiny model's greedy tokens alone barely depend on attention.
    records: list[torch.Tensor] = []
    if mode == "triton":
        from radix_plugin.worker.attention.backend import RadixTritonAttentionImpl as impl_cls
    else:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackendImpl as impl_cls
    original_forward = impl_cls.forward

    def recording_forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original_forward(self, *args, **kwargs)
        metadata = args[5] if len(args) > 5 else kwargs["attn_metadata"]
        output = kwargs["output"] if "output" in kwargs else args[6]
        if metadata is not None:
            records.append(output[: metadata.num_actual_tokens].float().clone())
        return result

    impl_cls.forward = recording_forward

    for dtype in dtypes:
        stats.update(calls=0, extend_on_prefix=0, mixed=0, decode_only=0)
        records.clear()
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
        records_path = Path(out_dir) / f"{mode}-{dtype}.pt"
        torch.save(records, records_path)
        result = {
            "dtype": dtype,
            "tokens": tokens,
            "stats": dict(stats),
            "cpu_attn_path": AttentionBackendEnum.CPU_ATTN.get_path(),
            "hits": hits,
            "records": str(records_path),
        }
        print("RESULT " + json.dumps(result), flush=True)


def _start_child(mode: str, out_dir: Path, dtypes: list[str]) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env.pop("RADIX_PLUGIN_CPU_ATTENTION", None)
    if mode == "triton":
        env["RADIX_PLUGIN_CPU_ATTENTION"] = "triton"
        env["TRITON_INTERPRET"] = "1"
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), mode, str(out_dir), *dtypes],
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
# Two independent implementations, both rounding P and the output to the model dtype in bf16.
ATTENTION_TOLERANCE = {"float32": 1e-4, "bfloat16": 2e-2}


@pytest.fixture(scope="module")
def engine_runs(
    tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, dict[str, Any]]]:
    """Both engines per dtype; the two children run concurrently (each uses one thread)."""
    out_dir = tmp_path_factory.mktemp("attention_backend")
    procs = {mode: _start_child(mode, out_dir, DTYPES) for mode in ("native", "triton")}
    return {mode: _collect(mode, proc) for mode, proc in procs.items()}


@pytest.mark.parametrize("dtype", DTYPES)
def test_triton_backend_matches_cpu_attn_greedy_tokens(
    engine_runs: dict[str, dict[str, dict[str, Any]]], dtype: str
) -> None:
    baseline = engine_runs["native"][dtype]
    triton = engine_runs["triton"][dtype]

    assert "cpu_attn.CPUAttentionBackend" in baseline["cpu_attn_path"]
    assert (
        triton["cpu_attn_path"]
        == "radix_plugin.worker.attention.backend.RadixTritonAttentionBackend"
    )
    stats = triton["stats"]
    # The Triton kernels really ran, on every batch shape this test is meant to cover.
    assert stats["calls"] > 0 and stats["decode_only"] > 0, stats
    assert stats["extend_on_prefix"] > 0, stats
    assert stats["mixed"] > 0, stats
    assert min(triton["hits"][:2]) >= 64, triton["hits"]  # second wave reused the prefix
    assert all(len(t) == MAX_TOKENS for t in triton["tokens"])

    # Call-by-call attention outputs (every layer, every step) against CPU_ATTN's.
    ours = torch.load(triton["records"])
    theirs = torch.load(baseline["records"])
    assert len(ours) == len(theirs) == stats["calls"]  # one record per layer per step
    errors = []
    for mine, ref in zip(ours, theirs, strict=True):
        assert mine.shape == ref.shape
        errors.append(float((mine - ref).norm() / ref.norm()))
    print(f"{dtype}: max per-call relative error vs CPU_ATTN {max(errors):.2e}")
    assert max(errors) <= ATTENTION_TOLERANCE[dtype], errors

    assert triton["tokens"] == baseline["tokens"]


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], sys.argv[3:])
