"""Metrics: each module has the functional forms and the registered `Metric` plug-in (`base.Metric`).

Lists of metric names live here, so that the runner, the leaderboard and the report name none.
"""

#: what a run measures unless told otherwise (``--metric``); also the order of leaderboard columns and report figures
DEFAULT_METRICS = ("perturbation", "insertion", "probability", "threshold", "localisation", "entropy", "image-reliance",
                   "cost")
#: what runs written before metrics were chosen measured (their config has no ``metrics``)
LEGACY_METRICS = ("perturbation", "threshold", "localisation", "entropy", "cost")


def legacy_metrics(run: dict) -> list[str]:
    """The metrics an older run's config (no ``metrics``, maybe ``perturbation: false``) measured; pops that flag."""
    perturbed = run.pop("perturbation", True)
    return [m for m in LEGACY_METRICS if perturbed or m != "perturbation"]
