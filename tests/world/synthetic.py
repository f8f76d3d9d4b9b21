"""A small synthetic `RawCorpora` with the shape of the real one, for fast builder tests."""

from __future__ import annotations

import random

from training.world.corpora import (
    AUSTEN_NOVELS,
    FREEDICT_LANGS,
    ApiEntry,
    Chapter,
    RawCorpora,
    Synset,
)
from training.world.tasks import BIBLE_GROUPS, FORTUNE_TASKS, PY_AREAS

WORDS = [
    "light",
    "water",
    "king",
    "house",
    "river",
    "stone",
    "field",
    "bread",
    "night",
    "voice",
    "city",
    "garden",
    "letter",
    "horse",
    "sister",
    "friend",
    "morning",
    "silver",
    "window",
    "mountain",
    "table",
    "reason",
    "fortune",
    "dinner",
]


def _letters(i: int) -> str:
    return chr(97 + i // 26 % 26) + chr(97 + i % 26)


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def synthetic_corpora(seed: int = 0, scale: int = 12) -> RawCorpora:
    """Every source and task family present, `scale` entries of each (deterministic)."""
    rng = random.Random(seed)
    books = [b for first, last, _ in BIBLE_GROUPS.values() for b in (first, last)]
    bible = [
        Chapter(b, c, [_sentence(rng, 12) for _ in range(6)]) for b in books for c in range(1, 3)
    ]
    austen = {
        n: [" ".join(_sentence(rng, 14) for _ in range(2)) for _ in range(scale)]
        for n in AUSTEN_NOVELS
    }
    areas = [a for v in PY_AREAS.values() for a in v]
    api = [ApiEntry(a, f"mod{a}.func{i}(x)", _sentence(rng, 8)) for a in areas for i in range(3)]
    docs = ["\n\n".join(_sentence(rng, 15) for _ in range(8)) for _ in range(scale)]
    wordnet = [
        Synset(
            f"n{d}{i:04d}",
            f"noun.{dom}",
            [f"{dom}word{_letters(i)}"],
            f"a thing of the {dom} kind, {_sentence(rng, 6)}",
        )
        for d, dom in enumerate(("animal", "food", "plant"))
        for i in range(scale)
    ]
    fortunes = {c: [_sentence(rng, 12) for _ in range(scale)] for c in (*FORTUNE_TASKS, "misc")}
    jargon = [(f"term{i}", f"{_sentence(rng, 9)} {_sentence(rng, 6)}") for i in range(scale)]
    devil = [
        (f"WORD{_letters(i)}", f"WORD{_letters(i).upper()}, n. {_sentence(rng, 9)}")
        for i in range(scale)
    ]
    freedict = {
        lang: [(f"{w}{i}", f"{lang}{w}{i}") for i, w in enumerate(WORDS[:scale])]
        for lang in FREEDICT_LANGS
    }
    return RawCorpora(bible, austen, docs, api, wordnet, fortunes, jargon, devil, freedict)
