"""Clips of the embedded world: one object moves left or right across a few frames while the others stay.

Frame k of a clip is a scene of the world (`generate_scene` of the clip's seed) with its first object drawn
again ``k * step`` pixels along its row (over the background noise of that scene, the other objects kept), so
the question "Is the yellow circle moving left or right?" needs more than one frame. Each frame comes with the
moving object's exact mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fastrm_bench.world.scenes import COLORS, SceneConfig, generate_scene, shape_mask

MOVES = ("left", "right")


@dataclass
class Clip:
    frames: list[np.ndarray] = field(repr=False)  # uint8 [H, W, 3] each
    masks: list[np.ndarray] = field(repr=False)  # the moving object's mask in each frame
    category: str = ""  # e.g. "yellow circle"
    direction: str = ""  # "left" or "right"


def generate_clip(seed: int, frames: int = 4, config: SceneConfig = SceneConfig()) -> Clip:
    """The clip of ``seed``: the scene's first object moves by an equal step per frame, towards the side it has
    room on (its direction), staying inside the image; other objects keep their place (the mover may pass over
    them: it is drawn last)."""
    scene = generate_scene(seed, config)
    rng = np.random.default_rng([seed, 7])
    mover = scene.objects[0]
    x0, y0, side, _ = mover.bbox
    height, width = scene.image.shape[:2]
    room_left, room_right = x0, width - side - x0
    direction = MOVES[int(room_right >= room_left)]
    room = max(room_left, room_right)
    step = room // max(frames - 1, 1)
    background = np.clip(rng.normal(scene.image[~np.logical_or.reduce([o.mask for o in scene.objects])].mean(),
                                    config.noise_std, size=scene.image.shape), 0, 255)
    others = np.logical_or.reduce([o.mask for o in scene.objects[1:]]) if len(scene.objects) > 1 else None
    colour = np.array(COLORS[mover.color], dtype=np.float64)
    out_frames, masks = [], []
    for k in range(frames):
        x = x0 + (k * step if direction == "right" else -k * step)
        mask = shape_mask(mover.shape, side, height, width, x, y0)
        image = background.copy()
        if others is not None:
            image[others] = scene.image[others]
        image[mask] = colour + rng.normal(0.0, 4.0, size=(int(mask.sum()), 3))
        out_frames.append(np.clip(image, 0, 255).astype(np.uint8))
        masks.append(mask)
    return Clip(out_frames, masks, mover.category, direction)
