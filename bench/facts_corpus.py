"""A corpus with known answers: made-up people, one fact each, and documents built to be confused with it.

For every person there is one *answer* document (their name, one attribute, its value, in one of several
sentence templates), one *same-name distractor* (the same person, another attribute) and one
*near-duplicate* (a person with the same first name and another surname, the same attribute, another
value). Each question asks for the answer's attribute of that person, so exactly one document answers
it: retrieval must tell apart the attribute (against the same-name distractor) and the surname
(against the near-duplicate). Names and values are made up, so no model knows them beforehand.

Deterministic (a fixed seed), no model needed: ``facts_corpus()`` -> documents and questions. Reused by
tests that need an index with known answers (``from bench.facts_corpus import facts_corpus``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

SEED = 27
FIRST = ["Alvar", "Brisa", "Corin", "Dagny", "Elio", "Fenna", "Gorm", "Hilde", "Ivo", "Jorun", "Kasimir", "Liv",
         "Mato", "Nell", "Oskar", "Pia", "Quill", "Runa", "Sten", "Tove"]
SYLLABLES = ["bra", "dell", "fin", "gar", "hol", "kest", "lund", "mor", "nast", "pell", "quist", "rov", "sand",
             "tarn", "vik", "wend"]
#: attribute -> (question, sentence templates, values)
ATTRIBUTES: dict[str, tuple[str, list[str], list[str]]] = {
    "colour": ("What is {name}'s favourite colour?",
               ["{name}'s favourite colour is {value}.", "The colour {name} likes best is {value}.",
                "Asked about colours, {name} always picks {value}."],
               ["teal", "amber", "crimson", "olive", "lilac", "ochre", "indigo", "coral"]),
    "town": ("In which town was {name} born?",
             ["{name} was born in {value}.", "The birthplace of {name} is the town of {value}.",
              "{name} grew up in {value}, where they were born."],
             ["Marrowby", "Quenford", "Ashcombe", "Tillbury", "Orrin Falls", "Castlemere", "Dunhallow", "Pellan"]),
    "pet": ("What kind of pet does {name} keep?",
            ["{name} keeps a {value} as a pet.", "The pet living with {name} is a {value}.",
             "At home, {name} looks after a pet {value}."],
            ["ferret", "tortoise", "parrot", "axolotl", "hedgehog", "gecko", "rabbit", "goldfish"]),
    "job": ("What does {name} do for a living?",
            ["{name} works as a {value}.", "By profession, {name} is a {value}.",
             "{name} earns a living as a {value}."],
            ["glassblower", "surveyor", "beekeeper", "cartographer", "luthier", "ferry pilot", "archivist", "baker"]),
    "instrument": ("Which instrument does {name} play?",
                   ["{name} plays the {value}.", "The instrument {name} practises every evening is the {value}.",
                    "In the town band, {name} is on the {value}."],
                   ["oboe", "cello", "banjo", "harp", "trombone", "accordion", "marimba", "viola"]),
}


@dataclass(frozen=True)
class Question:
    text: str
    #: the index of the one document that answers it
    answer: int
    #: the same-name distractor's and the near-duplicate's indexes
    distractors: tuple[int, int]


@dataclass(frozen=True)
class Corpus:
    documents: list[str]
    questions: list[Question]


def facts_corpus(people: int = 200, seed: int = SEED) -> Corpus:
    """``people`` answer documents, as many of each distractor kind, and one question per answer; the
    documents in a shuffled order (so an index's position says nothing)."""
    rng = random.Random(seed)
    names: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    while len(names) < 2 * people:  # each person and their namesake
        pair = (rng.choice(FIRST), "".join(rng.sample(SYLLABLES, 2)).capitalize())
        if pair not in seen:
            seen.add(pair)
            names.append(pair)
    attributes = list(ATTRIBUTES)
    texts: list[tuple[str, str]] = []  # (kind and person, text), shuffled below
    plans = []
    for i in range(people):
        first, last = names[i]
        namesake = f"{first} {names[people + i][1]}"
        name = f"{first} {last}"
        attribute, other = rng.sample(attributes, 2)
        question, templates, values = ATTRIBUTES[attribute]
        value, namesake_value = rng.sample(values, 2)
        _, other_templates, other_values = ATTRIBUTES[other]
        texts += [(f"answer {i}", rng.choice(templates).format(name=name, value=value)),
                  (f"same-name {i}", rng.choice(other_templates).format(name=name, value=rng.choice(other_values))),
                  (f"namesake {i}", rng.choice(templates).format(name=namesake, value=namesake_value))]
        plans.append(question.format(name=name))
    rng.shuffle(texts)
    where = {key: n for n, (key, _) in enumerate(texts)}
    questions = [Question(text, where[f"answer {i}"], (where[f"same-name {i}"], where[f"namesake {i}"]))
                 for i, text in enumerate(plans)]
    return Corpus([text for _, text in texts], questions)


__all__ = ["ATTRIBUTES", "Corpus", "Question", "facts_corpus"]
