"""Make xgrammar's JSON-schema grammars reject raw control characters inside strings.

JSON (RFC 8259, and Python's `json.loads` in its default strict mode) forbids unescaped
U+0000..U+001F inside strings. xgrammar 0.2.8 gets this right for plain `{"type": "string"}`
but not for every string rule it generates: with `minLength`/`maxLength` it emits
`[^"\\\\\\r\\n]`, which lets a byte-level BPE model put raw `\\x01` or a raw tab inside a string,
and the output then fails `json.loads`. (Measured on the tiny test model: 30 control-byte
tokens are allowed inside a `maxLength` string.)

The fix is a textual rewrite of the grammar xgrammar prints: every negated character class
that excludes the double quote is a string-content class, so `\\0-\\x1f` is added to its
exclusions. String literals (including `Regex("...")` bodies, which xgrammar already compiles
JSON-safely with `json_string=true`) are skipped by a small scanner so that constants such as
an enum value `"[^x"` are never touched. Positive classes and lookaheads without a quote are left
alone, so whitespace between tokens stays legal.
"""

from __future__ import annotations

CONTROL_RANGE = r"\0-\x1f"


def forbid_raw_control_chars(ebnf: str) -> str:
    """Return `ebnf` with `\\0-\\x1f` excluded from every JSON string-content class."""
    out: list[str] = []
    i, n = 0, len(ebnf)
    while i < n:
        ch = ebnf[i]
        if ch == '"':
            end = _skip_delimited(ebnf, i, '"')
            out.append(ebnf[i:end])
            i = end
        elif ch == "[":
            end = _skip_delimited(ebnf, i, "]")
            out.append(_rewrite_class(ebnf[i:end]))
            i = end
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _skip_delimited(text: str, start: int, closer: str) -> int:
    """Index just past the `closer` that ends the literal or class opened at `start`."""
    i = start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == closer:
            return i + 1
        i += 1
    raise ValueError(f"unterminated {text[start]!r} at offset {start} in grammar")


def _rewrite_class(char_class: str) -> str:
    """Add the control range to a negated class that excludes `"` (a string-content class)."""
    body = char_class[1:-1]
    if not body.startswith("^") or CONTROL_RANGE in body or not _excludes_quote(body[1:]):
        return char_class
    return "[^" + CONTROL_RANGE + body[1:] + "]"


def _excludes_quote(body: str) -> bool:
    i = 0
    while i < len(body):
        if body[i] == "\\":
            if body[i + 1 : i + 2] == '"':
                return True
            i += 2
            continue
        if body[i] == '"':
            return True
        i += 1
    return False
