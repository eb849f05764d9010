"""The model-randomisation sanity check: what it randomises, what it leaves alone, and what it reports."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from fastrm_bench.cli import app
from fastrm_bench.sanity import (
    REDRAWN,
    SanityConfig,
    cascade,
    final_hidden,
    randomised_copy,
    resummarise,
    run_sanity,
    spearman,
    verdicts,
)


def _layer_prefixes(adapter) -> list[str]:
    names = {id(m): n for n, m in adapter.model.named_modules()}
    return [names[id(layer)] + "." for layer in adapter.decoder_layers()]


def _changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> set[str]:
    assert a.keys() == b.keys()
    return {k for k in a if not torch.equal(a[k], b[k])}


@pytest.fixture(scope="module")
def shipped():
    from fastrm_bench.models.zoo import load_model

    return load_model("tiny-llava-shapes", device="cpu")


def test_depth_d_changes_exactly_the_top_d_layers(tiny_adapter, shipped):
    for adapter in (tiny_adapter, shipped):
        original = {k: v.clone() for k, v in adapter.model.state_dict().items()}
        prefixes = _layer_prefixes(adapter)
        n = len(prefixes)
        assert _changed(original, randomised_copy(adapter, 0, seed=0).model.state_dict()) == set()
        for depth in range(1, n + 1):
            changed = _changed(original, randomised_copy(adapter, depth, seed=0).model.state_dict())
            top = tuple(prefixes[n - depth :])
            assert all(k.startswith(top) for k in changed)
            in_top = {k for k in original if k.startswith(top)}
            # every matrix of the re-initialised layers is re-drawn; on the trained model every tensor (norms too),
            # on the random one the norms are re-drawn to the ones they already were
            must_change = in_top if adapter is shipped else {k for k in in_top if original[k].dim() >= 2}
            assert must_change and must_change <= changed
        assert _changed(original, adapter.model.state_dict()) == set()  # the caller's model is untouched


def test_cascade_equals_independent_copies_and_seeds_matter(tiny_adapter):
    for depth, layers, adapter in cascade(tiny_adapter, seed=3):
        expected = randomised_copy(tiny_adapter, depth, seed=3).model.state_dict()
        assert _changed(expected, adapter.model.state_dict()) == set()
        assert len(layers) == depth
    other = randomised_copy(tiny_adapter, 1, seed=4).model.state_dict()
    assert _changed(randomised_copy(tiny_adapter, 1, seed=3).model.state_dict(), other)


def test_fastrm_input_is_the_teacher_forced_hidden_state_of_the_model(shipped, world_root):
    from fastrm_bench.builders import create_task

    task, _ = create_task("vqav2", data_root=str(world_root))
    sample = task.sample(task.select(1, 0)[0])
    inputs = shipped.build_inputs([sample.image], [task.prompt(sample)])
    generation = shipped.generate(inputs, 4, return_hidden=True)[0]
    hidden = final_hidden(shipped, inputs, generation)
    rows = inputs.prompt_length - 1 + generation.num_generated
    assert hidden.shape[0] == rows
    torch.testing.assert_close(hidden, generation.last_hidden[:rows], atol=1e-4, rtol=1e-4)
    randomised = final_hidden(randomised_copy(shipped, 1), inputs, generation)
    assert not torch.allclose(randomised, hidden, atol=1e-3)


def test_spearman_of_a_constant_map_is_undefined_and_verdicts():
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    assert spearman([1, 2, 3], [2, 4, 9]) == pytest.approx(1.0)
    rows = [
        {"method": "a", "depth": 0, "spearman": 1.0, "ci95": [1, 1]},
        {"method": "a", "depth": 2, "spearman": 0.1, "ci95": [-0.1, 0.3]},
        {"method": "b", "depth": 2, "spearman": 0.9, "ci95": [0.8, 1.0]},
        {"method": "c", "depth": 2, "spearman": 0.4, "ci95": [0.2, 0.6]},
        {"method": "d", "depth": 2, "spearman": None, "ci95": None},
    ]
    got = verdicts(rows)
    assert got["a"] == "passes" and got["b"] == "fails (maps barely change)"
    assert got["c"] == "fails (maps stay correlated with the original)"
    assert got["d"].startswith("undefined")


def test_check_on_the_shipped_model(shipped, world_root, tmp_path):
    """Chefer's maps decorrelate, the oracle's and the seeded random maps never change and fail, the caller's model is
    unchanged, and the output folder holds every row."""
    from fastrm_bench.weights import weights_hash

    before = weights_hash(shipped.model)
    cfg = SanityConfig(methods=["chefer", "oracle", "random", "fastrm"], data_root=str(world_root), limit=4,
                       max_new_tokens=3, out=str(tmp_path / "sanity"))
    result = run_sanity(cfg, adapter=shipped, log=lambda *_: None, progress=False)
    assert weights_hash(shipped.model) == before
    rows = {(r["method"], r["depth"]): r for r in result["rows"]}
    depths = result["config"]["depths"]
    assert depths == [0, 1, 2, 3, 4]
    assert {m for m, _ in rows} == {"chefer", "oracle", "random", "random" + REDRAWN, "fastrm"}
    assert rows["chefer", 0]["spearman"] == pytest.approx(1.0) and rows["chefer", 0]["n_undefined"] == 0
    assert rows["chefer", 4]["spearman"] < 1.0
    for d in depths:
        oracle = rows["oracle", d]
        assert oracle["n"] == 4 and oracle["n_undefined"] < 4  # questions without objects have a constant map: counted
        assert oracle["spearman"] == pytest.approx(1.0) and rows["random", d]["spearman"] == pytest.approx(1.0)
    assert rows["random" + REDRAWN, 0]["spearman"] == pytest.approx(1.0)
    assert abs(rows["random" + REDRAWN, 4]["spearman"]) < 0.5
    assert result["verdicts"]["oracle"] == result["verdicts"]["random"] == "fails (maps barely change)"
    assert rows["fastrm", 0]["spearman"] == pytest.approx(1.0) and rows["fastrm", 1]["spearman"] < 1.0
    saved = json.loads((tmp_path / "sanity" / "sanity.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(result["rows"]))
    assert resummarise(tmp_path / "sanity") == saved  # the per-sample values give back every row and verdict
    assert sorted(p.name for p in (tmp_path / "sanity").iterdir()) == ["sanity.csv", "sanity.json", "sanity.pdf", "sanity.png"]


def test_cli_writes_rows_refuses_unknown_methods_and_other_configs(tiny_llava_dir, world_root, tmp_path):
    out = tmp_path / "out"
    base = ["sanity", "--model", str(tiny_llava_dir), "--data-root", str(world_root), "--limit", "2",
            "--max-new-tokens", "2", "--out", str(out)]
    runner = CliRunner()
    bad = runner.invoke(app, [*base, "--methods", "chefr,random"])
    assert bad.exit_code == 2 and "chefer" in bad.output and not out.exists()
    result = runner.invoke(app, [*base, "--methods", "random,rollout"])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "sanity.json").read_text())
    assert saved["config"]["methods"] == ["random", "rollout"] and saved["config"]["depths"] == [0, 1, 2]
    assert [(r["method"], r["depth"]) for r in saved["rows"]] == [
        (m, d) for m in ("random", "random" + REDRAWN, "rollout") for d in (0, 1, 2)]
    assert all(r["n"] == 2 for r in saved["rows"])
    assert (out / "sanity.csv").read_text().count("\n") == 1 + len(saved["rows"])
    again = runner.invoke(app, [*base, "--methods", "random,rollout"])
    assert again.exit_code == 0 and "already holds" in again.output
    other = runner.invoke(app, [*base, "--methods", "random"])
    assert other.exit_code == 2 and "--overwrite" in other.output
    assert json.loads((out / "sanity.json").read_text()) == saved
    from fastrm_bench.report import make_report

    report = make_report([out], tmp_path / "report", "test")
    assert ("Sanity check (vqav2)", ["sanity.png", "sanity.pdf", "sanity.md"]) in report.made
    assert "| rollout |" in (tmp_path / "report" / "sanity.md").read_text()


def test_a_check_of_some_methods_is_extended_with_the_others_keeping_its_numbers(tiny_llava_dir, world_root, tmp_path):
    """More methods on the same check: only the new ones are computed; the old rows are the folder's, and the new
    method's rows equal those of a check that ran it from the start."""
    base = ["sanity", "--model", str(tiny_llava_dir), "--data-root", str(world_root), "--limit", "2", "--max-new-tokens", "2"]
    runner = CliRunner()
    first = runner.invoke(app, [*base, "--out", str(tmp_path / "a"), "--methods", "rollout"])
    assert first.exit_code == 0, first.output
    before = json.loads((tmp_path / "a" / "sanity.json").read_text())
    more = runner.invoke(app, [*base, "--out", str(tmp_path / "a"), "--methods", "rollout,attention"])
    assert more.exit_code == 0 and "adding the others" in more.output, more.output
    extended = json.loads((tmp_path / "a" / "sanity.json").read_text())
    assert extended["config"]["methods"] == ["rollout", "attention"]
    assert extended["samples"]["rollout"] == before["samples"]["rollout"]
    alone = runner.invoke(app, [*base, "--out", str(tmp_path / "b"), "--methods", "rollout,attention"])
    assert alone.exit_code == 0, alone.output
    fresh = json.loads((tmp_path / "b" / "sanity.json").read_text())
    assert extended["rows"] == fresh["rows"] and extended["verdicts"] == fresh["verdicts"]
