"""Clips: "Is the yellow circle moving left or right?" about a few frames of the embedded world (`world.clips`).

A sample is a `Video` of the clip's frames; its image is the frames side by side (the canvas the layout of a
video draws on, `layout.side_by_side`) and its mask the moving object's mask in every frame. The clips are
generated from seeds (``clip_seed`` of the split and index), so the task reads no files.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from fastrm_bench.interfaces import Sample, Task, Video
from fastrm_bench.layout import side_by_side_image, side_by_side_mask
from fastrm_bench.world.clips import MOVES, generate_clip
from fastrm_bench.world.scenes import scene_seed


@dataclass(frozen=True)
class ClipHandle:
    """A clip before it is drawn: its id (what runs record) and index in the split."""

    id: str
    index: int


class ClipsTask(Task):
    """Which way the object moves across the clip; accuracy overall and by direction."""

    name = "clips"
    data_source = "shapes-clips"
    uses_embedded_world = True
    DIRECTIONS = {"accuracy": True}

    def __init__(self, split: str = "val", size: int = 200, frames: int = 4, seed: int = 0, prompt_suffix: str = "",
                 data_root: str | None = None):
        """``data_root`` is accepted as every task's is (a model's runs pass its world) and not read: clips are drawn."""
        if frames < 2:
            raise ValueError(f"a clip needs at least 2 frames to move, got {frames}")
        self.split, self.size, self.frames, self.seed, self.prompt_suffix = split, size, frames, seed, prompt_suffix

    def select(self, limit: int | None, seed: int) -> list[ClipHandle]:
        """The clips: all, or a seeded subsample of ``limit`` (kept in order)."""
        if limit is not None and limit <= 0:
            raise ValueError(f"--limit must be positive, got {limit}")
        indices = range(self.size) if limit is None or limit >= self.size else \
            sorted(np.random.default_rng(seed).choice(self.size, size=limit, replace=False).tolist())
        return [ClipHandle(f"clip/{i}", int(i)) for i in indices]

    def sample(self, handle: ClipHandle) -> Sample:
        clip = generate_clip(scene_seed(self.split, handle.index, self.seed) + 1_000_000, self.frames)
        frames = tuple(Image.fromarray(f) for f in clip.frames)
        sizes = [(f.height, f.width) for f in frames]
        question = f"Is the {clip.category} moving left or right?"
        meta: dict[str, Any] = {"type": clip.direction, "object": clip.category, "frames": self.frames}
        return Sample(handle.id, side_by_side_image(frames), question, [clip.direction], meta,
                      side_by_side_mask(clip.masks, sizes), video=Video(frames))

    def samples(self, limit: int | None = None, seed: int = 0) -> Iterator[Sample]:
        for handle in self.select(limit, seed):
            yield self.sample(handle)

    def score(self, prediction: str, sample: Sample) -> float:
        said = next((w for w in re.findall(r"[a-z]+", prediction.lower()) if w in MOVES), None)
        return float(said == sample.references[0])
