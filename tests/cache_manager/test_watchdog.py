"""``StepWatchdog`` on its own (no scheduler): the per-request step bound, the credit for
discarded samples, the engine-idle bound on its clock, and its entries dropped when
requests end. Requests are stand-ins with the ``Request`` fields the watchdog reads."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from vllm.v1.request import RequestStatus

from radix_plugin.cache_manager.engine_core.watchdog import StepWatchdog, StuckRequestError


def request(rid: str = "r", prompt: int = 10, max_tokens: int = 3) -> SimpleNamespace:
    return SimpleNamespace(
        request_id=rid,
        status=RequestStatus.RUNNING,
        num_prompt_tokens=prompt,
        num_tokens=prompt,
        num_output_tokens=0,
        max_tokens=max_tokens,
        num_computed_tokens=0,
        num_output_placeholders=0,
        spec_token_ids=[],
        num_preemptions=0,
        structured_output_request=None,
    )


def scheduled(*rids: str, tokens: int = 1) -> SimpleNamespace:
    counts = {rid: tokens for rid in rids}
    total = sum(counts.values())
    return SimpleNamespace(num_scheduled_tokens=counts, total_num_scheduled_tokens=total)


def decode(dog: StepWatchdog, r: SimpleNamespace) -> None:
    """One decode step that samples one token."""
    out = scheduled(r.request_id)
    r.num_computed_tokens = r.num_tokens
    dog.after_schedule(out, {r.request_id: r}, (), list)
    r.num_tokens += 1
    r.num_output_tokens += 1
    dog.after_step(out, {r.request_id: r}, [r])


def test_a_request_that_outlives_its_length_limit_hits_the_step_bound() -> None:
    """A bypassed length check: the bound is num_tokens at admission + max_tokens."""
    dog = StepWatchdog()
    r = request(prompt=10, max_tokens=3)
    r.num_computed_tokens = 9  # cached prompt: one prefill step, then decodes
    with pytest.raises(StuckRequestError, match="past its bound 13") as caught:
        for _ in range(14):
            decode(dog, r)
    assert '"scheduled_steps": 14' in str(caught.value)


def test_a_discarded_sample_widens_the_bound_by_the_positions_it_rolled_back() -> None:
    dog = StepWatchdog()
    r = request(prompt=10, max_tokens=3)
    out = scheduled("r", tokens=10)
    r.num_computed_tokens = 10  # what vLLM's schedule() leaves: the step's positions
    dog.after_schedule(out, {"r": r}, (), list)
    r.num_computed_tokens = 4  # vLLM dropped the step's KV from position 4 on (no token)
    dog.after_step(out, {"r": r}, [r])
    for _ in range(12 + 6):  # 10 + 3 + the 6 positions to compute again, minus the first
        decode(dog, r)
    with pytest.raises(StuckRequestError, match="past its bound 19"):
        decode(dog, r)


def test_no_progress_fails_only_after_enough_steps_and_time() -> None:
    now = [0.0]
    dog = StepWatchdog(idle_steps=3, idle_s=10.0, clock=lambda: now[0])
    waiting = request("w")
    waiting.status = RequestStatus.WAITING
    queues = lambda: [(waiting, "waiting")]  # noqa: E731
    for _ in range(5):
        dog.after_schedule(scheduled(), {"w": waiting}, (), queues)  # many steps, no time
    now[0] = 9.0
    dog.after_schedule(scheduled(), {"w": waiting}, (), queues)
    now[0] = 10.0
    with pytest.raises(StuckRequestError, match="no request progressed for 7 steps"):
        dog.after_schedule(scheduled(), {"w": waiting}, (), queues)


def test_a_step_that_runs_anything_resets_the_idle_count() -> None:
    dog = StepWatchdog(idle_steps=3, idle_s=0.0)
    r = request()
    queues = lambda: [(r, "running")]  # noqa: E731
    for _ in range(2):
        dog.after_schedule(scheduled(), {"r": r}, (), queues)
    decode(dog, r)
    for _ in range(2):
        dog.after_schedule(scheduled(), {"r": r}, (), queues)
    with pytest.raises(StuckRequestError, match="for 3 steps"):
        dog.after_schedule(scheduled(), {"r": r}, (), queues)


def test_entries_are_dropped_when_requests_are_freed() -> None:
    dog = StepWatchdog()
    rs = [request(f"r{i}") for i in range(100)]
    for r in rs:
        decode(dog, r)
    held = request("held")
    dog.after_schedule(scheduled(), {"held": held}, [held], list)
    assert len(dog) == 101
    for r in [*rs, held]:
        dog.forget(r.request_id)
    assert len(dog) == 0


def test_only_requests_the_step_gave_no_token_are_candidates_for_a_lost_sample() -> None:
    """The always-on repair looks only at scheduled requests with an empty (or missing)
    sampled row, or at every scheduled request when the step sampled nothing at all."""
    from vllm.v1.outputs import ModelRunnerOutput

    from radix_plugin.cache_manager.engine_core.watchdog import without_sample

    scheduled = {"a": 1, "b": 1, "c": 4, "gone": 1}
    out = ModelRunnerOutput(
        req_ids=["a", "b", "c"],
        req_id_to_index={"a": 0, "b": 1, "c": 2},
        sampled_token_ids=[[5], [], [7, 8]],
    )
    assert sorted(without_sample(scheduled, out)) == ["b", "gone"]
    out.sampled_token_ids = [[5], [6], [7]]
    assert without_sample(scheduled, out) == ["gone"]
    out.sampled_token_ids = []
    assert sorted(without_sample(scheduled, out)) == ["a", "b", "c", "gone"]
