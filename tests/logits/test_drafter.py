"""``JumpForwardDrafter`` on its own: modes, the draft gate, draft caps and their bounds,
over vLLM's real ``StructuredOutputManager`` and real requests (no scheduler loop)."""

from __future__ import annotations

import pytest
from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.structured_output import StructuredOutputManager

from radix_plugin.config import JUMP_FORWARD_PROPOSER
from radix_plugin.logits.engine_core.drafter import DraftCaps, JumpForwardDrafter
from radix_plugin.testing.scheduler import build_scheduler, make_request

SPEC = {"method": "custom_class", "model": JUMP_FORWARD_PROPOSER, "num_speculative_tokens": 4}


@pytest.fixture(scope="module")
def manager() -> StructuredOutputManager:
    config = build_scheduler(radix={}, speculative_config=SPEC).vllm_config
    return StructuredOutputManager(config)


def drafter(manager: StructuredOutputManager, **options: object) -> JumpForwardDrafter:
    settings = {
        "draft_engine": True,
        "jump_forward": True,
        "num_spec_tokens": 4,
        "default_mode": "auto",
        "min_forced_tokens": 4,
        "on_cpu": True,
        **options,
    }
    return JumpForwardDrafter(manager, **settings)  # type: ignore[arg-type]


def scheduler_output(drafts: dict[str, list[int]]) -> SchedulerOutput:
    output = SchedulerOutput.make_empty()
    output.scheduled_spec_decode_tokens = drafts
    return output


def test_draft_caps_follow_acceptance_within_bounds() -> None:
    caps = DraftCaps(limit=8)
    assert caps.cap("r") == 8  # nothing observed yet: the engine's limit
    caps.observe("r", 0)
    assert caps.cap("r") == 2  # at least 2
    for _ in range(10):
        caps.observe("r", 6)
    assert caps.cap("r") == 8  # at most the limit
    caps.forget("r")
    assert len(caps) == 0


def test_modes_are_per_request_and_dropped_when_freed(manager: StructuredOutputManager) -> None:
    jf = drafter(manager)
    requests = [
        make_request("a", list(range(40))),
        make_request("b", list(range(40)), {"radix_jump_forward": "verify"}),
        make_request("c", list(range(40)), {"radix_jump_forward": "nonsense"}),  # bypassed 400
    ]
    for r in requests:
        jf.on_add(r)
    assert jf._request_mode(requests[1]) == "verify"
    assert jf._request_mode(requests[2]) == "auto"  # logged, engine default kept
    assert len(jf) == 3
    for r in requests:
        jf.forget(r.request_id)
    assert len(jf) == 0


def test_without_the_draft_engine_no_mode_is_kept(manager: StructuredOutputManager) -> None:
    jf = drafter(manager, draft_engine=False)
    jf.on_add(make_request("a", list(range(40))))
    assert len(jf) == 0 and not jf.jump_forward


def test_gate_closes_for_sampled_or_min_p_requests(manager: StructuredOutputManager) -> None:
    jf = drafter(manager)
    greedy = make_request("g", list(range(40)), temperature=0.0)
    sampled = make_request("s", list(range(40)), temperature=0.8)
    min_p = make_request("m", list(range(40)), temperature=0.7, min_p=0.1)
    assert jf.drafts_safe([greedy])
    assert not jf.drafts_safe([greedy, sampled])  # CPU: mixed batches mis-verify
    assert drafter(manager, on_cpu=False).drafts_safe([greedy, sampled])
    assert not drafter(manager, on_cpu=False).drafts_safe([greedy, min_p])
    greedy.spec_token_ids = [1, 2]
    jf.before_schedule([greedy, sampled], running=[greedy])
    assert greedy.spec_token_ids == []  # withdrawn before the batch is built


def test_bitmask_is_vllms_when_nothing_is_forced(manager: StructuredOutputManager) -> None:
    jf = drafter(manager)
    built = object()
    output = scheduler_output({"a": [1, 2]})
    assert jf.grammar_bitmask(output, {}, lambda out: built) is built


def test_acceptance_is_learned_from_the_tokens_a_step_added(
    manager: StructuredOutputManager,
) -> None:
    jf = drafter(manager)
    request = make_request("a", list(range(40)))
    request.append_output_token_ids([5])
    output = scheduler_output({"a": [1, 2, 3, 4]})
    before = jf.outputs_before(output, {"a": request})
    assert before == {"a": (request, 1, 4)}
    request.append_output_token_ids([1, 2, 9])  # two drafts accepted, then the bonus token
    jf.observe(before, {"a": request})
    assert jf.caps.cap("a") == 4  # round(2 * 2) + 1 = 5, capped at the engine's 4
    # Verified drafts (nothing was forced): two accepted, two rejected, two steps saved.
    assert (jf.verified_total, jf.rejected_total, jf.steps_saved_total) == (2, 2, 2)
    assert jf.forced_total == 0
