"""The processor class as vLLM itself loads, validates and builds it (both interfaces)."""

from __future__ import annotations

import copy
import gc
from typing import Any

import pytest
import torch
from grammar_test_utils import TINY_VOCAB
from vllm import SamplingParams
from vllm.exceptions import VLLMValidationError
from vllm.sampling_params import StructuredOutputsParams
from vllm.v1.sample.logits_processor import (
    LogitsProcessor as V1LogitsProcessor,
)
from vllm.v1.sample.logits_processor import (
    build_logitsprocs,
    validate_logits_processors_parameters,
)
from vllm.v1.worker.gpu.sample.logits_processor import (
    LogitsProcessor as V2LogitsProcessor,
)
from vllm.v1.worker.gpu.sample.logits_processor import (
    build_custom_logits_processors_params_validator,
)

from radix_plugin.logits.worker.processor import RadixGrammarLogitsProcessor

FQCN = "radix_plugin.logits:RadixGrammarLogitsProcessor"
ENTRY_POINT_GROUP = "vllm.logits_processors"


def test_one_class_satisfies_both_runner_interfaces() -> None:
    assert issubclass(RadixGrammarLogitsProcessor, V1LogitsProcessor)
    assert issubclass(RadixGrammarLogitsProcessor, V2LogitsProcessor)


@pytest.mark.parametrize("runner", ["v1", "v2"])
def test_vllm_validators_turn_bad_grammars_into_validation_errors(runner: str) -> None:
    if runner == "v1":

        def validate(p: SamplingParams) -> None:
            validate_logits_processors_parameters([FQCN], p)

    else:
        validate = build_custom_logits_processors_params_validator([FQCN])

    validate(SamplingParams())
    validate(SamplingParams(extra_args={"radix_regex": "[a-z]+"}))
    with pytest.raises(VLLMValidationError, match="radix_json_schema is not valid JSON"):
        validate(SamplingParams(extra_args={"radix_json_schema": "{oops"}))
    with pytest.raises(VLLMValidationError, match=r"radix_regex is not a valid regular"):
        validate(SamplingParams(extra_args={"radix_regex": "(unclosed"}))
    both = SamplingParams(
        extra_args={"radix_choice": ["a"]},
        structured_outputs=StructuredOutputsParams(choice=["a"]),
    )
    with pytest.raises(VLLMValidationError, match="cannot be combined"):
        validate(both)


def test_v1_build_puts_it_among_non_argmax_invariant_processors(vllm_config: Any) -> None:
    config = copy.copy(vllm_config)  # a distinct engine with the same settings
    processors = build_logitsprocs(config, torch.device("cpu"), False, False, [FQCN])
    ours = [
        p for p in processors.non_argmax_invariant if isinstance(p, RadixGrammarLogitsProcessor)
    ]
    # One from the flag, plus one from the entry point when the package metadata has it.
    assert len(ours) in (1, 2)
    assert len([p for p in ours if p._v1 is not None]) == 1  # never enforced twice


def test_duplicate_instances_for_one_engine_stay_idle(vllm_config: Any) -> None:
    config = copy.copy(vllm_config)
    first = RadixGrammarLogitsProcessor(config, torch.device("cpu"), False)
    second = RadixGrammarLogitsProcessor(config, torch.device("cpu"), False)
    assert first._v1 is not None and second._v1 is None
    logits = torch.randn(1, TINY_VOCAB)
    assert torch.equal(second.apply(logits.clone()), logits)
    del first
    gc.collect()
    third = RadixGrammarLogitsProcessor(config, torch.device("cpu"), False)
    assert third._v1 is not None  # the claim is released with its owner


def test_v2_construction_and_arity_check(vllm_config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import vllm.v1.worker.gpu.buffer_utils as buffer_utils
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcRequestState
    from vllm.v1.worker.gpu.states import RequestState

    monkeypatch.setattr(buffer_utils, "is_uva_available", lambda: False)
    states = RequestState(
        4, 64, 64, 0, TINY_VOCAB, torch.device("cpu"), use_dense_all_token_ids=True
    )
    proc = RadixGrammarLogitsProcessor(
        copy.copy(vllm_config), LogitsProcRequestState.from_request_state(states)
    )
    assert proc._v2 is not None
    assert proc.add_request(0, SamplingParams(extra_args={"radix_choice": ["x"]}))
    assert not proc.add_request(1, SamplingParams())
    with pytest.raises(TypeError, match="expects"):
        RadixGrammarLogitsProcessor(object(), 1, 2, 3)


def test_entry_point_is_installed_and_resolves() -> None:
    """vLLM loads every `vllm.logits_processors` entry point of the installed package."""
    from importlib.metadata import entry_points

    installed = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert installed["radix_grammar"].load() is RadixGrammarLogitsProcessor
