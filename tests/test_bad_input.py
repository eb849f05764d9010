"""Bad input never ends in a traceback: a malformed entry is a counted skip (or one line under --on-error fail),
a broken spec, a torn file, a failing method, a wrong option or path is one line naming what and where."""

from __future__ import annotations

import copy
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from fastrm_bench.builders import create_task
from fastrm_bench.cli import app
from fastrm_bench.data_errors import SampleDataError, UnparsableRecordError
from fastrm_bench.rundir import TEST_HOOK_ENV
from fastrm_bench.runner import RunConfig, run
from fastrm_bench.specs import SPEC_PATH_ENV, resolve

LIMIT = 4
CHEAP = {"fractions": [0.0, 0.5]}
VQA_QUESTIONS = "vqav2/v2_OpenEnded_mscoco_val2014_questions.json"
VQA_ANNOTATIONS = "vqav2/v2_mscoco_val2014_annotations.json"


def quiet(*_: object) -> None:
    return None


def copy_world(world_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "world"
    shutil.copytree(world_root, root)
    return root


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def cli_args(root: Path, model: Path, out: Path, task: str = "vqav2", method: str = "random") -> list[str]:
    return ["run", "--method", method, "--task", task, "--model", str(model), "--limit", str(LIMIT), "--data-root",
            str(root), "--max-new-tokens", "2", "--device", "cpu", "--output-dir", str(out)]


def config(root: Path, model: Path, out: Path, **kw: Any) -> RunConfig:
    base = dict(method="random", task="vqav2", model=str(model), limit=LIMIT, seed=0, output_dir=str(out),
                data_root=str(root), max_new_tokens=2, device="cpu", **CHEAP)
    return RunConfig(**{**base, **kw})


def one_line_failure(result) -> str:
    """The failure's message: the output's last line (progress bars and log lines come before it), no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    return result.output.replace("\r", "\n").strip().splitlines()[-1]


# ---------------------------------------------------------------- VQAv2 entries


def _question(data: dict, qid: int) -> dict:
    return next(q for q in data["questions"] if q.get("question_id") == qid)


def _annotation(data: dict, qid: int) -> dict:
    return next(a for a in data["annotations"] if a.get("question_id") == qid)


VQA_CASES = {  # name: (file, change of the victim's entry, fragments of the reason besides the file)
    "no question_id": (VQA_QUESTIONS, lambda q: q.pop("question_id"), ["lacks 'question_id'"]),
    "answers a string": (VQA_ANNOTATIONS, lambda a: a.update(answers="two"), ["'answers' 'two' (a string)", "a list"]),
    "image_id not a number": (VQA_QUESTIONS, lambda q: q.update(image_id="abc"), ["'image_id' 'abc'", "an integer"]),
    "no question": (VQA_QUESTIONS, lambda q: q.pop("question"), ["lacks 'question'"]),
    "question a number": (VQA_QUESTIONS, lambda q: q.update(question=12345), ["'question' 12345 (an integer)"]),
    "an answer without text": (VQA_ANNOTATIONS, lambda a: a["answers"][3].pop("answer"), ["answer 4", "'answer'"]),
}


@pytest.mark.parametrize("case", VQA_CASES)
def test_a_malformed_vqav2_entry_is_a_placeholder_naming_file_entry_and_problem(case, world_root, tmp_path):
    root = copy_world(world_root, tmp_path)
    clean, _ = create_task("vqav2", data_root=str(root))
    victim = clean.records[2]
    file, change, fragments = VQA_CASES[case]
    pick = _annotation if file == VQA_ANNOTATIONS else _question
    edit_json(root / file, lambda data: change(pick(data, int(victim.id))))
    task, _ = create_task("vqav2", data_root=str(root))
    broken = [r for r in task.records if r.error is not None]
    assert len(broken) == 1 and len(task.records) == len(clean.records)
    (record,) = broken
    assert str(root / file) in record.error and "\n" not in record.error
    assert victim.id in record.error or record.id.startswith(Path(file).name + "#")
    for fragment in fragments:
        assert fragment in record.error, record.error
    with pytest.raises(UnparsableRecordError, match="question"):
        task.sample(record)
    others = [r for r in task.records if r.error is None]
    assert [r.id for r in others] == [r.id for r in clean.records if r.id != victim.id]


def test_a_file_of_the_wrong_shape_is_one_line_naming_it(world_root, tmp_path):
    root = copy_world(world_root, tmp_path)
    (root / VQA_QUESTIONS).write_text(json.dumps({"questions": {"not": "a list"}}))
    task, _ = create_task("vqav2", data_root=str(root))
    with pytest.raises(ValueError, match=r"questions.json: expected a list, found an object"):
        _ = task.records
    (root / VQA_QUESTIONS).write_text("[1, 2]")
    task, _ = create_task("vqav2", data_root=str(root))
    with pytest.raises(ValueError, match=r"questions.json: expected an object with 'questions'"):
        _ = task.records


# ---------------------------------------------------------------- GQA, POPE, describe entries


def test_malformed_gqa_and_pope_entries_are_placeholders_naming_the_problem(world_root, tmp_path):
    root = copy_world(world_root, tmp_path)
    gqa_file = root / "gqa" / "val_balanced_questions.json"
    ids = sorted(json.loads(gqa_file.read_text()), key=lambda k: (len(k), k))
    edit_json(gqa_file, lambda data: (data[ids[0]].update(answer=3), data.update({ids[1]: "junk"})))
    task, _ = create_task("gqa", data_root=str(root))
    errors = {r.id: r.error for r in task.records if r.error}
    assert set(errors) == {ids[0], ids[1]}
    assert "'answer' 3 (an integer), expected a string" in errors[ids[0]] and str(gqa_file) in errors[ids[0]]
    assert "is a string, not an object" in errors[ids[1]]
    pope_file = root / "pope" / "coco_pope_random.json"
    lines = pope_file.read_text().splitlines()
    first = json.loads(lines[0])
    lines[0] = json.dumps({**first, "label": True})
    lines[1] = json.dumps({**json.loads(lines[1]), "question_id": first["question_id"]})
    pope_file.write_text("\n".join(lines) + "\n")
    task, _ = create_task("pope-random", data_root=str(root))
    errors = [r.error for r in task.records if r.error]
    assert len(errors) == 2 and all(str(pope_file) in e for e in errors)
    assert "'label' True (a boolean), expected a string" in errors[0] and f"{pope_file}:1" in errors[0]
    assert f"repeats question_id {first['question_id']}" in errors[1] and f"{pope_file}:2" in errors[1]


def test_a_malformed_describe_caption_is_a_placeholder(tmp_path):
    from fastrm_bench.world.build import WorldSizes, build_world

    root = build_world(tmp_path / "captions", seed=0, sizes=WorldSizes(train=2, val=6, test=2, pope_images=2),
                       captions=True)
    path = root / "coco" / "annotations" / "captions_val2014.json"
    data = json.loads(path.read_text())
    victim = min(a["id"] for a in data["annotations"])
    edit_json(path, lambda d: next(a for a in d["annotations"] if a["id"] == victim)["tokens"][0].update(object_id="x"))
    task, _ = create_task("describe", data_root=str(root))
    (record,) = [r for r in task.records if r.error]
    assert record.id == str(victim) and str(path) in record.error
    assert "token 1 that has 'object_id' 'x' (a string), expected an integer or null" in record.error


def test_a_malformed_answers_entry_is_one_line_naming_file_and_entry(world_root, tmp_path):
    from fastrm_bench.tasks.predictions import read_answers

    task, _ = create_task("vqav2", data_root=str(world_root))
    answers = tmp_path / "answers.jsonl"
    rows = [{"question_id": int(r.id), "text": "yes"} for r in task.records[:3]]
    rows[1]["text"] = 5
    answers.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=r"answers.jsonl: line 2 has 'text' 5 \(an integer\), expected a string"):
        read_answers(task, answers)
    result = CliRunner().invoke(app, ["score", "--task", "vqav2", "--data-root", str(world_root), "--predictions",
                                      str(answers)])
    assert "line 2 has 'text' 5" in one_line_failure(result)


# ---------------------------------------------------------------- a run over bad entries


def test_a_run_skips_and_counts_a_malformed_entry_or_stops_in_one_line(world_root, tiny_llava_dir, tmp_path):
    root = copy_world(world_root, tmp_path)
    task, _ = create_task("vqav2", data_root=str(root))
    victim = task.select(LIMIT, 0)[1]
    edit_json(root / VQA_QUESTIONS, lambda data: _question(data, int(victim.id)).update(image_id="abc"))
    result = run(config(root, tiny_llava_dir, tmp_path / "run"), log=quiet)
    assert result["n"] == LIMIT - 1 and result["n_skipped"] == 1
    (row,) = [json.loads(x) for x in (tmp_path / "run" / "skipped.jsonl").read_text().splitlines()]
    assert row["id"] == victim.id and "'image_id' 'abc'" in row["reason"] and VQA_QUESTIONS.split("/")[1] in row["reason"]
    failing = CliRunner().invoke(app, [*cli_args(root, tiny_llava_dir, tmp_path / "strict"), "--on-error", "fail"])
    output = one_line_failure(failing)
    assert f"question {victim.id}" in output and "'image_id' 'abc'" in output


# ---------------------------------------------------------------- spec files


def test_a_yaml_syntax_error_names_file_and_line_and_stops_only_runs_that_name_it(tmp_path, monkeypatch):
    (tmp_path / "methods").mkdir()
    bad = tmp_path / "methods" / "broken.yaml"
    bad.write_text("name: broken\nimplementation: random\nparams: {seed: [1, 2}\n")
    monkeypatch.setenv(SPEC_PATH_ENV, str(tmp_path))
    assert resolve("methods", "random").implementation == "random"  # an unrelated built-in still resolves
    with pytest.raises(ValueError, match=r"broken.yaml:3: YAML syntax error"):
        resolve("methods", "broken")
    listing = CliRunner().invoke(app, ["list", "methods"])
    assert listing.exit_code == 0 and "broken.yaml:3" in listing.output and "chefer" in listing.output
    result = CliRunner().invoke(app, ["run", "--method", "broken", "--task", "vqav2"])
    assert "broken.yaml:3: YAML syntax error" in one_line_failure(result)


@pytest.mark.parametrize("text, fragment", [("- a list\n", "found list"), ("name: x\nimplementation: 3\n",
                                                                          "implementation is int")])
def test_a_spec_of_the_wrong_shape_names_the_file(text, fragment, tmp_path, monkeypatch):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "x.yaml").write_text(text)
    monkeypatch.setenv(SPEC_PATH_ENV, str(tmp_path))
    with pytest.raises(ValueError, match=fragment):
        resolve("tasks", "x")


# ---------------------------------------------------------------- a method that raises on one sample


@pytest.fixture
def flaky_random(monkeypatch):
    """The random method, raising on the sample whose id is put in the returned list."""
    from fastrm_bench.explainers.random_map import RandomMap

    victims: list[str] = []
    real = RandomMap.explain_sample

    def flaky(self, adapter, inputs, generation, sample):
        if sample.id in victims:
            raise RuntimeError("boom on purpose\nsecond line")
        return real(self, adapter, inputs, generation, sample)

    monkeypatch.setattr(RandomMap, "explain_sample", flaky)
    return victims


@pytest.mark.parametrize("batch_size", [1, 3])
def test_a_method_raising_on_one_sample_skips_and_counts_it_with_the_traceback(batch_size, world_root, tiny_llava_dir,
                                                                               tmp_path, flaky_random):
    task, _ = create_task("vqav2", data_root=str(world_root))
    victim = task.select(LIMIT, 0)[1].id
    flaky_random.append(victim)
    out = tmp_path / "run"
    result = run(config(world_root, tiny_llava_dir, out, batch_size=batch_size), log=quiet)
    assert result["n"] == LIMIT - 1 and result["n_skipped"] == 1
    (row,) = [json.loads(x) for x in (out / "skipped.jsonl").read_text().splitlines()]
    assert row["id"] == victim and "RuntimeError: boom on purpose second line" in row["reason"]
    assert "Traceback" in row["traceback"] and "boom on purpose" in row["traceback"]
    done = [json.loads(x)["id"] for x in (out / "samples.jsonl").read_text().splitlines()]
    assert victim not in done and len(done) == LIMIT - 1


def test_a_method_raising_under_fail_is_one_line_naming_the_sample_and_resume(world_root, tiny_llava_dir, tmp_path,
                                                                              flaky_random):
    task, _ = create_task("vqav2", data_root=str(world_root))
    victim = task.select(LIMIT, 0)[1].id
    flaky_random.append(victim)
    out = tmp_path / "run"
    output = one_line_failure(CliRunner().invoke(app, [*cli_args(world_root, tiny_llava_dir, out), "--on-error", "fail"]))
    assert f"sample {victim}" in output and "--resume" in output and "boom on purpose" in output
    flaky_random.clear()
    resumed = CliRunner().invoke(app, [*cli_args(world_root, tiny_llava_dir, out), "--resume"])
    assert resumed.exit_code == 0 and f"({LIMIT} samples" in resumed.output, resumed.output


# ---------------------------------------------------------------- options and paths, before anything loads


def test_names_are_checked_before_torch_is_imported(tmp_path):
    """With torch made unimportable, a bad name must still be reported: nothing heavy runs before the check."""
    script = ("import sys; sys.modules['torch'] = None; sys.argv = ['fastrm-bench', 'run'] + sys.argv[1:]; "
              "from fastrm_bench.cli import entrypoint; entrypoint()")
    for args, fragment in ((["--method", "chefr", "--task", "vqav2"], "Did you mean 'chefer'"),
                           (["--method", "chefer", "--task", "gqa2"], "Did you mean 'gqa'"),
                           (["--method", "chefer", "--task", "vqav2", "--metric", "costs"], "Unknown metric 'costs'"),
                           (["--method", "chefer", "--task", "vqav2", "--limit", "-1"], "--limit must be a positive")):
        proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=60,
                              cwd=Path(__file__).parent.parent)
        assert proc.returncode == 2 and fragment in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr


def test_output_dir_and_model_problems_are_one_line_with_the_fix(world_root, tiny_llava_dir, tmp_path, monkeypatch):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for out, fragment in ((a_file, "is a file, not a folder"), (a_file / "run", "no folder can be made inside it")):
        output = one_line_failure(CliRunner().invoke(app, cli_args(world_root, tiny_llava_dir, out)))
        assert fragment in output and "--output-dir" in output
    args = cli_args(world_root, tiny_llava_dir, tmp_path / "run")
    args[args.index("--model") + 1] = str(tmp_path / "no-such-model")
    assert "no such folder" in one_line_failure(CliRunner().invoke(app, args))
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    monkeypatch.setattr("fastrm_bench.checks.os.access", lambda path, mode: Path(path) != read_only)
    output = one_line_failure(CliRunner().invoke(app, cli_args(world_root, tiny_llava_dir, read_only / "run")))
    assert "not writable" in output and f"chmod u+w {read_only}" in output
    assert not (read_only / "run").exists()


def test_limit_all_means_the_whole_split(monkeypatch):
    from fastrm_bench.checks import parse_limit

    assert parse_limit("all") is None and parse_limit("ALL") is None and parse_limit("7") == 7
    for bad in ("0", "-1", "many"):
        with pytest.raises(ValueError, match="--limit"):
            parse_limit(bad)
    seen: list[RunConfig] = []

    def fake_run(cfg: RunConfig, **_: Any) -> dict:
        seen.append(cfg)
        raise ValueError("stop here")

    monkeypatch.setattr("fastrm_bench.runner.run", fake_run)
    CliRunner().invoke(app, ["run", "--method", "random", "--task", "pope-random", "--limit", "all"])
    assert seen and seen[0].limit is None
    assert "'all'" in CliRunner().invoke(app, ["run", "--help"]).output


# ---------------------------------------------------------------- summarise and leaderboard


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, world_root, tiny_llava_dir) -> Path:
    out = tmp_path_factory.mktemp("finished") / "runs" / "a"
    run(config(world_root, tiny_llava_dir, out), log=quiet)
    return out


def test_summarise_names_a_torn_samples_line_and_leaves_results_as_they_were(finished_run, tmp_path):
    copy = tmp_path / "runs" / "torn"
    shutil.copytree(finished_run, copy)
    before = (copy / "results.json").read_bytes()
    with (copy / "samples.jsonl").open("a") as fh:
        fh.write('{"id": "12", "pred')
    lines = len((copy / "samples.jsonl").read_text().splitlines())
    result = CliRunner().invoke(app, ["summarise", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"samples.jsonl:{lines} is not a complete JSON line" in result.output
    assert (copy / "results.json").read_bytes() == before


def test_summarise_defaults_to_runs_and_leaderboard_shows_run_paths_and_unfinished_runs(finished_run, tmp_path,
                                                                                       monkeypatch):
    shutil.copytree(finished_run, tmp_path / "runs" / "a")
    shutil.copytree(finished_run, tmp_path / "runs" / "copy")
    shutil.copytree(finished_run, tmp_path / "runs" / "stopped")
    (tmp_path / "runs" / "stopped" / "results.json").unlink()
    monkeypatch.chdir(tmp_path)
    summarised = CliRunner().invoke(app, ["summarise"])
    assert summarised.exit_code == 0, summarised.output
    assert "runs/a: n=" in summarised.output and "runs/copy: n=" in summarised.output
    for fmt in ("table", "markdown", "csv"):
        board = CliRunner().invoke(app, ["leaderboard", "--format", fmt])
        assert board.exit_code == 0, board.output
        assert "runs/a" in board.output and "runs/copy" in board.output and "run_dir" in board.output
        assert f"unfinished (left out): {Path('runs/stopped')}, {LIMIT} sample(s)" in board.output
    monkeypatch.chdir(tmp_path / "runs")
    assert "no such folder: runs" in one_line_failure(CliRunner().invoke(app, ["summarise"]))


# ---------------------------------------------------------------- signals


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_a_run_within_two_seconds_with_one_line(signum, world_root, tiny_llava_dir, tmp_path):
    import os

    args = cli_args(world_root, tiny_llava_dir, tmp_path / "run")
    proc = subprocess.Popen([sys.executable, "-m", "fastrm_bench.cli", *args],
                            env={**os.environ, TEST_HOOK_ENV: "map@2:STOP"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # even from a background job
    _, status = os.waitpid(proc.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status)
    os.kill(proc.pid, signum)
    started = time.monotonic()
    os.kill(proc.pid, signal.SIGCONT)
    _, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - started < 2.0
    assert proc.returncode == 128 + signum, stderr[-2000:]
    assert f"stopped by {signal.Signals(signum).name}" in stderr and "--resume" in stderr and "Traceback" not in stderr


def test_loading_errors_of_samples_are_data_errors(world_root, tmp_path):
    """An image name no file system accepts (a NUL byte) is a missing image, not a ValueError that stops the run."""
    root = copy_world(world_root, tmp_path)
    pope = root / "pope" / "coco_pope_random.json"
    lines = pope.read_text().splitlines()
    lines[0] = json.dumps({**json.loads(lines[0]), "image": "bad\u0000name.jpg"})
    pope.write_text("\n".join(lines) + "\n")
    task, _ = create_task("pope-random", data_root=str(root))
    with pytest.raises(SampleDataError, match="is missing"):
        task.sample(task.records[0])


# ---------------------------------------------------------------- fuzzing the loaders

FUZZ_SETTINGS = dict(max_examples=15, deadline=None, derandomize=True, database=None,
                     suppress_health_check=list(HealthCheck))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=5)


def _places(value: Any, path: tuple = ()) -> list[tuple]:
    """Every place in a JSON tree, as the path of keys and indices to it."""
    inner = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    return [path, *(p for k, v in inner for p in _places(v, (*path, k)))]


@st.composite
def mutated(draw, base: Any) -> Any:
    """``base`` with one to three of its values replaced by any JSON, deleted or repeated."""
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_places(data)))
        op = draw(st.sampled_from(["replace", "delete", "repeat"]))
        if not path:
            data = draw(JSON_VALUES) if op == "replace" else data
            continue
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        if op == "replace":
            parent[path[-1]] = draw(JSON_VALUES)
        elif op == "delete":
            del parent[path[-1]]
        elif isinstance(parent, list):
            parent.append(copy.deepcopy(parent[path[-1]]))
    return data


def _text(data: Any, lines: bool, cut: int | None) -> str:
    text = "".join(json.dumps(x) + "\n" for x in data) if lines and isinstance(data, list) else json.dumps(data)
    return text if cut is None else text[: cut % (len(text) + 1)]


@pytest.fixture(scope="module")
def fuzz_world(tmp_path_factory, world_root) -> dict[str, Any]:
    """A copy of the small world and a captions world, with the first few entries of each file as the fuzz's base."""
    from fastrm_bench.world.build import WorldSizes, build_world

    root = tmp_path_factory.mktemp("fuzz") / "world"
    shutil.copytree(world_root, root)
    captions = build_world(tmp_path_factory.mktemp("fuzz") / "captions", seed=0,
                           sizes=WorldSizes(train=2, val=4, test=2, pope_images=2), captions=True)
    questions = json.loads((root / VQA_QUESTIONS).read_text())["questions"][:4]
    ids = {q["question_id"] for q in questions}
    annotations = [a for a in json.loads((root / VQA_ANNOTATIONS).read_text())["annotations"] if a["question_id"] in ids]
    gqa = json.loads((root / "gqa/val_balanced_questions.json").read_text())
    pope = [json.loads(x) for x in (root / "pope/coco_pope_random.json").read_text().splitlines()[:4]]
    caption_file = captions / "coco/annotations/captions_val2014.json"
    caption_data = json.loads(caption_file.read_text())
    caption_data["annotations"] = caption_data["annotations"][:4]
    return {"vqav2": (root, {VQA_QUESTIONS: {"questions": questions}, VQA_ANNOTATIONS: {"annotations": annotations}}),
            "gqa": (root, {"gqa/val_balanced_questions.json": dict(list(gqa.items())[:4])}),
            "pope-random": (root, {"pope/coco_pope_random.json": pope}),
            "describe": (captions, {"coco/annotations/captions_val2014.json": caption_data})}


def assert_one_line_or_counted_skip(name: str, root: Path, files: list[str]) -> None:
    """Loading ends in a one-line error naming a file, or in records whose bad ones are placeholders naming a file."""
    names = [Path(f).name for f in files]
    task, _ = create_task(name, data_root=str(root))
    try:
        records = task.records
    except (ValueError, FileNotFoundError) as err:
        assert "\n" not in str(err) and any(n in str(err) for n in names), str(err)
        return
    for record in records:
        if record.error is not None:
            assert "\n" not in record.error and any(n in record.error for n in names), record.error
            continue
        try:
            sample = task.sample(record)
        except SampleDataError as err:
            assert "\n" not in str(err)
            continue
        assert isinstance(task.score("yes", sample), float)


@pytest.mark.parametrize("name", ["vqav2", "gqa", "pope-random", "describe"])
def test_fuzzed_official_files_give_a_one_line_error_or_counted_skips(name, fuzz_world):
    root, base = fuzz_world[name]
    file = sorted(base)[0] if name != "vqav2" else None

    @settings(**FUZZ_SETTINGS)
    @given(data=st.data())
    def check(data) -> None:
        target = data.draw(st.sampled_from(sorted(base))) if file is None else file
        for path, content in base.items():
            changed = data.draw(mutated(content)) if path == target else content
            cut = data.draw(st.none() | st.integers(0, 10**6)) if path == target else None
            (root / path).write_text(_text(changed, name == "pope-random", cut))
        assert_one_line_or_counted_skip(name, root, list(base))

    try:
        check()
    finally:
        for path, content in base.items():
            (root / path).write_text(_text(content, name == "pope-random", None))


def test_fuzzed_answers_files_give_a_one_line_error_or_scores(fuzz_world, tmp_path):
    from fastrm_bench.tasks.predictions import read_answers, score_predictions

    root, base = fuzz_world["vqav2"]
    for path, content in base.items():
        (root / path).write_text(json.dumps(content))
    task, _ = create_task("vqav2", data_root=str(root))
    answers = [{"question_id": int(r.id), "text": "yes"} for r in task.records]
    path = tmp_path / "answers.jsonl"

    @settings(**FUZZ_SETTINGS)
    @given(data=st.data())
    def check(data) -> None:
        lines = data.draw(st.booleans())
        path.write_text(_text(data.draw(mutated(answers)), lines, data.draw(st.none() | st.integers(0, 10**6))))
        try:
            score_predictions(task, read_answers(task, path)[0], allow_missing=True)
        except (ValueError, FileNotFoundError) as err:
            assert "\n" not in str(err), str(err)

    check()


def test_a_malformed_hugging_face_row_is_a_placeholder_not_a_coerced_record(tmp_path):
    task, _ = create_task("vqav2", hf_dataset=str(tmp_path / "hf"))
    good = task.hf_record({"question_id": 1, "question": "Which?", "answers": [{"answer": "red"}]}, lambda: None)
    assert good.error is None and good.references == ["red"]
    for row, fragment in (({"question_id": 2, "question": 12345, "answers": ["a"]}, "'question' 12345 (an integer)"),
                          ({"question_id": 3, "question": "Which?", "answers": [7]}, "expected a string or a non-empty")):
        record = task.hf_record(row, lambda: None)
        assert record.error is not None and fragment in record.error and str(tmp_path / "hf") in record.error
    pope, _ = create_task("pope-random", hf_dataset=str(tmp_path / "hf"))
    row = {"question_id": 4, "question": "Is there a cat?", "answer": None, "category": "random"}
    assert "'answer' None (null)" in pope.hf_record(row, lambda: None).error
