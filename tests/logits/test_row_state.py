"""`GrammarRow` against a real compiled grammar and the tiny model's real tokenizer."""

from __future__ import annotations

import json
import threading
from concurrent.futures import Future
from typing import Any

import xgrammar as xgr
from grammar_test_utils import STOP_IDS, TINY_VOCAB, allowed_ids

from radix_plugin.logits.core.grammar_spec import parse_grammar_spec
from radix_plugin.logits.worker.compile_service import GrammarCompileService
from radix_plugin.logits.worker.row_state import GrammarRow, RowStatus


def _row(service: GrammarCompileService, **xargs: Any) -> GrammarRow:
    spec = parse_grammar_spec(xargs)
    assert spec is not None
    return GrammarRow(service.submit(spec), STOP_IDS)


def _ids(tokenizer: Any, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def _mask(row: GrammarRow) -> set[int] | None:
    bitmask = xgr.allocate_token_bitmask(1, TINY_VOCAB)
    return allowed_ids(bitmask, 0, TINY_VOCAB) if row.fill_bitmask(bitmask, 0) else None


def test_row_follows_a_growing_and_shrinking_output_list(
    service: GrammarCompileService, tokenizer: Any
) -> None:
    row = _row(service, radix_regex="abc(d|e)")
    output = _ids(tokenizer, "ab")
    row.sync(output)
    assert row.status is RowStatus.ACTIVE and row.consumed == len(output)
    after_ab = _mask(row)
    output += _ids(tokenizer, "cd")
    row.sync(output)
    assert _mask(row) == set(STOP_IDS)  # complete: only stop tokens remain
    del output[-len(_ids(tokenizer, "cd")) :]  # the runner trimmed tokens: roll back
    row.sync(output)
    assert row.consumed == len(_ids(tokenizer, "ab"))
    assert _mask(row) == after_ab
    output += [*_ids(tokenizer, "ce"), STOP_IDS[1]]
    row.sync(output)
    assert row.status is RowStatus.TERMINATED
    assert _mask(row) is None  # nothing left to constrain


def test_rejected_token_forces_stop_only(service: GrammarCompileService, tokenizer: Any) -> None:
    row = _row(service, radix_regex="[0-9]+")
    row.sync(_ids(tokenizer, "x"))
    assert row.status is RowStatus.FAILED
    assert _mask(row) == set(STOP_IDS)


def test_placeholder_tokens_fail_the_row(service: GrammarCompileService) -> None:
    row = _row(service, radix_regex="[0-9]+")
    row.sync([-1])
    assert row.status is RowStatus.FAILED


def test_compile_failure_and_timeout_fail_the_row() -> None:
    failed: Future[xgr.CompiledGrammar] = Future()
    failed.set_exception(RuntimeError("boom"))
    row = GrammarRow(failed, STOP_IDS)
    row.sync([])
    assert row.status is RowStatus.FAILED
    assert _mask(row) == set(STOP_IDS)

    never: Future[xgr.CompiledGrammar] = Future()
    slow = GrammarRow(never, STOP_IDS, compile_timeout_s=0.01)
    slow.sync([])
    assert slow.status is RowStatus.FAILED


def test_drafts_are_tentative(service: GrammarCompileService, tokenizer: Any) -> None:
    row = _row(service, radix_choice=["yes", "no"])
    row.sync([])
    before = _mask(row)
    (first,) = _ids(tokenizer, "y")[:1]
    assert row.try_accept_draft(first)
    assert _mask(row) != before
    row.rollback_drafts(1)
    assert _mask(row) == before


def test_identical_specs_share_one_compile(tokenizer: Any) -> None:
    calls = []

    def loader() -> Any:
        calls.append(1)
        return tokenizer

    svc = GrammarCompileService(loader, TINY_VOCAB, max_workers=2)
    schema = json.dumps({"type": "object", "properties": {"k": {"enum": [1, 2]}}})
    spec = parse_grammar_spec({"radix_json_schema": schema})
    assert spec is not None
    futures = [svc.submit(spec) for _ in range(5)]
    assert all(f is futures[0] for f in futures)
    assert futures[0].result(timeout=30) is not None
    assert calls == [1]  # tokenizer loaded once, lazily
    svc.shutdown()


def test_submit_does_not_block_on_compilation(tokenizer: Any) -> None:
    release = threading.Event()

    def gated_loader() -> Any:
        assert release.wait(timeout=30)
        return tokenizer

    svc = GrammarCompileService(gated_loader, TINY_VOCAB, max_workers=1)
    spec = parse_grammar_spec({"radix_regex": "[a-z]{3}"})
    assert spec is not None
    future = svc.submit(spec)  # returns although the compile cannot even start yet
    assert not future.done()
    release.set()
    assert future.result(timeout=30) is not None
    svc.shutdown()
