"""Which x86 CPU features a test run had, for the pytest header.

Numerical results of vLLM's CPU backend depend on the ISA it picks: with AMX tiles
(Sapphire Rapids and later) CPU_ATTN runs its `amx` bf16 kernel, elsewhere `vec`; vLLM loads
its kernel library built for AVX512-BF16 (`_C`), plain AVX-512 (`_C_AVX512`) or AVX2
(`_C_AVX2`); oneDNN GEMMs use AMX, AVX512-BF16 or AVX2. A failing bound is only reproducible
with these known.

Forcing another path: vLLM's oneDNN GEMMs honour `ONEDNN_MAX_CPU_ISA` (e.g.
`AVX512_CORE_BF16` keeps them off AMX, `AVX2` off AVX-512). CPU_ATTN's choice comes from
`torch.cpu._is_amx_tile_supported()`, which no environment variable changes, so its AMX
kernel can only be avoided on a CPU without AMX.
"""

from __future__ import annotations

import os
from pathlib import Path

FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")


def read_cpuinfo(path: Path = Path("/proc/cpuinfo")) -> tuple[str, set[str]]:
    """(model name, flags) of the first CPU listed; ("unknown", set()) where unreadable."""
    try:
        text = path.read_text()
    except OSError:
        return "unknown", set()
    model, flags = "unknown", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown":
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def native_dtype(flags: set[str] | None = None) -> str:
    """``bfloat16`` where the CPU computes it natively (AVX512-BF16 or AMX), else ``float32``.

    Without them bf16 GEMMs are emulated: on a 2-core AVX2-only EPYC, SmolLM2-135M's
    batch-16 decode step took 608 ms in bf16 and 177 ms in float32, so a benchmark in bf16
    there measures the emulation, not the engine.
    """
    if flags is None:
        flags = read_cpuinfo()[1]
    return "bfloat16" if flags & {"avx512_bf16", "amx_bf16"} else "float32"


def cpu_report_lines() -> list[str]:
    """Pytest header lines: CPU model, the relevant flags, and the ISA-forcing setting."""
    model, flags = read_cpuinfo()
    have = " ".join(f for f in FLAGS if f in flags) or "none"
    lacks = " ".join(f for f in FLAGS if f not in flags) or "none"
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "unset")
    library = "_C_AVX2"
    if "avx512f" in flags:
        library = "_C" if "avx512_bf16" in flags else "_C_AVX512"
    return [
        f"cpu: {model}, {os.cpu_count()} logical cores",
        f"cpu flags: has {have}; lacks {lacks}",
        f"vLLM CPU_ATTN bf16 kernel: {'amx' if 'amx_tile' in flags else 'vec'}; "
        f"vLLM kernel library: {library}; ONEDNN_MAX_CPU_ISA={isa}; "
        f"native dtype: {native_dtype(flags)}",
    ]
