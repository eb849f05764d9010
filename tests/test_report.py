"""`fastrm-bench report` on tiny run directories made here, including subsets with missing inputs."""

from __future__ import annotations

from typer.testing import CliRunner

from fastrm_bench.cli import app
from fastrm_bench.runner import RunConfig, run


def _runs(world_root, tiny_llava_dir, root, methods):
    for method in methods:
        cfg = RunConfig(method=method, task="pope-random", model=str(tiny_llava_dir), limit=6, seed=0,
                        output_dir=str(root / method), data_root=str(world_root), max_new_tokens=3, device="cpu")
        run(cfg, log=lambda *_: None)


def test_report_makes_every_figure_it_has_inputs_for_and_skips_the_rest(world_root, tiny_llava_dir, tmp_path):
    _runs(world_root, tiny_llava_dir, tmp_path / "runs", ["random", "chefer"])
    result = CliRunner().invoke(app, ["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    out = tmp_path / "report"
    assert (out / "perturbation_pope-random.png").stat().st_size > 10_000 and (out / "perturbation_pope-random.pdf").exists()
    assert (out / "leaderboard.md").exists() and (out / "leaderboard.tex").exists()
    index = (out / "index.md").read_text()
    assert "![Perturbation curves, pope-random (Fig. 4/10)](perturbation_pope-random.png)" in index
    assert "fastrm-bench report" in index  # names the command that made it
    for skipped in ("Threshold accuracy/F1 (Fig. 3)", "Table 1", "Latency and memory (Fig. 7)", "Qualitative maps (Fig. 6)"):
        assert skipped in index


def test_report_on_an_empty_folder_skips_everything_without_crashing(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["report", str(tmp_path / "empty"), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    assert "skipped: Leaderboard: no runs" in result.output
