"""The CPU line of the test report names the model and the ISA flags that change numerics."""

from __future__ import annotations

from pathlib import Path

from radix_plugin.testing import cpu


def test_reads_model_and_flags_of_the_first_cpu(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
        "flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n\n"
        "processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n"
    )
    model, flags = cpu.read_cpuinfo(info)
    assert model == "Intel(R) Xeon(R) Platinum 8480+"
    assert {"avx512_bf16", "amx_tile", "amx_bf16"} <= flags and "fpu" in flags


def test_unreadable_cpuinfo_is_reported_as_unknown(tmp_path: Path) -> None:
    assert cpu.read_cpuinfo(tmp_path / "missing") == ("unknown", set())


def test_report_names_the_attention_kernel_this_cpu_gets() -> None:
    _, flags = cpu.read_cpuinfo()
    lines = cpu.cpu_report_lines()
    assert lines[0].startswith("cpu: ")
    expected = "amx" if "amx_tile" in flags else "vec"
    assert f"CPU_ATTN bf16 kernel: {expected};" in lines[2]


def test_native_dtype_is_bf16_only_where_the_cpu_computes_it() -> None:
    assert cpu.native_dtype({"avx2", "avx512f", "avx512_bf16"}) == "bfloat16"
    assert cpu.native_dtype({"avx2", "amx_tile", "amx_bf16"}) == "bfloat16"
    assert cpu.native_dtype({"avx2", "avx512f", "avx512_vnni"}) == "float32"
    assert cpu.native_dtype(set()) == "float32"
