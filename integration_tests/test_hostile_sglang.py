"""Hostile SGLang clients against one real server with the README's full setup (workflow
eviction, host tier, jump-forward drafts) and the SGLang endpoint: every case of
``radix_plugin.testing.sglang_hostile`` gets a 4xx naming the bad field (or is served, for
odd but valid input) within a bounded time while a well-behaved client keeps being served;
hundreds of streams cut mid-way leave nothing in flight; random ``/generate`` bodies
(hypothesis) never get a 5xx; and an SGLang program runs at the end.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import sglang as sgl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from radix_plugin.api_server.core.sglang_request import SAMPLING_FIELDS
from radix_plugin.testing.models import get_model_path
from radix_plugin.testing.server import (
    free_port,
    full_plugin_flags,
    running_server,
    server_command,
    sglang_endpoint_env,
)
from radix_plugin.testing.sglang_hostile import (
    CASES,
    Bystander,
    check,
    disconnect_streams,
    normal,
    post,
    wait_drained,
)

BOUNDED_S = 120  # every hostile request is answered well within this (the client's timeout)
CUTS = 200


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    cmd = server_command(
        get_model_path("tiny"), port, full_plugin_flags(), kv_blocks=256, max_model_len=2048
    )
    log = tmp_path_factory.mktemp("hostile") / "server.log"
    with open(log, "w") as fh:
        try:
            with running_server(cmd, port, fh, 300, sglang_endpoint_env()) as base:
                yield base
        except RuntimeError as exc:
            pytest.fail(f"{exc}\n{log.read_text()[-4000:]}")


def test_every_hostile_case_gets_its_answer_and_no_client_stalls(server: str) -> None:
    problems = []
    with Bystander(server, timeout=BOUNDED_S) as bystander:
        for case in CASES:
            reply = post(server, case.make(), timeout=BOUNDED_S)
            problem = check(case, reply)
            if problem:
                problems.append(f"{case.name}: {problem}")
    assert not problems, "\n".join(problems)
    assert bystander.samples and all(status == 200 for *_, status in bystander.samples)
    assert max(seconds for _, seconds, _ in bystander.samples) < BOUNDED_S
    assert normal(server).status == 200


@pytest.mark.parametrize("read_first", [True, False], ids=["after-first-chunk", "after-send"])
def test_hundreds_of_cut_streams_leave_nothing_in_flight(server: str, read_first: bool) -> None:
    assert disconnect_streams(server, CUTS, read_first=read_first) == CUTS
    _, left = wait_drained(server, timeout_s=BOUNDED_S)
    assert left == {
        "vllm:num_requests_running": 0,
        "vllm:num_requests_waiting": 0,
        "sglang_requests_in_flight": 0,
    }
    assert normal(server).status == 200


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
)
_json = st.recursive(
    _scalars,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=12,
)
_small_int = st.integers(-3, 8)


def _short(sampling: dict) -> dict:
    """A valid large ``max_new_tokens`` only runs long (its limits are cases above)."""
    value = sampling.get("max_new_tokens")
    if isinstance(value, int) and not isinstance(value, bool) and value > 8:
        return {**sampling, "max_new_tokens": 8}
    return sampling


_sampling = st.dictionaries(
    st.sampled_from(sorted(SAMPLING_FIELDS)), _json | _small_int, max_size=5
).map(_short)
_bodies = st.fixed_dictionaries(
    {},
    optional={
        "text": st.text(max_size=40) | st.lists(st.text(max_size=10), max_size=3) | _json,
        "input_ids": st.lists(st.integers(-2, 2**40), max_size=4) | _json,
        "sampling_params": _sampling | st.lists(_sampling, max_size=3) | _json,
        "rid": st.text(max_size=8) | _json,
        "return_logprob": st.booleans() | _json,
        "logprob_start_len": _small_int | _json,
        "top_logprobs_num": _small_int | _json,
        "stream": st.booleans() | _json,
        "vllm_xargs": st.dictionaries(st.sampled_from(["radix_agent", "radix_pin", "x"]), _json)
        | _json,
    },
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=_bodies)
def test_random_generate_bodies_are_served_or_refused_by_name(server: str, body: dict) -> None:
    start = time.monotonic()
    reply = post(server, json.dumps(body).encode(), timeout=BOUNDED_S)
    assert time.monotonic() - start < BOUNDED_S
    assert reply.status == 200 or 400 <= reply.status < 500, (reply.status, reply.body[:300])
    if reply.status != 200:
        error = reply.error()
        assert error.get("message") and (error.get("param") or "body" in error["message"]), body


def test_a_normal_sglang_program_runs_afterwards(server: str) -> None:
    @sgl.function
    def quiz(s):
        s += "Q: What is the capital of France?\nA:"
        s += sgl.gen("answer", max_tokens=8, stop="\n", temperature=0)
        s += "\nIs that right? " + sgl.select("verdict", choices=["yes", "no"])
        s += "\nA number: " + sgl.gen("n", max_tokens=4, regex=r"[0-9]{1,3}", temperature=0)

    state = quiz.run(backend=sgl.RuntimeEndpoint(server))
    assert state["verdict"] in ("yes", "no")
    assert state["n"].isdigit()
