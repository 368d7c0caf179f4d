"""`make demo`: vanilla vLLM vs vLLM + radix_plugin on a real engine, side by side.

A quick cut of ``engine_side_by_side.py`` (the `small` test model, half-size workloads, one
run each), of ``workflow_side_by_side.py`` (an agent pipeline: vanilla vs KVFlow eviction
with the host tier and prefetch), then the trace simulator on a synthetic few-shot trace.
Full runs: ``python benchmarks/engine_side_by_side.py --out benchmarks/results``,
``python benchmarks/workflow_side_by_side.py --out benchmarks/results`` and
``python benchmarks/sweep_policies.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import engine_side_by_side
import simulate
import workflow_side_by_side


def main() -> int:
    print("== Real vLLM engine (CPU, `small` model): vanilla vs plugin ==", flush=True)
    rc = engine_side_by_side.main(
        [
            "--workloads",
            "prefix_groups_kv_pressure,shared_system_prompt,multi_turn_chat",
            "--repeats",
            "1",
            "--scale",
            "0.5",
        ]
    )
    if rc:
        return rc
    print("\n== Agent workflow (KVFlow): vanilla vs workflow eviction + host tier ==", flush=True)
    rc = workflow_side_by_side.main(
        [
            "--agents",
            "4",
            "--workflows",
            "3",
            "--concurrency",
            "1",
            "--kv-blocks",
            "300",
            "--sides",
            "vanilla,plugin_workflow,plugin_workflow_prefetch",
        ]
    )
    if rc:
        return rc
    print("\n== Trace simulator: vLLM's KVCacheManager vs radix policies ==", flush=True)
    return simulate.main(
        ["--workload", "few_shot", "--capacity-blocks", "110", "--concurrency", "4"]
    )


if __name__ == "__main__":
    sys.exit(main())
