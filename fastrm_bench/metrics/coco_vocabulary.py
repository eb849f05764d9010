"""CHAIR's COCO object vocabulary (Rohrbach et al., EMNLP 2018): the 80 COCO categories and their synonyms,
and the rules that turn a caption into the COCO objects it names.

The synonym list is the one every CHAIR implementation uses (``data/synonyms.txt`` of the authors' code,
github.com/LisaAnne/Hallucination): one line per category, the category's node word first. The rules
follow the authors' ``utils/chair.py``: words are singularised, the COCO double words ("motor bike",
"hot dog", "teddy bear", ...) count as one word, "baby"/"adult" before an animal and "passenger" before a
vehicle do not name a person, "bow tie" is a tie, and "seat" in a caption that names a toilet is no chair.

What differs from the authors' code: their tokeniser and singulariser are nltk's ``word_tokenize`` and
pattern's ``singularize`` (both need downloads); here words are the harness' word split
(`fastrm_bench.world.captions.split_words`, so that a mention's word indices are the ones the token maps
align to) and plurals are undone by rules (irregular nouns, -ies, -ves, -es, -s) applied to every word
as pattern does. On COCO's object words the two agree; a rare plural outside the rules stays unmatched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from fastrm_bench.world.captions import split_words

#: CHAIR's synonym list, line for line (a data file beside this module; node word first)
SYNONYMS_FILE = "coco_synonyms.txt"

#: two words that name one object (the authors' list)
DOUBLE_WORDS = ("motor bike", "motor cycle", "air plane", "traffic light", "street light", "traffic signal", "stop light",
                "fire hydrant", "stop sign", "parking meter", "suit case", "sports ball", "baseball bat", "baseball glove",
                "tennis racket", "wine glass", "hot dog", "cell phone", "mobile phone", "teddy bear", "hair drier",
                "potted plant", "bow tie", "laptop computer", "stove top oven", "home plate")
#: "baby bird" is a bird, not a person; "passenger jet" a jet
ANIMAL_WORDS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal", "cub")
VEHICLE_WORDS = ("jet", "train")
#: plurals the suffix rules miss
IRREGULAR = {"men": "man", "women": "woman", "children": "child", "people": "people", "mice": "mouse", "geese": "goose",
             "knives": "knife", "oxen": "oxen", "teeth": "tooth", "feet": "foot", "sheep": "sheep", "skis": "skis",
             "scissors": "scissors", "buses": "bus", "cattle": "cattle", "calves": "calf", "wolves": "wolf"}


@dataclass(frozen=True)
class CocoMention:
    """One COCO object named in a caption: its word indices (`split_words`) and its category's node word."""

    words: tuple[int, ...]
    word: str
    category: str


@lru_cache(maxsize=1)
def synonym_table() -> dict[str, str]:
    """Every synonym (lower case) -> its category's node word."""
    table: dict[str, str] = {}
    text = resources.files("fastrm_bench.metrics").joinpath(SYNONYMS_FILE).read_text(encoding="utf-8")
    for line in (x for x in text.splitlines() if x.strip() and not x.startswith("#")):
        names = [n.strip().lower() for n in line.split(",") if n.strip()]
        table.update({name: names[0] for name in names})
    return table


@lru_cache(maxsize=1)
def _double_words() -> dict[str, str]:
    pairs = {d: d for d in DOUBLE_WORDS}
    pairs.update({f"{age} {animal}": animal for animal in ANIMAL_WORDS for age in ("baby", "adult")})
    pairs.update({f"passenger {vehicle}": vehicle for vehicle in VEHICLE_WORDS})
    pairs.update({"bow tie": "tie", "toilet seat": "toilet", "wine glas": "wine glass"})
    return pairs


def singular(word: str) -> str:
    """``word`` without its plural ending (rules, as pattern's ``singularize`` does for nouns)."""
    if word in synonym_table() or word in IRREGULAR:
        return IRREGULAR.get(word, word)
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith("ves"):
        return word[:-3] + "f"
    if word.endswith(("sses", "shes", "ches", "xes", "zes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def category_of(name: str) -> str | None:
    """The node word of a COCO category or synonym name ("motorbike" -> "motorcycle"); None outside the vocabulary."""
    return synonym_table().get(name.strip().lower())


def coco_mentions(caption: str) -> list[CocoMention]:
    """The COCO objects a caption names, in order, with their word indices (the authors' rules, see the module)."""
    words = [singular(w.lower()) for w in split_words(caption)]
    merged: list[tuple[tuple[int, ...], str]] = []
    i = 0
    while i < len(words):
        pair = " ".join(words[i:i + 2])
        if i + 1 < len(words) and pair in _double_words():
            merged.append(((i, i + 1), _double_words()[pair]))
            i += 2
        else:
            merged.append(((i,), words[i]))
            i += 1
    names = [name for _, name in merged]
    if "toilet" in names and "seat" in names:  # "the seat of the toilet" names no chair
        merged = [(at, name) for at, name in merged if name != "seat"]
    table = synonym_table()
    return [CocoMention(at, name, table[name]) for at, name in merged if name in table]


def image_categories(instance_categories: Sequence[str], reference_captions: Sequence[str]) -> list[str]:
    """An image's ground-truth objects as CHAIR takes them: its instances' categories and every object its
    reference captions name (node words, sorted)."""
    found = {category_of(name) for name in instance_categories}
    found.update(m.category for caption in reference_captions for m in coco_mentions(caption))
    return sorted(c for c in found if c is not None)
