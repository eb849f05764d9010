"""Localisation per image and per frame, for samples of several images or a video clip.

`localisation` scores a map against the question's object over the whole input. With two images that
mixes two questions a reader wants apart: does the map choose the image that shows the object, and within
an image, does it find the object? With a clip: does each frame's part of the map follow the object?
This metric splits the input's image tokens into its images (or frames) and answers both.

A layout group belongs to the image (frame) whose span on the side-by-side canvas (`layout.side_by_side`)
holds its region's horizontal centre. A video's time step of several frames has its tokens over its first
frame (`Family.video_layouts`), so the parts of a clip are its time steps: frames without tokens are
skipped. Tokens on the object use the same "any pixel" rule as `localisation` (`object_tokens`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fastrm_bench.layout import ImageLayout, side_by_side
from fastrm_bench.metrics.base import Metric, Needs, RunSettings, SampleContext
from fastrm_bench.metrics.localisation import defined_mean, object_tokens, pointing_game, relevance_mass


def part_tokens(layout: ImageLayout, sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Boolean ``[n_image_tokens]`` per image (frame) of ``sizes`` placed side by side: the tokens of the layout
    groups whose region's horizontal centre lies in that image's span of the canvas."""
    _, lefts = side_by_side(sizes)
    owner = np.empty(layout.num_tokens, dtype=int)
    start = 0
    for group in layout.groups:
        centre = (group.region[1] + group.region[3]) / 2
        inside = [i for i, ((_, width), left) in enumerate(zip(sizes, lefts)) if left <= centre < left + width]
        if not inside:
            raise ValueError(f"a layout group over {group.region} lies in none of the images at {lefts} (widths "
                             f"{[w for _, w in sizes]}): the layout was not placed side by side")
        owner[start : start + len(group.positions)] = inside[0]
        start += len(group.positions)
    return [owner == i for i in range(len(sizes))]


class ImageLocalisation(Metric):
    """Per image (frame): does the map choose the images that show the object, and find it inside each?"""

    name = "image-localisation"
    needs = Needs(mask=True)
    higher_is_better = {"image_choice_pointing": True, "image_choice_mass": True, "per_image_pointing_game": True,
                        "per_image_relevance_mass": True, "n_several_images": None}
    columns = {"image_choice_pointing": "image_choice_pointing", "per_image_pointing_game": "per_image_pointing_game"}

    def update(self, context: SampleContext) -> dict[str, Any]:
        sizes = context.sample.part_sizes()
        if len(sizes) < 2:
            return {}
        parts = part_tokens(context.inputs.layout, sizes)
        on_object = object_tokens(context.inputs.layout, context.sample.mask)
        values = context.sample_map.detach().double().cpu().reshape(-1)
        shows = [bool((part & on_object).any()) for part in parts]
        has_tokens = [bool(part.any()) for part in parts]
        # inside each image that shows the object: the map restricted to that image's tokens
        pointing = [pointing_game(values[torch.from_numpy(part)], on_object[part]) for part, s in zip(parts, shows) if s]
        mass = [relevance_mass(values[torch.from_numpy(part)], on_object[part]) for part, s in zip(parts, shows) if s]
        out: dict[str, Any] = {"per_image_pointing": pointing, "per_image_mass": mass}
        if any(t and not s for t, s in zip(has_tokens, shows)) and any(shows):  # an image without the object: a choice
            chosen = np.zeros(len(values), dtype=bool)
            for part, s in zip(parts, shows):
                chosen |= part & s
            out["image_choice_pointing"] = pointing_game(values, chosen)
            out["image_choice_mass"] = relevance_mass(values, chosen)
        return out

    def compute(self, records: Sequence[dict[str, Any]], settings: RunSettings) -> dict[str, float]:
        out: dict[str, float] = {}
        several = [r for r in records if "per_image_pointing" in r]
        if not several:
            return out
        out["n_several_images"] = float(len(several))
        for key, name in (("per_image_pointing", "per_image_pointing_game"), ("per_image_mass", "per_image_relevance_mass")):
            # a sample's images (frames) are averaged first, so every sample weighs the same
            value = defined_mean([defined_mean(r[key]) for r in several])
            if value is not None:
                out[name] = value
        for key in ("image_choice_pointing", "image_choice_mass"):
            value = defined_mean([r[key] for r in several if key in r])
            if value is not None:
                out[key] = value
        return out
