"""The SGLang-program benchmark's programs run end to end through ``sgl.RuntimeEndpoint`` on a
real server with the plugin, and their regex-constrained outputs are valid.

One ``tiny``-model server for the module; two programs per workload. The per-field regexes of
``json_regex`` and the score regex of ``branch_solve_merge`` fit their token budgets, so even
random weights must produce valid output; the free-form workloads only have to finish.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sglang as sgl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from sglang_programs import WORKLOADS
from sglang_side_by_side import PLUGIN_FLAGS, run_workload

from radix_plugin.testing.models import get_model_path
from radix_plugin.testing.server import (
    free_port,
    running_server,
    server_command,
    sglang_endpoint_env,
)

ALWAYS_VALID = ("json_regex", "branch_solve_merge", "select_classify")


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, object]]:
    port = free_port()
    cmd = server_command(
        get_model_path("tiny"), port, ["--max-num-seqs", "8", *PLUGIN_FLAGS], max_model_len=2048
    )
    log = (tmp_path_factory.mktemp("sgl") / "server.log").open("w")
    with running_server(cmd, port, log, timeout_s=240, env=sglang_endpoint_env()) as base:
        yield base, sgl.RuntimeEndpoint(base, chat_template_name="chatml")


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_benchmark_program_runs_end_to_end(name: str, endpoint: tuple[str, object]) -> None:
    base, backend = endpoint
    workload = WORKLOADS[name]
    result = run_workload(backend, base, workload, workload.make_arguments(2, random.Random(0)))
    assert result["programs"] == 2
    assert result["prefix_cache_queries"] > 0
    if name in ALWAYS_VALID:
        assert result["valid"] == 1.0, result["example"]
