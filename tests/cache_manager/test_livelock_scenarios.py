"""Every way a request might never finish that reading vLLM 0.32's scheduler and the
plugin found, built on vLLM's real scheduler without a model and run under the plugin's
watchdog (``watchdog: true``), which raises ``StuckRequestError`` with the
scheduler's view of a request the moment it cannot progress: each scenario ends, within
the watchdog's step bound; pins give way to a request they alone keep out; and vLLM's own
empty-sample state, which its scheduler skips forever, is flagged at once by the watchdog
and repaired without it.
"""

from __future__ import annotations

import time

import pytest
from vllm.v1.outputs import ModelRunnerOutput
from vllm.v1.request import RequestStatus

from radix_plugin.cache_manager.engine_core.watchdog import StuckRequestError
from radix_plugin.config import JUMP_FORWARD_PROPOSER, WATCHDOG_ENV
from radix_plugin.testing.scheduler import (
    build_scheduler,
    make_request,
    run_steps,
    runner_output,
    step,
)

K = 4
SPEC = {"method": "custom_class", "model": JUMP_FORWARD_PROPOSER, "num_speculative_tokens": K}
WATCHED = {"eviction": "lru", "watchdog": True}


def watched(blocks: int = 64, **radix: object):
    return build_scheduler(radix={**WATCHED, **radix}, speculative_config=SPEC, blocks=blocks)


def plain(rid: str, n_prompt: int = 40, max_tokens: int = 64, base: int = 0, extra=None):
    return make_request(
        rid,
        list(range(base, base + n_prompt)),
        extra,
        max_tokens=max_tokens,
        temperature=0.0,
        ignore_eos=True,
    )


def test_the_watchdog_is_on_by_setting_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WATCHDOG_ENV, raising=False)
    assert build_scheduler(radix={}).radix_watchdog is None
    assert build_scheduler(radix={"watchdog": True}).radix_watchdog is not None
    monkeypatch.setenv(WATCHDOG_ENV, "1")
    assert build_scheduler(radix={}).radix_watchdog is not None


def test_a_plain_request_takes_exactly_max_tokens_steps_and_is_forgotten() -> None:
    s = watched()
    s.add_request(plain("p"))
    assert run_steps(s, max_steps=200) == 64  # the prefill step samples the first token
    assert len(s.radix_watchdog) == 0


def test_drafts_at_the_length_limit_are_trimmed_at_the_stop() -> None:
    s = watched()
    r = plain("p", max_tokens=8)
    s.add_request(r)
    while r.num_output_tokens < 7:
        step(s)
    r.spec_token_ids = [7] * K  # offered at 7 of 8 outputs; the model agrees with all
    out = s.schedule()
    assert out.num_scheduled_tokens["p"] == 1 + K  # vLLM does not cap drafts by max_tokens
    s.update_from_output(out, runner_output(s, out))
    assert r.status == RequestStatus.FINISHED_LENGTH_CAPPED and r.num_output_tokens == 8


def test_drafts_all_rejected_every_step_still_end_in_max_tokens_steps() -> None:
    s = watched()
    r = plain("p")
    s.add_request(r)
    steps = 0
    while not r.is_finished():
        step(s)  # the model samples 7; every draft (99) is rejected, the bonus token lands
        steps += 1
        if not r.is_finished():
            r.spec_token_ids = [99] * K
    assert steps == 64 and r.num_output_tokens == 64


def test_a_request_preempted_with_drafts_pending_is_readmitted_and_ends() -> None:
    # 19 usable blocks; two 280-token prompts take 9 each and both grow past 288 tokens.
    s = watched(blocks=20)
    a, b = plain("a", 280, 40), plain("b", 280, 40, base=1000)
    s.add_request(a)
    s.add_request(b)
    preempted_with_drafts = False
    for _ in range(200):
        if not s.has_unfinished_requests():
            break
        drafted = b.spec_token_ids
        step(s)
        preempted_with_drafts |= b.status == RequestStatus.PREEMPTED and bool(drafted)
        for r in (a, b):
            if r.status == RequestStatus.RUNNING:
                r.spec_token_ids = [7] * K  # accepted: 5 tokens a step, fast growth
    assert preempted_with_drafts and b.num_preemptions >= 1
    assert b.spec_token_ids == [] or b.is_finished()
    assert a.num_output_tokens == b.num_output_tokens == 40
    assert not s.has_unfinished_requests()


def test_a_grammar_that_finished_while_drafts_are_pending_ends_at_the_length_limit() -> None:
    s = watched(jump_forward_mode="forced")
    choice = {"radix_choice": ["alpha beta gamma delta epsilon", "zeta"]}
    r = make_request("g", list(range(40)), choice, max_tokens=30, temperature=0.0)
    s.add_request(r)
    forced = 0
    terminated_with_drafts = False
    deadline = time.monotonic() + 120  # the grammar compiles on a thread: empty steps
    while not r.is_finished() and time.monotonic() < deadline:
        out = step(s, masked=True)
        if not out.total_num_scheduled_tokens:
            time.sleep(0.01)
        forced += len(out.scheduled_spec_decode_tokens.get("g", ()))
        grammar = r.structured_output_request.grammar if r.structured_output_request else None
        if grammar is not None and grammar.is_terminated() and not r.is_finished():
            r.spec_token_ids = [5, 5, 5]  # drafts left over after the grammar's end
            terminated_with_drafts = True
    assert forced >= K  # the choice's text ran as forced drafts
    assert terminated_with_drafts
    assert r.status == RequestStatus.FINISHED_LENGTH_CAPPED and r.num_output_tokens == 30


def _pin_two_prefixes(s) -> None:
    for i in range(2):  # two full prompt blocks each: the budget, int(19 * 0.25) = 4 blocks
        s.add_request(plain(f"pin{i}", 65, 1, base=1000 * (i + 1), extra={"radix_pin": True}))
    run_steps(s)
    assert s.radix_pin_stats().pinned_blocks == 4 and s.radix_pin_stats().pinned_prefixes == 2


def test_pins_give_way_to_a_request_only_they_keep_out() -> None:
    s = watched(blocks=20)
    _pin_two_prefixes(s)
    pool = s.kv_cache_manager.block_pool
    assert pool.get_num_free_blocks() == 15
    big = plain("big", 500, 8, base=5000)  # 16 blocks: vanilla vLLM admits it at once
    s.add_request(big)
    assert run_steps(s, max_steps=20) <= 10
    assert big.num_output_tokens == 8
    # The least recently pinned prefix went; one was enough.
    assert s.radix_pin_stats().pinned_prefixes == 1


def test_pins_stay_while_running_requests_are_what_the_waiting_one_waits_for() -> None:
    s = watched(blocks=20)
    _pin_two_prefixes(s)
    s.add_request(plain("running", 250, 30, base=7000))  # 8 blocks, then 9
    step(s)
    s.add_request(plain("waiting", 300, 4, base=9000))  # 10 blocks: fits once it finishes
    run_steps(s, max_steps=100)
    assert s.radix_pin_stats().pinned_prefixes == 2


def _empty_sample_for(s, rid: str):
    out = s.schedule()
    ids = list(out.num_scheduled_tokens)
    sampled = [[] if r == rid else [7] for r in ids]
    mro = ModelRunnerOutput(
        req_ids=ids, req_id_to_index={r: i for i, r in enumerate(ids)}, sampled_token_ids=sampled
    )
    return out, mro


@pytest.mark.parametrize("drafts", [False, True])
def test_vllms_scheduler_skips_a_request_forever_after_one_empty_sample(drafts: bool) -> None:
    """The state itself, in vLLM's own scheduler (what the repair below is for)."""
    s = build_scheduler(vanilla=True, speculative_config=SPEC)
    r = plain("p")
    s.add_request(r)
    for _ in range(5):
        step(s)
    if drafts:
        r.spec_token_ids = [21, 22, 23, 24]
    s.update_from_output(*_empty_sample_for(s, "p"))
    assert r.num_computed_tokens == r.num_tokens + (K if drafts else 0)
    scheduled = sum(step(s).total_num_scheduled_tokens for _ in range(50))
    assert scheduled == 0 and r.status == RequestStatus.RUNNING and s.has_requests()


@pytest.mark.parametrize("drafts", [False, True])
def test_the_watchdog_flags_an_empty_sample_in_the_same_step(drafts: bool) -> None:
    s = watched()
    r = plain("p")
    s.add_request(r)
    for _ in range(5):
        step(s)
    if drafts:
        r.spec_token_ids = [21, 22, 23, 24]
    out, mro = _empty_sample_for(s, "p")
    with pytest.raises(StuckRequestError, match="every position computed") as caught:
        s.update_from_output(out, mro)
    message = str(caught.value)
    assert '"request_id": "p"' in message and '"status": "RUNNING"' in message
    assert f'"computed_tokens": {r.num_tokens + (K if drafts else 0)}' in message
    assert '"zero_progress": 1' in message


@pytest.mark.parametrize("drafts", [False, True])
def test_without_the_watchdog_an_empty_sample_is_recomputed_and_the_request_ends(
    drafts: bool,
) -> None:
    s = build_scheduler(radix={"eviction": "lru"}, speculative_config=SPEC)
    r = plain("p")
    s.add_request(r)
    for _ in range(5):
        step(s)
    if drafts:
        r.spec_token_ids = [21, 22, 23, 24]
    s.update_from_output(*_empty_sample_for(s, "p"))
    assert r.num_computed_tokens == r.num_tokens - 1 and r.spec_token_ids == []
    out = step(s)
    assert out.num_scheduled_tokens == {"p": 1}  # the last token again, then its sample
    run_steps(s, max_steps=100)
    assert r.num_output_tokens == 64


def test_the_watchdog_flags_an_engine_that_cannot_admit_anything() -> None:
    """Blocks held outside any request (a leak) keep a request out: the engine would spin
    empty steps; the watchdog names the waiting request."""
    s = watched(blocks=20)
    s.radix_watchdog.idle_steps, s.radix_watchdog.idle_s = 5, 0.0
    held = s.kv_cache_manager.block_pool.get_new_blocks(10)
    assert held
    s.add_request(plain("starved", 300, 4))  # 10 blocks; 9 are free
    with pytest.raises(StuckRequestError, match="no request progressed for 5 steps") as caught:
        for _ in range(10):
            step(s)
    assert '"request_id": "starved"' in str(caught.value)
    assert '"where": "waiting"' in str(caught.value)
