"""`fastrm-bench explain` outputs a person can read: a long answer wraps, a colour-blind-safe colour map by default,
a colour bar per map row, no absolute local path in the page, and non-square images padded, never cropped."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image
from typer.testing import CliRunner

from fastrm_bench import examples
from fastrm_bench.cli import app
from fastrm_bench.explain import covers_image, fit_inputs, overlay
from fastrm_bench.layout import ImageLayout, LayoutGroup, whole_image
from fastrm_bench.models.zoo import load_model
from fastrm_bench.report import DEFAULT_CMAP
from tests.browser import chromium, needs_browser

REPO = Path(__file__).resolve().parent.parent
#: perceptually uniform maps that stay ordered under the common colour-vision deficiencies (matplotlib's own docs)
COLOUR_BLIND_SAFE = {"viridis", "cividis", "inferno", "magma", "plasma"}


def _calibration_run(folder: Path) -> Path:
    """A finished run of the shipped model and fastrm with a calibrated threshold (named by model, no weights hash)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({
        "run": {"aggregation": "mean"}, "task_spec": {"name": "vqav2"}, "method_spec": {"name": "fastrm"},
        "model": "tiny-llava-shapes", "data_source": "shapes-shifted"}))
    (folder / "results.json").write_text(json.dumps({"n": 50, "metrics": {"entropy_threshold": {"value": 2.7}}}))
    return folder


def _without_data_urls(page: str) -> str:
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)


@pytest.fixture(scope="module")
def fifteen(tmp_path_factory) -> Path:
    """A 15-token answer of the shipped model explained by two methods, with a calibration run given by absolute path."""
    root = tmp_path_factory.mktemp("fifteen")
    run = _calibration_run(root / "runs" / "calibrated")
    result = CliRunner().invoke(app, ["explain", "--example", "four-shapes.png", "--method", "fastrm", "--method", "random",
                                      "--max-new-tokens", "15", "--min-new-tokens", "15", "--calibration", str(run.resolve()),
                                      "--out", str(root / "out"), "--no-warmup"])
    assert result.exit_code == 0, result.output
    return root / "out"


def test_a_15_token_answer_wraps_into_rows_at_most_2000_px_wide(fifteen):
    data = json.loads((fifteen / "explanation.json").read_text())
    assert len(data["tokens"]) == 15
    figure = Image.open(fifteen / "explanation.png")
    assert figure.width <= 2000, figure.size  # one 15-map strip was 3,596 px
    assert figure.height > figure.width / 2  # the tokens went into rows, not squeezed into one
    assert figure.text["Overlays"].count("fastrm:") == 15 and figure.text["Colormap"] == DEFAULT_CMAP


def test_the_page_names_no_absolute_path_and_its_token_chips_are_not_links(fifteen):
    page = (fifteen / "explanation.html").read_text()
    assert "calibrated threshold 2.70" in page  # the calibration run is named ...
    text = _without_data_urls(page)
    for absolute in (str(fifteen.parent.resolve()), str(REPO), str(Path.home())):
        assert absolute not in text
    assert not re.search(r"(^|[\s\"'(>=])/(home|tmp|root|usr|work|Users|var|opt|private)/", text)  # ... relatively
    assert "../runs/calibrated" in text
    chips = re.findall(r'<span class="token">[^<]*</span>', page)
    assert len(chips) == 15 and "<a " not in page and "onclick" not in page
    assert len(re.findall(r'class="colour-bar"', page)) == 2  # one colour bar per method's row of maps


def test_the_default_colour_map_is_colour_blind_safe_and_jet_only_on_request(tmp_path):
    assert DEFAULT_CMAP != "jet" and DEFAULT_CMAP in COLOUR_BLIND_SAFE
    layout = ImageLayout((LayoutGroup(tuple(range(4)), (2, 2), whole_image((8, 8))),), (8, 8))
    white = Image.new("RGB", (8, 8), "white")
    top = np.asarray(overlay(white, layout, np.array([1.0, 1.0, 1.0, 1.0]), (0.0, 1.0), size=8, alpha=1.0))[0, 0]
    assert np.allclose(top / 255, colormaps[DEFAULT_CMAP](1.0)[:3], atol=0.01)  # the default map's top colour
    result = CliRunner().invoke(app, ["explain", "--example", "four-shapes.png", "--method", "random", "--cmap", "jet",
                                      "--out", str(tmp_path / "jet"), "--no-warmup"])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "jet" / "explanation.png").text["Colormap"] == "jet"
    assert "the jet colour map" in (tmp_path / "jet" / "explanation.html").read_text()
    refused = CliRunner().invoke(app, ["explain", "--example", "four-shapes.png", "--cmap", "nope", "--out", str(tmp_path / "x")])
    assert refused.exit_code == 2 and "no matplotlib colour map" in refused.output


def test_a_wide_image_is_padded_to_a_square_not_cropped_and_its_overlay_keeps_its_shape():
    adapter = load_model("tiny-llava-shapes", device="cpu")  # a CLIP processor: it keeps the centre square
    wide = Image.open(examples.path("four-shapes.png")).convert("RGB").resize((128, 64))
    cropped, inputs, note = fit_inputs(adapter, wide, "Where is the yellow circle?", fit="crop")
    assert cropped.size == (128, 64) and not covers_image(inputs.layout) and "centre square" in note
    padded, inputs, note = fit_inputs(adapter, wide, "Where is the yellow circle?")
    assert padded.size == (128, 128) and covers_image(inputs.layout) and "padded" in note
    assert np.array_equal(np.asarray(padded)[32:96], np.asarray(wide))  # the whole image, in the middle
    picture = overlay(wide, inputs.layout, np.zeros(inputs.layout.num_tokens), (0.0, 1.0))
    assert picture.size == (256, 128)  # the image's own aspect: nothing cut off
    square = Image.open(examples.path("four-shapes.png"))
    same, _, note = fit_inputs(adapter, square, "q")
    assert same.size == square.size and "as it is" in note


@needs_browser
def test_the_page_fits_a_900_px_window_and_its_chips_do_not_look_clickable(fifteen):
    with chromium(900, 900) as browser:
        browser.get((fifteen / "explanation.html").resolve().as_uri())
        overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        cursor = browser.execute_script("return getComputedStyle(document.querySelector('.token')).cursor")
        border = browser.execute_script("return getComputedStyle(document.querySelector('.token')).borderTopWidth")
    assert overflow <= 0 and cursor != "pointer" and border == "0px"
