"""The qualitative figure (Fig. 6): one column per method that has a run, on shared correct one-token samples."""

from __future__ import annotations

import json

import numpy as np

from fastrm_bench import report as report_module
from fastrm_bench.builders import create_task
from fastrm_bench.layout import centre_square, single_grid
from fastrm_bench.maps_io import save_sample_maps

GRID = (6, 6)


def _fake_runs(root, world_root, methods, task_name="vqav2", count=8, wrong=None, two_tokens=None):
    """Run directories as `fastrm-bench run` writes them (the files the report reads), with random maps, for
    the first ``count`` questions of the world's task; ``wrong`` / ``two_tokens``: {method: indices of questions}
    answered wrongly / with two tokens. Returns the question ids."""
    task, _ = create_task(task_name, data_root=str(world_root))
    records = task.records[:count]
    for k, method in enumerate(methods):
        out = root / task_name / method
        out.mkdir(parents=True)
        config = {"method_spec": {"name": method}, "task_spec": {"name": task_name, "implementation": task_name},
                  "model": "tiny-llava-shapes", "data_source": "shapes", "data_root": str(world_root), "grid": list(GRID)}
        (out / "config.json").write_text(json.dumps(config))
        (out / "results.json").write_text(json.dumps({"n": len(records), "metrics": {}}))
        lines, ids, maps = [], [], []
        for index, rec in enumerate(records):
            sample = task.sample(rec)
            size = np.asarray(sample.image).shape[:2]
            layout = single_grid(range(GRID[0] * GRID[1]), GRID, centre_square(size), size)
            lines.append(json.dumps({"id": sample.id, "question": sample.question, "prediction": sample.references[0],
                                     "score": 0.0 if index in (wrong or {}).get(method, ()) else 1.0,
                                     "num_tokens": 2 if index in (two_tokens or {}).get(method, ()) else 1,
                                     "layout": layout.to_dict()}))
            ids.append(sample.id)
            maps.append(np.random.default_rng(k).random(GRID[0] * GRID[1]))
        (out / "samples.jsonl").write_text("\n".join(lines) + "\n")
        save_sample_maps(out / "maps.npz", ids, maps)
    return [r.id for r in records]


def _figure(root, tmp_path, monkeypatch):
    """Run fig_qualitative on the runs under ``root``: (the Report, the figure it drew or None)."""
    runs, _ = report_module.load_runs([root])
    report_module.label_tasks(runs)
    figures = []
    save_figure = report_module._save
    monkeypatch.setattr(report_module, "_save", lambda fig, *args: (figures.append(fig), save_figure(fig, *args)))
    made = report_module.Report(tmp_path / "report", "test")
    made.out.mkdir()
    report_module.fig_qualitative(runs, made)
    return made, figures[0] if figures else None


def test_every_method_with_a_run_gets_a_column_in_order_on_samples_all_answered_right_in_one_token(
        world_root, tmp_path, monkeypatch):
    # the first question is answered wrongly by tam, the second in two tokens by chefer: neither may be drawn
    ids = _fake_runs(tmp_path / "runs", world_root, ["tam", "random", "dex-ar", "fastrm", "chefer"],
                     wrong={"tam": {0}}, two_tokens={"chefer": {1}})
    made, fig = _figure(tmp_path / "runs", tmp_path, monkeypatch)
    assert made.made == [("Qualitative maps (Fig. 6)", ["qualitative.png", "qualitative.pdf"])]
    assert (made.out / "qualitative.png").stat().st_size > 10_000
    columns = ["chefer", "fastrm", "dex-ar", "tam"]  # in the figure's order; random is no column, absent methods none
    axes = np.array(fig.axes[:4 * (1 + len(columns))]).reshape(4, 1 + len(columns))  # 4 rows (n=4): image, maps
    bars = fig.axes[4 * (1 + len(columns)):]  # then one colour bar per method's column
    assert [b.get_xlabel() for b in bars] == [f"{m} relevance" for m in columns]
    assert [ax.get_title().split(":")[0] for ax in axes[0][1:]] == columns
    task, _ = create_task("vqav2", data_root=str(world_root))
    questions = {r.id: task.sample(r).question for r in task.records[:8]}
    assert [ax.get_title().split("\n")[0] for ax in axes[:, 0]] == [questions[i] for i in ids[2:6]]
    for ax in axes[:, 1:].flatten():
        assert len(ax.get_images()) == 2  # the image and the map over it (draw_map)
    assert all(m in fig._suptitle.get_text() for m in columns)


def test_two_methods_without_chefer_still_make_the_figure_and_one_method_is_skipped(world_root, tmp_path, monkeypatch):
    _fake_runs(tmp_path / "two", world_root, ["gradcam", "tam"], count=3)
    (tmp_path / "a").mkdir()
    made, fig = _figure(tmp_path / "two", tmp_path / "a", monkeypatch)
    assert [ax.get_title().split(":")[0] for ax in np.array(fig.axes[:9]).reshape(3, 3)[0][1:]] == ["tam", "gradcam"]
    _fake_runs(tmp_path / "one", world_root, ["chefer", "random"], count=3)
    (tmp_path / "b").mkdir()
    made, fig = _figure(tmp_path / "one", tmp_path / "b", monkeypatch)
    assert fig is None and made.made == [] and made.skipped[0].startswith("Qualitative maps (Fig. 6): needs runs of two")


def test_the_task_with_chefer_and_fastrm_is_drawn_before_one_with_more_methods(world_root, tmp_path, monkeypatch):
    _fake_runs(tmp_path / "runs", world_root, ["tam", "dex-ar", "gradcam"], task_name="gqa", count=3)
    _fake_runs(tmp_path / "runs", world_root, ["chefer", "fastrm"], count=3)
    made, fig = _figure(tmp_path / "runs", tmp_path, monkeypatch)
    assert len(fig.axes) == 3 * 3 + 2 and "vqav2" in fig._suptitle.get_text()  # 3 rows of 3, two colour bars
