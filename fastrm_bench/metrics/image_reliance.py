"""Image reliance: how much the answer's probability owes to the image at all.

``image_reliance = logp(answer | image, question) - logp(answer | every image token removed, question)``, each
the mean over the answer's tokens of the teacher-forced log-probability (`SampleContext.answer_logprobs`, the
run's ``removal`` strategy; the same numbers as `fastrm_bench.metrics.probability` at fractions 0 and 1). An
answer the model gives from the question alone has reliance near 0, and a map of it cannot be faithful to an
image the answer does not use. A sample is ``image_dependent`` (SPEC 4c) when its reliance exceeds ``threshold``
(default 0.1 nats: the answer's tokens are on average ``exp(0.1) - 1``, about 10%, less likely without the image)
or when the answer generated without the image differs from the answer (``answer_changed``; one more greedy
generation per sample, with the run's ``max_new_tokens``).

The text control: ``text_reliance = logp(answer | image, question) - logp(answer | image, empty question)``,
the same answer tokens teacher-forced after the model's prompt template with the question's words left out
(the image kept whole). An answer that owes little to the image and much to the question is one the
perturbation metrics cannot judge (the image's tokens hardly move it).

Image dependence is a property of the sample, the model and the removal, not of the method: every method's
run of the same samples finds the same subset, and `summarise` reports every metric on it as well
(``image_dependent`` in results.json).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fastrm_bench.interfaces import Generation
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
    higher_is_better = {"image_reliance": None, "image_dependent_share": None, "answer_changed_share": None,
                        "text_reliance": None, "image_reliance_n": None}
    columns = {"image_reliance": "image_reliance", "image_dependent": "image_dependent_share"}

    def __init__(self, threshold: float = RELIANCE_THRESHOLD):
        self.threshold = float(threshold)

    def update(self, context: SampleContext) -> dict[str, Any]:
        """The answer's mean log-probability with and without the image, the answer without it, and the verdict."""
        if context.generation.num_generated == 0:  # no answer token: nothing to be likely
            return {}
        rows = whole_image_rows(context.sample_map.numel())
        with_image, without = context.answer_logprobs(rows).tolist()
        blind_answer = context.answer_texts(rows[1:])[0]
        without_text = _logprob_without_question(context)
        reliance = with_image - without
        changed = blind_answer.strip() != context.generation.text.strip()
        return {"logprob_with_image": with_image, "logprob_without_image": without, "image_reliance": reliance,
                "logprob_without_question": without_text, "text_reliance": with_image - without_text,
                "answer_without_image": blind_answer, "answer_changed": changed,
                "image_dependent": bool(reliance > self.threshold or changed)}

    def compute(self, records: Sequence[dict[str, Any]], settings: RunSettings) -> dict[str, float]:
        rows = [r for r in records if "image_reliance" in r]
        if not rows:
            return {}
        return {"image_reliance": float(np.mean([r["image_reliance"] for r in rows])),
                "image_dependent_share": float(np.mean([r["image_dependent"] for r in rows])),
                "answer_changed_share": float(np.mean([r.get("answer_changed", False) for r in rows])),
                **({"text_reliance": float(np.mean([r["text_reliance"] for r in rows]))}
                   if all("text_reliance" in r for r in rows) else {}),
                "image_reliance_n": float(len(rows))}


def _logprob_without_question(context: SampleContext) -> float:
    """Mean log-probability of the answer's tokens with the image whole and an empty question in the prompt template."""
    adapter = context.adapter
    inputs = adapter.build_inputs([context.sample.model_images], [""])
    answer = context.generation.generated_ids.to(inputs.input_ids.device)
    generation = Generation(torch.cat([inputs.input_ids, answer[None]], dim=1), inputs.prompt_length, answer,
                            context.generation.text)
    keep = torch.ones(1, inputs.layout.num_tokens)
    return float(adapter.answer_logprobs(inputs, generation, keep, context.settings.removal).mean())
