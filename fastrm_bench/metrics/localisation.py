"""Localisation of a map against a ground-truth object mask (embedded world: exact masks).

Both metrics work on the image tokens of the input's layout: a token counts as "on the object" when
any pixel of the object falls in its cell (the rule the grounding check uses to choose tokens to remove).
"""

from __future__ import annotations

import numpy as np
import torch

from fastrm_bench.layout import ImageLayout

#: a token is "on the object" when any pixel of the object falls in its cell (``min_coverage`` 0 of
#: `ImageLayout.mask_to_tokens`): the rule every committed localisation number and the shipped model's
#: grounding check use. The layout's own default, half of the cell covered, is stricter.
OBJECT_COVERAGE = 0.0


def object_tokens(layout: ImageLayout, mask: np.ndarray) -> np.ndarray:
    """Boolean ``[n_image_tokens]``: the tokens of ``layout`` that see the object ``mask`` [H, W]."""
    return layout.mask_to_tokens(mask, min_coverage=OBJECT_COVERAGE)


def relevance_mass(sample_map: torch.Tensor, on_object: np.ndarray) -> float:
    """Share of the (non-negative) map's mass that lies on the object's tokens."""
    m = sample_map.detach().clamp_min(0).double().cpu().numpy().reshape(-1)
    total = m.sum()
    return float(m[np.asarray(on_object).reshape(-1)].sum() / total) if total > 0 else float("nan")


def pointing_game(sample_map: torch.Tensor, on_object: np.ndarray) -> float:
    """1 if the map's maximum falls on the object (ties: the first maximum), else 0."""
    m = sample_map.detach().cpu().numpy()
    return float(on_object.reshape(-1)[int(np.argmax(m.reshape(-1)))])
