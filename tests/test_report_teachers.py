"""The report's Fig. 2 (relevancy scores of a proxy and its teacher, output lengths) on small fake run directories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fastrm_bench.maps_io import save_sample_maps, save_token_maps
from fastrm_bench.report import Report, fig_relevancy_distribution, label_tasks, load_runs, make_report

N_TOKENS = 4  # image tokens per map


def _run(folder: Path, method: str, implementation: str, params: dict, token_maps: dict[str, np.ndarray] | None,
         sample_maps: dict[str, np.ndarray], task: str = "vqav2", model: str = "tiny") -> Path:
    """A finished run directory as the runner writes it, with only what Fig. 2 reads."""
    folder.mkdir(parents=True)
    config = {"method_spec": {"name": method, "implementation": implementation, "params": params},
              "task_spec": {"name": task, "implementation": task, "params": {}}, "model": model, "data_source": "shapes"}
    (folder / "config.json").write_text(json.dumps(config))
    lengths = {i: (len(m) if token_maps else 1) for i, m in (token_maps or sample_maps).items()}
    (folder / "samples.jsonl").write_text("".join(json.dumps({"id": i, "num_tokens": t, "score": 1.0}) + "\n"
                                                  for i, t in lengths.items()))
    (folder / "results.json").write_text(json.dumps({"n": len(sample_maps), "metrics": {}}))
    save_sample_maps(folder / "maps.npz", list(sample_maps), list(sample_maps.values()))
    if token_maps is not None:
        save_token_maps(folder / "token_maps.npz", list(token_maps), list(token_maps.values()))
    return folder


def _maps(rng, ids, lengths):
    return {i: rng.random((t, N_TOKENS)).astype(np.float32) for i, t in zip(ids, lengths)}


def _table(path: Path) -> dict[str, list[str]]:
    rows = [line.strip("|").split("|") for line in path.read_text().splitlines() if line.startswith("| ")]
    return {r[0].strip(): [c.strip() for c in r[1:]] for r in rows[1:]}


def _figure(roots: list[Path], out: Path) -> Report:
    runs, _ = load_runs(roots)
    label_tasks(runs)
    out.mkdir(exist_ok=True)
    report = Report(out, "test")
    fig_relevancy_distribution(runs, report)
    return report


def test_a_proxy_and_its_teacher_on_the_same_samples(tmp_path):
    rng = np.random.default_rng(0)
    ids = ["a", "b", "c"]
    teacher = _maps(rng, ids, [1, 2, 3])
    teacher["b"][1] = 0.0  # a map without a positive maximum is left out
    proxy = {i: rng.random(m.shape).astype(np.float32) for i, m in teacher.items()}
    proxy["d"] = rng.random((5, N_TOKENS)).astype(np.float32)  # a sample only the proxy's run has
    mean = {i: m.mean(0) for i, m in proxy.items()}
    _run(tmp_path / "runs" / "fastrm-tam", "fastrm-tam", "fastrm", {"teacher": "tam", "checkpoint": None}, proxy, mean)
    _run(tmp_path / "runs" / "tam", "tam", "tam", {}, teacher, {i: m.mean(0) for i, m in teacher.items()})
    # the proxy's teacher is tam, not chefer: a chefer run on the task must not be taken for it
    _run(tmp_path / "runs" / "chefer", "chefer", "chefer", {}, {i: m * 0 + 1 for i, m in teacher.items()},
         {i: np.ones(N_TOKENS) for i in ids})
    report = _figure([tmp_path / "runs"], tmp_path / "report")
    name = "relevancy_distribution_vqav2_fastrm-tam"
    assert report.made == [("Relevancy score distributions, fastrm-tam vs tam, vqav2 (Fig. 2)",
                            [f"{name}.png", f"{name}.pdf", f"{name}.md"])]
    assert (tmp_path / "report" / f"{name}.png").stat().st_size > 10_000
    table = _table(tmp_path / "report" / f"{name}.md")

    def expected(maps, drop_empty):
        rows = [r for i in ids for r in maps[i] if not drop_empty or r.max() > 0]
        values = np.concatenate([r / r.max() for r in rows])
        return len(values), np.mean(values >= 0.05), np.mean(values >= 0.3)

    for method, maps in (("tam", teacher), ("fastrm-tam", proxy)):
        n, above5, above30 = expected(maps, True)
        assert table[method][0] == ("teacher" if method == "tam" else "proxy")
        assert int(table[method][1]) == n == (5 if method == "tam" else 6) * N_TOKENS
        assert float(table[method][2]) == pytest.approx(above5, abs=5e-4)
        assert float(table[method][3]) == pytest.approx(above30, abs=5e-4)
    assert "Answer token maps of 3 shared samples" in (tmp_path / "report" / f"{name}.md").read_text()


def test_older_runs_fall_back_to_sample_maps_and_the_teacher_comes_from_the_checkpoint(tmp_path):
    rng = np.random.default_rng(1)
    ids = ["a", "b"]
    chefer = {i: rng.random(N_TOKENS) for i in ids}
    # the shipped proxy (no checkpoint, no teacher): Chefer's; older runs: maps.npz only
    _run(tmp_path / "runs" / "fastrm", "fastrm", "fastrm", {"checkpoint": None}, None, {i: rng.random(N_TOKENS) for i in ids})
    _run(tmp_path / "runs" / "chefer", "chefer", "chefer", {}, None, chefer)
    # a proxy whose checkpoint records dex-ar; there is a dex-ar run on gqa only, so it has no teacher run on vqav2
    checkpoint = tmp_path / "proxies" / "dexar"
    checkpoint.mkdir(parents=True)
    (checkpoint / "fastrm_config.json").write_text(json.dumps({"hidden_size": 8, "teacher": {"name": "dex-ar"}}))
    _run(tmp_path / "runs" / "fastrm-mine", "fastrm-mine", "fastrm", {"checkpoint": str(checkpoint)}, None, chefer)
    _run(tmp_path / "runs" / "dex-ar-gqa", "dex-ar", "dex-ar", {}, None, chefer, task="gqa")
    _run(tmp_path / "runs" / "fastrm-mine-gqa", "fastrm-mine", "fastrm", {"checkpoint": str(checkpoint)}, None, chefer,
         task="gqa")
    report = _figure([tmp_path / "runs"], tmp_path / "report")
    assert [title for title, _ in report.made] == [
        "Relevancy score distributions, fastrm-mine vs dex-ar, gqa (Fig. 2)",
        "Relevancy score distributions, fastrm vs chefer, vqav2 (Fig. 2)",
    ]
    text = (tmp_path / "report" / "relevancy_distribution_vqav2_fastrm.md").read_text()
    assert "Sample maps (these runs kept no per-token maps) of 2 shared samples" in text
    assert int(_table(tmp_path / "report" / "relevancy_distribution_vqav2_fastrm.md")["chefer"][1]) == 2 * N_TOKENS


def test_no_pair_is_a_note_and_the_report_registers_the_figure(tmp_path):
    rng = np.random.default_rng(2)
    maps = {"a": rng.random((2, N_TOKENS)).astype(np.float32)}
    _run(tmp_path / "alone" / "fastrm-tam", "fastrm-tam", "fastrm", {"teacher": "tam"}, maps, {"a": maps["a"].mean(0)})
    report = _figure([tmp_path / "alone"], tmp_path / "report")
    assert report.made == [] and "fastrm-tam on vqav2 (teacher tam) lack one" in report.skipped[0]
    _run(tmp_path / "alone" / "tam", "tam", "tam", {}, maps, {"a": maps["a"].mean(0)})
    make_report([tmp_path / "alone"], tmp_path / "full", "fastrm-bench report alone")
    index = (tmp_path / "full" / "index.md").read_text()
    assert "![Relevancy score distributions, fastrm-tam vs tam, vqav2 (Fig. 2)](relevancy_distribution_vqav2_fastrm-tam.png)" \
        in index
