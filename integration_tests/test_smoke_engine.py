"""Smoke test: the offline `tiny` model runs in a real vLLM CPU engine (no mocks)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from radix_plugin.testing.engine import cpu_llm_kwargs, shutdown_llm

pytestmark = [pytest.mark.engine, pytest.mark.timeout(300)]

PROMPTS = ["The cache server", '{"id": 3, "name":', "Once upon a time there was a"]


@pytest.fixture(scope="module")
def llm(tiny_model_path: Path) -> Iterator[Any]:
    from vllm import LLM

    engine = LLM(**cpu_llm_kwargs(tiny_model_path))
    yield engine
    shutdown_llm(engine)


def _greedy(max_tokens: int = 24) -> Any:
    from vllm import SamplingParams

    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)


def test_greedy_generation_is_deterministic_and_non_empty(llm: Any) -> None:
    first = llm.generate(PROMPTS, _greedy(), use_tqdm=False)
    second = llm.generate(PROMPTS, _greedy(), use_tqdm=False)
    first_ids = [list(out.outputs[0].token_ids) for out in first]
    second_ids = [list(out.outputs[0].token_ids) for out in second]
    assert first_ids == second_ids
    for out, ids in zip(first, first_ids, strict=True):
        assert len(ids) == 24
        assert out.outputs[0].text.strip()
        assert len(set(ids)) > 4, "greedy output collapsed to a few repeated tokens"
    assert len({tuple(ids) for ids in first_ids}) == len(PROMPTS)  # output depends on prompt


def test_prompt_is_tokenized_with_bos(llm: Any) -> None:
    out = llm.generate(["hello"], _greedy(2), use_tqdm=False)[0]
    assert out.prompt_token_ids[0] == 1  # <|begin_of_text|>


def test_chat_uses_template_and_generates(llm: Any) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name a JSON value."},
    ]
    out = llm.chat(messages, _greedy(16), use_tqdm=False)[0]
    tokenizer = llm.get_tokenizer()
    prompt = tokenizer.decode(out.prompt_token_ids)
    assert prompt.startswith("<|begin_of_text|><|im_start|>system\nYou are terse.<|im_end|>")
    assert prompt.endswith(
        "<|im_start|>user\nName a JSON value.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert out.prompt_token_ids.count(1) == 1  # BOS from the template only, not doubled
    assert len(out.outputs[0].token_ids) == 16
