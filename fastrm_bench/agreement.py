"""Do the metrics agree on which method is best? Kendall's tau-b between the method rankings of every pair of metrics.

LATEC (NeurIPS 2024) reports its method rankings together with how far its evaluation metrics agree on
them: a ranking that one faithfulness metric gives and another reverses says more about the metrics than
about the methods. Here, for every group of runs of one (model, task, data source), each metric ranks the
group's methods by its value (best first, in the metric's own direction, `Metric.higher_is_better`), and
every pair of metrics gets Kendall's tau-b between its two rankings (`scipy.stats.kendalltau`; ties, e.g.
two methods that make the same maps, count as tau-b counts them) with a 95% bootstrap interval.

The interval resamples the task's questions, jointly for all the group's runs: one draw of question ids
is applied to every run (the runs answer the same questions; they are aligned by question id and only
the ids every run answered are used), every method's metric means are recomputed on it, then the taus.
What the questions share (easy ones, hard ones) thus moves every method alike, as in the report's
paired differences. `RESAMPLES` draws, seeded, vectorised over draws with numpy.

Which metrics. A leaderboard column (`fastrm_bench.leaderboard.metric_columns`) is used when its metric
declares a direction for it, the group's every run measured it, and it is a mean over questions of a
per-sample value. The per-sample value is derived from the metric class itself: its `Metric.compute` on
that one question's record (the contract makes `compute` a function of records alone), and the column
counts as a mean over questions when the mean of those values reproduces the run's results.json value.
For the built-in metrics this gives (field: what `Metric.update` writes into the record):

==========================  =============================  =====================================  ========
key                         per-sample field               per-sample value                       used
==========================  =============================  =====================================  ========
pp_auc, np_auc              ``curves.positive/negative``   the question's curve's AUC             yes
insertion_auc               ``insertion_curve``            the question's curve's AUC             yes
logprob_pp_auc,             ``logprob_curves.positive``,   the question's curve's AUC             yes
logprob_insertion_auc       ``logprob_curves.insertion``
pointing_game,              ``pointing_game``,             the field (NaN left out)               yes
relevance_mass              ``relevance_mass``
relevance_mass_correct      ``relevance_mass`` + ``score`` the field, on fully right answers only  yes
threshold_accuracy, _f1     ``threshold_counts``           --                                     no: pooled counts
entropy_auroc, entropy_*    ``entropy``                    --                                     no: over all questions
token_pointing_own, ...     ``token_localisation``         --                                     no: mean over tokens
map_seconds                 ``map_seconds``                --                                     no: a cost
==========================  =============================  =====================================  ========

(The AUC is linear in the curve, so the mean of the questions' AUCs is the AUC of the mean curve.) The
cost metric is left out on purpose (`EXCLUDED_METRICS`): it prices a map, it does not judge it.

A pair of metrics *disagrees* when its tau interval reaches `DISAGREE_AT_OR_BELOW` (0): the data do not
show that the two rank the methods alike, or show that they rank them oppositely.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import kendalltau

from fastrm_bench.metrics.base import Metric, RunSettings
from fastrm_bench.rundir import Run

#: bootstrap draws of the questions (one draw serves every run of the group)
RESAMPLES = 1000
LEVEL = 0.95
SEED = 0
#: metrics that measure something other than the map's quality
EXCLUDED_METRICS = ("cost",)
#: a pair disagrees when the lower end of its tau interval is at or below this
DISAGREE_AT_OR_BELOW = 0.0
#: fewer methods make no ranking worth a tau (two methods: tau is +1 or -1)
MIN_METHODS = 3
#: how closely the mean of the per-sample values must reproduce the run's value
_RTOL, _ATOL = 1e-6, 1e-9


@dataclass(frozen=True)
class RankedKey:
    """A results.json key a metric ranks methods by, with the metric that computes it and its direction."""

    key: str
    metric: Metric
    higher_is_better: bool


@dataclass
class GroupAgreement:
    """The metrics' rankings of one group's methods and the taus between them (metric order: `keys`)."""

    model: str
    task: str
    data_source: str
    methods: list[str]
    keys: list[str]
    means: np.ndarray  # [keys, methods]: each metric's value per method, on the shared questions
    directions: list[bool]  # per key: higher is better
    tau: np.ndarray  # [keys, keys]
    low: np.ndarray  # [keys, keys], 95% interval (NaN where no draw defines tau)
    high: np.ndarray
    n: int  # questions every run answered
    dropped_questions: int  # questions some run of the group lacks
    left_out: dict[str, str] = field(default_factory=dict)  # key -> why it is not compared
    resamples: int = RESAMPLES
    seed: int = SEED

    @property
    def label(self) -> str:
        return f"{self.task} ({self.data_source}, {self.model})"

    def ranking(self, key: str) -> list[str]:
        """The methods best first by ``key`` (ties keep the methods' alphabetical order)."""
        k = self.keys.index(key)
        score = self.means[k] if self.directions[k] else -self.means[k]
        return [self.methods[i] for i in sorted(range(len(self.methods)), key=lambda i: (-score[i], self.methods[i]))]

    def pairs(self) -> list[dict[str, Any]]:
        """Every pair of metrics once: tau, its interval, and whether they disagree."""
        rows = []
        for i, a in enumerate(self.keys):
            for j in range(i + 1, len(self.keys)):
                low = self.low[i, j]
                rows.append({"a": a, "b": self.keys[j], "tau": float(self.tau[i, j]), "low": float(low),
                             "high": float(self.high[i, j]), "disagree": bool(not low > DISAGREE_AT_OR_BELOW)})
        return rows


def ranked_keys() -> list[RankedKey]:
    """The leaderboard's metric columns that rank methods: a direction declared, the cost metric left out."""
    from fastrm_bench.builders import create_metric
    from fastrm_bench.metrics import DEFAULT_METRICS
    from fastrm_bench.registry import METRICS

    names = [*DEFAULT_METRICS, *(n for n in METRICS.names() if n not in DEFAULT_METRICS)]
    found: dict[str, RankedKey] = {}
    for name in names:
        if name in EXCLUDED_METRICS:
            continue
        metric = create_metric(name)[0]
        for key in metric.columns.values():
            direction = metric.direction(key)
            if direction is not None and key not in found:
                found[key] = RankedKey(key, metric, bool(direction))
    return list(found.values())


def _settings(run: Run) -> RunSettings:
    options = run.config.get("run", {})
    return RunSettings(tuple(run.fractions or ()), options.get("removal", "zero"), run.seed,
                       options.get("max_new_tokens", 10))


def sample_values(run: Run, keys: Sequence[RankedKey]) -> tuple[list[str], np.ndarray]:
    """The run's question ids and ``[len(keys), questions]`` per-sample values (NaN: the question has none).

    A question's value of a key is the key's metric's `Metric.compute` on that question's record alone.
    """
    settings = _settings(run)
    records = run.records()
    metrics = {id(k.metric): k.metric for k in keys}
    values = np.full((len(keys), len(records)), np.nan)
    for q, record in enumerate(records):
        computed: dict[str, Any] = {}
        for metric in metrics.values():
            computed.update(metric.compute([record], settings))
        for k, ranked in enumerate(keys):
            value = computed.get(ranked.key)
            values[k, q] = np.nan if value is None else float(value)
    return [r["id"] for r in records], values


def is_question_mean(values: np.ndarray, recorded: float | None) -> bool:
    """Whether the mean of per-question ``values`` (NaN left out) is the run's ``recorded`` value."""
    finite = values[np.isfinite(values)]
    return recorded is not None and len(finite) > 0 and bool(np.isclose(finite.mean(), recorded, rtol=_RTOL, atol=_ATOL))


def tau_b(scores: np.ndarray) -> np.ndarray:
    """Kendall's tau-b between every pair of rows of ``scores`` ``[keys, ..., methods]`` -> ``[keys, keys, ...]``.

    tau-b = sum of sign products over method pairs / sqrt(untied pairs of one * untied pairs of the other): the
    formula of `scipy.stats.kendalltau`, over all draws at once. NaN where a ranking is all ties or has a NaN.
    """
    signs = np.sign(scores[..., :, None] - scores[..., None, :])  # [keys, ..., m, m]
    num = np.einsum("a...xy,b...xy->ab...", signs, signs)
    untied = np.einsum("a...xy,a...xy->a...", signs, signs)
    with np.errstate(divide="ignore", invalid="ignore"):
        return num / np.sqrt(untied[:, None] * untied[None, :])


def _kendall(a: np.ndarray, b: np.ndarray) -> float:
    """scipy's tau-b of two rankings' scores; NaN, without a warning, where one is all ties."""
    if len(np.unique(a)) < 2 or len(np.unique(b)) < 2:
        return float("nan")
    return float(kendalltau(a, b).statistic)


def _draw_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """``[resamples, n]``: how often each question is drawn in each resample (one draw for every run)."""
    idx = np.random.default_rng(seed).integers(0, n, (resamples, n))
    flat = (idx + n * np.arange(resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=resamples * n).reshape(resamples, n).astype(float)


def bootstrap_means(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-draw means ``[keys, draws, methods]`` of ``values`` ``[keys, methods, questions]`` (NaN left out)."""
    present = np.isfinite(values)
    total = np.einsum("bq,kmq->kbm", weights, np.where(present, values, 0.0))
    count = np.einsum("bq,kmq->kbm", weights, present.astype(float))
    with np.errstate(divide="ignore", invalid="ignore"):
        return total / count


def _interval(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over the last axis, from the draws that define tau (NaN where none does)."""
    tail = (1 - LEVEL) / 2 * 100
    defined = np.isfinite(draws).any(axis=-1)
    safe = np.where(defined[..., None], draws, 0.0)
    with np.errstate(invalid="ignore"):
        low, high = np.nanpercentile(safe, [tail, 100 - tail], axis=-1)
    return np.where(defined, low, np.nan), np.where(defined, high, np.nan)


def _aligned(runs: Sequence[Run], keys: Sequence[RankedKey]) -> tuple[np.ndarray, int, int]:
    """``[keys, methods, questions]`` on the questions every run answered (in the first run's order)."""
    found = [sample_values(r, keys) for r in runs]
    shared = set.intersection(*(set(ids) for ids, _ in found))
    order = [i for i in found[0][0] if i in shared]
    columns = [[{q: c for c, q in enumerate(ids)}[i] for i in order] for ids, _ in found]
    values = np.stack([v[:, c] for (_, v), c in zip(found, columns)], axis=1)
    return values, len(order), len(set().union(*(set(ids) for ids, _ in found))) - len(order)


def _usable_keys(runs: Sequence[Run], keys: Sequence[RankedKey]) -> tuple[list[RankedKey], dict[str, str]]:
    """The keys every run measured, and why the others are left out."""
    left_out = {k.key: "not measured on every run" for k in keys if any(r.metric(k.key) is None for r in runs)}
    return [k for k in keys if k.key not in left_out], left_out


def group_agreement(runs: Sequence[Run], resamples: int = RESAMPLES, seed: int = SEED,
                    keys: Sequence[RankedKey] | None = None) -> GroupAgreement:
    """The agreement of the metrics on one group's runs (one run per method, same model, task and data)."""
    methods = [r.method for r in runs]
    if len(set(methods)) != len(methods):
        raise ValueError(f"a group holds one run per method; {runs[0].task} on {runs[0].model} has several of "
                         f"{sorted({m for m in methods if methods.count(m) > 1})}")
    usable, left_out = _usable_keys(runs, ranked_keys() if keys is None else keys)
    values, n, dropped = _aligned(runs, usable)
    means_ok = [all(is_question_mean(values[k, m], r.metric(key.key)) for m, r in enumerate(runs))
                for k, key in enumerate(usable)]
    left_out |= {key.key: "not a mean over questions of a per-sample value" for key, ok in zip(usable, means_ok) if not ok}
    usable = [key for key, ok in zip(usable, means_ok) if ok]
    values = values[np.array(means_ok, bool)] if usable else np.zeros((0, len(runs), n))
    sign = np.array([1.0 if k.higher_is_better else -1.0 for k in usable])
    means = np.nanmean(values, axis=2) if n else np.full((len(usable), len(runs)), np.nan)
    draws = tau_b(sign[:, None, None] * bootstrap_means(values, _draw_weights(n, resamples, seed)))
    low, high = _interval(draws)
    scores = sign[:, None] * means  # higher is better for every key: tau compares the rankings
    tau = np.array([[_kendall(a, b) for b in scores] for a in scores]).reshape(len(usable), len(usable))
    r0 = runs[0]
    return GroupAgreement(r0.model, r0.task, r0.data_source, methods, [k.key for k in usable], means,
                          [k.higher_is_better for k in usable], tau, low, high, n, dropped, left_out, resamples, seed)


def groups(runs: Sequence[Run]) -> dict[tuple[str, str, str], list[Run]]:
    """The runs by (model, task, data source), FastRM ablation variants left out, methods in name order."""
    out: dict[tuple[str, str, str], list[Run]] = {}
    for r in runs:
        if not r.is_ablation:
            out.setdefault((r.model, r.task, r.data_source), []).append(r)
    return {k: sorted(v, key=lambda r: r.method) for k, v in sorted(out.items())}


def agreements(runs: Sequence[Run], resamples: int = RESAMPLES, seed: int = SEED
               ) -> tuple[list[GroupAgreement], list[str]]:
    """The agreement of every group of at least `MIN_METHODS` methods and two comparable metrics; why others are not."""
    keys = ranked_keys()
    found, skipped = [], []
    for (model, task, source), group in groups(runs).items():
        where = f"{task} ({source}, {model})"
        if len({r.method for r in group}) < MIN_METHODS:
            skipped.append(f"{where}: fewer than {MIN_METHODS} methods")
            continue
        try:
            result = group_agreement(group, resamples, seed, keys)
        except ValueError as err:
            skipped.append(f"{where}: {err}")
            continue
        if len(result.keys) < 2:
            skipped.append(f"{where}: fewer than two metrics measured on every run")
            continue
        found.append(result)
    return found, skipped
