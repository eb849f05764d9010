"""`fastrm-bench gpu-table --dry-run`: the real-scale table's code path on tiny widths, its budget and its resume."""

from __future__ import annotations

import itertools
import time

import pytest
import torch
from typer.testing import CliRunner

from fastrm_bench.cli import app
from fastrm_bench.gpu_shapes import GEMMA3_4B, LLAVA_15_7B, SHAPES, config_and_processor
from fastrm_bench.gpu_table import FIGURE, MEASURES, ROW_FIELDS, ROWS, TABLE, Runner, Settings, main, read_rows, row_key

LENGTHS = (2, 3)
EXPECTED = len(SHAPES) * len(MEASURES) * len(LENGTHS)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: a second intra-op thread only adds contention on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _keys(rows: list[dict]) -> list[tuple]:
    return [row_key(r) for r in rows]


def test_dry_run_writes_every_field_prints_the_plan_first_and_skips_what_is_done(tmp_path):
    args = ["gpu-table", "--dry-run", "--out", str(tmp_path), "--max-new-tokens", ",".join(map(str, LENGTHS)), "--repeats", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    first_row = next(i for i, line in enumerate(lines) if " tokens: " in line)
    before = "\n".join(lines[:first_row])
    assert "measures per model and length" in before and "chefer (eager)" in before
    assert "estimate:" in before and "quick first measurement" in before
    for shape in SHAPES:
        assert shape.name in before
    rows = read_rows(tmp_path)
    assert len(rows) == EXPECTED and len(set(_keys(rows))) == EXPECTED
    for row in rows:
        missing = [f for f in ROW_FIELDS if f not in row]
        assert not missing, (row["method"], missing)
        assert row["dry_run"] is True and row["repeats"] == 2
        assert row["seconds_min"] <= row["seconds"] <= row["seconds_max"]
        assert row["generation_seconds"] > 0 and row["image_tokens"] > 0
    assert {r["attn_implementation"] for r in rows if r["method"] == "chefer"} == {"sdpa", "eager"}
    assert all("overhead_share" in r for r in rows if r["method"] == "fastrm")
    table = (tmp_path / TABLE).read_text()
    assert all(s.name in table for s in SHAPES) and "DRY RUN" in table
    assert (tmp_path / FIGURE).stat().st_size > 0
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "every row is already measured" in again.output
    assert len(read_rows(tmp_path)) == EXPECTED


def test_a_tiny_budget_stops_early_says_what_is_left_and_the_next_call_completes(tmp_path):
    ticks = itertools.count(step=1.0)  # every look at the clock costs a second: the budget runs out after a few rows
    lines: list[str] = []
    settings = Settings(out=tmp_path, budget_seconds=25.0, lengths=LENGTHS, repeats=1, dry_run=True)
    outcome = Runner(settings, lines.append, clock=lambda: next(ticks)).run()
    partial = read_rows(tmp_path)
    assert 0 < len(partial) < EXPECTED and len(outcome.left) == EXPECTED - len(partial)
    stop = [line for line in lines if line.startswith("stopped before")]
    assert stop and f"{EXPECTED - len(partial)} of {EXPECTED} rows left" in stop[0] and "resumes" in stop[0]
    assert (tmp_path / TABLE).is_file() and (tmp_path / FIGURE).is_file()  # what was measured is written
    resumed = main(tmp_path, 5.0, True, ",".join(map(str, LENGTHS)), 1, None, None, log=lines.append)
    rows = read_rows(tmp_path)
    assert not resumed.left and len(resumed.measured) == EXPECTED - len(partial)
    assert len(rows) == EXPECTED and len(set(_keys(rows))) == EXPECTED
    assert _keys(rows)[: len(partial)] == _keys(partial)


class Ticks:
    """A clock that moves one second each time it is read: every piece of work, measured or planned, costs
    seconds of this clock, so a budget is spent the same way on any machine, however loaded."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.mark.parametrize(("lengths", "repeats", "budget_s"), [((2, 4), 1, 60.0), ((2, 4, 8), 2, 150.0), ((3,), 3, 400.0)])
def test_dry_runs_of_different_sizes_end_within_their_budget(tmp_path, lengths, repeats, budget_s):
    clock, lines = Ticks(), []
    settings = Settings(out=tmp_path, budget_seconds=budget_s, lengths=lengths, repeats=repeats, dry_run=True)
    outcome = Runner(settings, lines.append, clock=clock).run()
    assert clock.now <= budget_s, (clock.now, lines[-1])
    assert len(read_rows(tmp_path)) == len(outcome.measured) > 0
    assert lines[-1].startswith(("stopped before", "done:"))


def test_a_dry_run_ends_within_its_budget_on_the_real_clock(tmp_path):
    lines: list[str] = []
    start = time.perf_counter()
    main(tmp_path, 0.5, True, "2", 1, [LLAVA_15_7B.name], None, log=lines.append)
    assert time.perf_counter() - start <= 30
    assert lines[-1].startswith(("stopped before", "done:"))


def test_real_shapes_give_the_real_image_token_counts():
    from PIL import Image

    from fastrm_bench.models.families import family_for

    for shape, expected in ((LLAVA_15_7B, (LLAVA_15_7B.real.vision_image // LLAVA_15_7B.real.patch) ** 2),
                            (GEMMA3_4B, (GEMMA3_4B.real.vision_image // GEMMA3_4B.real.patch // GEMMA3_4B.real.pool) ** 2)):
        config, processor = config_and_processor(shape, dry_run=False)
        family = family_for(config.model_type)
        image = Image.new("RGB", shape.real.image)
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = processor(images=family.batch_images([[image]]), text=[text], return_tensors="pt")["input_ids"]
        assert int((ids == family.image_token_id(config)).sum()) == expected
        assert config.get_text_config().hidden_size == shape.real.hidden


def test_the_real_table_refuses_a_cpu_unless_asked(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = CliRunner().invoke(app, ["gpu-table", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "--dry-run" in result.output
    assert not (tmp_path / ROWS).exists()


def test_a_failing_method_is_a_row_with_its_error_and_the_others_are_measured(tmp_path, monkeypatch):
    from fastrm_bench.explainers.tam import TokenActivationMap as TAM

    def broken(self, adapter, inputs, generation):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(TAM, "explain", broken)
    lines: list[str] = []
    main(tmp_path, 5.0, True, "2", 1, [LLAVA_15_7B.name], None, log=lines.append)
    rows = read_rows(tmp_path)
    failed = [r for r in rows if r.get("error")]
    assert [r["method"] for r in failed] == ["tam"] and "out of memory" in failed[0]["error"]
    assert len(rows) == len(MEASURES) and all(r["seconds"] is not None for r in rows if r is not failed[0])
    assert "failed (RuntimeError: CUDA out of memory" in (tmp_path / TABLE).read_text()
    again: list[str] = []
    main(tmp_path, 5.0, True, "2", 1, [LLAVA_15_7B.name], None, log=again.append)
    assert any("every row is already measured" in line for line in again)
