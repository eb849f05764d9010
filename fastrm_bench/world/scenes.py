"""Seeded synthetic scenes: coloured shapes on a noisy background, with exact masks.

The embedded world exists so that explanation metrics can be computed without a GPU or a
download, and so that every question has exact ground-truth masks for localisation.
A scene is a pure function of its seed: the same seed always gives the same pixels.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from PIL import Image

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 215, 40),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)

#: Categories of the COCO-format annotations: one per (colour, shape) pair, ids from 1.
CATEGORIES: tuple[str, ...] = tuple(f"{c} {s}" for c in COLOR_NAMES for s in SHAPES)


@dataclass(frozen=True)
class SceneConfig:
    """Geometry of the generated scenes (the model's patch grid depends on image_size)."""

    image_size: int = 64
    min_objects: int = 2
    max_objects: int = 4
    min_size: int = 16
    max_size: int = 24
    gap: int = 2
    noise_std: float = 12.0


@dataclass
class SceneObject:
    """One object: its attributes, its bounding box (x, y, w, h) and its exact mask."""

    color: str
    shape: str
    bbox: tuple[int, int, int, int]
    mask: np.ndarray = field(repr=False)

    @property
    def category(self) -> str:
        return f"{self.color} {self.shape}"

    @cached_property  # questions and training targets ask for it many times per scene
    def center(self) -> tuple[float, float]:
        ys, xs = np.nonzero(self.mask)
        return float(xs.mean()), float(ys.mean())


@dataclass
class Scene:
    image: np.ndarray = field(repr=False)  # uint8 [H, W, 3]
    objects: list[SceneObject]


def shape_mask(shape: str, size: int, height: int, width: int, x0: int, y0: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    u = (xx + 0.5 - x0) / size  # in [0, 1] inside the bounding box
    v = (yy + 0.5 - y0) / size
    inside_box = (u >= 0) & (u < 1) & (v >= 0) & (v < 1)
    if shape == "square":
        mask = inside_box
    elif shape == "circle":
        mask = (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25
    elif shape == "triangle":  # apex up: half-width grows linearly with v
        mask = inside_box & (np.abs(u - 0.5) <= 0.5 * v)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    return mask


def generate_scene(seed: int, config: SceneConfig = SceneConfig(), size: tuple[int, int] | None = None) -> Scene:
    """Draw one scene from ``seed``: non-overlapping objects with distinct categories.

    ``size`` (height, width) renders it on another canvas than ``config.image_size`` squared (variable-size
    worlds, `scene_size`); object sizes then scale with the short side, so scenes look alike at every size.
    Without it, the scene is exactly the one the default world has always had for this seed.
    """
    rng = np.random.default_rng(seed)
    height, width = size or (config.image_size, config.image_size)
    if height <= 0 or width <= 0:
        raise ValueError(f"a scene needs a positive size, got {height}x{width}")
    min_size, max_size = config.min_size, config.max_size
    if size is not None:
        scale = min(height, width) / config.image_size
        min_size, max_size = max(2, round(min_size * scale)), max(2, round(max_size * scale))
        if max_size > min(height, width):
            raise ValueError(f"objects of up to {max_size} px do not fit a {height}x{width} scene")
    base = rng.uniform(90, 150)
    image = base + rng.normal(0.0, config.noise_std, size=(height, width, 3))
    occupied = np.zeros((height, width), dtype=bool)
    objects: list[SceneObject] = []
    wanted = int(rng.integers(config.min_objects, config.max_objects + 1))
    categories = rng.permutation(len(CATEGORIES))
    for cat_index in categories:
        if len(objects) == wanted:
            break
        color, shape = CATEGORIES[int(cat_index)].split(" ")
        for _attempt in range(30):
            side = int(rng.integers(min_size, max_size + 1))
            x0 = int(rng.integers(0, width - side + 1))
            y0 = int(rng.integers(0, height - side + 1))
            g = config.gap
            box = occupied[max(0, y0 - g) : y0 + side + g, max(0, x0 - g) : x0 + side + g]
            if not box.any():
                break
        else:
            continue
        mask = shape_mask(shape, side, height, width, x0, y0)
        occupied[y0 : y0 + side, x0 : x0 + side] = True
        rgb = np.array(COLORS[color], dtype=np.float64) + rng.normal(0.0, 8.0, size=3)
        image[mask] = rgb + rng.normal(0.0, 4.0, size=(int(mask.sum()), 3))
        objects.append(SceneObject(color=color, shape=shape, bbox=(x0, y0, side, side), mask=mask))
    return Scene(image=np.clip(image, 0, 255).astype(np.uint8), objects=objects)


@dataclass(frozen=True)
class ImageSizes:
    """Per-scene canvas sizes of a variable-size world: each side drawn from ``min_side..max_side`` in ``step``s.

    Height and width are drawn independently, so aspect ratios range from ``min_side / max_side`` to its
    inverse. A multiple of 8 as ``step`` keeps every side a whole number of the embedded model's patches.
    """

    min_side: int = 48
    max_side: int = 96
    step: int = 8

    def __post_init__(self) -> None:
        if not 0 < self.min_side <= self.max_side or self.step <= 0:
            raise ValueError(f"image sizes need 0 < min_side <= max_side and step > 0, got {self}")
        if (self.max_side - self.min_side) % self.step:
            raise ValueError(f"max_side - min_side must be a multiple of step, got {self}")


def scene_size(seed: int, sizes: ImageSizes) -> tuple[int, int]:
    """(height, width) of the scene drawn from ``seed`` in a variable-size world.

    Drawn from its own stream (seeded by the scene's seed), so a scene's objects do not depend on how
    its size was chosen, and the same seed always gets the same size.
    """
    sides = np.arange(sizes.min_side, sizes.max_side + 1, sizes.step)
    rng = np.random.default_rng([seed, 1])
    height, width = rng.choice(sides, size=2)
    return int(height), int(width)


def patch_owners(scene: Scene, grid: int) -> np.ndarray:
    """[grid, grid] index of the object covering most of each patch (at least 20% of it), -1 for none."""
    n = scene.image.shape[0]
    p = n // grid
    owner = np.full((grid, grid), -1, dtype=np.int64)
    best = np.zeros((grid, grid))
    for i, obj in enumerate(scene.objects):
        cover = obj.mask.reshape(grid, p, grid, p).mean(axis=(1, 3))
        take = (cover > best) & (cover >= 0.2)
        owner[take] = i
        best = np.maximum(best, np.where(take, cover, best))
    return owner


def patch_labels(scene: Scene, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch colour and shape class (0 = background) of the object covering most of it.

    Used as an auxiliary training target for the vision tower of the embedded model.
    """
    owner = patch_owners(scene, grid)
    color_lab = np.zeros((grid, grid), dtype=np.int64)
    shape_lab = np.zeros((grid, grid), dtype=np.int64)
    for i, obj in enumerate(scene.objects):
        color_lab[owner == i] = COLOR_NAMES.index(obj.color) + 1
        shape_lab[owner == i] = SHAPES.index(obj.shape) + 1
    return color_lab, shape_lab


#: Disjoint seed ranges per split, so train, val and test scenes never coincide.
SPLIT_SEED_OFFSETS: dict[str, int] = {"train": 0, "val": 10_000_000, "test": 20_000_000}
JPEG_QUALITY = 95


def scene_seed(split: str, index: int, seed: int = 0) -> int:
    """Seed of scene ``index`` of ``split`` in the world drawn with base ``seed``."""
    if split not in SPLIT_SEED_OFFSETS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_SEED_OFFSETS)}")
    return seed * 100_000_000 + SPLIT_SEED_OFFSETS[split] + index


def jpeg_bytes(image: np.ndarray) -> bytes:
    """The scene as the JPEG file the dataset writers store (deterministic for a given PIL)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def jpeg_roundtrip(image: np.ndarray) -> Image.Image:
    """What a reader of the written files sees; training uses it so train and test match."""
    return Image.open(io.BytesIO(jpeg_bytes(image))).convert("RGB")
