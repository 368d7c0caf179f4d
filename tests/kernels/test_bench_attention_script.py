"""The GPU benchmark script must stay runnable: it fails cleanly without CUDA, and its whole
pipeline (verification, timing, JSON + markdown report) works in --smoke mode on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "kernels" / "bench_attention.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # no GPU, even on a GPU machine
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=SCRIPT.parents[2],
    )


def test_exits_with_clear_message_without_cuda(tmp_path: Path) -> None:
    proc = _run("--out", str(tmp_path))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "no CUDA device available" in proc.stderr
    assert not list(tmp_path.iterdir())


def test_smoke_mode_writes_json_and_markdown(tmp_path: Path) -> None:
    proc = _run("--smoke", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((tmp_path / "attention_cpu_smoke.json").read_text())
    kinds = {case["kind"] for case in report["cases"]}
    assert kinds == {"extend", "decode"}
    for case in report["cases"]:
        results = case["results"]
        assert results["rel_err_vs_sdpa"] <= 2e-2
        assert results["ours_ms"] > 0 and results["sdpa_ms"] > 0
    table = (tmp_path / "attention_cpu_smoke.md").read_text()
    assert "| extend prefix=40 new=24 |" in table and "speed-up vs SDPA" in table
