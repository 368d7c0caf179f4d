"""Seeded English inputs for the SGLang-program benchmark (no data set can be downloaded).

Made-up cities with facts (JSON extraction documents, ReAct traces, articles to judge),
arithmetic word problems (few-shot QA) and labelled headlines (classification). Every function
takes a ``random.Random`` so both servers of a side-by-side run see byte-identical inputs.
"""

from __future__ import annotations

import dataclasses
import random


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_SYLLABLES = _words(
    "var nor tes ka lin dor mer bra vel ost gar hel ru san tor mi len ad fen qua ri bel"
)
_SUFFIXES = ("holm", "burg", "stad", "ford", "mouth", "ton", "field", "gate", "vik", "dale")
COUNTRIES = _words(
    "Norway Sweden Denmark Finland Iceland Estonia Latvia Poland Austria Portugal Chile "
    "Canada Ireland Scotland Wales Belgium"
)
_LANDMARK_KINDS = ("Bridge", "Tower", "Cathedral", "Market", "Museum", "Park", "Harbour", "Gate")
_RIVER_ROOTS = ("Tessa", "Orla", "Vena", "Skarn", "Mira", "Dolva", "Lune", "Kerra")
_TRADES = ("fishing", "shipbuilding", "timber", "textiles", "software", "brewing", "mining")


@dataclasses.dataclass(frozen=True)
class City:
    name: str
    country: str
    latitude: float
    population: int
    landmarks: tuple[str, str, str]
    river: str
    founded: int
    trade: str


def _word(rng: random.Random, parts: int = 2) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(parts)).capitalize()


def city(rng: random.Random) -> City:
    name = _word(rng) + rng.choice(_SUFFIXES)
    marks = tuple(f"{_word(rng)} {kind}" for kind in rng.sample(_LANDMARK_KINDS, 3))
    return City(
        name=name,
        country=rng.choice(COUNTRIES),
        latitude=round(rng.uniform(35.0, 70.0), 2),
        population=rng.randrange(20_000, 2_000_000),
        landmarks=marks,  # type: ignore[arg-type]
        river=rng.choice(_RIVER_ROOTS),
        founded=rng.randrange(900, 1900),
        trade=rng.choice(_TRADES),
    )


def city_document(c: City, rng: random.Random, filler_sentences: int = 6) -> str:
    """A short encyclopedia-style page about ``c`` (facts in prose, in shuffled order)."""
    facts = [
        f"{c.name} is a city in {c.country}.",
        f"It lies on the river {c.river} at a latitude of {c.latitude} degrees north.",
        f"The city was founded in {c.founded} and has a population of {c.population}.",
        f"Its best known sights are the {c.landmarks[0]}, the {c.landmarks[1]} "
        f"and the {c.landmarks[2]}.",
        f"For centuries the economy of {c.name} depended on {c.trade}.",
    ]
    filler = [
        f"Visitors often walk along the banks of the {c.river} in the evening.",
        "The old town has narrow streets, small squares and many cafes.",
        "Winters are long and dark, while summers are mild and bright.",
        f"A railway line connects {c.name} with the capital of {c.country}.",
        "The university was opened in the nineteenth century and now teaches many students.",
        "Local markets sell fish, bread, cheese and vegetables every morning.",
        "The city council meets in a building near the main square.",
        "Several festivals take place during the summer months.",
    ]
    sentences = facts + rng.sample(filler, min(filler_sentences, len(filler)))
    head, rest = sentences[0], sentences[1:]
    rng.shuffle(rest)
    return " ".join([head, *rest]) + "\n"


def word_problem(rng: random.Random, kind: str) -> tuple[str, str, int]:
    """(question, worked answer, result) for one of ``WORD_PROBLEM_KINDS``."""
    who = rng.choice(("Anna", "Ben", "Carla", "David", "Emma", "Farid", "Grace", "Hugo"))
    thing = rng.choice(("apples", "books", "stamps", "marbles", "pencils", "shells"))
    a, b = rng.randrange(2, 40), rng.randrange(2, 20)
    if kind == "add":
        q = f"{who} has {a} {thing} and gets {b} more. How many {thing} does {who} have now?"
        r, work = a + b, f"{a} + {b} = {a + b}"
    elif kind == "sub":
        a += b
        q = f"{who} has {a} {thing} and gives away {b}. How many {thing} are left?"
        r, work = a - b, f"{a} - {b} = {a - b}"
    elif kind == "mul":
        a = a % 9 + 2
        q = f"{who} buys {a} boxes with {b} {thing} in each box. How many {thing} is that?"
        r, work = a * b, f"{a} * {b} = {a * b}"
    else:  # money
        price = rng.randrange(2, 12)
        q = f"One of the {thing} costs {price} dollars. How much do {b} of them cost?"
        r, work = price * b, f"{price} * {b} = {price * b}"
    return q, f"We compute {work}. The answer is {r}.", r


WORD_PROBLEM_KINDS = ("add", "sub", "mul", "money")

TOPICS = ("sports", "politics", "science", "business")
_HEADLINE_PARTS = {
    "sports": (
        "the home team wins the final",
        "a young striker scores twice",
        "the coach resigns after a heavy defeat",
        "the marathon record falls in the rain",
        "the tennis champion retires",
    ),
    "politics": (
        "parliament passes the new budget",
        "the minister faces a vote of confidence",
        "voters choose a new mayor",
        "the government announces early elections",
        "two parties agree on a coalition",
    ),
    "science": (
        "researchers find water ice on a distant moon",
        "a new telescope captures an old galaxy",
        "biologists discover a deep sea fish",
        "physicists measure a tiny particle mass",
        "a study links sleep and memory",
    ),
    "business": (
        "the central bank raises interest rates",
        "a retailer reports record profits",
        "shares fall after the merger talks fail",
        "the car maker opens a new factory",
        "oil prices climb for a third week",
    ),
}


def headline(rng: random.Random, topic: str, place: str) -> str:
    return f"In {place}, {rng.choice(_HEADLINE_PARTS[topic])}."


def react_step_text(c: City, question_kind: str) -> tuple[str, list[tuple[str, str, str]]]:
    """A question about ``c`` and its (thought, action, observation) trace."""
    if question_kind == "river":
        question = f"Which river flows through the city that is home to the {c.landmarks[0]}?"
        answer = c.river
    else:
        question = f"In which country is the city famous for the {c.landmarks[0]}?"
        answer = c.country
    steps = [
        (
            f"I need to find which city has the {c.landmarks[0]}.",
            f"Search[{c.landmarks[0]}]",
            f"The {c.landmarks[0]} is a famous sight in {c.name}.",
        ),
        (
            f"The {c.landmarks[0]} is in {c.name}. I need to search {c.name}.",
            f"Search[{c.name}]",
            f"{c.name} is a city in {c.country} on the river {c.river}.",
        ),
        (
            f"The answer is {answer}.",
            f"Finish[{answer}]",
            "Episode finished.",
        ),
    ]
    return question, steps
