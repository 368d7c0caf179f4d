"""Jump-forward token selection on the tiny model's byte-level BPE vocabulary."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
import xgrammar as xgr
from grammar_test_utils import STOP_IDS, TINY_VOCAB

from radix_plugin.logits.core.grammar_spec import parse_grammar_spec
from radix_plugin.logits.grammar.jump_forward import (
    CHARS_PER_TOKEN_CAP,
    _clean_tail,
    find_forced_tokens,
    prefix_token_ids,
)
from radix_plugin.logits.worker.compile_service import GrammarCompileService

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "kind": {"enum": ["alpha", "beta"]},
        "n": {"type": "integer", "minimum": 0, "maximum": 99},
    },
    "required": ["name", "kind", "n"],
}


def _matcher(service: GrammarCompileService, **xargs: Any) -> xgr.GrammarMatcher:
    spec = parse_grammar_spec(xargs)
    assert spec is not None
    return xgr.GrammarMatcher(service.submit(spec).result(), override_stop_tokens=[*STOP_IDS])


def _feed(matcher: xgr.GrammarMatcher, tokenizer: Any, text: str, output: list[int]) -> None:
    for token in tokenizer.encode(text, add_special_tokens=False):
        assert matcher.accept_token(token)
        output.append(token)


def _pieces(tokenizer: Any, ids: Any) -> list[str]:
    return [tokenizer.decode([i]) for i in ids]


def test_forced_prefix_at_start_drops_the_trailing_prefix_token(
    service: GrammarCompileService, tokenizer: Any
) -> None:
    matcher = _matcher(service, radix_json_schema=json.dumps(SCHEMA))
    assert matcher.find_jump_forward_string() == '{"name":"'
    full = find_forced_tokens(matcher, tokenizer, [], prefix_tokens=frozenset())
    assert _pieces(tokenizer, full.token_ids) == ['{"', "name", '":"']
    # '":"' is a prefix of longer vocabulary tokens (e.g. '":"' + letters): the model may
    # want one of those once the string content is known, so it is not forced.
    assert full.token_ids[-1] in prefix_token_ids(tokenizer)
    trimmed = find_forced_tokens(matcher, tokenizer, [])
    assert trimmed.token_ids == full.token_ids[:-1]
    assert trimmed.text == '{"name' and trimmed.num_rollback == 0


def test_fused_boundary_rolls_back_only_when_allowed(
    service: GrammarCompileService, tokenizer: Any
) -> None:
    matcher = _matcher(service, radix_json_schema=json.dumps(SCHEMA))
    output: list[int] = []
    for piece in ('{"name":"', "ab", '"'):
        _feed(matcher, tokenizer, piece, output)
    assert matcher.find_jump_forward_string() == ',"kind":"'
    # Canonically `ab","kind` is ['ab', '","', 'kind']: the '"' token already emitted fuses.
    rewrite = find_forced_tokens(matcher, tokenizer, output, allow_rollback=True)
    assert rewrite.num_rollback == 1
    assert _pieces(tokenizer, rewrite.token_ids) == ['","', "kind"]
    append_only = find_forced_tokens(matcher, tokenizer, output)
    assert append_only.num_rollback == 0
    assert _pieces(tokenizer, append_only.token_ids) == [',"', "kind"]
    assert append_only.text == ',"kind'
    assert matcher.find_jump_forward_string() == ',"kind":"'  # matcher untouched


def test_caps_and_empty_cases(service: GrammarCompileService, tokenizer: Any) -> None:
    matcher = _matcher(service, radix_json_schema=json.dumps(SCHEMA))
    assert len(find_forced_tokens(matcher, tokenizer, [], max_tokens=1).token_ids) == 1
    assert not find_forced_tokens(matcher, tokenizer, [], max_tokens=0)
    output: list[int] = []
    _feed(matcher, tokenizer, '{"name":"x', output)
    assert not find_forced_tokens(matcher, tokenizer, output)  # free text: nothing forced
    done = _matcher(service, radix_choice=["yes"])
    assert done.accept_token(tokenizer.encode("yes", add_special_tokens=False)[0])
    assert done.accept_token(STOP_IDS[0]) and done.is_terminated()
    assert not find_forced_tokens(done, tokenizer, [STOP_IDS[0]])


def test_tail_never_splits_a_character(tokenizer: Any) -> None:
    ids = tokenizer.encode("ab⣮", add_special_tokens=False)
    partial = ids[:-1]  # ends inside the 3-byte character
    assert "\ufffd" in tokenizer.decode(partial)
    assert _clean_tail(tokenizer, partial, 4) == []
    assert _clean_tail(tokenizer, ids, 8) == ids
    assert _clean_tail(tokenizer, [*ids[1:], *tokenizer.encode("z", add_special_tokens=False)], 8)


@pytest.mark.parametrize("allow_rollback", [False, True])
def test_forced_tokens_are_grammatical_and_extend_the_text_by_the_jump(
    service: GrammarCompileService, tokenizer: Any, allow_rollback: bool
) -> None:
    """Random decoding under several grammars, checking every step's forced continuation."""
    grammars = [
        {"radix_json_schema": json.dumps(SCHEMA)},
        {"radix_json_schema": json.dumps({"type": "array", "items": SCHEMA, "maxItems": 2})},
        {"radix_regex": r"(GET|POST) /api/v[12]/(users|orders)/[0-9]{1,3}"},
        {"radix_choice": ["application/json", "application/xml", "text/plain"]},
    ]
    generator = torch.Generator().manual_seed(5)
    traps = prefix_token_ids(tokenizer)
    checked = rollbacks = 0
    for xargs in grammars:
        for _ in range(3):
            matcher = _matcher(service, **xargs)
            output: list[int] = []
            bitmask = xgr.allocate_token_bitmask(1, TINY_VOCAB)
            while not matcher.is_terminated() and len(output) < 80:
                jump = matcher.find_jump_forward_string()
                forced = find_forced_tokens(
                    matcher, tokenizer, output, allow_rollback=allow_rollback
                )
                if forced:
                    checked += 1
                    rollbacks += forced.num_rollback > 0
                    _check(matcher, tokenizer, output, jump, forced, traps, allow_rollback)
                logits = torch.randn(1, TINY_VOCAB, generator=generator)
                matcher.fill_next_token_bitmask(bitmask)
                xgr.apply_token_bitmask_inplace(logits, bitmask)
                token = int(torch.multinomial(torch.softmax(logits[0], -1), 1, generator=generator))
                assert matcher.accept_token(token)
                output.append(token)
    assert checked > 20
    assert (rollbacks > 0) == allow_rollback  # fused boundaries do occur on this vocabulary


def _check(
    matcher: xgr.GrammarMatcher,
    tokenizer: Any,
    output: list[int],
    jump: str,
    forced: Any,
    traps: frozenset[int],
    allow_rollback: bool,
) -> None:
    assert forced.num_rollback <= (4 if allow_rollback else 0)
    kept = output[: len(output) - forced.num_rollback]
    probe = matcher.fork()
    probe.rollback(forced.num_rollback)
    assert all(probe.accept_token(t) for t in forced.token_ids)
    # The text grows by a prefix of the jump string, nothing else.
    before, after = tokenizer.decode(output), tokenizer.decode([*kept, *forced.token_ids])
    assert after.startswith(before) and jump.startswith(after[len(before) :])
    assert forced.text and jump.startswith(forced.text)
    if forced.text == jump:  # the last token ends where free text begins: no trap allowed
        assert forced.token_ids[-1] not in traps
    if allow_rollback and forced.num_rollback:
        # The rewritten tail is the canonical tokenization of tail + jump.
        tail = _clean_tail(tokenizer, output, 4)
        canonical = tokenizer.encode(tokenizer.decode(tail) + jump, add_special_tokens=False)
        joined = [*tail[: len(tail) - forced.num_rollback], *forced.token_ids]
        assert canonical[: len(joined)] == joined


def test_long_forced_text_costs_only_what_the_cap_can_use(
    service: GrammarCompileService, tokenizer: Any
) -> None:
    """A 64,000-character forced run was tokenized whole on every step, in the scheduler
    loop; only the part that the token cap can use is."""
    encoded: list[int] = []

    class Recording:
        """The real tokenizer, recording how much text each `encode` call gets."""

        def __getattr__(self, name: str) -> Any:
            return getattr(tokenizer, name)

        def encode(self, text: str, **kwargs: Any) -> list[int]:
            encoded.append(len(text))
            return tokenizer.encode(text, **kwargs)

    matcher = _matcher(service, radix_regex="(abc ){16000}")
    forced = find_forced_tokens(matcher, Recording(), [], max_tokens=8)
    assert 0 < len(forced.token_ids) <= 8
    assert ("abc " * 10).startswith(forced.text)
    assert encoded and max(encoded) <= 8 * CHARS_PER_TOKEN_CAP
