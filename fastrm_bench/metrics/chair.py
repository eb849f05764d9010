"""CHAIR (Rohrbach et al., EMNLP 2018, "Object Hallucination in Image Captioning"): how often a caption names
an object that is not in the image.

CHAIR maps the caption's object words to object classes and compares them with the image's ground-truth
classes: ``CHAIR_i = |hallucinated object mentions| / |all object mentions|`` over the run, and
``CHAIR_s = |captions with >= 1 hallucinated object| / |captions|``.

On the embedded world an object class is a (colour, shape) pair (the COCO categories of
`fastrm_bench.world.scenes.CATEGORIES`, named "a red circle" in a caption, `fastrm_bench.world.captions`). A
mention is a shape word (plural too: "circles") with the colour word before it, or a colour word left without a
shape before a comma, another colour word or the end ("a red, a blue square": "red" names something red). A
mention is hallucinated when no object of the scene has every attribute it names ("a red square" in a scene with
a red circle and a blue square is hallucinated: there is no red square). Mentions are matched by kind, not by
count, as in CHAIR: "a red circle, a red circle" with one red circle hallucinates nothing.

The scene's objects are read from the sample's reference caption (``meta["words"]`` and ``meta["token_objects"]``,
the describe task): the embedded world's caption names every object of its scene.

On COCO data (captions and instance annotations, the describe task's ``meta["coco_objects"]``: the image's
instance categories and the objects its reference captions name) a mention is a COCO object word and CHAIR is
the authors' (`fastrm_bench.metrics.coco_vocabulary`: their synonym list and rules): a mention is hallucinated
when its category is not among the image's. Samples with neither get no fields, so the metric runs on any task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fastrm_bench.metrics.base import Metric, RunSettings, SampleContext
from fastrm_bench.metrics.coco_vocabulary import coco_mentions
from fastrm_bench.world.captions import split_words
from fastrm_bench.world.scenes import COLOR_NAMES, SHAPES

#: the object vocabulary: colour words, and shape words with their plurals (the world's question vocabulary)
COLOUR_WORDS: dict[str, str] = {c: c for c in COLOR_NAMES}
SHAPE_WORDS: dict[str, str] = {**{s: s for s in SHAPES}, **{f"{s}s": s for s in SHAPES}}
#: words that end a phrase: a colour waiting for its shape before one of these names an object on its own
PHRASE_ENDS = frozenset({",", ".", ";", "and"})


@dataclass(frozen=True)
class Mention:
    """One object mention: the indices of its words in the caption and the attributes they name (None: unnamed)."""

    words: tuple[int, ...]
    color: str | None
    shape: str | None


SceneObject = tuple[str | None, str | None]  # (colour, shape) of one object of the scene


def object_mentions(words: Sequence[str]) -> list[Mention]:
    """The object mentions of a caption split into words ("a red circle, a blue square" -> two)."""
    mentions: list[Mention] = []
    colour_at: int | None = None  # a colour word waiting for its shape

    def flush() -> None:
        nonlocal colour_at
        if colour_at is not None:
            mentions.append(Mention((colour_at,), COLOUR_WORDS[words[colour_at].lower()], None))
            colour_at = None

    for i, word in enumerate(w.lower() for w in words):
        if word in COLOUR_WORDS:
            flush()
            colour_at = i
        elif word in SHAPE_WORDS:
            colour = COLOUR_WORDS[words[colour_at].lower()] if colour_at is not None else None
            at = (i,) if colour_at is None else (colour_at, i)
            mentions.append(Mention(at, colour, SHAPE_WORDS[word]))
            colour_at = None
        elif word in PHRASE_ENDS:
            flush()
    flush()
    return mentions


def scene_objects(meta: dict[str, Any]) -> list[SceneObject] | None:
    """The scene's objects as (colour, shape), read from the reference's words and their object ids; None without them."""
    words, objects = meta.get("words"), meta.get("token_objects")
    if words is None or objects is None:
        return None
    if len(words) != len(objects):
        raise ValueError(f"{len(words)} words but {len(objects)} token_objects")
    found: dict[Any, list[str | None]] = {}
    for word, obj in zip(words, objects):
        if obj is None:
            continue
        entry = found.setdefault(obj, [None, None])
        word = word.lower()
        if word in COLOUR_WORDS:
            entry[0] = COLOUR_WORDS[word]
        elif word in SHAPE_WORDS:
            entry[1] = SHAPE_WORDS[word]
    return [(c, s) for c, s in found.values()]


def is_hallucinated(mention: Mention, objects: Sequence[SceneObject]) -> bool:
    """True when no object of the scene has every attribute the mention names."""
    return not any((mention.color is None or mention.color == c) and (mention.shape is None or mention.shape == s)
                   for c, s in objects)


def labelled_mentions(text: str, objects: Sequence[SceneObject]) -> list[dict[str, Any]]:
    """The caption's mentions as JSON records: word indices, attributes and ``hallucinated``."""
    return [{**asdict(m), "words": list(m.words), "hallucinated": is_hallucinated(m, objects)}
            for m in object_mentions(split_words(text))]


def coco_labelled_mentions(text: str, categories: Sequence[str]) -> list[dict[str, Any]]:
    """The caption's COCO object mentions as JSON records: word indices, word, category and ``hallucinated``."""
    present = set(categories)
    return [{"words": list(m.words), "word": m.word, "category": m.category, "hallucinated": m.category not in present}
            for m in coco_mentions(text)]


def caption_mentions(text: str, meta: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The answer's labelled object mentions against the sample's objects: the embedded world's scene list, or the
    COCO categories of the image; None when the sample has neither."""
    objects = scene_objects(meta)
    if objects is not None:
        return labelled_mentions(text, objects)
    if "coco_objects" in meta:
        return coco_labelled_mentions(text, meta["coco_objects"])
    return None


def chair(captions: Sequence[Sequence[dict[str, Any]]]) -> dict[str, float]:
    """CHAIR_i and CHAIR_s of captions given as their labelled mentions (NaN CHAIR_i when nothing is mentioned)."""
    flags = [bool(m["hallucinated"]) for mentions in captions for m in mentions]
    return {"chair_i": float(np.mean(flags)) if flags else float("nan"),
            "chair_s": float(np.mean([any(m["hallucinated"] for m in c) for c in captions])) if captions else float("nan"),
            "chair_n_mentions": float(len(flags)), "chair_n_hallucinated": float(sum(flags)),
            "chair_n_captions": float(len(captions))}


class Chair(Metric):
    """CHAIR_i (share of object mentions that are hallucinated) and CHAIR_s (share of captions with one)."""

    name = "chair"
    higher_is_better = {"chair_i": False, "chair_s": False, "chair_n_mentions": None,
                        "chair_n_hallucinated": None, "chair_n_captions": None}
    columns = {"chair_i": "chair_i", "chair_s": "chair_s"}

    def update(self, context: SampleContext) -> dict[str, Any]:
        """``chair_mentions``: the answer's object mentions, each labelled; nothing for samples without a scene list."""
        mentions = caption_mentions(context.generation.text, context.sample.meta)
        return {} if mentions is None else {"chair_mentions": mentions}

    def compute(self, records: Sequence[dict[str, Any]], settings: RunSettings) -> dict[str, float]:
        captions = [r["chair_mentions"] for r in records if "chair_mentions" in r]
        return chair(captions) if captions else {}
