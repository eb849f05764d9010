"""Localisation of a map against a ground-truth object mask (embedded world: exact masks).

Both metrics work on the patch grid: a patch counts as "on the object" when any pixel of
the object falls in it (the same rule the grounding check uses to choose tokens to remove).
"""

from __future__ import annotations

import numpy as np
import torch


def mask_to_patches(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Boolean [grid_h, grid_w]: patches containing any pixel of ``mask`` [H, W].

    The mask is first center-cropped to a square, as CLIP's processor does (resize the short
    side, crop the center); each patch then covers an equal fraction of that square.
    """
    gh, gw = grid
    h, w = mask.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = mask[top : top + side, left : left + side]
    rows = np.linspace(0, side, gh + 1)
    cols = np.linspace(0, side, gw + 1)
    out = np.zeros((gh, gw), dtype=bool)
    for i in range(gh):
        for j in range(gw):
            r0, r1 = int(np.floor(rows[i])), int(np.ceil(rows[i + 1]))
            c0, c1 = int(np.floor(cols[j])), int(np.ceil(cols[j + 1]))
            out[i, j] = square[r0:r1, c0:c1].any()
    return out


def relevance_mass(sample_map: torch.Tensor, on_object: np.ndarray) -> float:
    """Share of the (non-negative) map's mass that lies on the object's patches."""
    m = sample_map.detach().clamp_min(0).double().cpu().numpy()
    total = m.sum()
    return float(m[on_object].sum() / total) if total > 0 else float("nan")


def pointing_game(sample_map: torch.Tensor, on_object: np.ndarray) -> float:
    """1 if the map's maximum falls on the object (ties: the first maximum), else 0."""
    m = sample_map.detach().cpu().numpy()
    return float(on_object.reshape(-1)[int(np.argmax(m.reshape(-1)))])
