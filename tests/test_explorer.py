"""The run explorer that `fastrm-bench report` writes: its data, older runs, its size, and the page in a real browser."""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fastrm_bench.cli import app
from fastrm_bench.explorer import NAME, explorer_data, sample_metrics
from fastrm_bench.layout import SIDE_BY_SIDE_GAP
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
    result = CliRunner().invoke(app, ["workbench", str(root / "runs" / "chefer"), "--samples", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["report", str(root / "runs"), "--out", str(root / "report")])
    assert result.exit_code == 0, result.output
    return root


def _data(page: Path) -> dict:
    text = page.read_text()
    return json.loads(text.split('<script type="application/json" id="data">', 1)[1].split("</script>", 1)[0])


def test_report_writes_one_self_contained_explorer_page(report_dir):
    page = report_dir / "report" / NAME
    text = page.read_text()
    for namespace in ("http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"):  # names in exported SVG, not fetched
        text = text.replace(f'"{namespace}"', "")
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
        headers = [th.get_attribute("data-key") for th in browser.find_elements("css selector", "#samples th")]
        assert {"question", "answer", "correct", "entropy", "pp_auc"} <= set(headers)
        shown = {th.get_attribute("data-key"): th.text for th in browser.find_elements("css selector", "#samples th")}
        assert shown["pp_auc"] == "PP AUC (lower: better)" and shown["entropy"] == "map entropy"  # readable, not field names

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


# ------------------------------------------------------------------------------------------------ inside the model
def _inside_values(inside: dict) -> np.ndarray:
    """The page's per-layer, per-head attention rows ``[L, H, T, C]``, dequantised as the page does."""
    shape = (inside["layers"], inside["heads"], len(inside["tokens"]), inside["n_image"] + inside["n_prompt"])
    q = np.frombuffer(base64.b64decode(inside["attention"]), np.uint8).reshape(shape).astype(np.float64)
    return q / 255 * np.asarray(inside["row_max"]).reshape(shape[:3])[..., None]


def _inside_samples(report_dir: Path) -> list[dict]:
    [group] = _data(report_dir / "report" / NAME)["groups"]
    return [s for s in group["samples"] if s["inside"]]


def test_workbench_keeps_every_layers_and_heads_attention_of_the_answer_rows(report_dir, world_root, tiny_adapter):
    from fastrm_bench.builders import create_task

    inside_samples = _inside_samples(report_dir)
    assert len(inside_samples) == 2  # --samples 2
    task = create_task("vqav2", data_root=str(world_root))[0]
    records = {r.id: r for r in task.records}
    for entry in inside_samples:
        inside = entry["inside"]
        sample = task.sample(records[entry["id"]])
        inputs = tiny_adapter.build_inputs([sample.image], [task.prompt(sample)])
        generation = tiny_adapter.generate(inputs, 3)[0]
        assert inside["same_answer"] and inside["answer"] == generation.text == entry["answer"]
        # independently: the eager attention probabilities of the same forward, at the predicting positions
        eager = tiny_adapter.teacher_forced(inputs, generation, attention="eager").probabilities
        rows = inputs.prompt_length - 1 + np.arange(generation.num_generated)
        image = np.asarray(inputs.layout.positions).reshape(-1)
        prompt = np.array([p for p in range(inputs.prompt_length) if p not in set(image.tolist())])
        expected = np.stack([layer[0][:, rows][:, :, np.concatenate([image, prompt])].detach().numpy() for layer in eager])
        values = _inside_values(inside)
        assert values.shape == expected.shape and inside["n_image"] == len(image) == 36
        assert np.abs(values - expected).max() <= expected.max(axis=-1, keepdims=True).max() / 255 + 1e-4
        mass = np.asarray(inside["mass"]).reshape(*expected.shape[:3], 2)
        np.testing.assert_allclose(mass[..., 0], expected[..., : len(image)].sum(-1), atol=2e-4)
        np.testing.assert_allclose(mass[..., 1], expected[..., len(image):].sum(-1), atol=2e-4)
        prompt_ids = inputs.input_ids[0, prompt].tolist()
        assert inside["prompt_tokens"] == [tiny_adapter.tokenizer.decode([i]) for i in prompt_ids]


def test_workbench_of_other_weights_is_left_out_and_a_non_run_refused(report_dir, tmp_path):
    copy = tmp_path / "runs" / "chefer"
    shutil.copytree(report_dir / "runs" / "chefer", copy)
    data = json.loads((copy / "workbench.json").read_text())
    data["weights_sha256"] = "0" * 64
    (copy / "workbench.json").write_text(json.dumps(data))
    runs, _ = load_runs([tmp_path / "runs"])
    label_tasks(runs)
    [group] = explorer_data(runs)["groups"]
    assert not any(s["inside"] for s in group["samples"]) and any("other model weights" in n for n in group["notes"])
    result = CliRunner().invoke(app, ["workbench", str(tmp_path)])
    assert result.exit_code == 2 and "not a finished run directory" in result.output


def _exported(browser, section: str, kind: str) -> tuple[str, bytes]:
    """Click a section's export button; the name and the content of the data URL it downloaded."""
    before = browser.execute_script("return window.explorer.exported.length")
    browser.find_element("css selector", f'#{section}-section button[data-export="{kind}"]').click()
    name, href = wait_for(lambda: browser.execute_script(
        f"const e = window.explorer.exported; return e.length > {before} && [e[e.length - 1].name, e[e.length - 1].href]"))
    head, body = href.split(",", 1)
    from urllib.parse import unquote

    return name, base64.b64decode(body) if head.endswith(";base64") else unquote(body).encode()


def _drawn(browser, canvas_id: str) -> str:
    return wait_for(lambda: browser.execute_script(
        f"const c = document.getElementById('{canvas_id}'); return c && c.dataset.drawn && c.toDataURL()"), what=canvas_id)


@needs_browser
def test_the_layer_slider_and_head_selector_show_that_rows_attention(report_dir):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    page = report_dir / "report" / NAME
    entry = _inside_samples(report_dir)[0]
    values = _inside_values(entry["inside"])
    with chromium() as browser:
        browser.get(page.as_uri())
        wait_for(lambda: browser.find_elements("css selector", f'#samples tbody tr[data-id="{entry["id"]}"]'))[0].click()
        first = _drawn(browser, "inside-map")
        browser.find_element("id", "layer").send_keys(Keys.ARROW_RIGHT)  # the slider: layer 2
        Select(browser.find_element("id", "head")).select_by_value("1")  # head 2
        state = browser.execute_script("return [window.explorer.layer, window.explorer.head]")
        assert state == [1, "1"]
        assert _drawn(browser, "inside-map") != first
        _, body = _exported(browser, "inside", "json")
        numbers = json.loads(body)
        assert numbers["layer"] == 2 and numbers["head"] == 2 and numbers["token"] == 0
        [figure] = numbers["figures"]
        n_image = entry["inside"]["n_image"]
        np.testing.assert_allclose(figure["values"], values[1, 1, 0, :n_image], rtol=1e-3, atol=1e-6)
        assert [p["value"] for p in figure["prompt"]] == pytest.approx(values[1, 1, 0, n_image:], rel=1e-3, abs=1e-6)
        chips = browser.find_elements("css selector", "#inside-view .chip[data-prompt]")
        assert len(chips) == entry["inside"]["n_prompt"] == len(figure["prompt"])
        Select(browser.find_element("id", "head")).select_by_value("mean")
        _, body = _exported(browser, "inside", "json")
        mean = json.loads(body)["figures"][0]["values"]
        np.testing.assert_allclose(mean, values[1, :, 0, :n_image].mean(0), rtol=2e-3, atol=1e-5)


@needs_browser
def test_two_methods_their_difference_and_the_exports(report_dir):
    from PIL import Image
    from selenium.webdriver.support.ui import Select

    page = report_dir / "report" / NAME
    [group] = _data(page)["groups"]
    sample = group["samples"][0]
    with chromium() as browser:
        browser.get(page.as_uri())
        wait_for(lambda: browser.find_elements("css selector", "#samples tbody tr"))[0].click()
        Select(wait_for(lambda: browser.find_element("id", "cmp-a"))).select_by_value("random")
        assert browser.execute_script("return [window.explorer.a, window.explorer.b]") == ["random", "chefer"]
        _drawn(browser, "cmp-diff")
        _, body = _exported(browser, "compare", "json")
        a, b, diff = json.loads(body)["figures"]
        maps = {m: np.frombuffer(base64.b64decode(sample["runs"][m]["token_maps"]), np.uint8).reshape(
            sample["runs"][m]["n_token_maps"], -1)[0] / 255 for m in METHODS}
        assert (a["name"], b["name"], diff["name"]) == ("A: random", "B: chefer", "A - B")
        np.testing.assert_allclose(diff["values"], maps["random"] - maps["chefer"], atol=1e-3)
        name, png = _exported(browser, "maps", "png")
        picture = Image.open(io.BytesIO(png))
        widths = browser.execute_script("return [...document.querySelectorAll('#maps-section canvas')].map((c) => c.width)")
        assert name.endswith(".png") and picture.width == sum(widths) + 10 * (len(widths) + 1) and len(widths) == 3
        assert len(set(picture.convert("L").getdata())) > 10  # the maps, not a blank picture
        _, csv = _exported(browser, "maps", "csv")
        lines = csv.decode().strip().split("\n")
        assert lines[0] == "figure,kind,index,label,value" and len(lines) == 1 + len(METHODS) * 36
        _, svg = _exported(browser, "curves", "svg")
        assert svg.startswith(b"<svg") and b"<polyline" in svg


@needs_browser
def test_a_deep_link_opens_its_view_and_the_keys_move_between_samples_and_tokens(report_dir):
    from selenium.webdriver.common.keys import Keys

    page = report_dir / "report" / NAME
    entry = _inside_samples(report_dir)[-1]
    with chromium() as browser:
        browser.get(page.as_uri() + f"#g=0&s={entry['id']}&t=1&a=random&b=chefer&l=2&h=1&cmap=jet&op=0.3")
        _drawn(browser, "inside-map")
        state = browser.execute_script(
            "const e = window.explorer; return [e.sample, e.token, e.a, e.b, e.layer, e.head, e.cmap, e.opacity]")
        assert state == [entry["id"], 1, "random", "chefer", 1, "1", "jet", 0.3]
        assert browser.find_element("id", "layer").get_attribute("value") == "2"
        assert browser.find_element("css selector", '.tokens button[data-token="1"]').get_attribute("aria-pressed") == "true"
        body = browser.find_element("tag name", "body")
        body.send_keys(Keys.ARROW_LEFT)
        assert browser.execute_script("return window.explorer.token") == 0
        assert "t=0" in browser.execute_script("return location.hash")  # the link follows the view
        ids = [tr.get_attribute("data-id") for tr in browser.find_elements("css selector", "#samples tbody tr")]
        body.send_keys(Keys.ARROW_DOWN)
        following = ids[min(ids.index(entry["id"]) + 1, len(ids) - 1)]
        assert browser.execute_script("return window.explorer.sample") == following
        assert f"s={following}" in browser.execute_script("return location.hash")


@needs_browser
def test_the_page_fits_900_px_and_its_colours_do_not_repeat(report_dir):
    page = report_dir / "report" / NAME
    with chromium(width=900) as browser:
        browser.get(page.as_uri())
        wait_for(lambda: browser.find_elements("css selector", "#samples tbody tr"))[0].click()
        _drawn(browser, "inside-map")
        width = browser.execute_script("return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert width[0] <= width[1]  # no horizontal overflow
        colours = browser.execute_script("return [...Array(20).keys()].map((i) => window.explorer.colour(i))")
        assert len(set(colours)) == 20
        unlabelled = browser.execute_script("return [...document.querySelectorAll('select, input, canvas')]"
                                            ".filter((e) => !e.getAttribute('aria-label')).map((e) => e.id)")
        assert unlabelled == []


@pytest.fixture(scope="module")
def qwen_report(tmp_path_factory) -> Path:
    """tiny-qwen-shapes (images keep their aspect ratio) on a world of non-square scenes, with its workbench."""
    from fastrm_bench.world.build import WorldSizes, build_world
    from fastrm_bench.world.scenes import ImageSizes

    root = tmp_path_factory.mktemp("qwen-explorer")
    world = build_world(root / "world", sizes=WorldSizes(train=4, val=8, test=6, pope_images=4), image_sizes=ImageSizes())
    for method in METHODS:
        run(RunConfig(method=method, task="vqav2", model="tiny-qwen-shapes", limit=3, seed=0,
                      output_dir=str(root / "runs" / method), data_root=str(world), max_new_tokens=3, device="cpu",
                      metrics=["entropy"]), log=lambda *_: None)
    result = CliRunner().invoke(app, ["workbench", str(root / "runs" / "chefer"), "--samples", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["report", str(root / "runs"), "--out", str(root / "report")])
    assert result.exit_code == 0, result.output
    return root / "report" / NAME


@needs_browser
def test_no_map_is_cropped_on_a_non_square_image(qwen_report):
    [group] = _data(qwen_report)["groups"]
    sizes = [tuple(s["layout"]["image_size"]) for s in group["samples"]]
    assert any(h != w for h, w in sizes)
    with chromium() as browser:
        browser.get(qwen_report.as_uri())
        for sample in group["samples"]:
            height, width = sample["layout"]["image_size"]
            browser.find_element("css selector", f'#samples tbody tr[data-id="{sample["id"]}"]').click()
            canvases = ["map-0", "map-1", "cmp-diff"] + (["inside-map"] if sample["inside"] else [])
            for canvas in canvases:
                _drawn(browser, canvas)
                w, h, extent = browser.execute_script(
                    f"const c = document.getElementById('{canvas}'); return [c.width, c.height, c.dataset.extent]")
                assert abs(w / h - width / height) <= 1 / min(w, h) + 1e-9  # the image's shape
                assert extent == f"0,0,{w},{h}"  # the map covers the whole image: nothing cropped


@pytest.fixture(scope="module")
def several_report(tmp_path_factory) -> Path:
    """The multi-image model on two images and on clips (chefer and random), reported."""
    root = tmp_path_factory.mktemp("several-explorer")
    for task in ("pairs", "clips"):
        for method in METHODS:
            run(RunConfig(method=method, task=task, model="tiny-qwen-shapes-multi", limit=2, seed=0,
                          output_dir=str(root / "runs" / f"{task}-{method}"), max_new_tokens=3, device="cpu",
                          metrics=["entropy"]), log=lambda *_: None)
    result = CliRunner().invoke(app, ["report", str(root / "runs"), "--out", str(root / "report")])
    assert result.exit_code == 0, result.output
    return root / "report" / NAME


def test_each_image_and_each_time_step_with_tokens_is_a_part_of_the_page(several_report):
    groups = {g["task"]: g for g in _data(several_report)["groups"]}
    for sample in groups["pairs"]["samples"]:
        (height, canvas_width), parts = sample["layout"]["image_size"], sample["parts"]
        assert [p["label"] for p in parts] == ["image 1", "image 2"]
        assert parts[0]["left"] == 0 and parts[1]["left"] > parts[0]["width"]  # a gap between them
        assert parts[1]["left"] + parts[1]["width"] == canvas_width and max(p["height"] for p in parts) == height
    for sample in groups["clips"]["samples"]:  # 4 frames, 2 per time step: its tokens over frames 1 and 3
        assert [p["label"] for p in sample["parts"]] == ["time step 1 (frames 1-2)", "time step 2 (frames 3-4)"]
        assert [p["left"] for p in sample["parts"]] == [0, 2 * (sample["parts"][0]["width"] + SIDE_BY_SIDE_GAP)]


@needs_browser
def test_a_clips_maps_show_one_time_step_at_a_time_and_play(several_report):
    from selenium.webdriver.support.ui import Select

    clips = next(i for i, g in enumerate(_data(several_report)["groups"]) if g["task"] == "clips")
    sample = _data(several_report)["groups"][clips]["samples"][0]
    with chromium() as browser:
        browser.get(f"{several_report.as_uri()}#g={clips}&s={sample['id']}&t=0")
        whole = _drawn(browser, "map-0")
        width, height = browser.execute_script("const c = document.getElementById('map-0'); return [c.width, c.height]")
        assert width / height > 3  # four frames side by side
        views = []
        for part in (0, 1):
            Select(browser.find_element("id", "part")).select_by_value(str(part))
            wait_for(lambda part=part: browser.execute_script("return window.explorer.part") == part)
            drawn = _drawn(browser, "map-0")
            w, h, extent = browser.execute_script(
                "const c = document.getElementById('map-0'); return [c.width, c.height, c.dataset.extent]")
            frame = sample["parts"][part]
            assert abs(w / h - frame["width"] / frame["height"]) <= 1 / min(w, h) + 1e-9  # one frame's shape
            assert extent == f"0,0,{w},{h}"  # its time step's tokens cover the whole frame
            assert f"f={part}" in browser.current_url  # the link keeps the chosen frame
            views.append(drawn)
        assert len({whole, *views}) == 3  # each frame is its own picture
        browser.find_element("id", "play").click()
        assert browser.find_element("id", "play").get_attribute("aria-pressed") == "true"
        wait_for(lambda: browser.execute_script("return window.explorer.part") == 0, what="the next frame")
        wait_for(lambda: browser.execute_script("return window.explorer.part") == 1, what="the frame after")
        browser.find_element("id", "play").click()
        assert browser.execute_script("return window.explorer.playing") is False
        Select(browser.find_element("id", "part")).select_by_value("-1")
        assert _drawn(browser, "map-0") == whole
        log = browser.get_log("browser") if hasattr(browser, "get_log") else []
        assert log == [], log


def test_a_run_recorded_on_another_machine_finds_its_embedded_world_again(tmp_path, monkeypatch):
    """The page's images come back for a run of any embedded world whose folder is not here: the shifted world (with
    captions or not) is rebuilt by its name, a model's variant by that model's recipe; other data is said missing."""
    from types import SimpleNamespace

    from fastrm_bench.explorer import open_task
    from fastrm_bench.world.build import SHIFTED_SCENES

    monkeypatch.setenv("FASTRM_BENCH_CACHE", str(tmp_path / "cache"))
    elsewhere = "/another/machine/.cache/fastrm-bench/data"
    task, why = open_task(SimpleNamespace(data_root=f"{elsewhere}/shapes-v1-seed0-shifted-describe", task="describe",
                                          model="tiny-llava-shapes"))
    manifest = json.loads((task.data_root / "manifest.json").read_text())
    assert why is None and task.data_root == tmp_path / "cache" / "data" / "shapes-v1-seed0-shifted-describe"
    assert manifest["data_source"] == "shapes-shifted" and manifest["captions"] is True
    assert manifest["scenes"]["noise_std"] == SHIFTED_SCENES.noise_std
    task, why = open_task(SimpleNamespace(data_root=f"{elsewhere}/shapes-v1-seed0-variable-describe", task="vqav2",
                                          model="tiny-qwen-shapes"))
    assert why is None and task.data_root.name == "shapes-v1-seed0-variable-describe"
    task, why = open_task(SimpleNamespace(data_root="/another/machine/coco", task="vqav2", model="tiny-llava-shapes"))
    assert task is None and "/another/machine/coco is not on this machine" in why
