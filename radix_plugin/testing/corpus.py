"""Deterministic synthetic training text for the test tokenizers.

No model or data set can be downloaded, so the BPE tokenizers are trained on text generated
here. The generator uses its own SplitMix64 PRNG and fixed word lists rather than `random`,
so the corpus (and therefore every tokenizer and model built from it) is byte-identical on
any Python version and platform. Bump `CORPUS_VERSION` whenever the output changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

CORPUS_VERSION = 1

_T = TypeVar("_T")
_MASK64 = (1 << 64) - 1


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_COMMON_WORDS = _words(
    "the of and to in is it that for on was with as be at by this are from or have an not "
    "but what all were when we there can your which their said if will each about how up "
    "out them then she many some so these would other into has more her two like him see "
    "time could no make than first been its who now people my made over did down only way "
    "find use may water long little very after words called just where most know get "
    "through back much before go good new write our used me man too any day same right "
    "look think also around another came come work three word must because does part "
    "even place well such here take why things help put years different away again off "
    "went old number great tell men say small every found still between name should home "
    "big give air line set own under read last never us left end along while might next "
    "sound below saw something thought both few those always looked show large often "
    "together asked house world going want school important until form food keep children "
    "feet land side without boy once animals life enough took sometimes four head above "
    "kind began almost live page got earth need far hand high year mother light parts "
    "country father let night following picture being study second eyes soon times story "
    "boys since white days ever paper hard near sentence better best across during today "
    "others however sure means knew try told young miles sun ways thing whole hear example "
    "heard several change answer room sea against top turned learn point city play toward "
    "five using himself usually money seen car morning given friend cache prefix token "
    "request server model engine memory block radix tree scheduler latency throughput "
    "batch query answer agent tool workflow system user assistant message prompt output"
)

_SYLLABLES = _words(
    "ka to ri na mo se lu pa ve di an er on in es al or at en ul ix ro ma te ni so "
    "qu st tr pl gr br ch sh th ph wh str ent ion ing ed ly ous ive able ment ness"
)

_UNICODE_WORDS = _words(
    "café naïve résumé über straße façade niño crème brûlée smörgåsbord Ærø jalapeño "
    "Привет мир данные Γειά σου κόσμε 你好 世界 数据 缓存 こんにちは キャッシュ 안녕하세요 "  # noqa: RUF001
    "مرحبا שלום नमस्ते ✓ → ← ★ € £ ¥ © ° ± × ÷ … — – “ ” ‘ ’ 😀 🚀 🔥 👍 🎉 ∑ ∞ ≤ ≥ ≠ λ π"  # noqa: RUF001
)

_KEYS = _words(
    "id name type value count items user role content status error message data result "
    "tokens score enabled tags created_at updated_at version path size offset limit "
    "temperature max_tokens prompt choices index finish_reason usage"
)

_PY_KEYWORDS = _words(
    "def return if elif else for while in not and or is None True False import from "
    "class with as try except finally raise yield lambda pass break continue"
)

_ENDINGS = (".", ".", ".", "!", "?", ":", ";")


class SplitMix64:
    """Tiny PRNG with a fixed, documented output stream (unlike `random` across versions)."""

    def __init__(self, seed: int) -> None:
        self._state = seed & _MASK64

    def next_u64(self) -> int:
        self._state = (self._state + 0x9E3779B97F4A7C15) & _MASK64
        z = self._state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        """Uniform-ish integer in [0, n); modulo bias is irrelevant for synthetic text."""
        return self.next_u64() % n

    def choice(self, items: Sequence[_T]) -> _T:
        return items[self.below(len(items))]

    def chance(self, percent: int) -> bool:
        return self.below(100) < percent


def _word(rng: SplitMix64) -> str:
    roll = rng.below(100)
    if roll < 70:
        return rng.choice(_COMMON_WORDS)
    if roll < 95:
        return "".join(rng.choice(_SYLLABLES) for _ in range(1 + rng.below(4)))
    return rng.choice(_UNICODE_WORDS)


def _number(rng: SplitMix64) -> str:
    kind = rng.below(6)
    if kind == 0:
        return str(rng.below(10))
    if kind == 1:
        return str(rng.below(100_000))
    if kind == 2:
        return f"-{rng.below(1000)}"
    if kind == 3:
        return f"{rng.below(1000)}.{rng.below(1000):03d}"
    if kind == 4:
        sign = rng.choice(("-", "+", ""))
        return f"{1 + rng.below(9)}.{rng.below(100):02d}e{sign}{rng.below(20)}"
    return str(rng.next_u64())


def _sentence(rng: SplitMix64) -> str:
    words = [_word(rng) for _ in range(3 + rng.below(14))]
    if rng.chance(15):
        words.insert(rng.below(len(words)), _number(rng))
    text = " ".join(words)
    text = text[0].upper() + text[1:]
    return text + rng.choice(_ENDINGS)


def _paragraph(rng: SplitMix64) -> str:
    return " ".join(_sentence(rng) for _ in range(2 + rng.below(6)))


def _json_value(rng: SplitMix64, depth: int) -> str:
    kind = rng.below(8 if depth < 3 else 5)
    if kind == 0:
        return _number(rng)
    if kind == 1:
        return rng.choice(("true", "false", "null"))
    if kind in (2, 3, 4):
        text = " ".join(_word(rng) for _ in range(1 + rng.below(4)))
        if rng.chance(10):
            text += rng.choice(('\\"quoted\\"', "\\n", "\\t", "\\\\", "\\u00e9"))
        return f'"{text}"'
    if kind in (5, 6):
        return _json_object(rng, depth + 1)
    items = [_json_value(rng, depth + 1) for _ in range(rng.below(5))]
    return "[" + rng.choice((", ", ",")).join(items) + "]"


def _json_object(rng: SplitMix64, depth: int = 0) -> str:
    compact = rng.chance(40)
    keys = [rng.choice(_KEYS) for _ in range(1 + rng.below(5))]
    if compact:
        return "{" + ",".join(f'"{k}":{_json_value(rng, depth)}' for k in keys) + "}"
    pad = "  " * (depth + 1)
    body = ",\n".join(f'{pad}"{k}": {_json_value(rng, depth)}' for k in keys)
    return "{\n" + body + "\n" + "  " * depth + "}"


def _identifier(rng: SplitMix64) -> str:
    parts = [rng.choice(_COMMON_WORDS) for _ in range(1 + rng.below(3))]
    return "_".join(p for p in parts if p.isascii() and p.isalpha()) or "value"


def _code(rng: SplitMix64) -> str:
    name = _identifier(rng)
    args = ", ".join(_identifier(rng) for _ in range(rng.below(4)))
    lines = [f"def {name}({args}):"]
    for _ in range(1 + rng.below(6)):
        indent = rng.choice(("    ", "\t", "        "))
        roll = rng.below(5)
        if roll == 0:
            lines.append(f"{indent}{_identifier(rng)} = {_number(rng)}")
        elif roll == 1:
            lines.append(f"{indent}if {_identifier(rng)} >= {_number(rng)}:")
        elif roll == 2:
            kw = rng.choice(_PY_KEYWORDS)
            lines.append(f"{indent}# {kw} {_sentence(rng)}")
        elif roll == 3:
            lines.append(f'{indent}items["{rng.choice(_KEYS)}"] += [{_number(rng)}]')
        else:
            lines.append(f"{indent}return {_identifier(rng)}({_number(rng)}) != {{}}")
    return "\n".join(lines)


def _chat(rng: SplitMix64) -> str:
    turns = []
    for _ in range(1 + rng.below(3)):
        turns.append(f"User: {_sentence(rng)}\nAssistant: {_paragraph(rng)}")
    return "\n".join(turns)


_GENERATORS: tuple[Callable[[SplitMix64], str], ...] = (
    _paragraph,
    _paragraph,
    _paragraph,
    _json_object,
    _json_object,
    _code,
    _chat,
)


def iter_documents(seed: int, num_documents: int) -> Iterator[str]:
    """Yield `num_documents` synthetic documents (prose, JSON, code, chat) for `seed`."""
    rng = SplitMix64(seed)
    for _ in range(num_documents):
        doc = rng.choice(_GENERATORS)(rng)
        whitespace = rng.choice(("\n", "\n\n", " ", "\r\n", "\n\n\n"))
        yield doc + whitespace
