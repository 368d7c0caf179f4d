"""``benchmarks/scheduler_scale.py`` at a tiny size: every workload runs, drains, and passes
the end checks (every request finished with its output count, no block referenced, every
block free); timings are not checked."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import scheduler_scale  # noqa: E402

TINY = {"blocks": 1500, "running": 8, "waiting": 4, "steps": 6}


@pytest.mark.parametrize(
    ("workload", "config"),
    [
        ("shared_prefix", "vanilla"),
        ("shared_prefix", "lru/lpm"),
        ("shared_prefix", "adaptive/dfs"),
        ("chat", "session/lpm"),
        ("workflow", "workflow/lpm"),
        ("structured", "lru/lpm+jf"),
        ("structured", "lru/lpm+jf+wd"),
    ],
)
def test_tiny_run_drains_clean(workload: str, config: str) -> None:
    r = scheduler_scale.run_config(config, workload, trace_memory=False, **TINY)
    assert r["drain_ok"]
    assert r["warmup_steps"] >= scheduler_scale.MIN_WARMUP_STEPS
    assert r["cached_blocks"] > 0.9 * TINY["blocks"]  # the pool was filled
    assert r["allocated_blocks"] > 0  # the measured steps ran requests through
    assert r["evicting_share"] > 0.5  # a full pool evicts
    if config != "vanilla":
        assert r["tree_evictable_after_drain"] > 0  # the tree kept the cache
    if workload == "structured":
        assert r["draft_tokens_scheduled"] > 0  # jump-forward offered drafts
        assert r["stopped_share"] > 0  # some objects closed before the token budget


def test_configs_run_the_plugin_as_users_get_it_unless_wd_asks_for_the_watchdog() -> None:
    radix, jump_forward = scheduler_scale.parse_config("lru/lpm")
    assert radix is not None and not radix["watchdog"] and not jump_forward
    assert not scheduler_scale.watchdog_on("vanilla")
    assert scheduler_scale.watchdog_on("session/dfs+wd")
    radix, jump_forward = scheduler_scale.parse_config("lru/lpm+jf+wd")
    assert radix is not None and radix["watchdog"] and jump_forward
    with pytest.raises(SystemExit, match="bad config"):
        scheduler_scale.parse_config("lru/lpm+fast")


def test_cli_writes_results(tmp_path: Path) -> None:
    argv = [
        "--blocks",
        "1500",
        "--running",
        "8",
        "--waiting",
        "4",
        "--steps",
        "4",
        "--workloads",
        "shared_prefix",
        "--configs",
        "vanilla,lru/fcfs",
        "--no-tracemalloc",
        "--out",
        str(tmp_path),
        "--name",
        "tiny",
    ]
    assert scheduler_scale.main(argv) == 0
    payload = json.loads((tmp_path / "tiny.json").read_text())
    assert [r["config"] for r in payload["results"]] == ["vanilla", "lru/fcfs"]
    assert "| lru/fcfs |" in (tmp_path / "tiny.md").read_text()
    assert (tmp_path / "tiny.png").stat().st_size > 0
