"""``radix-plugin simulate``: the capacity planner end to end on small logs built here, run
through the real simulator (vLLM's own KV cache manager for ``vllm``, the radix tree for the
plugin's policies) and the `real` model's tokenizer and config."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from hypothesis import given, settings
from hypothesis import strategies as st

from radix_plugin.simulator import cli
from radix_plugin.simulator.kv_size import (
    KvSizeError,
    bytes_per_block,
    kv_sizes,
    load_model_config,
    parse_bytes,
)
from radix_plugin.testing.models import get_model_path

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def mooncake_log(path: Path, bad_lines: dict[int, str] | None = None) -> Path:
    """Four system prompts (4 blocks each), each shared by several requests arriving
    interleaved, plus one-off requests: a cache that holds all four prompts hits on every
    repeat, a small one has to choose which to keep."""
    rng = random.Random(0)
    lines, fresh = [], 1000
    for i in range(60):
        if i % 3 == 2:
            ids = list(range(fresh, fresh + 5))  # a one-off request
            fresh += 5
        else:
            group = rng.randrange(4)
            ids = [group * 100 + j for j in range(4)] + [fresh]
            fresh += 1
        record = {"timestamp": i, "input_length": 4 * 32 + 10, "output_length": 8}
        lines.append(json.dumps({**record, "hash_ids": ids}))
    for lineno, text in sorted((bad_lines or {}).items()):
        lines.insert(lineno - 1, text)
    path.write_text("\n".join(lines) + "\n")
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["simulate", *argv, "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def test_mooncake_log_per_size_and_policy_beside_the_optimum(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = mooncake_log(tmp_path / "trace.jsonl", {3: "{oops", 10: '{"timestamp": 1}'})
    out_json, png = tmp_path / "plan.json", tmp_path / "plan.png"
    code, out, err = run_cli(
        capsys,
        str(log),
        "--block-size", "32",
        "--kv-blocks", "120,8,12",
        "--policies", "vllm,lru,lfu",
        "--json", str(out_json),
        "--plot", str(png),
    )  # fmt: skip
    assert code == 0, err
    assert "2 bad line(s) skipped" in err
    assert f"line 3: {log}:3: not JSON" in err
    assert f"line 10: {log}:10: missing field(s)" in err
    assert out.startswith(f"60 requests from {log} (mooncake)")
    assert "vllm (vanilla)" in out and "optimum hit ratio" in out
    assert png.read_bytes().startswith(PNG_MAGIC)
    result = json.loads(out_json.read_text())
    assert [e["line"] for e in result["bad_lines"]] == [3, 10]
    cells = result["cells"]
    assert [(c["kv_blocks"], c["policy"]) for c in cells] == [
        (b, p) for b in (8, 12, 120) for p in ("vllm", "lru", "lfu")
    ]
    prompt = 60 * (4 * 32 + 10)
    for c in cells:
        assert c["prompt_tokens"] == prompt
        assert c["prefill_tokens_saved"] == c["hit_tokens"]
        assert c["hit_tokens"] <= c["optimum_hit_tokens"]
        assert c["of_optimum"] == pytest.approx(c["hit_tokens"] / c["optimum_hit_tokens"])
    # 120 blocks hold every page of the log: each group's first request misses, every
    # repeat hits its 4 blocks (128 tokens), on every policy and the optimum alike.
    repeats = 40 - 4
    big = [c for c in cells if c["kv_blocks"] == 120]
    assert {c["hit_tokens"] for c in big} == {repeats * 128}
    assert {c["optimum_hit_tokens"] for c in big} == {repeats * 128}
    # 8 blocks (one prompt and a request beside it): the optimum still beats LRU.
    small = {c["policy"]: c for c in cells if c["kv_blocks"] == 8}
    assert small["lru"]["hit_tokens"] < small["lru"]["optimum_hit_tokens"]
    assert small["vllm"]["hit_tokens"] == small["lru"]["hit_tokens"]


def test_gib_sizes_convert_with_the_model_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = get_model_path("real")
    config = load_model_config(model)
    # SmolLM2-135M: 30 layers x 3 KV heads x head dim 64, bf16; K and V.
    assert bytes_per_block(config, 16) == 2 * 30 * 3 * 64 * 2 * 16
    assert bytes_per_block(config, 16, "float32") == 2 * 30 * 3 * 64 * 4 * 16
    assert bytes_per_block({"text_config": config}, 32) == 2 * 30 * 3 * 64 * 2 * 32
    with pytest.raises(KvSizeError, match="unknown KV dtype 'int3'"):
        bytes_per_block(config, 16, "int3")
    with pytest.raises(KvSizeError, match="lacks 'num_hidden_layers'"):
        bytes_per_block({"hidden_size": 64}, 16)
    log = mooncake_log(tmp_path / "t.jsonl")
    out_json = tmp_path / "gib.json"
    per_block = 2 * 30 * 3 * 64 * 2 * 32
    code, out, err = run_cli(
        capsys,
        str(log),
        "--block-size", "32",
        "--model", str(model),
        "--kv-sizes", "2MiB,8MiB,0.5GiB",
        "--kv-blocks", "9",
        "--policies", "lru",
        "--json", str(out_json),
        "--no-plot",
    )  # fmt: skip
    assert code == 0, err
    sizes = [(c["kv_size"], c["kv_blocks"]) for c in json.loads(out_json.read_text())["cells"]]
    assert sizes == [("9 blocks", 9), ("8MiB", 2**23 // per_block), ("0.5GiB", 2**29 // per_block)]
    # 2 MiB is 2 blocks of this model, too few for a request of 5: named, then left out.
    assert "skipped KV sizes below the largest request (5 blocks): 2MiB (2 blocks)" in out


def test_openai_chat_log_with_the_models_tokenizer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    system = "You answer questions about geography in one short sentence. " * 6
    lines = []
    for i, country in enumerate(["France", "Japan", "Peru", "Kenya", "Chile", "Laos"] * 2):
        messages = [
            {"role": "system", "content": system},
            {"role": "user", "content": f"What is the capital of {country}? ({i})"},
        ]
        lines.append(json.dumps({"messages": messages, "output": "It is a city."}))
    lines.insert(4, '{"messages": []}')
    log = tmp_path / "chat.jsonl"
    log.write_text("\n".join(lines) + "\n")
    out_json = tmp_path / "chat.json"
    code, out, err = run_cli(
        capsys,
        str(log),
        "--model", str(get_model_path("real")),
        "--kv-blocks", "400",
        "--policies", "vllm,lru",
        "--json", str(out_json),
        "--no-plot",
    )  # fmt: skip
    assert code == 0, err
    assert "line 5:" in err and "messages must be a non-empty list" in err
    assert "12 requests" in out and "(openai)" in out and "block size 16" in out
    cells = json.loads(out_json.read_text())["cells"]
    # Every request after the first reuses the system prompt's full blocks.
    for c in cells:
        assert c["hit_ratio"] > 0.5
        assert c["hit_tokens"] == c["optimum_hit_tokens"]


def test_unknown_format_and_bad_arguments_exit_2_naming_the_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "x.jsonl"
    log.write_text('{"text": "hello"}\n')
    code, _, err = run_cli(capsys, str(log), "--kv-blocks", "10")
    assert code == 2 and "cannot tell the format" in err and "mooncake, openai" in err
    good = mooncake_log(tmp_path / "t.jsonl")
    cases = [
        (["--kv-blocks", "10", "--policies", "lru,nope"], "unknown policy ['nope']"),
        (["--kv-blocks", "ten"], "bad --kv-blocks entry 'ten'"),
        (["--kv-sizes", "1GiB"], "--kv-sizes needs --model DIR"),
        (["--kv-sizes", "4 parsecs", "--bytes-per-block", "10"], "bad KV size '4 parsecs'"),
        (["--kv-blocks", "3"], "smaller than the largest request (5 blocks)"),
        ([], "give --kv-sizes"),
    ]
    for extra, message in cases:
        code, _, err = run_cli(capsys, str(good), "--block-size", "32", *extra)
        assert code == 2 and message in err, (extra, err)
    code, _, err = run_cli(capsys, str(tmp_path / "missing.jsonl"), "--kv-blocks", "9")
    assert code == 2 and "no such file" in err
    code, _, err = run_cli(capsys, str(good), "--format", "openai", "--kv-blocks", "9")
    assert code == 2 and "needs the model's tokenizer" in err


def test_console_script_and_module_entry(tmp_path: Path) -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["radix-plugin"] == "radix_plugin.simulator.cli:main"
    log = mooncake_log(tmp_path / "t.jsonl")
    args = ["--block-size", "32", "--kv-blocks", "12", "--policies", "lru", "--no-plot"]
    done = subprocess.run(
        [sys.executable, "-m", "radix_plugin.simulator.cli", "simulate", str(log), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "lru" in done.stdout and "60 requests" in done.stdout


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_a_kv_size_parses_or_names_itself(text: str) -> None:
    try:
        value = parse_bytes(text)
    except KvSizeError as exc:
        assert repr(text) in str(exc)
        return
    assert 0 <= value < 2**63


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from(["", "B", "KiB", "mib", "GiB", "GB", "TiB"]))
def test_a_whole_kv_size_is_exact(n: int, unit: str) -> None:
    scale = {"": 1, "B": 1, "KiB": 2**10, "mib": 2**20, "GiB": 2**30, "GB": 10**9}
    assert parse_bytes(f"{n} {unit}") == n * scale.get(unit, 2**40)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40))
def test_kv_size_lists_are_validated(sizes: str, blocks: str) -> None:
    try:
        got = kv_sizes(sizes, blocks, per_block=1000)
    except KvSizeError:
        return
    assert got and all(s.blocks >= 1 for s in got)
    assert [s.blocks for s in got] == sorted(s.blocks for s in got)
