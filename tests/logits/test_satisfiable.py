"""The finiteness check on xgrammar's normalised EBNF: shortest lengths, dead rules, and
"undecided" (None) for text it does not understand, never a wrong verdict."""

from __future__ import annotations

import xgrammar as xgr

from radix_plugin.logits.grammar.satisfiable import MAX_MIN_LENGTH, analyse


def _analyse(ebnf: str):
    return analyse(str(xgr.Grammar.from_ebnf(ebnf)))


def test_shortest_output_lengths() -> None:
    assert _analyse('root ::= "ab" | "c"').min_length == 1
    assert _analyse('root ::= "a" x{2,3}\nx ::= "bc"').min_length == 5
    assert _analyse('root ::= [a-z]* "\\n" x?\nx ::= "q"').min_length == 1
    assert _analyse('root ::= "a" root | "b"').min_length == 1


def test_dead_rules_are_named_only_when_reachable() -> None:
    result = _analyse('root ::= "x" | "y" a\na ::= "z" a')
    assert result is not None and result.dead_rules == ("a",) and not result.ok
    assert "can never end (a)" in result.problem()
    assert _analyse('root ::= "x" | a{0,3}\na ::= "z" a').dead_rules == ("a",)


def test_too_long_minimum_is_not_ok() -> None:
    result = analyse(str(xgr.Grammar.from_regex("(ab){40000}")))
    assert result is not None and result.min_length > MAX_MIN_LENGTH and not result.ok


def test_text_it_does_not_understand_is_undecided() -> None:
    assert analyse("root ::= TagDispatch(stop_eos=true)") is None
    assert analyse("not a rule") is None
    assert analyse('other ::= "a"') is None  # no root
