"""`fastrm-bench explain`: one overlay per answer token and method, from any folder, with the answer's confidence."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fastrm_bench import examples
from fastrm_bench.cli import app
from fastrm_bench.explain import Calibration, MethodMaps, find_calibration

REPO = Path(__file__).resolve().parent.parent


def test_the_shipped_examples_are_the_scenes_they_name():
    for name in examples.names():
        shipped = np.asarray(Image.open(examples.path(name)).convert("RGB"))
        assert shipped.shape == (64, 64, 3)
        assert np.array_equal(shipped, np.asarray(examples.render(name)))  # PNG is lossless: redrawn, equal
    with pytest.raises(KeyError, match="ships"):
        examples.path("nope.png")


def test_explain_from_outside_the_repository_writes_one_overlay_per_token_and_method(tmp_path):
    image = tmp_path / "my scene.jpg"  # a user's file, another format, a path with a space
    Image.open(examples.path("four-shapes.png")).save(image, quality=98)
    env = {**os.environ, "PYTHONPATH": ""}
    out = subprocess.run([sys.executable, "-m", "fastrm_bench.cli", "explain", "--image", str(image),
                          "--question", "Where is the yellow circle?", "--method", "fastrm", "--method", "random",
                          "--out", "explained", "--no-warmup"],
                         cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert not str(tmp_path).startswith(str(REPO))
    folder = tmp_path / "explained"
    data = json.loads((folder / "explanation.json").read_text())
    assert data["answer"] == "bottom right" and data["tokens"] == ["bottom", "right"]  # the shipped model is right
    for name in ("fastrm", "random"):
        assert np.asarray(data["methods"][name]["maps"]).shape == (2, 64)
    assert data["methods"]["fastrm"]["is_probability"] and not data["methods"]["random"]["is_probability"]
    # the page: one overlay image per (method, token), and the tokens and the legend in words
    page = (folder / "explanation.html").read_text()
    overlays = re.findall(r'<img class="overlay" data-method="([^"]+)" data-token="(\d+)"', page)
    assert sorted(overlays) == [("fastrm", "0"), ("fastrm", "1"), ("random", "0"), ("random", "1")]
    assert "yellow = most relevant" in page and "No calibrated threshold is known for fastrm" in page
    assert "http://" not in page and "https://" not in page  # self-contained
    # the figure: one overlay per (method, token), recorded in its metadata, and big enough to read
    figure = Image.open(folder / "explanation.png")
    assert figure.text["Overlays"] == "fastrm:0,fastrm:1,random:0,random:1"
    assert figure.width > 600 and figure.height > 600
    assert "answer: bottom right" in out.stdout and "No calibrated threshold is known for fastrm" in out.stdout


def test_explain_a_shipped_example_by_name_and_list_them(tmp_path):
    result = CliRunner().invoke(app, ["explain", "--example", "list"])
    assert result.exit_code == 0 and all(name in result.output for name in examples.names())
    result = CliRunner().invoke(app, ["explain", "--example", "circle-and-triangles.png", "--method", "fastrm",
                                      "--out", str(tmp_path / "o"), "--no-warmup"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "o" / "explanation.json").read_text())["answer"] == "blue"


@pytest.mark.parametrize("args, message", [
    (["--image", "missing.png", "--question", "q"], "cannot read the image"),
    (["--question", "q"], "pass --image PATH (repeat it for several images), --frame PATH per frame of a clip, or "
                          "--example NAME"),
    (["--frame", "missing.png", "--question", "q"], "cannot read the frame"),
    (["--frame", "a.png", "--image", "b.png", "--question", "q"], "not both"),
    (["--example", "nope.png"], "no example image"),
    (["--example", "four-shapes.png", "--method", "chefr"], "chefer"),  # did you mean
])
def test_explain_refuses_bad_arguments_in_one_line(args, message, tmp_path):
    result = CliRunner().invoke(app, ["explain", *args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "o").exists()


def _run_dir(folder: Path, method: str, sha: str, threshold: float | None, n: int = 300) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({
        "run": {"aggregation": "mean"}, "task_spec": {"name": "vqav2"}, "method_spec": {"name": method},
        "model": "tiny-llava-shapes", "model_weights_sha256": sha, "data_source": "shapes-shifted"}))
    metrics = {"entropy_tp_rate_below": {"value": 0.9}, "entropy_base_rate": {"value": 0.8}}
    if threshold is not None:
        metrics["entropy_threshold"] = {"value": threshold}
    (folder / "results.json").write_text(json.dumps({"n": n, "metrics": metrics}))
    return folder


def test_the_calibrated_threshold_comes_from_a_run_of_the_same_weights_and_method(tmp_path):
    adapter = SimpleNamespace(weights_sha256="a" * 64, name="tiny-llava-shapes")
    _run_dir(tmp_path / "runs" / "other-weights", "fastrm", "b" * 64, 1.0)
    _run_dir(tmp_path / "runs" / "other-method", "chefer", "a" * 64, 1.5)
    _run_dir(tmp_path / "runs" / "all-right", "fastrm", "a" * 64, None)  # no wrong answers: no threshold
    assert find_calibration([tmp_path / "runs"], adapter, "fastrm") is None
    _run_dir(tmp_path / "runs" / "small", "fastrm", "a" * 64, 3.0, n=20)
    _run_dir(tmp_path / "runs" / "good", "fastrm", "a" * 64, 2.5)
    found = find_calibration([tmp_path / "runs"], adapter, "fastrm")
    assert found.threshold == 2.5 and found.run_dir.endswith("good") and found.tp_rate_below == 0.9
    assert find_calibration([tmp_path / "runs" / "other-method"], adapter, "chefer").threshold == 1.5


def test_confidence_says_below_or_above_the_threshold_and_when_none_is_known():
    calibration = Calibration(2.5, "runs/x", "vqav2", "shapes-shifted", 300, 0.9, 0.8)
    maps = MethodMaps("fastrm", np.zeros((1, 64)), 0.001, True, 2.0, [2.0], calibration)
    assert "below the calibrated threshold 2.50" in maps.confidence(64) and ": confident" in maps.confidence(64)
    assert "90% of the answers below it were right, against 80%" in maps.confidence(64)
    maps.entropy = 3.0
    assert "above the calibrated threshold" in maps.confidence(64) and "not confident" in maps.confidence(64)
    maps.calibration = None
    assert "No calibrated threshold is known for fastrm" in maps.confidence(64)
    assert "4.16" in maps.confidence(64)  # log 64: a uniform map's entropy
