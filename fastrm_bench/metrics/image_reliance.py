"""Image reliance: how much the answer's probability owes to the image at all.

``image_reliance = logp(answer | image, question) - logp(answer | every image token removed, question)``, each
the mean over the answer's tokens of the teacher-forced log-probability (`SampleContext.answer_logprobs`, the
run's ``removal`` strategy; the same numbers as `fastrm_bench.metrics.probability` at fractions 0 and 1). An
answer the model gives from the question alone has reliance near 0, and a map of it cannot be faithful to an
image the answer does not use; so a sample is ``image_dependent`` when its reliance exceeds ``threshold``
(default 0.1 nats: the answer's tokens are on average ``exp(0.1) - 1``, about 10%, less likely without the image).

The spec (4c) also counts a sample as image-dependent when its answer changes without the image; that needs a
second generation per sample and is not measured here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fastrm_bench.metrics.base import Metric, Needs, RunSettings, SampleContext

#: the default reliance (nats of mean answer log-probability) above which a sample counts as image-dependent
RELIANCE_THRESHOLD = 0.1


def whole_image_rows(n_image_tokens: int) -> torch.Tensor:
    """The two ``image_keep`` rows ``[2, n]``: the whole image kept (all ones), the whole image removed (all zeros)."""
    return torch.stack([torch.ones(n_image_tokens), torch.zeros(n_image_tokens)])


class ImageReliance(Metric):
    """Mean log-probability of the answer with the image minus without it; the share of image-dependent samples."""

    name = "image-reliance"
    needs = Needs(perturbation=True)
    higher_is_better = {"image_reliance": None, "image_dependent_share": None, "image_reliance_n": None}
    columns = {"image_reliance": "image_reliance", "image_dependent": "image_dependent_share"}

    def __init__(self, threshold: float = RELIANCE_THRESHOLD):
        self.threshold = float(threshold)

    def update(self, context: SampleContext) -> dict[str, Any]:
        """The answer's mean log-probability with and without the image, their difference and the verdict."""
        if context.generation.num_generated == 0:  # no answer token: nothing to be likely
            return {}
        with_image, without = context.answer_logprobs(whole_image_rows(context.sample_map.numel())).tolist()
        reliance = with_image - without
        return {"logprob_with_image": with_image, "logprob_without_image": without, "image_reliance": reliance,
                "image_dependent": bool(reliance > self.threshold)}

    def compute(self, records: Sequence[dict[str, Any]], settings: RunSettings) -> dict[str, float]:
        rows = [r for r in records if "image_reliance" in r]
        if not rows:
            return {}
        return {"image_reliance": float(np.mean([r["image_reliance"] for r in rows])),
                "image_dependent_share": float(np.mean([r["image_dependent"] for r in rows])),
                "image_reliance_n": float(len(rows))}
