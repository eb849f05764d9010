"""Faithfulness on the image-dependent questions: a run with image-reliance tells the subset for its whole group."""

from __future__ import annotations

import json

import pytest

from fastrm_bench.image_dependence import dependence, group_of, image_dependent_frame, render_markdown
from fastrm_bench.rundir import load_runs
from fastrm_bench.runner import RunConfig, run, summarise, summary_inputs


@pytest.fixture(scope="module")
def two_runs(tiny_llava_dir, world_root, tmp_path_factory):
    """The same 6 VQAv2 questions, one run measuring image-reliance (random), one not (rollout)."""
    root = tmp_path_factory.mktemp("dependence")
    for method, metrics in (("random", ["perturbation", "image-reliance"]), ("rollout", ["perturbation"])):
        run(RunConfig(method=method, task="vqav2", model=str(tiny_llava_dir), limit=6, data_root=str(world_root),
                      device="cpu", max_new_tokens=3, output_dir=str(root / method), metrics=metrics,
                      fractions=[0.0, 0.5]), log=lambda *_: None)
    return root


def test_the_verdicts_of_one_run_cover_the_group(two_runs):
    runs, _ = load_runs([two_runs])
    assert len({group_of(r) for r in runs}) == 1
    verdicts = next(iter(dependence(runs).values()))
    records = [json.loads(x) for x in (two_runs / "random" / "samples.jsonl").read_text().splitlines()]
    assert verdicts == {r["id"]: r["image_dependent"] for r in records}


def test_every_run_is_scored_again_on_the_dependent_samples(two_runs):
    runs, _ = load_runs([two_runs])
    frame = image_dependent_frame(runs)
    assert set(frame.method) == {"random", "rollout"} and set(frame.metric) >= {"pp_auc", "np_auc"}
    records = [json.loads(x) for x in (two_runs / "random" / "samples.jsonl").read_text().splitlines()]
    dependent = {r["id"] for r in records if r["image_dependent"]}
    task, rollout_records, cfg, _ = summary_inputs(two_runs / "rollout")
    assert 0 < len(dependent)  # the random tiny model's answers move without the image
    expected = summarise(task, [r for r in rollout_records if r["id"] in dependent], cfg)
    row = frame[(frame.method == "rollout") & (frame.metric == "pp_auc")].iloc[0]
    assert row.n_dependent == len(dependent) and row.n == 6
    assert row.dependent == pytest.approx(expected["metrics"]["pp_auc"]["value"])
    # the run that measured it reports the same subset itself
    own = json.loads((two_runs / "random" / "results.json").read_text())["image_dependent"]
    assert own["n"] == len(dependent) and own["of"] == 6
    assert "image-dependent" in render_markdown(frame)
