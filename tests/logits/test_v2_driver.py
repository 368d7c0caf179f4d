"""The Model Runner V2 driver against vLLM's real `RequestState` and `LogitsContext`.

MRV2 needs a GPU, so the runner itself cannot run here; its state objects can. The only
concession is `is_uva_available() -> False` (this host has no pinned-memory allocator), which
makes vLLM itself fall back to plain CPU tensors. The runner's Triton write kernel cannot run
either, so the tests write committed tokens into `all_token_ids` directly, as it would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import numpy as np
import pytest
import torch
import xgrammar as xgr
from grammar_test_utils import STOP_IDS, TINY_VOCAB, allowed_ids, sample_row
from vllm import SamplingParams

from radix_plugin.logits.core.grammar_spec import parse_grammar_spec
from radix_plugin.logits.worker.compile_service import GrammarCompileService
from radix_plugin.logits.worker.row_state import RowStatus
from radix_plugin.logits.worker.v2_driver import V2GrammarDriver

MAX_REQS = 8
MAX_LEN = 256
SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer", "minimum": 0, "maximum": 999},
        "kind": {"enum": ["a", "b"]},
        "note": {"type": "string", "maxLength": 6},
    },
    "required": ["id", "kind", "note"],
}


@pytest.fixture
def req_states(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    import vllm.v1.worker.gpu.buffer_utils as buffer_utils
    from vllm.v1.worker.gpu.states import RequestState

    monkeypatch.setattr(buffer_utils, "is_uva_available", lambda: False)
    yield RequestState(
        max_num_reqs=MAX_REQS,
        max_model_len=MAX_LEN,
        max_num_batched_tokens=MAX_LEN,
        num_speculative_steps=2,
        vocab_size=TINY_VOCAB,
        device=torch.device("cpu"),
        use_dense_all_token_ids=True,
    )


@pytest.fixture
def driver(service: GrammarCompileService, req_states: Any) -> V2GrammarDriver:
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcRequestState

    return V2GrammarDriver(service, LogitsProcRequestState.from_request_state(req_states))


class FakeRunner:
    """Schedules requests through the real `RequestState` and builds real `LogitsContext`s."""

    def __init__(self, req_states: Any, driver: V2GrammarDriver) -> None:
        self.rs = req_states
        self.driver = driver
        self.lengths: dict[int, int] = {}

    def add(self, req_id: str, params: SamplingParams, tokens: list[int], prompt_len: int) -> int:
        self.rs.add_request(req_id, prompt_len, tokens, 0, params.max_tokens)
        slot = self.rs.req_id_to_index[req_id]
        self.rs.all_token_ids.gpu[slot, : len(tokens)] = torch.tensor(tokens)
        self.rs.total_len.gpu[slot] = len(tokens)
        self.lengths[slot] = len(tokens)
        self.driver.add_request(slot, params)
        return slot

    def context(self, rows: list[tuple[int, int, int]]) -> Any:
        """rows: (slot, position, input token) per logits row. A new step: like the runner,
        let the processor see its staged-writes hook before the forward pass."""
        from vllm.v1.worker.gpu.sample.logits_processor import LogitsContext

        self.driver.apply_staged_writes()
        slots = [slot for slot, _, _ in rows]
        unique = list(dict.fromkeys(slots))
        local = [slots[:i].count(slot) for i, slot in enumerate(slots)]
        return LogitsContext(
            expanded_idx_mapping=torch.tensor(slots, dtype=torch.int32),
            idx_mapping=torch.tensor(unique, dtype=torch.int32),
            idx_mapping_np=np.array(unique, dtype=np.int32),
            expanded_local_pos=torch.tensor(local, dtype=torch.int32),
            input_ids=torch.tensor([tok for _, _, tok in rows], dtype=torch.int32),
            pos=torch.tensor([pos for _, pos, _ in rows], dtype=torch.int64),
            seq_lens_upper_bound_np=np.array([pos + 1 for _, pos, _ in rows], dtype=np.int32),
        )

    def decode_step(self, slots: list[int]) -> Any:
        rows = []
        for slot in slots:
            pos = self.lengths[slot] - 1
            rows.append((slot, pos, int(self.rs.all_token_ids.gpu[slot, pos])))
        return self.context(rows)

    def commit(self, slot: int, token: int) -> None:
        """What the runner's post-sampling kernel writes: the token and the new length."""
        self.rs.all_token_ids.gpu[slot, self.lengths[slot]] = token
        self.lengths[slot] += 1
        self.rs.total_len.gpu[slot] = self.lengths[slot]


def params(**extra_args: Any) -> SamplingParams:
    return SamplingParams(max_tokens=128, stop_token_ids=list(STOP_IDS), extra_args=extra_args)


def test_decoding_under_v2_yields_valid_json_and_leaves_other_slots_alone(
    driver: V2GrammarDriver, req_states: Any, tokenizer: Any
) -> None:
    runner = FakeRunner(req_states, driver)
    grammar_slots = [
        runner.add(f"g{i}", params(radix_json_schema=json.dumps(SCHEMA)), [1, 5, 6], 3)
        for i in range(3)
    ]
    plain = runner.add("plain", params(), [1, 7], 2)
    assert not driver.add_request(plain, params())  # no grammar: V2 may skip processing
    active = [*grammar_slots, plain]
    generator = torch.Generator().manual_seed(11)
    outputs: dict[int, list[int]] = {slot: [] for slot in grammar_slots}
    for _ in range(120):
        if not active:
            break
        ctx = runner.decode_step(active)
        logits = torch.randn(len(active), TINY_VOCAB, generator=generator) * 3
        plain_row = active.index(plain) if plain in active else None
        before = logits[plain_row].clone() if plain_row is not None else None
        driver.apply(logits, ctx)
        if plain_row is not None:
            assert torch.equal(logits[plain_row], before)
        for row, slot in enumerate(list(active)):
            token = sample_row(logits[row], generator, greedy=False)
            runner.commit(slot, token)
            if slot in outputs:
                outputs[slot].append(token)
                if token in STOP_IDS:
                    active.remove(slot)
            elif len(active) == 1 or runner.lengths[slot] > 40:
                active.remove(slot)
    assert all(out[-1] in STOP_IDS for out in outputs.values())
    for out in outputs.values():
        text = tokenizer.decode(out[:-1], skip_special_tokens=True)
        jsonschema.validate(json.loads(text), SCHEMA)


def test_resumed_request_catches_up_from_all_token_ids(
    driver: V2GrammarDriver, req_states: Any, tokenizer: Any
) -> None:
    runner = FakeRunner(req_states, driver)
    prompt = [1, 9, 9]
    done_before_preemption = tokenizer.encode('{"id":12,"kind":"b"', add_special_tokens=False)
    slot = runner.add(
        "resumed",
        params(radix_json_schema=json.dumps(SCHEMA)),
        prompt + done_before_preemption,
        prompt_len=len(prompt),
    )
    # A chunked prefill that ends inside the prompt commits no output yet.
    driver.apply(torch.zeros(1, TINY_VOCAB), runner.context([(slot, 1, prompt[1])]))
    assert driver.rows[slot].consumed == 0
    logits = torch.zeros(1, TINY_VOCAB)
    driver.apply(logits, runner.decode_step([slot]))
    assert driver.rows[slot].consumed == len(done_before_preemption)
    allowed = torch.isfinite(logits[0]).nonzero().flatten().tolist()
    assert tokenizer.encode(',"note":"', add_special_tokens=False)[0] in allowed
    assert all(t not in allowed for t in STOP_IDS)  # the object is not complete yet


def test_draft_rows_get_per_position_masks_and_state_is_restored(
    driver: V2GrammarDriver, req_states: Any, service: GrammarCompileService, tokenizer: Any
) -> None:
    runner = FakeRunner(req_states, driver)
    slot = runner.add("spec", params(radix_regex="abcdef|abxyz"), [1, 2, 3], 3)
    a, b, c = (tokenizer.encode(ch, add_special_tokens=False)[0] for ch in "abc")
    runner.commit(slot, a)
    pos = runner.lengths[slot] - 1
    logits = torch.zeros(3, TINY_VOCAB)
    driver.apply(logits, runner.context([(slot, pos, a), (slot, pos + 1, b), (slot, pos + 2, c)]))

    spec = parse_grammar_spec({"radix_regex": "abcdef|abxyz"})
    assert spec is not None
    reference = xgr.GrammarMatcher(service.submit(spec).result(), override_stop_tokens=[*STOP_IDS])
    bitmask = xgr.allocate_token_bitmask(1, TINY_VOCAB)
    for k, token in enumerate((a, b, c)):
        assert reference.accept_token(token)
        reference.fill_next_token_bitmask(bitmask, 0)
        expected = allowed_ids(bitmask, 0, TINY_VOCAB)
        assert set(torch.isfinite(logits[k]).nonzero().flatten().tolist()) == expected
    row = driver.rows[slot]
    assert row.consumed == 1 and row.status is RowStatus.ACTIVE  # drafts rolled back

    # A draft the grammar rejects: the row after it is left alone (the sampler rejects it).
    z = tokenizer.encode("z", add_special_tokens=False)[0]
    logits = torch.zeros(3, TINY_VOCAB)
    driver.apply(logits, runner.context([(slot, pos, a), (slot, pos + 1, z), (slot, pos + 2, c)]))
    assert torch.isfinite(logits[2]).all()
    assert not torch.isfinite(logits[0]).all()


def test_slot_reuse_replaces_or_drops_the_row(driver: V2GrammarDriver) -> None:
    assert driver.add_request(3, params(radix_choice=["x"]))
    first = driver.rows[3]
    assert driver.add_request(3, params(radix_choice=["y"]))
    assert driver.rows[3] is not first
    assert not driver.add_request(3, params())
    assert 3 not in driver.rows


@contextlib.contextmanager
def device_unreadable(req_states: Any) -> Iterator[None]:
    """Swap the runner's device buffers for meta tensors: any read of them raises, so a
    step that passes never synchronised with the device."""
    saved = req_states.all_token_ids.gpu, req_states.total_len.gpu
    req_states.all_token_ids.gpu = torch.empty_like(saved[0], device="meta")
    req_states.total_len.gpu = torch.empty_like(saved[1], device="meta")
    try:
        yield
    finally:
        req_states.all_token_ids.gpu, req_states.total_len.gpu = saved


def test_a_step_without_drafts_reads_nothing_from_the_device_while_masking(
    driver: V2GrammarDriver, req_states: Any, tokenizer: Any
) -> None:
    runner = FakeRunner(req_states, driver)
    schema = params(radix_json_schema=json.dumps(SCHEMA))
    grammar_slots = [runner.add(f"g{i}", schema, [1, 5, 6], 3) for i in range(2)]
    plain = runner.add("plain", params(), [1, 7], 2)
    generator = torch.Generator().manual_seed(3)
    for step in range(8):
        active = [*grammar_slots, plain]
        ctx = runner.decode_step(active)  # the staged-writes hook runs before the forward
        blind = dataclasses.replace(
            ctx,
            expanded_idx_mapping=torch.empty_like(ctx.expanded_idx_mapping, device="meta"),
            pos=torch.empty_like(ctx.pos, device="meta"),
            input_ids=torch.empty_like(ctx.input_ids, device="meta"),
        )
        logits = torch.randn(len(active), TINY_VOCAB, generator=generator) * 3
        with device_unreadable(req_states):
            driver.apply(logits, blind)
        for row, slot in enumerate(active):
            token = sample_row(logits[row], generator, greedy=False)
            if slot in grammar_slots:
                assert driver.rows[slot].consumed == step  # caught up on every earlier token
                assert token not in STOP_IDS  # the object cannot be complete this early
            runner.commit(slot, token)


def test_tokens_committed_past_the_prefetch_window_are_read_back(
    driver: V2GrammarDriver, req_states: Any, tokenizer: Any
) -> None:
    runner = FakeRunner(req_states, driver)
    slot = runner.add("g", params(radix_json_schema=json.dumps(SCHEMA)), [1, 5, 6], 3)
    committed = tokenizer.encode('{"id":1', add_special_tokens=False)
    assert len(committed) > 1  # more than one step's window (no drafts configured)
    for token in committed:
        runner.commit(slot, token)
    driver.apply(torch.zeros(1, TINY_VOCAB), runner.decode_step([slot]))
    assert driver.rows[slot].consumed == len(committed)
