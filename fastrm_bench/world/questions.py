"""Question templates of the embedded world.

Each question records the indices of the scene objects it is about (``refs``), so that the
tasks can hand exact ground-truth masks to localisation metrics. VQA-style types are written
in VQAv2 format; relational types (GQA-style) are written in GQA format.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fastrm_bench.world.scenes import COLOR_NAMES, SHAPES, Scene

#: Objects whose centre lies this close to the image's middle lines get no position question.
POSITION_MARGIN = 4.0
#: Horizontal gap between two objects' centres for a left/right relation to be asked.
RELATION_MARGIN = 6.0


@dataclass(frozen=True)
class Question:
    qtype: str
    family: str  # "vqa" or "gqa": which official format it is written in
    question: str
    answer: str
    refs: tuple[int, ...]  # indices into Scene.objects


def _unique(scene: Scene, key: Callable) -> dict:
    counts: dict = {}
    for i, obj in enumerate(scene.objects):
        counts.setdefault(key(obj), []).append(i)
    return {k: v[0] for k, v in counts.items() if len(v) == 1}


def _color(scene: Scene, rng: np.random.Generator) -> Question | None:
    unique = _unique(scene, lambda o: o.shape)
    if not unique:
        return None
    shape = sorted(unique)[int(rng.integers(len(unique)))]
    i = unique[shape]
    return Question("color", "vqa", f"What color is the {shape}?", scene.objects[i].color, (i,))


def _shape(scene: Scene, rng: np.random.Generator) -> Question | None:
    unique = _unique(scene, lambda o: o.color)
    if not unique:
        return None
    color = sorted(unique)[int(rng.integers(len(unique)))]
    i = unique[color]
    return Question("shape", "vqa", f"What shape is the {color} object?", scene.objects[i].shape, (i,))


def _count(scene: Scene, rng: np.random.Generator) -> Question:
    if rng.random() < 0.5:
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        refs = tuple(i for i, o in enumerate(scene.objects) if o.shape == shape)
        text = f"How many {shape}s are there?"
    else:
        color = COLOR_NAMES[int(rng.integers(len(COLOR_NAMES)))]
        refs = tuple(i for i, o in enumerate(scene.objects) if o.color == color)
        text = f"How many {color} objects are there?"
    return Question("count", "vqa", text, str(len(refs)), refs)


def _exist(scene: Scene, rng: np.random.Generator) -> Question:
    present = [o.category for o in scene.objects]
    if rng.random() < 0.5:
        i = int(rng.integers(len(scene.objects)))
        return Question("exist", "vqa", f"Is there a {present[i]}?", "yes", (i,))
    absent = [f"{c} {s}" for c in COLOR_NAMES for s in SHAPES if f"{c} {s}" not in present]
    # half of the negatives are near misses (a present colour or shape), so both must be bound
    near = [a for a in absent if any(a.split()[0] == p.split()[0] or a.split()[1] == p.split()[1] for p in present)]
    pool = near if near and rng.random() < 0.5 else absent
    category = pool[int(rng.integers(len(pool)))]
    return Question("exist", "vqa", f"Is there a {category}?", "no", ())


def _position(scene: Scene, rng: np.random.Generator) -> Question | None:
    half_y, half_x = scene.image.shape[0] / 2, scene.image.shape[1] / 2  # non-square scenes: each axis its own middle
    ok = [
        i
        for i, o in enumerate(scene.objects)
        if abs(o.center[0] - half_x) >= POSITION_MARGIN and abs(o.center[1] - half_y) >= POSITION_MARGIN
    ]
    if not ok:
        return None
    i = ok[int(rng.integers(len(ok)))]
    x, y = scene.objects[i].center
    answer = f"{'top' if y < half_y else 'bottom'} {'left' if x < half_x else 'right'}"
    return Question("position", "vqa", f"Where is the {scene.objects[i].category}?", answer, (i,))


def _relation_pairs(scene: Scene) -> list[tuple[int, int, str]]:
    """(anchor, target, 'left'|'right'): target is the only object on that side of anchor."""
    pairs = []
    xs = [o.center[0] for o in scene.objects]
    for a in range(len(scene.objects)):
        for side, sign in (("left", -1), ("right", 1)):
            on_side = [j for j in range(len(xs)) if j != a and sign * (xs[j] - xs[a]) > 0]
            clear = all(abs(xs[j] - xs[a]) >= RELATION_MARGIN for j in range(len(xs)) if j != a)
            if len(on_side) == 1 and clear:
                pairs.append((a, on_side[0], side))
    return pairs


def _relate(attribute: str) -> Callable[[Scene, np.random.Generator], Question | None]:
    def make(scene: Scene, rng: np.random.Generator) -> Question | None:
        pairs = _relation_pairs(scene)
        if not pairs:
            return None
        a, t, side = pairs[int(rng.integers(len(pairs)))]
        anchor = scene.objects[a].category
        target = scene.objects[t]
        answer = target.color if attribute == "color" else target.shape
        text = f"What {attribute} is the object {side} of the {anchor}?"
        return Question(f"relate_{attribute}", "gqa", text, answer, (t, a))

    return make


def _verify(scene: Scene, rng: np.random.Generator) -> Question | None:
    pairs = _relation_pairs(scene)
    if not pairs:
        return None
    a, t, side = pairs[int(rng.integers(len(pairs)))]
    if rng.random() < 0.5:  # flip the side: the answer becomes "no"
        side, answer = ("right" if side == "left" else "left"), "no"
    else:
        answer = "yes"
    text = f"Is the {scene.objects[t].category} {side} of the {scene.objects[a].category}?"
    return Question("relate_verify", "gqa", text, answer, (t, a))


QUESTION_TYPES: dict[str, Callable[[Scene, np.random.Generator], Question | None]] = {
    "color": _color,
    "shape": _shape,
    "count": _count,
    "exist": _exist,
    "position": _position,
    "relate_color": _relate("color"),
    "relate_shape": _relate("shape"),
    "relate_verify": _verify,
}


def questions_for_scene(
    scene: Scene, rng: np.random.Generator, types: tuple[str, ...] | None = None
) -> list[Question]:
    """One question of each applicable type (in a fixed type order) for ``scene``."""
    out = []
    for name in types or tuple(QUESTION_TYPES):
        q = QUESTION_TYPES[name](scene, rng)
        if q is not None:
            out.append(q)
    return out


def vocabulary() -> list[str]:
    """Every word the templates, answers and prompt suffixes can produce (word-level model)."""
    words: set[str] = set()
    samples = [
        "What color is the object left of the right?",
        "What shape is the object?",
        "How many objects are there?",
        "Is there a in the image?",
        "Where is the top bottom left right?",
        "Answer the question using up to two words.",
        "Answer the question using a single word or phrase.",
        "USER: ASSISTANT: yes no of",
    ]
    for s in samples:
        words.update(s.replace("?", " ? ").replace(".", " . ").replace(":", " : ").split())
    words.update(COLOR_NAMES)
    words.update(SHAPES)
    words.update(f"{s}s" for s in SHAPES)
    words.update(str(i) for i in range(10))
    words.update([",", "!", "'"])
    return sorted(words)
