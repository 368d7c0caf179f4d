"""Jump-forward: turn a grammar's forced text into tokens that are safe to append.

When a grammar allows exactly one continuation for a while (`{"name":"` at the start of an
object, `","kind":"` after a closed string), xgrammar's `find_jump_forward_string()` returns
that text. Appending it as tokens lets the engine compute several positions in one forward
pass instead of one step per token. The hard part is the tokenizer, not the grammar:

* Boundary fusion. The forced text can merge with tokens the model already produced: with
  output `[..., "ab", '"']` and forced text `,"kind":"`, the canonical tokenization of
  `ab","kind":"` is `["ab", '","', "kind", '":"']`, so the `'"'` token itself would have been
  different. The tail of the output is decoded, concatenated with the jump and re-encoded; the
  first differing position is the fusion point. A caller that can rewrite output (re-prefill)
  rolls the matcher and output back to it (`num_rollback`); a caller that can only append
  (speculative drafts) keeps the boundary and encodes the jump on its own.
* Prefix-token trap (mlc-llm PR #2551). If the last forced token is a proper prefix of another
  vocabulary token, the model might have preferred that longer token, which spans into the
  free text after the jump. Forcing the short one would skew the output, so it is dropped and
  reconsidered at the next step, when the following text is known.
* Validity. Every candidate token sequence is replayed on a fork of the matcher and cut at the
  first token the grammar rejects, so callers only ever receive grammatical tokens.

Pure and engine-independent: inputs are a matcher, a Hugging Face tokenizer and the request's
recent output ids; nothing is mutated.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import xgrammar as xgr

REPLACEMENT_CHAR = "\ufffd"
DEFAULT_TAIL_TOKENS = 4
# Forced text can be as long as the grammar (a 200 KB `const`); only what fits in the token
# cap is ever used, so only that much is tokenized. Generous per token: a short cut only
# loses draft tokens, and the prefix-token trap drops a last token the cut may have split.
CHARS_PER_TOKEN_CAP = 32
MAX_JUMP_CHARS = 4096


@dataclass(frozen=True)
class ForcedContinuation:
    """What to do to the request: drop `num_rollback` output tokens, then append `token_ids`."""

    token_ids: tuple[int, ...] = ()
    num_rollback: int = 0
    # The forced text these tokens add after the kept output (for logging and tests).
    text: str = ""

    def __bool__(self) -> bool:
        return bool(self.token_ids)


_PREFIX_CACHE: weakref.WeakKeyDictionary[Any, frozenset[int]] = weakref.WeakKeyDictionary()


def prefix_token_ids(tokenizer: Any) -> frozenset[int]:
    """Ids of tokens whose text is a proper prefix of another token's text (memoized)."""
    try:
        return _PREFIX_CACHE[tokenizer]
    except (KeyError, TypeError):
        pass
    vocab: dict[str, int] = tokenizer.get_vocab()
    special = set(getattr(tokenizer, "all_special_ids", ()) or ())
    texts = {
        token_id: tokenizer.convert_tokens_to_string([token])
        for token, token_id in vocab.items()
        if token_id not in special
    }
    by_text: dict[str, int] = {}
    for token_id, text in texts.items():
        by_text.setdefault(text, token_id)
    prefixes: set[int] = set()
    for text in by_text:
        for cut in range(1, len(text)):
            prefix_id = by_text.get(text[:cut])
            if prefix_id is not None:
                prefixes.add(prefix_id)
    result = frozenset(prefixes)
    with contextlib.suppress(TypeError):  # not weak-referenceable: just do not cache
        _PREFIX_CACHE[tokenizer] = result
    return result


def find_forced_tokens(
    matcher: xgr.GrammarMatcher,
    tokenizer: Any,
    output_ids: Sequence[int],
    *,
    max_tokens: int | None = None,
    allow_rollback: bool = False,
    tail_tokens: int = DEFAULT_TAIL_TOKENS,
    prefix_tokens: frozenset[int] | None = None,
) -> ForcedContinuation:
    """The tokens the grammar forces next, made safe for the tokenizer.

    `matcher` must have consumed exactly `output_ids`. With `allow_rollback`, a fused boundary
    is resolved canonically by rewriting up to `tail_tokens` trailing output tokens; without it
    the output is never touched. `max_tokens` caps the appended tokens (e.g. the number of
    speculative slots). Returns an empty `ForcedContinuation` when nothing is forced.
    """
    if matcher.is_terminated() or max_tokens == 0:
        return ForcedContinuation()
    jump = matcher.find_jump_forward_string()
    if not jump:
        return ForcedContinuation()
    limit = MAX_JUMP_CHARS if max_tokens is None else max_tokens * CHARS_PER_TOKEN_CAP
    jump = jump[: min(limit, MAX_JUMP_CHARS)]
    tail = _clean_tail(tokenizer, output_ids, tail_tokens)
    standalone = _encode(tokenizer, jump)
    candidates: list[tuple[int, list[int]]] = []
    if tail:
        tail_text = tokenizer.decode(tail)
        retokenized = _encode(tokenizer, tail_text + jump)
        if tokenizer.decode(retokenized) == tail_text + jump:  # skip lossy normalizers
            common = _common_prefix(tail, retokenized)
            if common == len(tail):
                candidates.append((0, retokenized[common:]))  # clean boundary
            elif allow_rollback:
                candidates.append((len(tail) - common, retokenized[common:]))
    # Fused (or no usable tail) and the output must stay: keep the boundary, jump alone.
    candidates.append((0, standalone))
    traps = prefix_tokens if prefix_tokens is not None else prefix_token_ids(tokenizer)
    for num_rollback, token_ids in candidates:
        result = _finalize(matcher, tokenizer, tail, num_rollback, token_ids, traps, max_tokens)
        if result:
            return result
    return ForcedContinuation()


def _finalize(
    matcher: xgr.GrammarMatcher,
    tokenizer: Any,
    tail: list[int],
    num_rollback: int,
    token_ids: list[int],
    traps: frozenset[int],
    max_tokens: int | None,
) -> ForcedContinuation:
    """Apply the prefix-token trap, the cap and the grammar; reject net-shrinking rewrites."""
    if token_ids and token_ids[-1] in traps:
        token_ids = token_ids[:-1]
    if max_tokens is not None:
        token_ids = token_ids[:max_tokens]
    token_ids = _grammatical_prefix(matcher, num_rollback, token_ids)
    if not token_ids:
        return ForcedContinuation()
    kept = tail[: len(tail) - num_rollback]
    before = tokenizer.decode(tail)
    after = tokenizer.decode([*kept, *token_ids])
    if len(after) <= len(before) or not after.startswith(before):
        return ForcedContinuation()  # a rewrite must re-cover what it rolled back, and more
    return ForcedContinuation(tuple(token_ids), num_rollback, after[len(before) :])


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def _clean_tail(tokenizer: Any, output_ids: Sequence[int], tail_tokens: int) -> list[int]:
    """Up to `tail_tokens` trailing ids whose decoding is whole characters.

    A byte-level token can end (or start) in the middle of a UTF-8 character; its decoding
    then contains U+FFFD and re-encoding it would not round-trip. Leading partial tokens are
    trimmed; a partial last token means no tail can be used.
    """
    special = set(getattr(tokenizer, "all_special_ids", ()) or ())
    tail = [t for t in output_ids[-tail_tokens:] if t not in special] if tail_tokens else []
    while tail and REPLACEMENT_CHAR in tokenizer.decode(tail):
        if REPLACEMENT_CHAR in tokenizer.decode(tail[-1:]):
            return []
        tail = tail[1:]
    return tail


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _grammatical_prefix(
    matcher: xgr.GrammarMatcher, num_rollback: int, token_ids: list[int]
) -> list[int]:
    """The longest prefix of `token_ids` the grammar accepts after the rollback."""
    probe = matcher.fork()
    if num_rollback:
        probe.rollback(num_rollback)
    accepted: list[int] = []
    for token in token_ids:
        if not probe.accept_token(token):
            break
        accepted.append(token)
    return accepted
