"""The pretrained `real` model (SmolLM2-135M-Instruct) answers like a trained model in a real
vLLM CPU engine with the plugin's scheduler, using its own tokenizer and chat template.

Greedy, float32: only a trained model gets these answers right, and float32 keeps the greedy
choice away from bf16 rounding differences between CPUs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from radix_plugin.testing.engine import cpu_llm_kwargs, shutdown_llm
from radix_plugin.testing.models import get_model_path

pytestmark = [pytest.mark.engine, pytest.mark.timeout(600)]

QUESTIONS = {
    "What is the capital of France? Answer in one sentence.": "Paris",
    "What is 2 + 3? Answer with the number only.": "5",
}


@pytest.fixture(scope="module")
def real_model_path() -> Path:
    return get_model_path("real")


@pytest.fixture(scope="module")
def llm(real_model_path: Path) -> Iterator[Any]:
    from vllm import LLM

    engine = LLM(
        **cpu_llm_kwargs(
            real_model_path,
            dtype="float32",
            enable_prefix_caching=True,
            scheduler_cls="radix_plugin.RadixScheduler",
        )
    )
    yield engine
    shutdown_llm(engine)


def _chat(llm: Any, questions: list[str], system: str | None = None) -> list[Any]:
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=48)
    head = [{"role": "system", "content": system}] if system else []
    conversations = [[*head, {"role": "user", "content": q}] for q in questions]
    return llm.chat(conversations, params, use_tqdm=False)


def test_answers_only_a_trained_model_gets_right(llm: Any) -> None:
    outs = _chat(llm, list(QUESTIONS))
    for out, expected in zip(outs, QUESTIONS.values(), strict=True):
        answer = out.outputs[0]
        print(f"{out.prompt!r} -> {answer.text!r}")
        assert expected in answer.text, answer.text
        # A trained model ends its turn on its own: <|im_end|>, well before max_tokens.
        assert answer.finish_reason == "stop", answer.finish_reason
        assert len(answer.token_ids) < 48


def test_chat_template_is_the_models_own(llm: Any, real_model_path: Path) -> None:
    out = _chat(llm, ["Hi"])[0]
    prompt = llm.get_tokenizer().decode(out.prompt_token_ids)
    template = (real_model_path / "chat_template.jinja").read_text()
    assert "You are a helpful AI assistant named SmolLM" in template
    assert prompt.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert prompt.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_shared_system_prompt_is_served_from_the_prefix_cache(llm: Any) -> None:
    system = (
        "You are a shop assistant for a grocery store. Answer in one short sentence, "
        "politely, and never mention prices or opening hours."
    )
    assert llm.reset_prefix_cache()
    _chat(llm, ["Name a vegetable."], system)
    again = _chat(llm, ["Name a fruit."], system)[0]
    # The shared system turn spans more than one 32-token block: a hit on the second call.
    assert (again.num_cached_tokens or 0) >= 32, again.num_cached_tokens
