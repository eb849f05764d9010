"""image-localisation: each image's (frame's) tokens found from the side-by-side layout, scores worked by hand,
and in runs of the two-image and clip tasks on the fine-tuned model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fastrm_bench.explorer import explorer_data
from fastrm_bench.interfaces import Sample, Video
from fastrm_bench.layout import ImageLayout, side_by_side, side_by_side_mask, single_grid, whole_image
from fastrm_bench.metrics.base import SampleContext
from fastrm_bench.metrics.image_localisation import ImageLocalisation, part_tokens
from fastrm_bench.rundir import read_run


def two_images_layout() -> tuple[ImageLayout, list[tuple[int, int]]]:
    """Two 40x40 images, each one 2x2 grid, the second 48 px right of the first (40 px + the 8 px gap)."""
    sizes = [(40, 40), (40, 40)]
    canvas, lefts = side_by_side(sizes)
    assert canvas == (40, 88) and lefts == [0, 48]
    groups = []
    for k, left in enumerate(lefts):
        one = single_grid(range(10 + 4 * k, 14 + 4 * k), (2, 2), whole_image((40, 40)), (40, 40)).placed(left, canvas)
        groups += list(one.groups)
    return ImageLayout(tuple(groups), canvas), sizes


def context(layout: ImageLayout, sample: Sample, values: list[float]) -> SampleContext:
    inputs = type("Inputs", (), {"layout": layout})()
    return SampleContext(sample=sample, inputs=inputs, generation=None, explanation=None,
                         sample_map=torch.tensor(values), score=1.0, generation_seconds=0.0, settings=None,
                         adapter=None, task=None)


def test_tokens_belong_to_the_image_their_cells_lie_in():
    layout, sizes = two_images_layout()
    first, second = part_tokens(layout, sizes)
    assert first.tolist() == [True] * 4 + [False] * 4 and second.tolist() == [False] * 4 + [True] * 4


def test_two_images_choice_and_pointing_inside_the_object_image_by_hand():
    layout, sizes = two_images_layout()
    object_mask = np.zeros((40, 40), dtype=bool)
    object_mask[2:10, 25:35] = True  # top-right cell of the second image
    images = (Image.new("RGB", (40, 40)), Image.new("RGB", (40, 40)))
    sample = Sample("s", Image.new("RGB", (88, 40)), "q", ["right"], mask=side_by_side_mask([None, object_mask], sizes),
                    images=images)
    metric = ImageLocalisation()
    # the map's maximum (0.5) is on the first image; inside the second its maximum (0.3) is on the object (token 1)
    record = metric.update(context(layout, sample, [0.5, 0, 0, 0, 0.1, 0.3, 0.1, 0.0]))
    assert record["image_choice_pointing"] == 0.0
    assert record["image_choice_mass"] == pytest.approx(0.5 / 1.0)
    assert record["per_image_pointing"] == [1.0]  # only the image showing the object is scored inside
    assert record["per_image_mass"] == [pytest.approx(0.3 / 0.5)]
    record = metric.update(context(layout, sample, [0.1, 0, 0, 0, 0.6, 0.3, 0.0, 0.0]))
    assert record["image_choice_pointing"] == 1.0 and record["per_image_pointing"] == [0.0]
    summary = metric.compute([dict(record, score=1.0), {"score": 1.0}], None)
    assert summary == {"n_several_images": 1.0, "per_image_pointing_game": 0.0,
                       "per_image_relevance_mass": pytest.approx(0.3 / 0.9), "image_choice_pointing": 1.0,
                       "image_choice_mass": pytest.approx(0.9 / 1.0)}


def test_a_clip_is_scored_per_frame_and_has_no_choice_when_every_frame_shows_the_object():
    layout, sizes = two_images_layout()
    masks = [np.zeros((40, 40), dtype=bool) for _ in sizes]
    masks[0][0:10, 0:10] = True  # token 0 of the first frame
    masks[1][30:40, 30:40] = True  # token 3 of the second frame
    frames = tuple(Image.new("RGB", (40, 40)) for _ in sizes)
    sample = Sample("c", Image.new("RGB", (88, 40)), "q", ["left"], mask=side_by_side_mask(masks, sizes),
                    video=Video(frames))
    record = ImageLocalisation().update(context(layout, sample, [0.4, 0.1, 0, 0, 0.2, 0, 0, 0.1]))
    assert record["per_image_pointing"] == [1.0, 0.0]
    assert record["per_image_mass"] == [pytest.approx(0.8), pytest.approx(1 / 3)]
    assert "image_choice_pointing" not in record


def test_one_image_samples_add_nothing():
    layout = single_grid(range(4), (2, 2), whole_image((40, 40)), (40, 40))
    sample = Sample("one", Image.new("RGB", (40, 40)), "q", ["x"], mask=np.ones((40, 40), dtype=bool))
    metric = ImageLocalisation()
    assert metric.update(context(layout, sample, [1, 0, 0, 0])) == {}
    assert metric.compute([{"score": 1.0}], None) == {}


def test_a_layout_not_placed_side_by_side_is_refused():
    layout = single_grid(range(4), (2, 2), (0, 38, 40, 50), (40, 88))  # one group centred in the 8 px gap
    with pytest.raises(ValueError, match="none of the images"):
        part_tokens(layout, [(40, 40), (40, 40)])


@pytest.mark.parametrize("task,parts", [("pairs", 2), ("clips", 2)])
def test_runs_of_the_two_image_and_clip_tasks_score_each_image(task, parts, tmp_path):
    """The fine-tuned model's runs: a pair has two images (one with the object), a clip of 4 frames two time steps."""
    from typer.testing import CliRunner

    from fastrm_bench.cli import app

    out = tmp_path / task
    result = CliRunner().invoke(app, ["run", "--model", "tiny-qwen-shapes-multi", "--method", "chefer", "--task", task,
                                      "--limit", "3", "--output-dir", str(out), "--device", "cpu",
                                      "--metric", "image-localisation"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines() if line.strip()]
    for record in records:
        shown = 1 if task == "pairs" else parts  # a pair shows its object in one image, a clip in every time step
        assert len(record["per_image_pointing"]) == shown
        assert ("image_choice_pointing" in record) == (task == "pairs")
    summary = json.loads((out / "results.json").read_text())
    assert summary["metrics"]["n_several_images"]["value"] == 3
    low, high = summary["metrics"]["per_image_pointing_game"]["ci95"]  # bootstrapped over the samples
    assert 0 <= low <= summary["metrics"]["per_image_pointing_game"]["value"] <= high <= 1
    # the explorer opens each sample of the run by its id: the canvas of its images (frames) and the object's mask
    (group,) = explorer_data([read_run(out)])["groups"]
    assert len(group["samples"]) == 3 and not group["notes"]
    assert all(entry["image"] and entry["mask"] for entry in group["samples"])
