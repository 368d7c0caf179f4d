"""Static check that a grammar can finish: every rule it can reach derives a finite string.

Why: xgrammar's `GrammarMatcher.find_jump_forward_string()` follows forced text until a choice
appears. In a rule that derives no finite string (`root ::= "a" root`, or the JSON schema
`{"properties": {"a": {"$ref": "#"}}, "required": ["a"]}`) the forced text never ends and the
call allocates without bound, taking the engine core down. xgrammar compiles such grammars
without complaint, and its token masks allow their prefixes, so a request can enter a dead
rule even when another alternative would finish.

The check runs on xgrammar's normalised EBNF (`str(grammar)`): one rule per line, bodies made
of literals, character classes, rule references, groups, `|`, postfix `* + ? {m, n}` and
lookahead `(= ...)`. Each rule's shortest derivation length is computed by fixpoint (the
classic "productive nonterminals" algorithm), so the cost is linear in grammar size per round
and there are at most as many rounds as rules. Anything it does not recognise makes the
answer `None` (undecided); callers then treat the grammar as unsafe for jump-forward.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

# Longest minimum output allowed. It also bounds xgrammar's forced-string search, which is
# linear in the forced text (about 0.25 s per call at 1 MiB, on the scheduler's path at
# every step): a run of forced text is never longer than the shortest way to finish.
MAX_MIN_LENGTH = 1 << 16
# Rounds of the fixpoint and body tokens are bounded so a hostile grammar cannot stall us.
MAX_GRAMMAR_TOKENS = 1 << 20

_RULE = re.compile(r"^([A-Za-z_][\w.\-]*) ::= (.*)$")
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<lit>"(?:[^"\\]|\\.)*")
    | (?P<cls>\[(?:[^\]\\]|\\.)*\])
    | (?P<look>\(=)
    | (?P<open>\()
    | (?P<close>\))
    | (?P<bar>\|)
    | (?P<rep>\{\s*\d+\s*,\s*-?\d+\s*\})
    | (?P<post>[*+?])
    | (?P<ref>[A-Za-z_][\w.\-]*)
    )""",
    re.VERBOSE,
)
_ESCAPE = re.compile(r"\\(?:u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|x[0-9A-Fa-f]{1,2}|.)")


@dataclass(frozen=True)
class Finiteness:
    """`dead_rules`: reachable rules with no finite derivation; `min_length`: of the root."""

    dead_rules: tuple[str, ...]
    min_length: float

    @property
    def ok(self) -> bool:
        return not self.dead_rules and self.min_length <= MAX_MIN_LENGTH

    def problem(self) -> str:
        """What is wrong, for an HTTP 400 message (empty when `ok`)."""
        if self.dead_rules:
            names = ", ".join(self.dead_rules[:5])
            if "root" in self.dead_rules:
                return f"accepts no finite output (rule root can never end; dead rules: {names})"
            return f"has rules that can never end ({names}), so some outputs could never finish"
        if self.min_length > MAX_MIN_LENGTH:
            return f"needs more than {MAX_MIN_LENGTH} characters of output"
        return ""


class _Undecided(Exception):
    pass


# A parsed body: ("lit", n) | ("ref", name) | ("seq", [...]) | ("alt", [...]) |
# ("rep", node, lo) with lo the minimum repeat count (0 for * ? and lookahead).
_Node = tuple


@functools.lru_cache(maxsize=256)
def analyse(normalised_ebnf: str, root: str = "root") -> Finiteness | None:
    """Finiteness of xgrammar's normalised EBNF, or None when the text is not understood.

    Cached: every request under one schema brings the same grammar (3.7 ms a request for
    the key-heavy benchmark schema, in the scheduler's step, before caching)."""
    try:
        rules = _parse_rules(normalised_ebnf)
    except _Undecided:
        return None
    if root not in rules:
        return None
    lengths = _min_lengths(rules)
    reachable = _reachable(rules, root)
    dead = tuple(sorted(name for name in reachable if lengths[name] == math.inf))
    return Finiteness(dead, lengths[root])


def _parse_rules(text: str) -> dict[str, _Node]:
    rules: dict[str, _Node] = {}
    budget = [MAX_GRAMMAR_TOKENS]
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _RULE.match(line)
        if match is None:
            raise _Undecided(line[:80])
        tokens = _tokenize(match.group(2), budget)
        node, pos = _parse_alt(tokens, 0)
        if pos != len(tokens):
            raise _Undecided(line[:80])
        rules[match.group(1)] = node
    return rules


def _tokenize(body: str, budget: list[int]) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    body = body.rstrip()
    while pos < len(body):
        match = _TOKEN.match(body, pos)
        if match is None or match.end() == pos:
            raise _Undecided(body[pos : pos + 40])
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        pos = match.end()
        budget[0] -= 1
        if budget[0] < 0:
            raise _Undecided("grammar too large")
    return tokens


def _parse_alt(tokens: list[tuple[str, str]], pos: int, depth: int = 0) -> tuple[_Node, int]:
    if depth > 64:
        raise _Undecided("nested too deeply")
    options = []
    node, pos = _parse_seq(tokens, pos, depth)
    options.append(node)
    while pos < len(tokens) and tokens[pos][0] == "bar":
        node, pos = _parse_seq(tokens, pos + 1, depth)
        options.append(node)
    return ("alt", options), pos


def _parse_seq(tokens: list[tuple[str, str]], pos: int, depth: int) -> tuple[_Node, int]:
    items: list[_Node] = []
    while pos < len(tokens) and tokens[pos][0] not in ("bar", "close"):
        kind, text = tokens[pos]
        if kind in ("open", "look"):
            inner, pos = _parse_alt(tokens, pos + 1, depth + 1)
            if pos >= len(tokens) or tokens[pos][0] != "close":
                raise _Undecided("unbalanced group")
            pos += 1
            item: _Node = ("rep", inner, 0) if kind == "look" else inner
        elif kind == "lit":
            item = ("lit", len(_ESCAPE.sub("x", text[1:-1])))
        elif kind == "cls":
            item = ("lit", 1)
        elif kind == "ref":
            item = ("ref", text)
        else:
            raise _Undecided(f"unexpected {text!r}")
        pos += 1 if kind not in ("open", "look") else 0
        if pos < len(tokens) and tokens[pos][0] in ("post", "rep"):
            item = ("rep", item, _min_repeats(tokens[pos][1]))
            pos += 1
        items.append(item)
    return ("seq", items), pos


def _min_repeats(postfix: str) -> int:
    if postfix in ("*", "?"):
        return 0
    if postfix == "+":
        return 1
    return int(postfix.strip("{} ").split(",")[0])


def _min_lengths(rules: dict[str, _Node]) -> dict[str, float]:
    lengths = dict.fromkeys(rules, math.inf)
    for _ in range(len(rules) + 1):
        changed = False
        for name, body in rules.items():
            value = _length(body, lengths)
            if value != math.inf:
                value = min(value, MAX_MIN_LENGTH + 1)  # keeps numbers small; still "too long"
            if value < lengths[name]:
                lengths[name] = value
                changed = True
        if not changed:
            break
    return lengths


def _length(node: _Node, lengths: dict[str, float]) -> float:
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "ref":
        return lengths.get(node[1], math.inf)
    if kind == "rep":
        return 0 if node[2] == 0 else node[2] * _length(node[1], lengths)
    if kind == "seq":
        return sum((_length(item, lengths) for item in node[1]), 0.0)
    return min((_length(item, lengths) for item in node[1]), default=math.inf)


def _reachable(rules: dict[str, _Node], root: str) -> set[str]:
    seen = {root}
    stack = [root]
    while stack:
        for ref in _refs(rules.get(stack.pop(), ("seq", []))):
            if ref not in seen:
                seen.add(ref)
                stack.append(ref)
    return seen


def _refs(node: _Node) -> list[str]:
    kind = node[0]
    if kind == "ref":
        return [node[1]]
    if kind == "rep":
        return _refs(node[1])
    if kind in ("seq", "alt"):
        return [ref for item in node[1] for ref in _refs(item)]
    return []
