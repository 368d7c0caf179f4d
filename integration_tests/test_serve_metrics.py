"""Every ``radix_plugin:*`` metric moves on a real server's /metrics when its feature runs,
the Grafana dashboard queries only names that server exports, and the host tier runs from
``--additional-config`` alone.

One server for the module: tiny model, ``RadixScheduler`` with workflow eviction, the host
tier turned on by ``"host_tier": true`` (no ``--kv-transfer-config``), jump-forward drafts
(on CPU by default), a 40-block device pool and a 256-token step budget. The session
policy's metrics have their own server (``test_serve_session_metrics.py``).
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_serve import STARTUP_TIMEOUT_S, _get, _post, _post_status

from radix_plugin import plugin_metrics as m
from radix_plugin.cache_manager.core.workflow import AgentStepGraph
from radix_plugin.testing.models import get_model_path
from radix_plugin.testing.server import (
    Scrape,
    free_port,
    running_server,
    server_command,
    server_env,
)

DASHBOARD = Path(__file__).resolve().parents[1] / "dashboards" / "radix_plugin.json"
RADIX = {"eviction": "workflow", "host_tier": True, "max_wait_steps": 150}
PROMPT_TOKENS = 500  # 15 full blocks: three such prompts overflow the 39-block pool
SCHEMA = {
    "type": "object",
    "properties": {
        "customer_identifier_code": {"type": "string", "maxLength": 6},
        "subscription_tier_classification": {"enum": ["basic", "premium", "enterprise"]},
        "requires_signature_on_delivery": {"type": "boolean"},
    },
    "required": [
        "customer_identifier_code",
        "subscription_tier_classification",
        "requires_signature_on_delivery",
    ],
    "additionalProperties": False,
}


class Server:
    def __init__(self, base: str, log: Path) -> None:
        self.base = base
        self.log = log
        self.model = json.loads(_get(base + "/v1/models"))["data"][0]["id"]

    def complete(
        self, prompt: list[int] | str, max_tokens: int = 4, ignore_eos: bool = True, **xargs: Any
    ) -> dict:
        body = {"model": self.model, "prompt": prompt, "max_tokens": max_tokens}
        body.update(temperature=0, ignore_eos=ignore_eos)
        if xargs:
            body["vllm_xargs"] = xargs
        return _post(self.base + "/v1/completions", body)

    def scrape(self) -> Scrape:
        return Scrape(self.base)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = free_port()
    flags = [
        "--dtype",
        "float32",  # the same greedy tokens on every CPU ISA
        "--max-num-seqs",
        "2",
        "--max-num-batched-tokens",
        "256",
        "--scheduler-cls",
        "radix_plugin.RadixScheduler",
        "--additional-config",
        json.dumps({"radix_plugin": RADIX}),
    ]
    cmd = server_command(get_model_path("tiny"), port, flags, kv_blocks=40, max_model_len=1024)
    assert not any("kv-transfer" in flag for flag in cmd)
    log = tmp_path_factory.mktemp("serve") / "server.log"
    env = dict(server_env(), VLLM_SERVER_DEV_MODE="1")  # for /reset_prefix_cache
    with open(log, "w") as fh:
        try:
            with running_server(cmd, port, fh, STARTUP_TIMEOUT_S, env) as base:
                yield Server(base, log)
        except RuntimeError as exc:
            pytest.fail(f"{exc}\n{log.read_text()[-4000:]}")


def _tokens(seed: int, n: int = PROMPT_TOKENS) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(16, 4000) for _ in range(n)]


def _reset(server: Server) -> None:
    req = urllib.request.Request(server.base + "/reset_prefix_cache", b"", method="POST")
    urllib.request.urlopen(req, timeout=30).read()


def _moved(server: Server, action: Callable[[], Any], *names: str, **labels: str) -> Scrape:
    """Run ``action``; assert every named series grew; returns the scrape after."""
    before = server.scrape()
    action()
    after = server.scrape()
    for name in names:
        assert after.value(name, **labels) > before.value(name, **labels), (name, labels)
    return after


def test_host_tier_runs_from_additional_config_alone(server: Server) -> None:
    """Three prompts overflow the device pool; the first comes back from host memory with
    its cold answer, and the host tier's and the tree's metrics say so."""
    a, b, c = _tokens(1), _tokens(2), _tokens(3)
    before = server.scrape()
    cold = server.complete(a, max_tokens=8)
    server.complete(b)
    server.complete(c)
    warm = server.complete(a, max_tokens=8)
    after = server.scrape()
    assert warm["choices"][0]["text"] == cold["choices"][0]["text"]
    grew = {
        name: after.value(name, **labels) - before.value(name, **labels)
        for name, labels in [
            (m.HOST_SAVED.name, {}),
            (m.HOST_LOADED.name, {}),
            (m.HIT_TOKENS.name, {"tier": "host"}),
            (m.EVICTED_BLOCKS.name, {"reason": "capacity", "policy": "workflow"}),
            (m.LOOKUP_TOKENS.name, {}),
        ]
    }
    assert all(v > 0 for v in grew.values()), grew
    assert grew[m.LOOKUP_TOKENS.name] >= 4 * (PROMPT_TOKENS - 1)
    assert after.value("vllm:external_prefix_cache_hits_total") > 0
    for gauge in (m.HOST_BYTES, m.HOST_CAPACITY_BYTES, m.CACHED_BLOCKS, m.TREE_NODES):
        assert after.value(gauge.name) > 0, gauge.name
    assert after.value(m.HOST_CAPACITY_BYTES.name) >= after.value(m.HOST_BYTES.name)
    # Nothing runs now: every cached block is evictable.
    assert after.value(m.EVICTABLE_BLOCKS.name) == after.value(m.CACHED_BLOCKS.name)


def test_prefix_hits_on_the_device(server: Server) -> None:
    shared = _tokens(4, 256)

    def two() -> None:
        server.complete([*shared, *_tokens(5, 40)])
        server.complete([*shared, *_tokens(6, 40)])

    after = _moved(server, two, m.HIT_TOKENS.name, tier="device")
    assert after.value(m.HIT_TOKENS.name, tier="device") >= 256


def test_waiting_queue_holds_back_reorders_and_promotes(server: Server) -> None:
    """Two seats: while two long requests decode, an uncached request and one that
    continues a cached prompt wait; the second goes first (lpm), both end up overdue
    (300 steps > max_wait_steps, 150; the second arrives well within 150 steps). Then two
    requests with the same new 300-token prefix wait together behind two others: the
    second is held back while the first prefills it (256-token steps)."""
    _reset(server)  # an empty pool: nothing evicts the warm prefix while the queue waits
    warm = _tokens(20, 256)
    server.complete(warm)
    server.complete(warm)  # hit once: ranks as a reused prefix, not a request's own tail

    def start(*args: Any, until: Callable[[Scrape], bool]) -> threading.Thread:
        thread = threading.Thread(target=server.complete, args=args)
        thread.start()
        while not until(server.scrape()):
            time.sleep(0.01)
        return thread

    def queue() -> None:
        def running(n: int) -> Callable[[Scrape], bool]:
            return lambda s: s.value("vllm:num_requests_running") >= n

        def waiting(n: int) -> Callable[[Scrape], bool]:
            return lambda s: s.value("vllm:num_requests_waiting") >= n

        threads = [start(_tokens(21 + i, 64), 300, until=running(i + 1)) for i in range(2)]
        threads.append(start(_tokens(23, 300), until=waiting(1)))
        threads.append(start([*warm, *_tokens(24, 40)], until=waiting(2)))
        for t in threads:
            t.join()
        # Both seats busy again (100 steps, under max_wait_steps): the pair waits together,
        # so the follower is held back from the leader's admission on, whatever the timing.
        threads = [start(_tokens(27 + i, 64), 100, until=running(i + 1)) for i in range(2)]
        same = _tokens(25, 300)
        for i in range(2):
            threads.append(start([*same, *_tokens(26 + i, 8)], until=waiting(i + 1)))
        for t in threads:
            t.join()

    _moved(server, queue, m.REORDERS.name, m.PROMOTED.name, m.HELD_BACK.name)


def test_agent_loop_prefetches_and_the_workflow_learner_follows(server: Server) -> None:
    """Agents due next get their prompts prefetched from the host, and their requests hit
    them; the agents' tags teach the learner."""
    agents = ["planner", "coder", "critic"]
    prompts = {name: _tokens(10 + i) for i, name in enumerate(agents)}
    graph = AgentStepGraph.from_steps(agents, loop=True)

    def loop() -> None:
        for name in agents:
            server.complete(prompts[name])
        for step in range(3 * len(agents)):  # three rounds of one looping workflow
            name = agents[step % len(agents)]
            server.complete(prompts[name], **graph.hints("wf", step, name))

    after = _moved(server, loop, m.HOST_PREFETCHED.name, m.HOST_PREFETCH_IN_TIME.name)
    assert after.value(m.WORKFLOW_AGENTS.name) >= len(agents)
    assert after.value(m.WORKFLOWS_TRACKED.name) >= 1


def test_jump_forward_forces_verifies_and_rejects_drafts(server: Server) -> None:
    schema = json.dumps(SCHEMA)

    def structured() -> None:
        for mode in ("forced", "verify"):
            for i in range(2):
                server.complete(
                    f"Record {i}:",
                    max_tokens=120,
                    ignore_eos=False,
                    radix_json_schema=schema,
                    radix_jump_forward=mode,
                )

    after = _moved(
        server,
        structured,
        m.JF_FORCED.name,
        m.JF_VERIFIED.name,
        m.JF_REJECTED.name,
        m.JF_STEPS_SAVED.name,
    )
    saved = after.value(m.JF_STEPS_SAVED.name)
    assert saved == after.value(m.JF_FORCED.name) + after.value(m.JF_VERIFIED.name)


def test_pins_show_until_unpinned(server: Server) -> None:
    prompt = _tokens(30, 160)
    after = _moved(
        server,
        lambda: server.complete(prompt, radix_pin=True),
        m.PINNED_BLOCKS.name,
        m.PINNED_PREFIXES.name,
    )
    assert after.value(m.PIN_BUDGET_BLOCKS.name) == int(39 * 0.25)
    assert after.value(m.STATE_ENTRIES.name, structure="pin_table_nodes") == 1
    server.complete(prompt, radix_unpin=True)
    after = server.scrape()
    assert after.value(m.PINNED_BLOCKS.name) == after.value(m.PINNED_PREFIXES.name) == 0


def test_grammar_refusals_are_counted_by_reason(server: Server) -> None:
    url = server.base + "/v1/completions"
    base = {"model": server.model, "prompt": "x", "max_tokens": 4}
    bad = {
        "malformed": {"vllm_xargs": {"radix_regex": "", "radix_choice": ["a"]}},
        "conflict": {
            "vllm_xargs": {"radix_regex": "a+"},
            "structured_outputs": {"regex": "b+"},
        },
        "invalid": {"vllm_xargs": {"radix_json_schema": '{"type": "objekt"}'}},
        "cannot_finish": {"vllm_xargs": {"radix_ebnf": 'root ::= "a" root'}},
    }
    before = server.scrape()
    for reason, body in bad.items():
        code, reply = _post_status(url, {**base, **body})
        assert code == 400, (reason, reply)
    after = server.scrape()
    for reason in bad:
        grew = after.value(m.GRAMMAR_REFUSALS.name, reason=reason) - before.value(
            m.GRAMMAR_REFUSALS.name, reason=reason
        )
        assert grew == 1, reason


def test_state_entries_follow_the_live_requests(server: Server) -> None:
    """While a request runs, the scheduler keeps its hints and mode; after, nothing."""
    done = threading.Event()

    def long_request() -> None:
        server.complete(_tokens(40, 64), max_tokens=400)
        done.set()

    thread = threading.Thread(target=long_request)
    thread.start()
    seen = 0.0
    while not done.is_set() and not seen:
        seen = server.scrape().value(m.STATE_ENTRIES.name, structure="hints")
    thread.join()
    assert seen >= 1
    after = server.scrape()
    assert after.value(m.STATE_ENTRIES.name, structure="hints") == 0
    assert after.value(m.STATE_ENTRIES.name, structure="drafter_modes") == 0
    structures = after.label_values(m.STATE_ENTRIES.name, "structure")
    assert {"hints", "wait_steps", "pins_pending", "draft_caps", "host_agent_paths"} <= structures
    assert after.value(m.STATE_ENTRIES.name, structure="host_agent_paths") >= 3
    # The jump-forward test's schema was built in EngineCore (a bounded LRU).
    assert 1 <= after.value(m.STATE_ENTRIES.name, structure="grammar_builds") <= 256


def test_reset_evicts_everything_with_reason_reset(server: Server) -> None:
    """Every block cached before the reset is counted (the workflow's agents due next may
    be prefetched back from the host right after, so the tree need not stay empty)."""
    labels = {"reason": "reset", "policy": "workflow"}
    before = server.scrape()
    _reset(server)
    server.complete("x", max_tokens=1)  # stats travel with a step; no block to cache
    after = server.scrape()
    grew = after.value(m.EVICTED_BLOCKS.name, **labels) - before.value(
        m.EVICTED_BLOCKS.name, **labels
    )
    assert grew >= before.value(m.CACHED_BLOCKS.name) > 0


_METRIC = re.compile(r"\b((?:radix_plugin|vllm):[a-zA-Z0-9_:]+)")
"""Every metric name a PromQL expression mentions (ours and vLLM's)."""


def _dashboard_metrics(dashboard: dict) -> set[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", ())]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return {name for expr in exprs for name in _METRIC.findall(expr)}


def test_dashboard_queries_only_exported_metrics_and_shows_every_plugin_metric(
    server: Server,
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    used = _dashboard_metrics(dashboard)
    exported = server.scrape().names()
    assert used <= exported, sorted(used - exported)
    assert {metric.name for metric in m.METRICS} <= used
    assert all(p.get("targets") for p in dashboard["panels"] if p["type"] != "row")
