"""Memory of the soak's servers: RSS of every server process sampled on a timer, the
post-warm-up slope with its spread, optional tracemalloc snapshots, and the RSS plot.

A leak shows as a positive slope that persists in every window after warm-up (allocator
arenas, caches filling and the first compilations grow early and then flatten), so the
slope is fitted only after warm-up and given with a bootstrap interval and per-window
slopes; comparing it with vanilla vLLM's under the same load separates the plugin's growth
from vLLM's own.
"""

from __future__ import annotations

import contextlib
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import psutil

SITECUSTOMIZE = '''"""Written by soak_memory.py: tracemalloc in every process of one server."""
import os

_DIR = os.environ.get("RADIX_SOAK_TRACEMALLOC_DIR")
if _DIR:
    import threading
    import time
    import tracemalloc

    def _dump_forever(interval: float) -> None:
        n = 0
        while True:
            time.sleep(interval)
            path = os.path.join(_DIR, f"{os.getpid()}-{n:04d}.snap")
            tracemalloc.take_snapshot().dump(path + ".tmp")
            os.replace(path + ".tmp", path)
            n += 1

    def _start() -> None:
        if not tracemalloc.is_tracing():
            tracemalloc.start(int(os.environ.get("RADIX_SOAK_TRACEMALLOC_FRAMES", "1")))
        interval = float(os.environ.get("RADIX_SOAK_TRACEMALLOC_S", "60"))
        threading.Thread(target=_dump_forever, args=(interval,), daemon=True).start()

    _start()
    os.register_at_fork(after_in_child=_start)
'''


def tracemalloc_env(directory: Path, interval_s: float, python_path: str) -> dict[str, str]:
    """Environment that makes every process of a server dump tracemalloc snapshots into
    ``directory`` every ``interval_s`` (through a ``sitecustomize`` put first on its path)."""
    site = directory / "site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {
        "RADIX_SOAK_TRACEMALLOC_DIR": str(directory),
        "RADIX_SOAK_TRACEMALLOC_S": str(interval_s),
        "PYTHONPATH": f"{site}:{python_path}" if python_path else str(site),
    }


def tracemalloc_diff(
    directory: Path, pids: dict[int, str], after_s: float, top: int = 15
) -> list[dict[str, Any]]:
    """Per process: the largest growths by source line between its first snapshot taken
    after ``after_s`` (a wall-clock time) and its last."""
    out = []
    for pid, name in pids.items():
        snaps = sorted(directory.glob(f"{pid}-*.snap"))
        later = [p for p in snaps if p.stat().st_mtime >= after_s]
        if len(later) < 2:
            continue
        first = tracemalloc.Snapshot.load(str(later[0]))
        last = tracemalloc.Snapshot.load(str(later[-1]))
        stats = last.compare_to(first, "lineno")
        out.append(
            {
                "pid": pid,
                "process": name,
                "snapshots": [later[0].name, later[-1].name],
                "seconds_apart": round(later[-1].stat().st_mtime - later[0].stat().st_mtime),
                "traced_mib": [
                    round(sum(s.size for s in snap.statistics("filename")) / 2**20, 1)
                    for snap in (first, last)
                ],
                "top_growth": [
                    {
                        "where": str(s.traceback[0]),
                        "size_diff_kib": round(s.size_diff / 1024, 1),
                        "count_diff": s.count_diff,
                    }
                    for s in stats[:top]
                ],
            }
        )
    return out


class RssSampler:
    """RSS of a server's process tree (API server + EngineCore children) every ``every_s``."""

    def __init__(self, sides: dict[str, int], every_s: float = 10.0) -> None:
        self.sides = sides  # side -> API server pid
        self.every_s = every_s
        self.start = time.monotonic()
        self.samples: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
        self.names: dict[str, dict[int, str]] = {side: {} for side in sides}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def sample(self) -> None:
        t = round(time.monotonic() - self.start, 1)
        for side, pid in self.sides.items():
            per_pid: dict[str, float] = {}
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                for p in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        per_pid[str(p.pid)] = round(p.memory_info().rss / 2**20, 1)
                        self.names[side].setdefault(p.pid, _label(p, root))
            self.samples[side].append(
                {"t_s": t, "total_mib": round(sum(per_pid.values()), 1), "per_pid_mib": per_pid}
            )


def _label(p: psutil.Process, root: psutil.Process) -> str:
    if p.pid == root.pid:
        return "api_server"
    with contextlib.suppress(psutil.Error):
        return p.name()
    return "child"


def slope_report(
    samples: list[dict[str, Any]], warmup_s: float, key: str = "total_mib", windows: int = 5
) -> dict[str, Any]:
    """Least-squares RSS slope (MiB/min) after ``warmup_s``: the fit, a 90% pairs-bootstrap
    interval, and the slope of each of ``windows`` equal windows."""
    points = [(s["t_s"] / 60, _value(s, key)) for s in samples if s["t_s"] >= warmup_s]
    points = [(t, v) for t, v in points if v is not None]
    if len(points) < 3:
        return {"samples": len(points), "slope_mib_per_min": None}
    t, v = np.array(points).T
    rng = np.random.default_rng(0)
    boot = []
    for _ in range(2000):
        idx = rng.integers(0, len(t), len(t))
        if np.ptp(t[idx]) > 0:
            boot.append(np.polyfit(t[idx], v[idx], 1)[0])
    per_window = []
    for chunk in np.array_split(np.arange(len(t)), windows):
        if len(chunk) >= 3 and np.ptp(t[chunk]) > 0:
            per_window.append(round(float(np.polyfit(t[chunk], v[chunk], 1)[0]), 3))
    return {
        "samples": len(points),
        "from_s": round(float(t[0] * 60)),
        "to_s": round(float(t[-1] * 60)),
        "start_mib": round(float(v[0]), 1),
        "end_mib": round(float(v[-1]), 1),
        "slope_mib_per_min": round(float(np.polyfit(t, v, 1)[0]), 3),
        "bootstrap_90": [round(float(q), 3) for q in np.percentile(boot, [5, 95])],
        "window_slopes": per_window,
    }


def _value(sample: dict[str, Any], key: str) -> float | None:
    if key == "total_mib":
        return sample["total_mib"]
    return sample["per_pid_mib"].get(key)


def engine_core_pid(side_samples: list[dict[str, Any]], names: dict[int, str]) -> str | None:
    """The largest child process (the EngineCore)."""
    last = side_samples[-1]["per_pid_mib"] if side_samples else {}
    children = {pid: mib for pid, mib in last.items() if names.get(int(pid)) != "api_server"}
    return max(children, key=children.__getitem__) if children else None


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for side, color in (("plugin", "tab:blue"), ("vanilla", "tab:gray")):
        samples = result["rss"][side]
        t = [s["t_s"] / 60 for s in samples]
        ax.plot(t, [s["total_mib"] for s in samples], color=color, label=f"{side}: all processes")
        core = result["memory"][side]["engine_core_pid"]
        if core is not None:
            ax.plot(
                t,
                [s["per_pid_mib"].get(core, np.nan) for s in samples],
                color=color,
                linestyle="--",
                label=f"{side}: EngineCore",
            )
    ax.axvline(result["warmup_s"] / 60, color="black", linewidth=0.8, linestyle=":")
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS (MiB)")
    ax.set_title(f"Soak: server RSS, plugin vs vanilla vLLM ({result['model']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
