"""Maps as hallucination detectors: does a word's own map tell a hallucinated object word from a grounded one?

Every generated object word (the colour and shape words of `fastrm_bench.metrics.chair`'s mentions) is labelled
hallucinated when its mention is (no object of that kind in the scene) and grounded otherwise. Each word's map
gives three detector scores, averaged over the word's tokens (a word of several tokens; `token_word_indices`):

- ``entropy``: the map's entropy as `fastrm_bench.metrics.entropy.map_entropy` computes it (``p = map / sum``,
  clipped at 0), divided by its maximum ``log n`` so maps over different numbers of image tokens compare;
  FastRM's confidence signal (paper Fig. 9);
- ``peak``: the map's largest value (as the method gives it: FastRM's are per-patch probabilities);
- ``top_mass``: the share of the non-negative map on its top `TOP_SHARE` of image tokens.

Existence questions (POPE's "Is there a ... in the image?", VQA's "Is there a ...?": a question that starts
"Is there" with yes/no references) give one word per "yes" answer: the answer's first word, hallucinated when the
reference is "no" (the model claims an absent object, POPE's false positive) and grounded when it is "yes". A
"no" names no object and is not scored.

An all-zero map is read as a uniform one (entropy 1, top mass = the top tokens' share), as in entropy.py.

The hypothesis under test is that a map of a hallucinated word is diffuse, so each score is oriented to flag a
hallucination when high (`ORIENTATION`: entropy as is, peak and top mass negated): AUROC 0.5 is no signal,
above 0.5 supports the hypothesis, below 0.5 the reverse. AUPRC takes hallucinated words as the positive class;
its chance level is the share of hallucinated words (``hallucination_prevalence``). Both are NaN when the run has
only one class of words. The unit is the word, pooled over the run (a long caption weighs more); the runner's
bootstrap resamples samples, so words of one caption stay together.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from fastrm_bench.metrics.base import Metric, RunSettings, SampleContext
from fastrm_bench.metrics.chair import caption_mentions
from fastrm_bench.metrics.entropy import map_entropy
from fastrm_bench.metrics.token_localisation import token_word_indices
from fastrm_bench.tasks.answers import parse_pope_answer

#: the share of image tokens whose mass ``top_mass`` takes (at least one token)
TOP_SHARE = 0.1
#: the detector scores of a word's map, and the sign that makes each one high for a hallucination
ORIENTATION: dict[str, float] = {"entropy": 1.0, "peak": -1.0, "top_mass": -1.0}


def normalised_entropy(token_map: torch.Tensor) -> float:
    """`map_entropy` divided by ``log n`` (0 for a single image token)."""
    n = token_map.numel()
    return map_entropy(token_map) / math.log(n) if n > 1 else 0.0


def top_mass(token_map: torch.Tensor, share: float = TOP_SHARE) -> float:
    """Share of the non-negative map on its ``ceil(share * n)`` largest tokens (an all-zero map: uniform)."""
    values = token_map.detach().double().clamp_min(0).flatten()
    k = max(1, math.ceil(share * values.numel()))
    total = float(values.sum())
    if total <= 0:
        return k / values.numel()
    return float(values.topk(k).values.sum()) / total


def map_scores(token_map: torch.Tensor) -> dict[str, float]:
    """The detector scores of one token map (unoriented)."""
    return {"entropy": normalised_entropy(token_map), "peak": float(token_map.detach().double().max()),
            "top_mass": top_mass(token_map)}


def detection(scores: Sequence[float], hallucinated: Sequence[bool]) -> dict[str, float]:
    """AUROC and AUPRC of ``scores`` (high: hallucinated) at detecting hallucinated words; NaN with one class."""
    labels = np.asarray(hallucinated, bool)
    if labels.all() or not labels.any():
        return {"auroc": float("nan"), "auprc": float("nan")}
    values = np.asarray(scores, float)
    return {"auroc": float(roc_auc_score(labels, values)), "auprc": float(average_precision_score(labels, values))}


def word_entries(context: SampleContext, mentions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per generated object word: its word index, tokens, label and its tokens' mean scores."""
    ids = [int(t) for t in context.generation.generated_ids]
    tokens: dict[int, list[int]] = {}
    for k, index in enumerate(token_word_indices(ids, context.adapter.tokenizer)):
        if index is not None:
            tokens.setdefault(index, []).append(k)
    entries = []
    for mention in mentions:
        for index in mention["words"]:
            own = tokens.get(index, [])
            if not own:  # a word the token alignment did not find (decoding that merges words): no map to score
                continue
            scores = [map_scores(context.explanation.maps[k]) for k in own]
            means = {name: float(np.mean([s[name] for s in scores])) for name in ORIENTATION}
            entries.append({"word": index, "tokens": own, "hallucinated": mention["hallucinated"], **means})
    return entries


def existence_mentions(question: str, references: Sequence[str], answer: str) -> list[dict[str, Any]] | None:
    """A "yes" to an existence question as one mention (word 0 of the answer), hallucinated when the reference is
    "no"; [] for a "no"; None when the question is not an existence question with yes/no references."""
    answers = {r.strip().lower() for r in references}
    if not question.strip().lower().startswith("is there") or not answers or not answers <= {"yes", "no"}:
        return None
    if parse_pope_answer(answer) != "yes" or not answer.strip():
        return []
    return [{"words": [0], "hallucinated": answers == {"no"}}]


def answer_mentions(context: SampleContext) -> list[dict[str, Any]] | None:
    """The answer's labelled object mentions: a caption's (CHAIR's), or an existence answer's; None for other answers."""
    sample, text = context.sample, context.generation.text
    mentions = caption_mentions(text, sample.meta)
    return mentions if mentions is not None else existence_mentions(sample.question, sample.references, text)


class HallucinationDetection(Metric):
    """AUROC / AUPRC of map entropy, peak and top-10% mass at telling hallucinated object words from grounded ones."""

    name = "hallucination"
    higher_is_better = {**{f"hallucination_{kind}_{score}": True for kind in ("auroc", "auprc") for score in ORIENTATION},
                        "hallucination_n_grounded": None, "hallucination_n_hallucinated": None,
                        "hallucination_prevalence": None}
    columns = {f"halluc_auroc_{score}": f"hallucination_auroc_{score}" for score in ORIENTATION}

    def update(self, context: SampleContext) -> dict[str, Any]:
        """``hallucination_words``: the answer's labelled object words and their scores; nothing without a scene list."""
        mentions = answer_mentions(context)
        return {} if mentions is None else {"hallucination_words": word_entries(context, mentions)}

    def compute(self, records: Sequence[dict[str, Any]], settings: RunSettings) -> dict[str, float]:
        entries = [e for r in records for e in r.get("hallucination_words", [])]
        if not any("hallucination_words" in r for r in records):
            return {}
        labels = [bool(e["hallucinated"]) for e in entries]
        out = {"hallucination_n_grounded": float(labels.count(False)),
               "hallucination_n_hallucinated": float(labels.count(True)),
               "hallucination_prevalence": float(np.mean(labels)) if labels else float("nan")}
        for name, sign in ORIENTATION.items():
            found = detection([sign * e[name] for e in entries], labels)
            out.update({f"hallucination_{kind}_{name}": value for kind, value in found.items()})
        return out
