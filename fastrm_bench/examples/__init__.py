"""Example images that ship with the package, so there is something to explain out of the box.

Each is a scene of the embedded world (`fastrm_bench.world.scenes`, 64x64, drawn from a fixed
seed of its test split: a scene the shipped model never trained on) saved as PNG, with a question
the shipped model answers correctly::

    from fastrm_bench import examples
    image = examples.path("four-shapes.png")      # a pathlib.Path inside the installed package
    examples.QUESTIONS["four-shapes.png"]         # "Where is the yellow circle?"

``python -m fastrm_bench.examples DIR`` draws them again from their seeds.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

FOLDER = Path(__file__).resolve().parent

#: file name -> (index of the scene in the embedded world's test split, a question about it)
SCENES: dict[str, tuple[int, str]] = {
    "four-shapes.png": (509, "Where is the yellow circle?"),
    "circle-and-triangles.png": (503, "What color is the circle?"),
}
QUESTIONS: dict[str, str] = {name: question for name, (_, question) in SCENES.items()}


def names() -> list[str]:
    return list(SCENES)


def path(name: str = "four-shapes.png") -> Path:
    """The shipped file ``name`` (see `names`)."""
    if name not in SCENES:
        raise KeyError(f"no example image {name!r}; the package ships {', '.join(SCENES)}")
    return FOLDER / name


def render(name: str) -> Image.Image:
    """The example ``name`` drawn again from its scene seed (what the shipped file holds)."""
    from fastrm_bench.world.scenes import generate_scene, scene_seed

    index, _ = SCENES[name]
    return Image.fromarray(generate_scene(scene_seed("test", index)).image)


def write(folder: str | Path = FOLDER) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in SCENES:
        render(name).save(folder / name, optimize=True)
        written.append(folder / name)
    return written
