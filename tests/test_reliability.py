"""Fault injection: bad arguments, bad data, bad checkpoints, kills, signals, a full disk and a second writer.

Every case ends in one of two ways: a clear one-line refusal that leaves the run directory as it
was, or a run directory that ``--resume`` completes to exactly the files of an undisturbed run.
Kills use the documented test hook (`rundir.TEST_HOOK_ENV`), which makes the process SIGKILL or
SIGSTOP itself at a named point; the undisturbed runs and the resumes run in this process.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fastrm_bench import rundir
from fastrm_bench.cli import app
from fastrm_bench.fastrm.model import FastRM
from fastrm_bench.maps_io import load_sample_maps
from fastrm_bench.rundir import TEST_HOOK_ENV, RunDirError, RunLockedError
from fastrm_bench.runner import RunConfig, run
from fastrm_bench.specs import SPEC_PATH_ENV

LIMIT = 4
#: two removal fractions instead of ten: runs that never meet a command line (which cannot set them) cost a fifth
CHEAP = {"fractions": [0.0, 0.5]}
#: what depends on the machine's moment (per sample, and the run's aggregates of it)
TIMINGS = ("map_seconds", "generation_seconds", "peak_memory_bytes", "peak_memory_mb")


def quiet(*_: object) -> None:
    return None


@pytest.fixture(scope="module")
def spec_dir(tmp_path_factory, tiny_llava_dir) -> Path:
    """A method spec of the fastrm method with an (untrained) proxy of the tiny model's hidden size."""
    from transformers import AutoConfig

    root = tmp_path_factory.mktemp("specs")
    torch.manual_seed(0)
    hidden = AutoConfig.from_pretrained(tiny_llava_dir).text_config.hidden_size
    proxy = FastRM(hidden).save_pretrained(root / "proxy")
    (root / "methods").mkdir()
    spec = f"name: fastrm-tiny\nimplementation: fastrm\nparams: {{checkpoint: {proxy}}}\n"
    (root / "methods" / "fastrm-tiny.yaml").write_text(spec)
    return root


@pytest.fixture(autouse=True)
def _specs(spec_dir, monkeypatch) -> None:
    monkeypatch.setenv(SPEC_PATH_ENV, str(spec_dir))


def config(world_root, tiny_llava_dir, out, method: str = "random", **kw) -> RunConfig:
    """The configuration `cli_args` spells on the command line (so in-process and CLI runs are the same run)."""
    base = dict(method=method, task="vqav2", model=str(tiny_llava_dir), limit=LIMIT, seed=0, output_dir=str(out),
                data_root=str(world_root), max_new_tokens=2, device="cpu")
    return RunConfig(**{**base, **kw})


def cli_args(world_root, tiny_llava_dir, out, method: str = "random") -> list[str]:
    return ["run", "--method", method, "--task", "vqav2", "--model", str(tiny_llava_dir), "--limit", str(LIMIT),
            "--data-root", str(world_root), "--max-new-tokens", "2", "--device", "cpu", "--output-dir", str(out)]


def comparable_outputs(out: Path) -> tuple[list, dict, np.ndarray, list]:
    """Samples, results and maps of a finished run, without what depends on the machine's moment."""
    rows = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    for r in rows:
        for key in TIMINGS:
            r.pop(key, None)
    results = json.loads((out / "results.json").read_text())
    for metrics in (results["metrics"], results.get("image_dependent", {}).get("metrics", {})):
        for key in TIMINGS:
            metrics.pop(key, None)
    maps = load_sample_maps(out / "maps.npz")
    assert not (out / "maps").exists()
    return rows, results, np.concatenate(list(maps.values())) if maps else np.zeros(0), list(maps)


def assert_same_run(a: Path, b: Path) -> None:
    ra, rb = comparable_outputs(a), comparable_outputs(b)
    assert ra[0] == rb[0] and ra[1] == rb[1] and ra[3] == rb[3]
    np.testing.assert_array_equal(ra[2], rb[2])


@pytest.fixture(scope="module")
def reference(tmp_path_factory, world_root, tiny_llava_dir, spec_dir):
    """Undisturbed runs, one per method, made on first use."""
    made: dict[str, Path] = {}

    def get(method: str, cheap: bool = False) -> Path:
        key = f"{method}-cheap" if cheap else method
        if key not in made:
            out = tmp_path_factory.mktemp("reference") / key
            run(config(world_root, tiny_llava_dir, out, method, **(CHEAP if cheap else {})), log=quiet)
            made[key] = out
        return made[key]

    return get


def snapshot(folder: Path) -> dict[str, str]:
    """Every file of a run directory but the lock (whose holder a run records) by content hash."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != rundir.LOCK}


def fill_disk_at(monkeypatch, nth: int) -> None:
    """The ``nth`` line a run appends gets half written, then the disk is full (ENOSPC)."""
    real, calls = rundir._append_line, []

    def full(fh, text: str) -> None:
        calls.append(text)
        if len(calls) == nth:
            fh.write(text[: len(text) // 2])
            fh.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fh, text)

    monkeypatch.setattr(rundir, "_append_line", full)


def interrupted_run(monkeypatch, cfg: RunConfig, lines: int = 2) -> Path:
    """A run stopped by a full disk while writing line ``lines + 1``: a torn line and a map without its line."""
    with monkeypatch.context() as patch:
        fill_disk_at(patch, lines + 1)
        with pytest.raises(RunDirError, match=r"No space left on device.*--resume"):
            run(cfg, log=quiet)
    return Path(cfg.output_dir)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a run in a child process, with this process's thread count: CPU kernels round
    differently with the number of threads, and a killed child's samples are compared with in-process ones."""
    return {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), **extra}


def cli_process(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "fastrm_bench.cli", *args]


def stop_and_wait(proc: subprocess.Popen) -> None:
    """Wait until the child has stopped itself at its hook (SIGSTOP)."""
    _, status = os.waitpid(proc.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), proc.communicate()


# ---------------------------------------------------------------- arguments and specs


def test_invalid_arguments_leave_an_existing_run_untouched_and_create_nothing(world_root, tiny_llava_dir, tmp_path):
    finished = tmp_path / "finished"
    run(config(world_root, tiny_llava_dir, finished, **CHEAP), log=quiet)
    before = snapshot(finished)
    runner = CliRunner()
    args = cli_args(world_root, tiny_llava_dir, finished, "chefer")
    result = runner.invoke(app, [*args, "--limit", "-3"])
    assert result.exit_code == 2 and "--limit must be a positive number" in result.output
    assert snapshot(finished) == before
    fresh = tmp_path / "fresh"
    for bad in (["--limit", "0"], ["--max-new-tokens", "0"], ["--device", "nonsense"]):
        result = runner.invoke(app, [*cli_args(world_root, tiny_llava_dir, fresh), *bad])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert not fresh.exists()


def test_typo_in_a_spec_param_is_one_line_before_anything_is_written(world_root, tiny_llava_dir, tmp_path, monkeypatch):
    specs = tmp_path / "specs"
    (specs / "methods").mkdir(parents=True)
    (specs / "methods" / "chefer-8.yaml").write_text("name: chefer-8\nimplementation: chefer\nparams: {chunk: 8}\n")
    monkeypatch.setenv(SPEC_PATH_ENV, str(specs))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, cli_args(world_root, tiny_llava_dir, out, "chefer-8"))
    assert result.exit_code == 2, result.output
    assert "chefer-8.yaml: unknown parameter(s) 'chunk'" in result.output and "Did you mean 'chunk_size'" in result.output
    assert "Traceback" not in result.output and not out.exists()


# ---------------------------------------------------------------- an existing run directory


def test_another_configuration_is_refused_naming_the_fields(world_root, tiny_llava_dir, tmp_path):
    out = tmp_path / "run"
    run(config(world_root, tiny_llava_dir, out, **CHEAP), log=quiet)
    before = snapshot(out)
    with pytest.raises(RunDirError, match="another configuration") as err:
        run(config(world_root, tiny_llava_dir, out, "chefer", limit=3, **CHEAP), log=quiet)
    assert "method_spec.name: 'random' there, 'chefer' here" in str(err.value)
    assert "run.limit: 4 there, 3 here" in str(err.value)
    with pytest.raises(RunDirError, match="another configuration"):
        run(config(world_root, tiny_llava_dir, out, "chefer", **CHEAP), resume=True, log=quiet)
    assert snapshot(out) == before


def test_same_command_twice_is_refused_and_overwrite_starts_again(world_root, tiny_llava_dir, tmp_path):
    out = tmp_path / "run"
    run(config(world_root, tiny_llava_dir, out, **CHEAP), log=quiet)
    before = snapshot(out)
    with pytest.raises(RunDirError, match="holds a finished run of this configuration"):
        run(config(world_root, tiny_llava_dir, out, **CHEAP), log=quiet)
    assert snapshot(out) == before
    again = run(config(world_root, tiny_llava_dir, out, **CHEAP), resume=True, log=quiet)  # resume of a finished run: a report
    assert again["n"] == LIMIT and snapshot(out) == before
    result = run(config(world_root, tiny_llava_dir, out, limit=2, **CHEAP), overwrite=True, log=quiet)
    assert result["n"] == 2 and json.loads((out / "config.json").read_text())["run"]["limit"] == 2
    assert len((out / "samples.jsonl").read_text().splitlines()) == 2


def test_a_moved_run_directory_resumes_whatever_the_path_spelling(world_root, tiny_llava_dir, tmp_path, monkeypatch,
                                                                  reference):
    first = interrupted_run(monkeypatch, config(world_root, tiny_llava_dir, tmp_path / "k2", **CHEAP))
    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    shutil.move(first, moved)
    monkeypatch.chdir(tmp_path / "elsewhere")
    run(config(world_root, tiny_llava_dir, "./renamed/", **CHEAP), resume=True, log=quiet)
    assert_same_run(moved, reference("random", cheap=True))


def test_a_run_directory_of_an_older_version_is_never_mixed_into(world_root, tiny_llava_dir, tmp_path):
    from fastrm_bench.leaderboard import leaderboard

    out = tmp_path / "runs" / "old"
    run(config(world_root, tiny_llava_dir, out, **CHEAP), log=quiet)
    old = json.loads((out / "config.json").read_text())
    for key in ("format", "fingerprint"):  # what the previous layout did not write
        old.pop(key)
    old["versions"]["fastrm_bench"] = "0.0.1"
    (out / "config.json").write_text(json.dumps(old))
    before = snapshot(out)
    for resume in (False, True):
        with pytest.raises(RunDirError, match=r"written by fastrm-bench 0\.0\.1 \(run-directory format 1\)"):
            run(config(world_root, tiny_llava_dir, out, **CHEAP), resume=resume, log=quiet)
    assert snapshot(out) == before
    assert leaderboard(tmp_path / "runs")["n"].tolist() == [LIMIT]  # still readable as a finished run


# ---------------------------------------------------------------- damaged writes


def test_disk_full_while_writing_is_one_line_and_resume_completes_the_run(world_root, tiny_llava_dir, tmp_path,
                                                                          monkeypatch, reference):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        fill_disk_at(patch, 2)
        result = CliRunner().invoke(app, cli_args(world_root, tiny_llava_dir, out))
    assert result.exit_code == 2 and "No space left on device" in result.output and "--resume" in result.output
    assert "Traceback" not in result.output
    run(config(world_root, tiny_llava_dir, out), resume=True, log=quiet)
    assert_same_run(out, reference("random"))


def test_a_torn_samples_line_is_dropped_and_its_sample_redone(world_root, tiny_llava_dir, tmp_path, monkeypatch, reference):
    out = interrupted_run(monkeypatch, config(world_root, tiny_llava_dir, tmp_path / "run", **CHEAP))
    text = (out / "samples.jsonl").read_text()
    assert text.count("\n") == 2 and not text.endswith("\n")  # the third line is cut
    run(config(world_root, tiny_llava_dir, out, **CHEAP), resume=True, log=quiet)
    assert_same_run(out, reference("random", cheap=True))


def test_maps_without_their_line_are_redone(world_root, tiny_llava_dir, tmp_path, monkeypatch, reference):
    out = interrupted_run(monkeypatch, config(world_root, tiny_llava_dir, tmp_path / "run", **CHEAP))
    assert (out / "maps" / "000002.npz").exists()  # saved before the line that the full disk cut
    with np.load(out / "maps" / "000000.npz") as saved:
        shapes = {key: saved[key].shape for key in saved.files}
    for name in ("000002.npz", "000003.npz"):  # wrong maps: a resume must not take them for finished work
        np.savez(out / "maps" / name, **{key: np.full(shape, -1.0, dtype=np.float32) for key, shape in shapes.items()})
    run(config(world_root, tiny_llava_dir, out, **CHEAP), resume=True, log=quiet)
    assert_same_run(out, reference("random", cheap=True))


# ---------------------------------------------------------------- bad data


def _broken_world(world_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "broken"
    shutil.copytree(world_root, root)
    return root


def test_missing_and_corrupt_images_are_skipped_recorded_and_counted(world_root, tiny_llava_dir, tmp_path, monkeypatch):
    from fastrm_bench.builders import create_task

    root = _broken_world(world_root, tmp_path)
    task, _ = create_task("vqav2", data_root=str(root))
    chosen = task.select(LIMIT, 0)
    chosen[0].image.unlink()
    chosen[2].image.write_bytes(b"not an image")
    out = tmp_path / "run"
    cfg = config(root, tiny_llava_dir, out)
    interrupted_run(monkeypatch, cfg, lines=3)  # lines: skipped 0, sample 1, skipped 2; the full disk cuts sample 3
    skipped = [json.loads(x) for x in (out / "skipped.jsonl").read_text().splitlines()]
    assert [s["id"] for s in skipped] == [chosen[0].id, chosen[2].id]
    result = CliRunner().invoke(app, [*cli_args(root, tiny_llava_dir, out), "--resume"])
    assert result.exit_code == 0, result.output
    assert f"({LIMIT - 2} samples, 2 skipped (see skipped.jsonl))" in result.output
    skipped = [json.loads(x) for x in (out / "skipped.jsonl").read_text().splitlines()]  # neither retried nor lost
    assert [s["id"] for s in skipped] == [chosen[0].id, chosen[2].id]
    assert "is missing" in skipped[0]["reason"] and "cannot be decoded" in skipped[1]["reason"]
    results = json.loads((out / "results.json").read_text())
    assert results["n"] == LIMIT - 2 and results["n_skipped"] == 2
    assert [r["id"] for r in map(json.loads, (out / "samples.jsonl").read_text().splitlines())] == \
        [chosen[1].id, chosen[3].id]
    failing = CliRunner().invoke(app, [*cli_args(root, tiny_llava_dir, tmp_path / "strict"), "--on-error", "fail"])
    assert failing.exit_code == 2 and f"question {chosen[0].id}" in failing.output and str(chosen[0].image) in failing.output
    assert "Traceback" not in failing.output


def test_an_unparsable_record_is_skipped_with_its_place_in_the_file(world_root, tiny_llava_dir, tmp_path):
    from fastrm_bench.builders import create_task

    root = _broken_world(world_root, tmp_path)
    pope = root / "pope" / "coco_pope_random.json"
    lines = pope.read_text().splitlines()
    task, _ = create_task("pope-random", data_root=str(root))
    victim = task.select(LIMIT, 0)[1]
    number = next(i for i, line in enumerate(lines) if f"random/{json.loads(line)['question_id']}" == victim.id)
    lines[number] = '{"question_id": 1, "image": '
    pope.write_text("\n".join(lines) + "\n")
    result = run(config(root, tiny_llava_dir, tmp_path / "run", task="pope-random", **CHEAP), log=quiet)
    assert result["n"] == LIMIT - 1 and result["n_skipped"] == 1
    (row,) = [json.loads(x) for x in (tmp_path / "run" / "skipped.jsonl").read_text().splitlines()]
    assert row["id"] == f"random/coco_pope_random.json:{number + 1}" and "malformed JSON line" in row["reason"]


# ---------------------------------------------------------------- checkpoints


def _cli_fails_with(args: list[str], *fragments: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def test_every_checkpoint_problem_is_one_line_naming_the_file_and_the_fix(world_root, tiny_llava_dir, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    hidden = json.loads((tiny_llava_dir / "config.json").read_text())["text_config"]["hidden_size"]
    specs = tmp_path / "specs"
    (specs / "methods").mkdir(parents=True)
    monkeypatch.setenv(SPEC_PATH_ENV, str(specs))
    out = tmp_path / "run"

    def fastrm_with(folder: Path) -> list[str]:
        (specs / "methods" / "fastrm-bad.yaml").write_text(f"name: fastrm-bad\nimplementation: fastrm\n"
                                                           f"params: {{checkpoint: {folder}}}\n")
        return cli_args(world_root, tiny_llava_dir, out, "fastrm-bad")

    _cli_fails_with(fastrm_with(tmp_path / "nowhere"), f"{tmp_path / 'nowhere'} does not exist", "fastrm-bench distill")
    pickled = FastRM(hidden).save_pretrained(tmp_path / "pickled")
    torch.save(FastRM(hidden).state_dict(), pickled / "model.safetensors")
    _cli_fails_with(fastrm_with(pickled), f"{pickled / 'model.safetensors'} is a pickle", "re-save")
    narrow = FastRM(hidden * 2).save_pretrained(tmp_path / "narrow")
    _cli_fails_with(fastrm_with(narrow), "hidden size", str(hidden * 2), str(hidden))
    mismatched = FastRM(hidden).save_pretrained(tmp_path / "mismatched")
    FastRM(hidden * 2).save_pretrained(tmp_path / "wide")
    shutil.copy(tmp_path / "wide" / "model.safetensors", mismatched / "model.safetensors")
    _cli_fails_with(fastrm_with(mismatched), f"{mismatched / 'model.safetensors'} does not match", "saved together")
    foreign = FastRM(hidden).save_pretrained(tmp_path / "foreign")
    save_file({"encoder.weight": torch.zeros(hidden, hidden)}, str(foreign / "model.safetensors"))
    _cli_fails_with(fastrm_with(foreign), "weights of another model", "fastrm-bench distill")

    def model_folder(name: str) -> Path:
        return Path(shutil.copytree(tiny_llava_dir, tmp_path / name))

    def llava_args(folder: Path) -> list[str]:
        args = cli_args(world_root, tiny_llava_dir, out)
        args[args.index("--model") + 1] = str(folder)
        return args

    pickled_llava = model_folder("pickled-llava")
    torch.save({"x": torch.zeros(2)}, pickled_llava / "model.safetensors")
    _cli_fails_with(llava_args(pickled_llava), f"{pickled_llava / 'model.safetensors'} is a pickle")
    cut = model_folder("cut-llava")
    data = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: len(data) // 2])
    _cli_fails_with(llava_args(cut), f"{cut / 'model.safetensors'} is cut short")
    disagree = model_folder("disagree-llava")
    cfg = json.loads((disagree / "config.json").read_text())
    cfg["text_config"]["intermediate_size"] += 8
    (disagree / "config.json").write_text(json.dumps(cfg))
    _cli_fails_with(llava_args(disagree), "the weights do not match config.json", "save_pretrained")
    other = model_folder("other-llava")
    save_file({"encoder.weight": torch.zeros(2, 2)}, str(other / "model.safetensors"))
    _cli_fails_with(llava_args(other), "weights of another model")
    assert not out.exists()


# ---------------------------------------------------------------- randomness


def test_random_maps_depend_on_the_sample_not_on_the_order(world_root, tiny_llava_dir, tmp_path):
    by_limit = {}
    for limit in (LIMIT, LIMIT + 1):
        out = tmp_path / str(limit)
        run(config(world_root, tiny_llava_dir, out, limit=limit, **CHEAP), log=quiet)
        rows = {json.loads(x)["id"]: json.loads(x)["curves"] for x in (out / "samples.jsonl").read_text().splitlines()}
        by_limit[limit] = (load_sample_maps(out / "maps.npz"), rows)
    (maps_a, curves_a), (maps_b, curves_b) = by_limit[LIMIT], by_limit[LIMIT + 1]
    common = sorted(set(maps_a) & set(maps_b))
    assert len(common) >= LIMIT - 1
    for sample_id in common:
        np.testing.assert_array_equal(maps_a[sample_id], maps_b[sample_id])
        assert curves_a[sample_id] == curves_b[sample_id]
    first, second = common[:2]
    assert not np.array_equal(maps_a[first], maps_a[second])


# ---------------------------------------------------------------- processes: kill -9, SIGTERM, a second writer

KILL_CHAINS = {  # each method's run is killed at these points in turn (one process each), then resumed
    "random": ["config", "line@2", "cleanup"],
    "chefer": ["map@2", "maps.npz"],
    "fastrm-tiny": ["line@3", "results.json"],
}


@pytest.mark.parametrize("method", KILL_CHAINS)
def test_kill9_at_named_points_then_resume_equals_an_undisturbed_run(method, world_root, tiny_llava_dir, tmp_path,
                                                                     reference):
    out = tmp_path / "run"
    for i, point in enumerate(KILL_CHAINS[method]):
        args = [*cli_args(world_root, tiny_llava_dir, out, method), *(["--resume"] if i else [])]
        proc = subprocess.run(cli_process(args), env=subprocess_env(**{TEST_HOOK_ENV: f"{point}:KILL"}),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == -signal.SIGKILL, (point, proc.stderr[-2000:])
    run(config(world_root, tiny_llava_dir, out, method), resume=True, log=quiet)
    assert_same_run(out, reference(method))


def test_sigterm_stops_a_run_cleanly_and_resume_completes_it(world_root, tiny_llava_dir, tmp_path, reference):
    out = tmp_path / "run"
    proc = subprocess.Popen(cli_process(cli_args(world_root, tiny_llava_dir, out)),
                            env=subprocess_env(**{TEST_HOOK_ENV: "map@2:STOP"}), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    stop_and_wait(proc)
    os.kill(proc.pid, signal.SIGTERM)
    os.kill(proc.pid, signal.SIGCONT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "stopped by SIGTERM" in stderr and "continue with --resume" in stderr and "Traceback" not in stderr
    run(config(world_root, tiny_llava_dir, out), resume=True, log=quiet)
    assert_same_run(out, reference("random"))


def test_a_second_writer_is_refused_and_the_first_finishes_undisturbed(world_root, tiny_llava_dir, tmp_path, reference):
    out = tmp_path / "run"
    proc = subprocess.Popen(cli_process(cli_args(world_root, tiny_llava_dir, out)),
                            env=subprocess_env(**{TEST_HOOK_ENV: "line@2:STOP"}), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        stop_and_wait(proc)  # stopped in the middle of writing its second line, holding the lock
        holder = rf"pid {proc.pid} on .*cli\.py run --method random"
        for method, resume in (("random", True), ("random", False), ("chefer", False)):
            with pytest.raises(RunLockedError, match=holder):
                run(config(world_root, tiny_llava_dir, out, method), resume=resume, log=quiet)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-2000:]
    assert_same_run(out, reference("random"))
