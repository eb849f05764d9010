"""The metric contract: what a run measures on each sample, and how a run's samples add up.

Shaped like torchmetrics' ``Metric`` (update per sample, compute at the end, the direction on the
metric), with one difference that resumable runs need: a metric's state is the fields its
`Metric.update` adds to the sample's line in ``samples.jsonl``. `Metric.compute` aggregates those
lines, so a resumed run, `fastrm-bench summarise` and a bootstrap resample all aggregate the same
way, and a finished run can be aggregated again without the model.

A metric declares what it needs (`Needs`): the object mask (samples without one are left out),
maps that are probabilities, or the maps of another method on the same answer (e.g. Chefer's, as
labels). The runner provides exactly that through `SampleContext`, and knows no metric by name.

Adding a metric: subclass `Metric`, register it (``METRICS.register`` in `fastrm_bench.catalog`,
or an entry point in the ``fastrm_bench.metrics`` group), then ``--metric NAME``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from fastrm_bench.interfaces import Explanation, Generation, ModelAdapter, ModelInputs, Sample, Task


@dataclass(frozen=True)
class Needs:
    """What a metric needs from a sample beyond the answer and the maps."""

    #: the union mask of the question's objects; samples without one are not updated
    mask: bool = False
    #: maps that are per-patch probabilities (the method's `MethodNeeds.probabilities`); other methods are not updated
    probabilities: bool = False
    #: the maps another method (a spec or registered name) gives the same answer, as `SampleContext.reference`
    reference_method: str | None = None
    #: the metric removes image tokens (the run's ``removal`` strategy must be one the model supports)
    perturbation: bool = False


@dataclass(frozen=True)
class RunSettings:
    """The run options metrics read (a view of the run's configuration)."""

    fractions: tuple[float, ...]
    removal: str
    seed: int
    max_new_tokens: int


@dataclass
class SampleContext:
    """Everything a metric may read about one evaluated sample.

    The perturbation services (`sample_maps`, `answer_scores`, `answer_logprobs`) run the model;
    `sample_maps` is computed once per sample and shared by the metrics that ask for it.
    """

    sample: Sample
    inputs: ModelInputs
    generation: Generation
    explanation: Explanation  # per-token maps [T, n_image_tokens]
    sample_map: torch.Tensor  # [n_image_tokens], the run's aggregation of the per-token maps
    score: float  # the task's score of the answer
    generation_seconds: float
    settings: RunSettings
    adapter: ModelAdapter
    task: Task
    #: the maps of the method named by the metric's `Needs.reference_method`, when it names one
    reference: Explanation | None = None
    #: the method's sample map of another draw (1, 2, ...; draw 0 is `sample_map`), for stochastic methods
    draw_map: Callable[[int], torch.Tensor] | None = None
    #: how many draws perturbation metrics average (the method's `MethodNeeds.draws`)
    draws: int = 1
    _cache: dict[str, Any] = field(default_factory=dict)

    def sample_maps(self) -> list[torch.Tensor]:
        """One sample map per perturbation draw of the method (one for deterministic methods)."""
        if "draws" not in self._cache:
            maps = [self.sample_map]
            if self.draw_map is not None:
                maps += [self.draw_map(d) for d in range(1, self.draws)]
            self._cache["draws"] = maps
        return self._cache["draws"]

    def answer_scores(self, image_keep: torch.Tensor) -> list[float]:
        """Task scores of the answers generated with each row of ``image_keep`` (1 keep, 0 remove).

        Rows answered before for this sample (by this or another metric: insertion at f keeps what
        negative perturbation keeps at 1 - f) are taken from a cache; the others go as one batch.
        """
        def answer(rows: torch.Tensor) -> list[float]:
            outs = self.adapter.generate(self.inputs, self.settings.max_new_tokens, image_keep=rows,
                                         removal=self.settings.removal)
            return [self.task.score(g.text, self.sample) for g in outs]

        return self._by_row("scores", image_keep, answer)

    def answer_texts(self, image_keep: torch.Tensor) -> list[str]:
        """The answers (text) generated with each row of ``image_keep`` (cached by row, separately from the scores)."""
        def answer(rows: torch.Tensor) -> list[str]:
            outs = self.adapter.generate(self.inputs, self.settings.max_new_tokens, image_keep=rows,
                                         removal=self.settings.removal)
            return [g.text for g in outs]

        return self._by_row("texts", image_keep, answer)

    def answer_logprobs(self, image_keep: torch.Tensor) -> torch.Tensor:
        """Mean log-probability of the original answer's tokens under each row of ``image_keep`` ``[K]`` (cached by row)."""
        def logprobs(rows: torch.Tensor) -> list[float]:
            values = self.adapter.answer_logprobs(self.inputs, self.generation, rows, self.settings.removal)
            return values.mean(dim=1).tolist()

        return torch.tensor(self._by_row("logprobs", image_keep, logprobs))

    def unanswered(self, image_keep: torch.Tensor) -> torch.Tensor:
        """The distinct rows of ``image_keep`` `answer_scores` has no score for yet (a runner packing several
        samples' removals into one batch answers these, then `remember_scores`)."""
        cache = self._cache.get("scores", {})
        keys = [_row_key(row) for row in image_keep]
        todo = [keys.index(k) for k in dict.fromkeys(keys) if k not in cache]
        return image_keep[todo]

    def remember_scores(self, image_keep: torch.Tensor, scores: Sequence[float]) -> None:
        """Scores of the answers to ``image_keep``'s rows, answered elsewhere (packed with other samples' rows)."""
        self._cache.setdefault("scores", {}).update(zip((_row_key(row) for row in image_keep), scores))

    def _by_row(self, kind: str, image_keep: torch.Tensor, compute: Callable[[torch.Tensor], list[Any]]) -> list[Any]:
        cache: dict[bytes, Any] = self._cache.setdefault(kind, {})
        keys = [_row_key(row) for row in image_keep]
        todo = list(dict.fromkeys(k for k in keys if k not in cache))
        if todo:
            rows = image_keep[[keys.index(k) for k in todo]]
            cache.update(zip(todo, compute(rows)))
        return [cache[k] for k in keys]


def _row_key(row: torch.Tensor) -> bytes:
    return row.detach().cpu().float().numpy().tobytes()


class Metric(ABC):
    """A registered measurement: per-sample `update`, run-level `compute`, and what its numbers mean.

    ``higher_is_better`` gives the direction of every key `compute` returns (True, False, or None
    for descriptive numbers). ``columns`` are the leaderboard columns (column name -> key).
    ``figures`` are a plug-in metric's own report makers, called as ``f(runs, report)`` (`fastrm_bench.report`
    draws the built-in metrics' figures itself, looked up by metric class: metrics never depend on the report).
    """

    name: str = ""
    needs: Needs = Needs()
    higher_is_better: dict[str, bool | None] = {}
    columns: dict[str, str] = {}
    figures: tuple[Callable[..., None], ...] = ()

    @abstractmethod
    def update(self, context: SampleContext) -> dict[str, Any]:
        """The fields this metric adds to the sample's record (JSON values)."""

    def removals(self, context: SampleContext) -> torch.Tensor | None:
        """The ``image_keep`` rows ``[K, n]`` whose answers `update` will ask `SampleContext.answer_scores` for,
        or None (the default: it asks as it goes). A run answering several samples at a time answers the rows
        of all its samples as one batch before `update`, which then finds them answered."""
        return None

    @abstractmethod
    def compute(self, records: Sequence[dict[str, Any]], settings: RunSettings) -> dict[str, float]:
        """Aggregates over records (those without this metric's fields are ignored; empty dict if none has them).

        Must be a function of the records alone: the runner bootstraps it over resampled records.
        """

    def intervals(self, records: Sequence[dict[str, Any]], settings: RunSettings) -> dict[str, dict[str, Any]]:
        """More entries that carry their own uncertainty (``{key: {"value", "ci95", ...}}``, e.g. a spread over
        random splits) rather than the bootstrap the runner applies to `compute`; none by default."""
        return {}

    def interval_note(self, settings: RunSettings) -> str:
        """How the entries of `intervals` got their uncertainty (results.json's ``uncertainty``); "" if none."""
        return ""

    def sections(self, records: Sequence[dict[str, Any]], settings: RunSettings) -> dict[str, Any]:
        """Extra parts of results.json (mean curves, sweeps), merged into the run's results."""
        return {}

    def direction(self, key: str) -> bool | None:
        return self.higher_is_better.get(key)
