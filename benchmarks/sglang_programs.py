"""The SGLang paper's workloads as SGLang programs, sized for a 135M model on 2 CPU cores.

Each ``Workload`` is an ``@sgl.function`` plus seeded arguments and a check of its outputs;
``sglang_side_by_side.py`` runs them with ``run_batch`` through ``sgl.RuntimeEndpoint`` on
vanilla vLLM and on vLLM + radix-plugin. The programs are written for this benchmark (the
workload shapes follow SGLang's ``benchmark/`` folder: few-shot QA, ``select`` classification,
regex- and schema-constrained JSON extraction, branch-solve-merge and tree-of-thought with
``fork``, multi-turn chat, a ReAct agent loop). Inputs come from ``sglang_corpus`` so every
server sees the same bytes; ``scale`` multiplies the number of programs.

Where the plugin should matter: prefix groups larger than the KV pool together (few-shot QA,
classification, ReAct: its cache-aware order and eviction keep a group's prefix while the
group runs), forks (shared prefix prefilled once), constrained decoding (jump-forward over
the keys and punctuation a schema forces).
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from collections.abc import Callable
from typing import Any

import sglang as sgl
from sglang_corpus import (
    TOPICS,
    WORD_PROBLEM_KINDS,
    City,
    city,
    city_document,
    headline,
    react_step_text,
    word_problem,
)

# ---------------------------------------------------------------- few-shot QA (GSM8K-style)


@sgl.function
def few_shot_qa(s, examples, question):
    s += examples + "Question: " + question + "\nAnswer:"
    s += sgl.gen("answer", max_tokens=32, stop="\n")


def _few_shot_qa_args(n: int, rng: random.Random, shots: int = 20) -> list[dict]:
    banks = {}
    for kind in WORD_PROBLEM_KINDS:
        lines = [f"Solve each {kind} word problem and give the answer as a number.\n\n"]
        for _ in range(shots):
            q, a, _ = word_problem(rng, kind)
            lines.append(f"Question: {q}\nAnswer: {a}\n\n")
        banks[kind] = "".join(lines)
    out = []
    for i in range(n):
        kind = WORD_PROBLEM_KINDS[i % len(WORD_PROBLEM_KINDS)]
        q, _, result = word_problem(rng, kind)
        out.append({"examples": banks[kind], "question": q, "_truth": result})
    return out


def _last_int(text: str) -> int | None:
    numbers = re.findall(r"-?\d+", text.replace(",", ""))
    return int(numbers[-1]) if numbers else None


def _few_shot_qa_check(state: Any, args: dict) -> dict[str, bool]:
    return {"correct": _last_int(state["answer"]) == args["_truth"]}


# ---------------------------------------------------------- select classification (MMLU-style)


@sgl.function
def classify_headline(s, examples, text):
    s += examples + "Headline: " + text + "\nTopic: "
    s += sgl.select("topic", choices=list(TOPICS))


def _classify_args(n: int, rng: random.Random, banks: int = 4, shots: int = 16) -> list[dict]:
    prefixes = []
    for b in range(banks):
        lines = [
            f"News desk {b + 1}: label each headline with its topic ({', '.join(TOPICS)}).\n\n"
        ]
        for _ in range(shots):
            topic = rng.choice(TOPICS)
            lines.append(f"Headline: {headline(rng, topic, city(rng).name)}\nTopic: {topic}\n\n")
        prefixes.append("".join(lines))
    out = []
    for i in range(n):
        topic = rng.choice(TOPICS)
        text = headline(rng, topic, city(rng).name)
        out.append({"examples": prefixes[i % banks], "text": text, "_truth": topic})
    return out


def _classify_check(state: Any, args: dict) -> dict[str, bool]:
    return {"valid": state["topic"] in TOPICS, "correct": state["topic"] == args["_truth"]}


# ------------------------------------------- JSON decoding with per-field regexes (SGLang #13)

_STR = r'"[A-Za-z ]{1,40}"'
FIELD_REGEX = {
    "name": _STR + ",",
    "country": _STR + ",",
    "river": _STR + ",",
    "latitude": r"[0-9]{1,2}\.[0-9]{1,2},",
    "population": r"[0-9]{1,8},",
    "landmarks": r"\[" + _STR + ", " + _STR + ", " + _STR + r"\]",
}
# Token budget per field: the longest match at one character per token, so no output is cut
# by max_tokens and "valid" measures the constraint alone (a trained model uses far fewer).
FIELD_MAX_TOKENS = {"latitude": 8, "population": 12, "landmarks": 136}
STRING_FIELD_MAX_TOKENS = 44


@sgl.function
def json_fields_regex(s, document):
    s += "Read the page about a city and fill in the record.\nPage:\n" + document
    s += "Record in JSON:\n"
    with s.var_scope("json"):
        s += "{\n"
        for field, regex in FIELD_REGEX.items():
            budget = FIELD_MAX_TOKENS.get(field, STRING_FIELD_MAX_TOKENS)
            s += f'  "{field}": ' + sgl.gen(field, max_tokens=budget, regex=regex) + "\n"
        s += "}"


def _city_args(n: int, rng: random.Random) -> list[dict]:
    out = []
    for _ in range(n):
        c = city(rng)
        out.append({"document": city_document(c, rng), "_truth": c})
    return out


def _json_check(text: str, c: City, validator: Any) -> dict[str, bool]:
    """Valid: parses and satisfies the schema; correct: name, country and population right."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return {"valid": False, "correct": False}
    if not validator.is_valid(record):
        return {"valid": False, "correct": False}
    correct = (record["name"], record["country"], record["population"]) == (
        c.name,
        c.country,
        c.population,
    )
    return {"valid": True, "correct": correct}


# ----------------------------------------------------- JSON decoding with a schema (one gen)

CITY_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "country": {"type": "string", "maxLength": 40},
        "river": {"type": "string", "maxLength": 40},
        "latitude": {"type": "number"},
        "population": {"type": "integer"},
        "founded": {"type": "integer"},
        "landmarks": {
            "type": "array",
            "items": {"type": "string", "maxLength": 40},
            "minItems": 3,
            "maxItems": 3,
        },
    },
    "required": ["name", "country", "river", "latitude", "population", "founded", "landmarks"],
    "additionalProperties": False,
}


def _validator(keys: list[str]) -> Any:
    """A validator of ``CITY_SCHEMA`` restricted to ``keys`` (all required)."""
    import jsonschema

    props = {k: CITY_SCHEMA["properties"][k] for k in keys}
    schema = {**CITY_SCHEMA, "properties": props, "required": keys}
    return jsonschema.Draft202012Validator(schema)


SCHEMA_VALIDATOR = _validator(CITY_SCHEMA["required"])
REGEX_VALIDATOR = _validator(list(FIELD_REGEX))


@sgl.function
def json_schema_extract(s, document):
    s += "Extract the facts about the city on this page as JSON.\nPage:\n" + document
    s += "JSON: " + sgl.gen("json", max_tokens=192, json_schema=json.dumps(CITY_SCHEMA))


# ---------------------------------------------------- branch-solve-merge (LLM judge) with fork

JUDGE_ASPECTS = (
    "Accuracy: are the facts about the city stated clearly and consistently?",
    "Structure: does the page move from the general to the specific?",
    "Style: is the language plain, short and easy to read?",
    "Coverage: does the page mention history, economy and sights?",
)


@sgl.function
def branch_solve_merge(s, article):
    s += "You are a strict editor. Review this encyclopedia page.\n\n" + article + "\n"
    forks = s.fork(len(JUDGE_ASPECTS))
    for branch, aspect in zip(forks, JUDGE_ASPECTS, strict=True):
        branch += "Aspect: " + aspect + "\nOne-sentence review:"
        branch += sgl.gen("review", max_tokens=32, stop="\n")
    forks.join()
    for aspect, branch in zip(JUDGE_ASPECTS, forks, strict=True):
        s += aspect.split(":")[0] + ":" + branch["review"] + "\n"
    s += "Overall score from 1 to 10: " + sgl.gen("score", max_tokens=4, regex="(10|[1-9])")


def _article_args(n: int, rng: random.Random) -> list[dict]:
    return [{"article": city_document(city(rng), rng, filler_sentences=8)} for _ in range(n)]


def _score_check(state: Any, args: dict) -> dict[str, bool]:
    return {"valid": state["score"] in {str(i) for i in range(1, 11)}}


# -------------------------------------------------------------- tree of thought (deep forks)


@sgl.function
def tree_of_thought(s, question, branches=2):
    s += sgl.user("Question: " + question + "\nPropose one short plan to solve it.")
    plans = s.fork(branches)
    plans += sgl.assistant(sgl.gen("plan", max_tokens=24, stop="\n"))
    leaves = []
    for plan in plans:
        plan += sgl.user("Follow the plan and give the final number.")
        solutions = plan.fork(branches)
        solutions += sgl.assistant(sgl.gen("answer", max_tokens=24, stop="\n"))
        leaves.extend(solutions)
    return [leaf["answer"] for leaf in leaves]


def _tot_args(n: int, rng: random.Random) -> list[dict]:
    out = []
    for i in range(n):
        q, _, result = word_problem(rng, WORD_PROBLEM_KINDS[i % len(WORD_PROBLEM_KINDS)])
        out.append({"question": q, "_truth": result})
    return out


def _tot_check(state: Any, args: dict) -> dict[str, bool]:
    votes = [_last_int(a) for a in state.ret_value]
    best = max(set(votes), key=votes.count)
    return {"correct": best == args["_truth"]}


# ------------------------------------------------------------------------- multi-turn chat

SYSTEM_PROMPT = (
    "You are a helpful travel guide. Answer in one short sentence, using only facts from the "
    "page the user gives you. If the page does not say, answer that you do not know. "
) * 4


@sgl.function
def multi_turn_chat(s, document, questions):
    s += sgl.system(SYSTEM_PROMPT)
    s += sgl.user("Here is a page about a city.\n" + document + "\n" + questions[0])
    s += sgl.assistant(sgl.gen("turn0", max_tokens=24, stop="\n"))
    for i, question in enumerate(questions[1:], start=1):
        s += sgl.user(question)
        s += sgl.assistant(sgl.gen(f"turn{i}", max_tokens=24, stop="\n"))


def _chat_args(n: int, rng: random.Random) -> list[dict]:
    out = []
    for _ in range(n):
        c = city(rng)
        questions = [
            "Which country is the city in?",
            "Which river flows through it?",
            "When was it founded?",
            f"Name one famous sight of {c.name}.",
        ]
        out.append({"document": city_document(c, rng), "questions": questions, "_truth": c})
    return out


def _chat_check(state: Any, args: dict) -> dict[str, bool]:
    return {"correct": args["_truth"].country in state["turn0"]}


# ------------------------------------------------------------------------ ReAct agent loop


def _react_examples(rng: random.Random, shots: int = 6) -> str:
    lines = [
        "Answer questions with interleaved Thought, Action and Observation steps. Actions: "
        "Search[entity] returns a sentence about the entity; Finish[answer] ends the task.\n\n"
    ]
    for i in range(shots):
        question, steps = react_step_text(city(rng), ("river", "country")[i % 2])
        lines.append(f"Question: {question}\n")
        for j, (thought, action, observation) in enumerate(steps, start=1):
            lines.append(f"Thought {j}: {thought}\nAction {j}: {action}\n")
            lines.append(f"Observation {j}: {observation}\n")
        lines.append("\n")
    return "".join(lines)


@sgl.function
def react_agent(s, examples, question, steps):
    s += examples + "Question: " + question + "\n"
    for i, (thought, action, observation) in enumerate(steps, start=1):
        s += f"Thought {i}:"
        # The model proposes the step; the recorded trace is replayed (as SGLang's benchmark
        # does), so every server sees the same context at every step.
        proposal = s.fork(1)
        proposal += sgl.gen("step", max_tokens=48, stop="Observation")
        proposal.join()
        s += f" {thought}\nAction {i}: {action}\nObservation {i}: {observation}\n"


def _react_args(n: int, rng: random.Random, banks: int = 4) -> list[dict]:
    prefixes = [_react_examples(rng) for _ in range(banks)]
    out = []
    for i in range(n):
        question, steps = react_step_text(city(rng), ("river", "country")[i % 2])
        out.append({"examples": prefixes[i % banks], "question": question, "steps": steps})
    return out


# ------------------------------------------------------------------------------- registry


@dataclasses.dataclass(frozen=True)
class Workload:
    """An SGLang program, how many programs a run makes and how to judge their outputs."""

    program: Any
    make_arguments: Callable[[int, random.Random], list[dict]]
    check: Callable[[Any, dict], dict[str, bool]] | None
    programs: int
    parallel: int
    what: str

    def arguments(self, scale: float, seed: int) -> list[dict]:
        return self.make_arguments(max(2, round(self.programs * scale)), random.Random(seed))


WORKLOADS: dict[str, Workload] = {
    "few_shot_qa": Workload(
        few_shot_qa,
        _few_shot_qa_args,
        _few_shot_qa_check,
        programs=48,
        parallel=16,
        what="4 interleaved 20-shot prefixes (~700 tokens each), gen up to 32 tokens",
    ),
    "select_classify": Workload(
        classify_headline,
        _classify_args,
        _classify_check,
        programs=24,
        parallel=8,
        what="4 interleaved 16-shot prefixes, select among 4 topics (token-healed logprobs)",
    ),
    "json_regex": Workload(
        json_fields_regex,
        _city_args,
        lambda state, args: _json_check(state["json"], args["_truth"], REGEX_VALIDATOR),
        programs=16,
        parallel=8,
        what="SGLang's JSON-decoding benchmark shape: 6 regex-constrained fields per page",
    ),
    "json_schema": Workload(
        json_schema_extract,
        _city_args,
        lambda state, args: _json_check(state["json"], args["_truth"], SCHEMA_VALIDATOR),
        programs=16,
        parallel=8,
        what="one gen with a 7-key JSON schema per page (keys forced by the grammar)",
    ),
    "branch_solve_merge": Workload(
        branch_solve_merge,
        _article_args,
        _score_check,
        programs=12,
        parallel=6,
        what="fork(4) reviews of one page, merge, regex-constrained score",
    ),
    "tree_of_thought": Workload(
        tree_of_thought,
        _tot_args,
        _tot_check,
        programs=12,
        parallel=6,
        what="chat, 2 plans x 2 solutions per question (nested forks), majority vote",
    ),
    "multi_turn_chat": Workload(
        multi_turn_chat,
        _chat_args,
        _chat_check,
        programs=16,
        parallel=8,
        what="shared system prompt, a page, 4 user turns of up to 24 tokens",
    ),
    "react_agent": Workload(
        react_agent,
        _react_args,
        None,
        programs=16,
        parallel=8,
        what="4 interleaved 6-shot ReAct prefixes, 3 replayed Thought/Action steps",
    ),
}
