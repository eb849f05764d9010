"""The run explorer that `fastrm-bench report` writes: its data, older runs, its size, and the page in a real browser."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fastrm_bench.cli import app
from fastrm_bench.explorer import NAME, explorer_data, sample_metrics
from fastrm_bench.maps_io import load_sample_maps, load_token_maps
from fastrm_bench.report import label_tasks, load_runs
from fastrm_bench.runner import RunConfig, run
from tests.browser import chromium, needs_browser, wait_for

METHODS = ("chefer", "random")


@pytest.fixture(scope="module")
def report_dir(world_root, tiny_llava_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("explorer")
    for method in METHODS:
        run(RunConfig(method=method, task="vqav2", model=str(tiny_llava_dir), limit=6, seed=0,
                      output_dir=str(root / "runs" / method), data_root=str(world_root), max_new_tokens=3, device="cpu",
                      metrics=["perturbation", "entropy", "localisation"]), log=lambda *_: None)
    result = CliRunner().invoke(app, ["report", str(root / "runs"), "--out", str(root / "report")])
    assert result.exit_code == 0, result.output
    return root


def _data(page: Path) -> dict:
    text = page.read_text()
    return json.loads(text.split('<script type="application/json" id="data">', 1)[1].split("</script>", 1)[0])


def test_report_writes_one_self_contained_explorer_page(report_dir):
    page = report_dir / "report" / NAME
    text = page.read_text()
    assert f"[{NAME}]({NAME})" in (report_dir / "report" / "index.md").read_text()
    for outside in ("http://", "https://", "<script src", "<link", "@import"):
        assert outside not in text  # opens from disk: no server, no network
    data = _data(page)
    [group] = data["groups"]
    assert [m["name"] for m in group["methods"]] == list(METHODS) and all(m["per_token"] for m in group["methods"])
    assert len(group["samples"]) == 6 and {"entropy", "pp_auc", "np_auc"} <= set(group["columns"])
    chefer = load_token_maps(report_dir / "runs" / "chefer")
    records = {json.loads(x)["id"]: json.loads(x) for x in (report_dir / "runs" / "chefer" / "samples.jsonl").open()}
    for sample in group["samples"]:
        assert sample["image"].startswith("data:image/jpeg;base64,")
        assert sample["tokens"] == records[sample["id"]]["tokens"]
        entry = sample["runs"]["chefer"]
        maps = chefer[sample["id"]]
        assert entry["n_token_maps"] == len(maps) == len(sample["tokens"])
        # the 8-bit maps decode to the run's maps on the recorded scale
        low, high = entry["scale"]
        decoded = np.frombuffer(base64.b64decode(entry["token_maps"]), np.uint8).reshape(maps.shape) / 255 * (high - low) + low
        assert np.abs(decoded - maps).max() <= (high - low) / 255 + 1e-3 * abs(high)
        assert entry["curves"]["positive"] == pytest.approx(records[sample["id"]]["curves"]["positive"], abs=1e-4)


def test_older_runs_without_token_maps_show_the_answer_map(report_dir, tmp_path):
    old = tmp_path / "runs" / "chefer"
    shutil.copytree(report_dir / "runs" / "chefer", old)
    (old / "token_maps.npz").unlink()
    runs, _ = load_runs([tmp_path / "runs"])
    label_tasks(runs)
    [group] = explorer_data(runs)["groups"]
    assert group["methods"][0]["per_token"] is False
    assert any("no token_maps.npz" in note for note in group["notes"])
    answer_maps = load_sample_maps(old / "maps.npz")
    for sample in group["samples"]:
        entry = sample["runs"]["chefer"]
        assert entry["token_maps"] is None and entry["n_token_maps"] == 0
        assert len(base64.b64decode(entry["answer_map"])) == len(answer_maps[sample["id"]])


def test_the_page_keeps_a_sample_cap_with_wrong_answers_first(report_dir):
    runs, _ = load_runs([report_dir / "runs"])
    label_tasks(runs)
    records = runs[0].records()
    wrong = [r["id"] for r in records if r["score"] < 0.5]
    [group] = explorer_data(runs, max_samples=2)["groups"]
    ids = [s["id"] for s in group["samples"]]
    assert len(ids) == 2 and group["n_total"] == 6
    assert set(wrong[:1]) <= set(ids)  # up to half of the cap goes to wrong answers
    assert ids == [r["id"] for r in records if r["id"] in ids]  # in the run's order


def test_sample_metrics_are_the_records_numbers_and_curve_areas():
    record = {"score": 1.0, "entropy": 2.0, "pointing_game": True, "note": "x", "num_tokens": 2,
              "curves": {"positive": [1.0, 0.0, 0.0], "negative": [1.0, 1.0, 1.0]},
              "threshold_counts": {"0.5": [2, 2, 2, 10]}}
    metrics = sample_metrics(record, [0.0, 0.5, 1.0])
    assert metrics == {"entropy": 2.0, "pointing_game": 1.0, "pp_auc": 0.25, "np_auc": 1.0, "threshold_f1": 0.5}


@needs_browser
def test_the_page_sorts_filters_and_switches_the_map_on_a_token_click(report_dir):
    page = report_dir / "report" / NAME
    with chromium() as browser:
        browser.get(page.as_uri())
        rows = wait_for(lambda: browser.find_elements("css selector", "#samples tbody tr"), what="the sample table")
        assert len(rows) == 6
        headers = [th.text for th in browser.find_elements("css selector", "#samples th")]
        assert {"question", "answer", "correct", "entropy", "pp_auc"} <= set(headers)

        def column(name: str) -> list[float]:
            index = headers.index(name)
            return [float(tr.find_elements("css selector", "td")[index].text)
                    for tr in browser.find_elements("css selector", "#samples tbody tr")]

        browser.find_element("css selector", 'th[data-key="entropy"]').click()
        ascending = column("entropy")
        assert ascending == sorted(ascending) and len(set(ascending)) > 1
        browser.find_element("css selector", 'th[data-key="entropy"]').click()
        assert column("entropy") == sorted(ascending, reverse=True)
        state = browser.execute_script("return window.explorer")
        assert state["sortKey"] == "entropy" and state["sortDir"] == -1

        browser.find_elements("css selector", "#samples tbody tr")[0].click()
        tokens = wait_for(lambda: browser.find_elements("css selector", ".tokens button[data-token]"), what="token buttons")
        assert len(tokens) >= 3  # the answer's tokens, then "whole answer"
        canvas = 'canvas[data-method="chefer"]'
        first = wait_for(lambda: browser.execute_script(
            f"const c = document.querySelector('{canvas}'); return c.dataset.drawn && [c.dataset.token, c.toDataURL()]"))
        assert first[0] == "0"
        browser.find_element("css selector", '.tokens button[data-token="1"]').click()
        second = wait_for(lambda: browser.execute_script(
            f"const c = document.querySelector('{canvas}'); return c.dataset.drawn && [c.dataset.token, c.toDataURL()]"))
        assert browser.execute_script("return window.explorer.token") == 1
        assert second[0] == "1" and second[1] != first[1]  # another token, another picture
        assert browser.find_element("css selector", '.tokens button[data-token="1"]').get_attribute("class") == "active"
        assert browser.find_elements("css selector", "svg.curves polyline")  # the sample's perturbation curves

        search = browser.find_element("id", "filter")
        search.send_keys("no such question")
        assert browser.find_elements("css selector", "#samples tbody tr") == []
        assert browser.get_log("browser") == [] if hasattr(browser, "get_log") else True


def test_a_run_the_page_cannot_read_costs_the_page_not_the_report(report_dir, tmp_path):
    from fastrm_bench.explorer import write_explorer
    from fastrm_bench.report import Report

    broken = tmp_path / "runs" / "chefer"
    shutil.copytree(report_dir / "runs" / "chefer", broken)
    (broken / "token_maps.npz").write_bytes(b"not an npz file")
    runs, _ = load_runs([tmp_path / "runs"])
    label_tasks(runs)
    out = tmp_path / "report"
    out.mkdir()
    (out / NAME).write_text("a page of an earlier report")
    report = Report(out, "fastrm-bench report")
    assert write_explorer(runs, report) is None
    assert not (out / NAME).exists() and report.skipped and report.skipped[0].startswith("Run explorer:")
