"""Per-token localisation: does each answer word's map point at the object that word names?

`localisation` scores one map per answer against the union of the question's objects. When the words
of one answer name different objects ("a red circle, a blue square"), each word's own map can be
scored against its own object instead. A sample has per-word ground truth when its ``meta`` holds
``words`` (the reference split into words, `fastrm_bench.world.captions.split_words`) and
``token_objects`` (per word, the object id it names, or None) and `Sample.object_masks` holds those
objects' masks (the ``describe`` task); other samples get no fields, so the metric runs on any task.

Which tokens count: the answer is split into words the same way, every generated token belongs to the
word its text completes (a word of several tokens: each of them), and a token is scored when its word
equals the reference's word at the same place and that word names an object: the correctly generated
content words. For each such token, on its own object and on the scene's other objects together:

- pointing: 1 if the token map's maximum lies on the object's image tokens, else 0 (a map with no
  single maximum, e.g. all zero, points nowhere: None);
- mass: the share of the (non-negative) map on the object's image tokens (None for an all-zero map).

Image tokens "on" an object follow `localisation` (any pixel of the object in the token's cell), for
both sides alike; a cell that sees two objects counts for both. Against a uniform map the expected
mass is the share of image tokens on the object (``token_own_patch_share``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fastrm_bench.layout import ImageLayout
from fastrm_bench.metrics.base import Metric, RunSettings, SampleContext
from fastrm_bench.metrics.localisation import object_tokens
from fastrm_bench.world.captions import split_words

#: the per-token numbers, in each entry of a sample's ``token_localisation`` list
TOKEN_KEYS = ("pointing_own", "mass_own", "pointing_other", "mass_other", "own_patch_share")


def token_word_indices(generated_ids: Sequence[int], tokenizer: Any) -> list[int | None]:
    """Per generated token, the index of the answer word it belongs to; None for tokens that add no word (EOS)."""
    out: list[int | None] = []
    before: list[str] = []
    for k in range(len(generated_ids)):
        words = split_words(tokenizer.decode(list(generated_ids[: k + 1]), skip_special_tokens=True))
        out.append(len(words) - 1 if words and words != before else None)
        before = words
    return out


def pointing(token_map: torch.Tensor, on_object: np.ndarray) -> float | None:
    """1 if the map's single maximum is on the object, 0 if elsewhere, None if the map has no single maximum."""
    values = token_map.detach().double().cpu().numpy().reshape(-1)
    top = np.flatnonzero(values == values.max())
    if len(top) != 1:
        return None
    return float(on_object.reshape(-1)[top[0]])


def mass(token_map: torch.Tensor, on_object: np.ndarray) -> float | None:
    """Share of the non-negative map on the object's tokens; None for an all-zero map."""
    values = token_map.detach().clamp_min(0).double().cpu().numpy().reshape(-1)
    total = values.sum()
    return float(values[on_object.reshape(-1)].sum() / total) if total > 0 else None


def score_token(token_map: torch.Tensor, layout: ImageLayout, own: np.ndarray, others: list[np.ndarray]
                ) -> dict[str, float | None]:
    """The per-token numbers of one map against its own object's mask and the other objects' masks [H, W]."""
    on_own = object_tokens(layout, own)
    out = {"pointing_own": pointing(token_map, on_own), "mass_own": mass(token_map, on_own),
           "pointing_other": None, "mass_other": None, "own_patch_share": float(on_own.mean())}
    if others:
        on_other = object_tokens(layout, np.logical_or.reduce(others))
        out.update(pointing_other=pointing(token_map, on_other), mass_other=mass(token_map, on_other))
    return out


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


class TokenLocalisation(Metric):
    """Pointing game and mass of each correctly generated content word's map on its own object vs the others."""

    name = "token-localisation"
    higher_is_better = {"token_pointing_own": True, "token_mass_own": True, "token_pointing_other": False,
                        "token_mass_other": False, "token_own_patch_share": None, "n_tokens_localised": None}
    columns = {"token_pointing_own": "token_pointing_own", "token_pointing_other": "token_pointing_other",
               "token_mass_own": "token_mass_own"}

    def update(self, context: SampleContext) -> dict[str, Any]:
        """``token_localisation`` (one entry per scored token) and the sample's means; nothing without ground truth."""
        sample = context.sample
        words, objects = sample.meta.get("words"), sample.meta.get("token_objects")
        if words is None or objects is None or not sample.object_masks:
            return {}
        if len(words) != len(objects):
            raise ValueError(f"sample {sample.id}: {len(words)} words but {len(objects)} token_objects")
        unknown = {o for o in objects if o is not None} - set(sample.object_masks)
        if unknown:
            raise ValueError(f"sample {sample.id}: token_objects name {sorted(unknown)}, which object_masks lacks")
        ids = [int(t) for t in context.generation.generated_ids]
        tokenizer = context.adapter.tokenizer
        answer = [w.lower() for w in split_words(tokenizer.decode(ids, skip_special_tokens=True))]
        entries = []
        for k, index in enumerate(token_word_indices(ids, tokenizer)):
            if (index is None or index >= min(len(words), len(answer)) or objects[index] is None
                    or answer[index] != words[index].lower()):
                continue
            own = objects[index]
            others = [m for o, m in sample.object_masks.items() if o != own]
            scores = score_token(context.explanation.maps[k], context.inputs.layout, sample.object_masks[own], others)
            entries.append({"token": k, "word": words[index], "object_id": own, **scores})
        means = {f"token_{key}": _mean([e[key] for e in entries]) for key in TOKEN_KEYS}
        return {"token_localisation": entries, **means}

    def compute(self, records: Sequence[dict[str, Any]], settings: RunSettings) -> dict[str, float]:
        """Means over every scored token of the run (not over samples: a long description weighs more)."""
        entries = [e for r in records for e in r.get("token_localisation", [])]
        if not entries:
            return {}
        out = {"n_tokens_localised": float(len(entries))}
        for key in TOKEN_KEYS:
            value = _mean([e[key] for e in entries])
            if value is not None:
                out[f"token_{key}"] = value
        return out
