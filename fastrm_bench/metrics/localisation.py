"""Localisation of a map against a ground-truth object mask (embedded world: exact masks).

Both measures work on the image tokens of the input's layout: a token counts as "on the object" when
any pixel of the object falls in its cell (the rule the grounding check uses to choose tokens to remove).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fastrm_bench.layout import ImageLayout
from fastrm_bench.metrics.base import Metric, Needs, RunSettings, SampleContext

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


#: a wrong answer's map need not show the question's objects: the ``*_correct`` aggregates keep the answers
#: the task scores fully right (VQA soft accuracy 1, exact match)
CORRECT_SCORE = 1.0


def defined_mean(values: list[float | None]) -> float | None:
    """Mean of the values that are defined (not None, not NaN); None when none is."""
    values = [v for v in values if v is not None and v == v]
    return float(np.mean(values)) if values else None


class Localisation(Metric):
    """Relevance mass and pointing game on the question's objects (samples with an object mask)."""

    name = "localisation"
    needs = Needs(mask=True)
    higher_is_better = {"relevance_mass": True, "pointing_game": True, "object_patch_share": None,
                        "relevance_mass_correct": True, "pointing_game_correct": True, "n_correct_localised": None}
    columns = {"pointing_game": "pointing_game", "relevance_mass": "relevance_mass",
               "relevance_mass_correct": "relevance_mass_correct"}

    def update(self, context: SampleContext) -> dict[str, Any]:
        on_object = object_tokens(context.inputs.layout, context.sample.mask)
        return {"relevance_mass": relevance_mass(context.sample_map, on_object),
                "pointing_game": pointing_game(context.sample_map, on_object),
                "object_patch_share": float(on_object.mean())}

    def compute(self, records, settings: RunSettings) -> dict[str, float]:
        out: dict[str, float] = {}
        for key in ("relevance_mass", "pointing_game", "object_patch_share"):
            value = defined_mean([r[key] for r in records if key in r])
            if value is not None:
                out[key] = value
        correct = [r for r in records if r["score"] >= CORRECT_SCORE]
        for key in ("relevance_mass", "pointing_game"):
            values = [r[key] for r in correct if key in r and r[key] is not None and r[key] == r[key]]
            if values:
                out[f"{key}_correct"] = float(np.mean(values))
                out.setdefault("n_correct_localised", float(len(values)))  # questions behind relevance_mass_correct
        return out
