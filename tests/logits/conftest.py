"""Shared fixtures for the grammar logits-processor unit tests: the real tiny test model's
byte-level BPE tokenizer and a real compile service built on it (no engine needed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from grammar_test_utils import TINY_VOCAB

from radix_plugin.logits.worker.compile_service import GrammarCompileService
from radix_plugin.testing.models import get_model_path


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    return get_model_path("tiny")


@pytest.fixture(scope="session")
def tokenizer(tiny_model_path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_path))


@pytest.fixture(scope="session")
def service(tokenizer: Any) -> Iterator[GrammarCompileService]:
    svc = GrammarCompileService(lambda: tokenizer, TINY_VOCAB, max_workers=2)
    yield svc
    svc.shutdown()


@pytest.fixture(scope="session")
def vllm_config(tiny_model_path: Path) -> Any:
    """A real engine config for the tiny model (no engine is started)."""
    from vllm.engine.arg_utils import EngineArgs

    args = EngineArgs(model=str(tiny_model_path), max_model_len=256, max_num_seqs=4)
    return args.create_engine_config()
