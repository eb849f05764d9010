"""Describe captions of the embedded world: the scene's objects named from left to right, word by word.

A caption reads like "a red circle, a blue square, a green triangle": one phrase per object, ordered
by the objects' centres from left to right. Every word knows which object it names (the colour and
the shape word of a phrase name its object; "a" and "," name nothing), so a metric can score each
generated word's map against that word's own object.

Words are split as the embedded model's word-level tokenizer splits text (``\\w+`` or a run of
punctuation, the `tokenizers` ``Whitespace`` pre-tokenizer), and a caption's text is what that
tokenizer decodes its words to, so the reference and a model's greedy output compare as strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastrm_bench.world.scenes import Scene

DESCRIBE_QUESTION = "Describe the objects from left to right."
#: scenes with fewer objects get no caption (one object is not an order, and "a red circle" has 3 words)
MIN_CAPTION_OBJECTS = 2
#: neighbouring objects' centres must be this far apart horizontally (px) for "left to right" to be one order.
#: Closer pairs are stacked one above the other; such scenes get no caption. At 2 px, 84% of the default
#: world's scenes keep theirs (the relational questions' 6 px would drop 44%, most scenes of 4 objects).
ORDER_MARGIN = 2.0
#: the word split of the embedded tokenizer (`tokenizers.pre_tokenizers.Whitespace`)
WORD_PATTERN = re.compile(r"\w+|[^\w\s]+")
#: words of the describe question and captions that the shipped model's vocabulary lacks
NEW_WORDS = ("describe", "from")


def split_words(text: str) -> list[str]:
    """``text`` as the embedded tokenizer's words: "a red circle, a cube" -> a, red, circle, ",", a, cube."""
    return WORD_PATTERN.findall(text)


def join_words(words: list[str] | tuple[str, ...]) -> str:
    """Words as the embedded tokenizer decodes them: spaces between words, none before a comma."""
    return " ".join(words).replace(" ,", ",")


@dataclass(frozen=True)
class Caption:
    """A describe caption: its words and, per word, the index into ``Scene.objects`` it names (None: none)."""

    words: tuple[str, ...]
    objects: tuple[int | None, ...]

    def __post_init__(self) -> None:
        if len(self.words) != len(self.objects):
            raise ValueError(f"{len(self.words)} words but {len(self.objects)} object entries")

    @property
    def text(self) -> str:
        return join_words(self.words)


def left_to_right(scene: Scene) -> list[int] | None:
    """Indices of the scene's objects ordered by centre x; None when two neighbours are closer than `ORDER_MARGIN`."""
    order = sorted(range(len(scene.objects)), key=lambda i: scene.objects[i].center[0])
    xs = [scene.objects[i].center[0] for i in order]
    if any(b - a < ORDER_MARGIN for a, b in zip(xs, xs[1:])):
        return None
    return order


def describe_scene(scene: Scene) -> Caption | None:
    """The scene's caption, or None when it has too few objects or no clear left-to-right order."""
    if len(scene.objects) < MIN_CAPTION_OBJECTS:
        return None
    order = left_to_right(scene)
    if order is None:
        return None
    words: list[str] = []
    objects: list[int | None] = []
    for k, i in enumerate(order):
        if k:
            words.append(",")
            objects.append(None)
        obj = scene.objects[i]
        words += ["a", obj.color, obj.shape]
        objects += [None, i, i]
    caption = Caption(tuple(words), tuple(objects))
    assert split_words(caption.text) == list(caption.words)  # the text reads back as the same words
    return caption
