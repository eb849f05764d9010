"""Metric functions on hand-computed cases, the metric contract as the runner uses it, and per-token maps on disk."""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastrm_bench.aggregation import LastContentToken, MeanOverContent, weighted_map
from fastrm_bench.layout import single_grid
from fastrm_bench.maps_io import load_sample_maps, load_token_maps
from fastrm_bench.metrics import DEFAULT_METRICS
from fastrm_bench.metrics.entropy import entropy_auroc, entropy_confidence, map_entropy
from fastrm_bench.metrics.localisation import object_tokens
from fastrm_bench.metrics.perturbation import curve_auc, insertion_masks, keep_masks, removal_order
from fastrm_bench.metrics.threshold import confusion_counts, scores_from_counts
from fastrm_bench.registry import METRICS
from fastrm_bench.runner import RunConfig, run

ROOT = Path(__file__).resolve().parent.parent


def quiet(*_):
    return None


# ---------------------------------------------------------------- functional forms, by hand


def test_removal_orders_and_masks_by_hand():
    smap = torch.tensor([0.1, 0.5, 0.3, 0.9])
    assert removal_order(smap, "positive").tolist() == [3, 1, 2, 0]
    assert removal_order(smap, "negative").tolist() == [0, 2, 1, 3]
    masks = keep_masks(smap, [0.0, 0.5, 0.75])
    assert masks["positive"].tolist() == [[1, 1, 1, 1], [1, 0, 1, 0], [1, 0, 0, 0]]
    assert masks["negative"].tolist() == [[1, 1, 1, 1], [0, 1, 0, 1], [0, 0, 0, 1]]
    # insertion: nothing at 0, then the most relevant first
    assert insertion_masks(smap, [0.0, 0.25, 0.5]).tolist() == [[0, 0, 0, 0], [0, 0, 0, 1], [0, 1, 0, 1]]


def test_ties_are_broken_by_the_seed_not_by_position():
    flat = torch.zeros(6)
    orders = {tuple(removal_order(flat, "positive", seed=s).tolist()) for s in range(5)}
    assert len(orders) > 1 and all(sorted(o) == list(range(6)) for o in orders)


def test_trapezoid_auc_by_hand():
    assert curve_auc([0.0, 0.1, 0.2], [1.0, 0.5, 0.0]) == pytest.approx(0.5)  # (0.075 + 0.025) / 0.2
    assert curve_auc([0.0, 0.5], [1.0, 1.0]) == pytest.approx(1.0)
    assert curve_auc([0.0, 0.3, 0.9], [-1.0, -2.0, -4.0]) == pytest.approx((0.3 * -1.5 + 0.6 * -3.0) / 0.9)
    with pytest.raises(ValueError):
        curve_auc([0.0], [1.0])


def test_entropy_split_by_hand():
    entropy = np.array([1.0, 4.0, 2.0, 3.0, 1.5, 5.0])
    correct = np.array([True, False, True, False, True, False])
    calibration = np.array([True, True, False, False, False, False])
    out = entropy_confidence(entropy, correct, calibration)
    assert out["threshold"] == pytest.approx(2.5)  # (1 + 4) / 2
    assert out["share_below"] == pytest.approx(0.5)  # 2 and 1.5 of 2, 3, 1.5, 5
    assert out["tp_rate_below"] == 1.0 and out["fp_rate_below"] == 0.0
    assert out["tn_rate_above"] == 1.0 and out["fn_rate_above"] == 0.0
    assert out["base_rate"] == 0.5 and out["tp_gain_below"] == 0.5
    # an evaluation half of right answers only would make every rate trivial: nothing is defined
    assert np.isnan(entropy_confidence(entropy, np.array([True, False, True, True, True, True]), calibration)["threshold"])
    assert map_entropy(torch.ones(4)) == pytest.approx(np.log(4))
    assert map_entropy(torch.tensor([0.0, 2.0, 0.0])) == pytest.approx(0.0)


def test_entropy_auroc_by_hand():
    # -entropy ranks correct answers (1, 3) above wrong ones (2, 4) in 3 of the 4 pairs
    assert entropy_auroc(np.array([1.0, 2.0, 3.0, 4.0]), np.array([True, False, True, False])) == pytest.approx(0.75)
    assert np.isnan(entropy_auroc(np.array([1.0, 2.0]), np.array([True, True])))
    assert np.isnan(entropy_auroc(np.array([1.0, 2.0, 3.0]), np.array([True, False, True]), min_per_class=2))


def test_mask_to_tokens_on_a_non_square_image_by_hand():
    # 40 x 60 image, a 2 x 3 grid of 20 x 20 cells; the mask covers rows 0-9, columns 25-44
    layout = single_grid(range(6), (2, 3), (0, 0, 40, 60), (40, 60))
    mask = np.zeros((40, 60), dtype=bool)
    mask[0:10, 25:45] = True
    assert object_tokens(layout, mask).tolist() == [False, True, True, False, False, False]  # any pixel
    # half of a cell: cell (0, 1) has 10 x 15 of its 400 pixels (0.375), cell (0, 2) 10 x 5 (0.125)
    assert layout.mask_to_tokens(mask).tolist() == [False] * 6
    mask[0:20, 20:40] = True  # cell (0, 1) now fully covered
    assert layout.mask_to_tokens(mask).tolist() == [False, True, False, False, False, False]


def test_threshold_counts_by_hand():
    probs = torch.tensor([[0.9, 0.6, 0.2, 0.1]])
    labels = torch.tensor([[True, False, True, False]])
    counts = confusion_counts(probs, labels, (0.5,))
    assert counts == {"0.5": [1, 1, 1, 1]}
    assert scores_from_counts(*counts["0.5"]) == {"accuracy": 0.5, "f1": 0.5}
    assert scores_from_counts(0, 0, 3, 1)["f1"] == 0.0


def test_aggregations_by_hand(tiny_adapter):
    maps = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    assert weighted_map(maps, torch.tensor([1.0, 1.0, 0.0])).tolist() == [0.5, 0.5]
    assert weighted_map(maps, torch.tensor([0.0, 3.0, 1.0])).tolist() == pytest.approx([0.125, 0.875])
    assert weighted_map(maps, torch.zeros(3)).tolist() == [0.0, 0.0]  # no token weighs: no map
    from fastrm_bench.interfaces import Explanation, Generation

    tok = tiny_adapter.tokenizer
    vocab = tok.get_vocab()
    punctuation = next(t for t in sorted(vocab) if t and set(t) <= set(string.punctuation))  # the world's "?"
    ids = torch.tensor([vocab["red"], vocab[punctuation], vocab["blue"]])
    generation = Generation(torch.zeros(1, 3, dtype=torch.long), 0, ids, f"red{punctuation} blue")
    inputs = tiny_adapter.build_inputs([Image.new("RGB", (48, 48))], ["q"])
    explanation = Explanation(maps=torch.cat([maps, torch.zeros(3, inputs.layout.num_tokens - 2)], 1))
    mean = MeanOverContent()(tiny_adapter, inputs, generation, explanation)
    assert mean[:2].tolist() == [0.75, 0.25]  # rows 0 and 2: punctuation is format only, left out
    assert LastContentToken()(tiny_adapter, inputs, generation, explanation)[:2].tolist() == [0.5, 0.5]


# ---------------------------------------------------------------- the adapter's answer probabilities


def test_answer_logprobs_equal_the_teacher_forced_logits(tiny_adapter):
    inputs = tiny_adapter.build_inputs([Image.new("RGB", (48, 48), "yellow")], ["Where is the yellow square?"])
    generation = tiny_adapter.generate(inputs, max_new_tokens=4, min_new_tokens=4)[0]
    n = inputs.layout.num_tokens
    forward = tiny_adapter.teacher_forced(inputs, generation)
    positions = inputs.prompt_length - 1 + torch.arange(4)
    expected = torch.log_softmax(forward.logits[positions].float(), -1).gather(-1, generation.generated_ids[:, None])[:, 0]
    keep = torch.ones(2, n)
    keep[1, : n // 2] = 0
    for removal in tiny_adapter.removals:
        got = tiny_adapter.answer_logprobs(inputs, generation, keep, removal)
        assert got.shape == (2, 4)
        torch.testing.assert_close(got[0], expected.detach(), rtol=1e-4, atol=1e-4)
        assert not torch.allclose(got[1], got[0])  # half of the image gone: the answer's probability moves
    zeroed = tiny_adapter.answer_logprobs(inputs, generation, keep[1:], "zero")
    dropped = tiny_adapter.answer_logprobs(inputs, generation, keep[1:], "drop")
    assert not torch.allclose(zeroed, dropped)  # two removals, two models of "absent"


# ---------------------------------------------------------------- runs: contract, token maps, selection


def test_token_maps_load_back_equal_to_the_methods_maps(world_root, tiny_llava_dir, tmp_path):
    from fastrm_bench.builders import create_method, create_task
    from fastrm_bench.models.zoo import load_model

    out = tmp_path / "run"
    run(RunConfig(method="chefer", task="vqav2", model=str(tiny_llava_dir), limit=3, output_dir=str(out),
                  data_root=str(world_root), device="cpu", max_new_tokens=4, metrics=["cost"]), log=quiet)
    tokens = load_token_maps(out)
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    adapter = load_model(str(tiny_llava_dir), device="cpu")
    task, _ = create_task("vqav2", data_root=str(world_root))
    by_id = {r.id: r for r in task.records}
    method = create_method("chefer")[0]
    for record in samples:
        sample = task.sample(by_id[record["id"]])
        inputs = adapter.build_inputs([sample.image], [task.prompt(sample)])
        generation = adapter.generate(inputs, 4, return_hidden=True)[0]
        expected = method.explain(adapter, inputs, generation).maps.numpy()
        assert tokens[record["id"]].shape == expected.shape == (record["num_tokens"], inputs.layout.num_tokens)
        np.testing.assert_allclose(tokens[record["id"]], expected, rtol=1e-5, atol=1e-7)
        assert record["tokens"] == [adapter.tokenizer.decode([int(t)]) for t in generation.generated_ids]
    sample_maps = load_sample_maps(out / "maps.npz")
    assert set(sample_maps) == set(tokens)


def test_a_run_measures_only_its_metrics(world_root, tiny_llava_dir, tmp_path):
    out = tmp_path / "run"
    result = run(RunConfig(method="random", task="pope", model=str(tiny_llava_dir), limit=3, output_dir=str(out),
                           data_root=str(world_root), device="cpu", max_new_tokens=3, fractions=[0.0, 0.5],
                           metrics=["insertion", "entropy"]), log=quiet)
    keys = set(result["metrics"])
    assert {"insertion_auc", "entropy_auroc"} <= keys
    assert not keys & {"pp_auc", "relevance_mass", "map_seconds", "logprob_pp_auc"}
    assert result["metrics"]["insertion_auc"]["higher_is_better"] is True
    record = json.loads((out / "samples.jsonl").read_text().splitlines()[0])
    assert "insertion_curve" in record and "curves" not in record and "relevance_mass" not in record
    assert json.loads((out / "config.json").read_text())["run"]["metrics"] == ["insertion", "entropy"]


def test_bad_metric_and_aggregation_names_fail_before_any_work(tmp_path):
    with pytest.raises(KeyError, match="Did you mean 'insertion'"):
        run(RunConfig(method="random", task="pope", output_dir=str(tmp_path / "a"), metrics=["insertoin"]), log=quiet)
    with pytest.raises(KeyError, match="Unknown aggregation 'median'. Did you mean 'mean'"):
        run(RunConfig(method="random", task="pope", output_dir=str(tmp_path / "b"), aggregation="median"), log=quiet)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_runner_names_no_metric():
    """Metric names and their record fields live in the metrics; the runner only hands them contexts."""
    source = (ROOT / "fastrm_bench" / "runner.py").read_text()
    literals = set(re.findall(r"\"([a-z_0-9\-]+)\"", source))
    named = {name for name in METRICS.names()} | {"curves", "threshold_counts", "relevance_mass", "entropy", "pp_auc",
                                                   "insertion_curve", "logprob_curves", "map_seconds", "pointing_game"}
    assert not literals & named, literals & named
    assert set(DEFAULT_METRICS) <= set(METRICS.names())


def test_every_metric_declares_the_direction_of_what_it_computes():
    from fastrm_bench.builders import create_metric

    for name in METRICS.names():
        metric = create_metric(name)[0]
        assert set(metric.columns.values()) <= set(metric.higher_is_better), name
