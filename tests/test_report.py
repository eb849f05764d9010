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


def test_a_task_on_two_data_sources_gets_one_figure_per_source(world_root, tiny_llava_dir, tmp_path):
    """reproduce adds runs on a shifted world: they must not be drawn into (or overwrite) the main world's figures."""
    import json

    from fastrm_bench.world.build import WorldSizes, build_world
    from fastrm_bench.world.scenes import SceneConfig

    shifted = build_world(tmp_path / "shifted", seed=0, sizes=WorldSizes(train=2, val=12, test=2, pope_images=4),
                          scene_config=SceneConfig(min_objects=4, max_objects=6, min_size=10, max_size=14, noise_std=36.0))
    assert json.loads((shifted / "manifest.json").read_text())["data_source"] == "shapes-shifted"
    _runs(world_root, tiny_llava_dir, tmp_path / "runs" / "main", ["random"])
    _runs(shifted, tiny_llava_dir, tmp_path / "runs" / "shifted", ["random"])
    result = CliRunner().invoke(app, ["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    index = (tmp_path / "report" / "index.md").read_text()
    for label, name in (("pope-random (shapes)", "perturbation_pope-random_shapes"),
                        ("pope-random (shapes-shifted)", "perturbation_pope-random_shapes-shifted")):
        assert f"![Perturbation curves, {label} (Fig. 4/10)]({name}.png)" in index


def test_a_report_made_again_keeps_no_file_of_the_last_one(world_root, tiny_llava_dir, tmp_path):
    _runs(world_root, tiny_llava_dir, tmp_path / "runs", ["random"])
    out = tmp_path / "report"
    assert CliRunner().invoke(app, ["report", str(tmp_path / "runs"), "--out", str(out)]).exit_code == 0
    (out / "perturbation_gone.png").write_bytes(b"a figure of a run that no longer exists")
    assert CliRunner().invoke(app, ["report", str(tmp_path / "runs"), "--out", str(out)]).exit_code == 0
    assert not (out / "perturbation_gone.png").exists() and (out / "perturbation_pope-random.png").exists()
