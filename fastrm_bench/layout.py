"""Image layouts: where an input's image tokens sit in the LM sequence and what part of the image each one sees.

Every family arranges image tokens its own way (LLaVA-1.5: one square grid over the centre crop;
LLaVA-NeXT: a base grid plus a grid of anyres tiles whose rows end in newline tokens; Qwen2-VL: one
non-square grid of 2x2-merged patches; Idefics3/SmolVLM: one grid per tile plus the global image;
Gemma 3: a fixed grid of soft tokens). A layout describes one input's tokens as *groups*, each a
grid (rows, cols) in row-major token order over a rectangle of the original image. A map is one
value per image token of the layout, in the order of `ImageLayout.positions`; the layout projects
it to image space (`to_image`) and projects a pixel mask to tokens (`mask_to_tokens`), so nothing
downstream assumes a square grid or a fixed token count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

#: (top, left, bottom, right) in pixels of the original image; may reach past its borders (padding)
Region = tuple[float, float, float, float]


@dataclass(frozen=True)
class LayoutGroup:
    """One grid of image tokens: its sequence positions (row-major) and the image rectangle it covers."""

    positions: tuple[int, ...]
    grid: tuple[int, int]  # (rows, cols)
    region: Region

    def __post_init__(self) -> None:
        rows, cols = self.grid
        if rows * cols != len(self.positions):
            raise ValueError(f"a {rows}x{cols} group needs {rows * cols} positions, got {len(self.positions)}")
        top, left, bottom, right = self.region
        if bottom <= top or right <= left:
            raise ValueError(f"empty region {self.region}")


@dataclass(frozen=True)
class ImageLayout:
    """The image tokens of one input (one sequence), grouped; see the module docstring."""

    groups: tuple[LayoutGroup, ...]
    image_size: tuple[int, int]  # (height, width) of the original image

    @property
    def positions(self) -> torch.Tensor:
        """Sequence positions of all image tokens, group after group (the order of a map's values)."""
        return torch.tensor([p for g in self.groups for p in g.positions], dtype=torch.long)

    @property
    def num_tokens(self) -> int:
        return sum(len(g.positions) for g in self.groups)

    def shifted(self, offset: int) -> ImageLayout:
        """The same layout with every position moved by ``offset`` (left padding added or removed)."""
        return ImageLayout(tuple(LayoutGroup(tuple(p + offset for p in g.positions), g.grid, g.region) for g in self.groups),
                           self.image_size)

    def placed(self, left: float, canvas_size: tuple[int, int]) -> ImageLayout:
        """The same tokens with their image drawn ``left`` pixels from the left of a ``canvas_size`` canvas (several
        images of one input side by side, `side_by_side`): regions move right, positions stay."""
        groups = tuple(LayoutGroup(g.positions, g.grid, (g.region[0], g.region[1] + left, g.region[2], g.region[3] + left))
                       for g in self.groups)
        return ImageLayout(groups, canvas_size)

    def split(self, values: torch.Tensor | np.ndarray) -> list[np.ndarray]:
        """A map ``[num_tokens]`` as one ``[rows, cols]`` array per group."""
        flat = _numpy(values).reshape(-1)
        if flat.size != self.num_tokens:
            raise ValueError(f"a map of {flat.size} values does not fit a layout of {self.num_tokens} image tokens")
        out, start = [], 0
        for g in self.groups:
            n = len(g.positions)
            out.append(flat[start : start + n].reshape(g.grid))
            start += n
        return out

    def to_image(self, values: torch.Tensor | np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """A map as a heatmap over the image ``[H, W]`` (default: the image's size).

        Each group's grid is spread over its region (nearest token per pixel); where groups overlap
        the heatmap is their mean; pixels no token sees (e.g. cropped away) are NaN.
        """
        height, width = size or self.image_size
        total = np.zeros((height, width))
        count = np.zeros((height, width))
        sy, sx = height / self.image_size[0], width / self.image_size[1]
        for group, grid in zip(self.groups, self.split(values)):
            rows, cols, inside = _pixel_cells(group, height, width, sy, sx)
            total[inside] += grid[rows[inside], cols[inside]]
            count[inside] += 1
        with np.errstate(invalid="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    def coverage(self, mask: np.ndarray) -> np.ndarray:
        """``[num_tokens]`` share of each token's pixels that ``mask`` [H, W] covers (a pixel belongs to the token
        whose cell contains its centre; a token that sees no pixel has share 0)."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != tuple(self.image_size):
            raise ValueError(f"mask of shape {mask.shape} for an image of size {self.image_size}")
        height, width = mask.shape
        out = []
        for group in self.groups:
            rows, cols, inside = _pixel_cells(group, height, width, 1.0, 1.0)
            cells = (rows * group.grid[1] + cols)[inside]
            n = group.grid[0] * group.grid[1]
            pixels = np.bincount(cells, minlength=n)
            covered = np.bincount(cells, weights=mask[inside].astype(float), minlength=n)
            out.append(np.divide(covered, pixels, out=np.zeros(n), where=pixels > 0))
        return np.concatenate(out)

    def mask_to_tokens(self, mask: np.ndarray, min_coverage: float = 0.5) -> np.ndarray:
        """Boolean ``[num_tokens]``: tokens whose share of pixels covered by ``mask`` [H, W] is >= ``min_coverage``.

        ``min_coverage=0`` means "any pixel of the mask" (strictly positive share). A pixel belongs to
        the token whose cell contains its centre.
        """
        share = self.coverage(mask)
        return share > 0 if min_coverage <= 0 else share >= min_coverage

    # ------------------------------------------------------------- serialisation (run directories)
    def to_dict(self) -> dict[str, Any]:
        """What a reader needs to draw a map: image size, and each group's grid and region (no positions)."""
        return {"image_size": list(self.image_size),
                "groups": [{"grid": list(g.grid), "region": [float(x) for x in g.region]} for g in self.groups]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageLayout:
        """Inverse of `to_dict`; positions are numbered 0.. (they only order the map's values)."""
        groups, start = [], 0
        for g in data["groups"]:
            rows, cols = g["grid"]
            groups.append(LayoutGroup(tuple(range(start, start + rows * cols)), (rows, cols), tuple(g["region"])))
            start += rows * cols
        return cls(tuple(groups), tuple(data["image_size"]))


#: pixels between two images drawn side by side: no token sees them, so a heatmap leaves a visible gap (NaN)
SIDE_BY_SIDE_GAP = 8


def side_by_side(sizes: Sequence[tuple[int, int]], gap: int = SIDE_BY_SIDE_GAP) -> tuple[tuple[int, int], list[int]]:
    """The canvas (height, width) several images (each (height, width)) make drawn left to right, top-aligned,
    ``gap`` pixels apart, and each image's left offset: how an input of several images is shown and masked."""
    offsets, left = [], 0
    for _, width in sizes:
        offsets.append(left)
        left += width + gap
    return (max(height for height, _ in sizes), left - gap), offsets


def side_by_side_image(images: Sequence[Image.Image], background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Several images on one canvas, as `side_by_side` places them: what a map of their input is drawn over."""
    canvas_size, offsets = side_by_side([(im.height, im.width) for im in images])
    canvas = Image.new("RGB", (canvas_size[1], canvas_size[0]), background)
    for image, left in zip(images, offsets):
        canvas.paste(image.convert("RGB"), (left, 0))
    return canvas


def side_by_side_mask(masks: Sequence[np.ndarray | None], sizes: Sequence[tuple[int, int]]) -> np.ndarray:
    """Each image's mask (None: nothing of it) placed on the canvas of `side_by_side`."""
    canvas_size, offsets = side_by_side(sizes)
    out = np.zeros(canvas_size, dtype=bool)
    for mask, (height, width), left in zip(masks, sizes, offsets):
        if mask is not None:
            out[:height, left : left + width] = np.asarray(mask, dtype=bool)
    return out


def single_grid(positions: Sequence[int], grid: tuple[int, int], region: Region, image_size: tuple[int, int]) -> ImageLayout:
    """The common case: one grid of tokens over one region."""
    return ImageLayout((LayoutGroup(tuple(int(p) for p in positions), grid, region),), image_size)


def centre_square(image_size: tuple[int, int]) -> Region:
    """The region CLIP-style processors keep: resize the short side, crop the centre square."""
    height, width = image_size
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return (float(top), float(left), float(top + side), float(left + side))


def whole_image(image_size: tuple[int, int]) -> Region:
    return (0.0, 0.0, float(image_size[0]), float(image_size[1]))


def _pixel_cells(group: LayoutGroup, height: int, width: int, sy: float, sx: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every pixel of an ``height x width`` canvas: the (row, col) cell of ``group`` holding its centre."""
    top, left, bottom, right = group.region
    rows, cols = group.grid
    ys = ((np.arange(height) + 0.5) / sy - top) / (bottom - top) * rows
    xs = ((np.arange(width) + 0.5) / sx - left) / (right - left) * cols
    r = np.floor(ys).astype(int)[:, None].repeat(width, 1)
    c = np.floor(xs).astype(int)[None, :].repeat(height, 0)
    inside = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
    return np.clip(r, 0, rows - 1), np.clip(c, 0, cols - 1), inside


def _numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    return values.detach().float().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, dtype=float)
