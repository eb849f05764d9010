"""A run directory on disk: one writer at a time, nothing replaced unasked, every write resumable.

Layout::

    .lock           the OS lock (fcntl.flock) a writing run holds, with its pid and command; the
                    kernel releases it when the process ends, however it ends (kill -9 included)
    config.json     written once, when the run starts; its ``fingerprint`` is what --resume matches
    samples.jsonl   one line per evaluated sample, appended and fsynced as it finishes
    skipped.jsonl   one line per sample skipped for bad data: its id and the reason
    maps/           one NNNNNN.npz per samples.jsonl line while the run lasts (written before the line): the
                    sample map and the answer tokens' maps
    maps.npz        all sample maps in samples.jsonl order, written when the run finishes (`fastrm_bench.maps_io`)
    token_maps.npz  all answer tokens' maps in samples.jsonl order, written with maps.npz
    results.json    aggregates; its presence marks a finished run
    shards/         while a run of several processes lasts: ``rankK-of-N/``, a run directory of the same
                    configuration per rank but the main one (whose samples go here); merged at the end

A finished run lists its samples in the task's order however many processes made it and however
often it was resumed: the final files are written in that order.

Every file is either appended line by line (a line cut by a kill is dropped on resume and its
sample redone) or replaced atomically (written beside, then renamed), so a kill at any moment
leaves a directory that --resume completes to the files of an uninterrupted run.

Finished runs are read through `read_run` (a `Run`: typed accessors of its config and results, its
records and maps), `find_runs` and `unfinished_runs`: every command that reads runs (report, explorer,
leaderboard, summarise, explain's calibration) names a damaged or incomplete file the same way.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from fastrm_bench.cache import resolve_portable
from fastrm_bench.maps_io import load_sample_maps, load_token_maps, save_sample_maps, save_token_maps

#: version of the layout above; directories of another format are never resumed or mixed into
FORMAT = 3
CONFIG, SAMPLES, SKIPPED, MAPS_DIR, MAPS, TOKEN_MAPS, RESULTS, LOCK, SHARDS = (
    "config.json", "samples.jsonl", "skipped.jsonl", "maps", "maps.npz", "token_maps.npz", "results.json", ".lock",
    "shards")
RUN_FILES = (CONFIG, SAMPLES, SKIPPED, MAPS_DIR, MAPS, TOKEN_MAPS, RESULTS, SHARDS)
#: run fields left out of the fingerprint: spellings of where things are (their identity is recorded
#: separately: the resolved data root, the weights' hash, the device type), the error policy and the
#: batch size and the attention implementation (they change float rounding only: a run may be resumed with another)
UNFINGERPRINTED = ("output_dir", "data_root", "model", "device", "on_error", "batch_size", "attn_implementation")
#: test hook (fault-injection tests only): "POINT[@N]:KILL|STOP" sends this process SIGKILL or SIGSTOP
#: the N-th time (default: the first) a run reaches POINT; the points are named where `test_hook` is called
TEST_HOOK_ENV = "FASTRM_BENCH_TEST_SIGNAL"
#: with it, only the process of this rank (the launcher's RANK) is signalled
TEST_HOOK_RANK_ENV = "FASTRM_BENCH_TEST_SIGNAL_RANK"
_hook_counts: dict[str, int] = {}


class RunDirError(ValueError):
    """A run directory this run may not write as asked; the message says why and what to do."""


class RunLockedError(RunDirError):
    """Another process is writing the run directory."""


def test_hook(point: str) -> None:
    """Fault injection for the tests: kill or stop this process at ``point`` when `TEST_HOOK_ENV` names it."""
    spec = os.environ.get(TEST_HOOK_ENV)
    if not spec:
        return
    where, _, action = spec.partition(":")
    name, _, nth = where.partition("@")
    rank = os.environ.get(TEST_HOOK_RANK_ENV)
    if name != point or (rank is not None and rank != os.environ.get("RANK", "0")):
        return
    _hook_counts[point] = _hook_counts.get(point, 0) + 1
    if _hook_counts[point] == int(nth or 1):
        os.kill(os.getpid(), {"KILL": signal.SIGKILL, "STOP": signal.SIGSTOP}[action])


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """What makes two runs the same run: everything that changes a result, nothing that names a path."""
    run = {k: v for k, v in config["run"].items() if k not in UNFINGERPRINTED}
    specs = {kind: {k: v for k, v in config[kind].items() if k != "path"} for kind in ("task_spec", "method_spec")}
    return {"run": run, **specs, "model_weights_sha256": config["model_weights_sha256"],
            "data_source": config["data_source"], "data_root": config["data_root"],
            "device_type": str(config["device"]).split(":")[0]}


def fingerprint(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(comparable(config), sort_keys=True).encode()).hexdigest()


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): value}


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The fields in which two run configurations differ, as "field: there -> here"."""
    a, b = _flatten(comparable(old)), _flatten(comparable(new))
    return [f"{k}: {a.get(k)!r} there, {b.get(k)!r} here" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


class RunLock:
    """An exclusive flock on ``.lock``; the file records who holds it so that a refusal can name them."""

    def __init__(self, directory: Path):
        self.directory, self.path = directory, directory / LOCK
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        self._lock_or_refuse(fd)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": shlex.join(sys.argv),
                  "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd

    def probe(self) -> None:
        """Refuse at once if another process holds the lock, without creating or changing anything."""
        if self.path.is_file():
            fd = os.open(self.path, os.O_RDONLY)
            self._lock_or_refuse(fd)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _lock_or_refuse(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise RunLockedError(
                f"{self.directory} is being written by another run (pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}: {holder.get('command', '?')}); wait for it to end, or choose another "
                "--output-dir") from None

    @staticmethod
    def _holder(fd: int) -> dict[str, Any]:
        for _ in range(20):  # the holder writes its name just after taking the lock
            try:
                return json.loads(os.pread(fd, 65536, 0) or b"null") or {}
            except json.JSONDecodeError:
                pass
            time.sleep(0.05)
        return {}

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _append_line(fh: IO[str], text: str) -> None:
    """Append one line and fsync it; a kill inside leaves a line without its newline, dropped on resume."""
    half = len(text) // 2
    fh.write(text[:half])
    fh.flush()
    test_hook("line")
    fh.write(text[half:])
    fh.flush()
    os.fsync(fh.fileno())


def replace_file(path: Path, write, hook: str | None = None) -> None:
    """Write ``path`` beside itself, then rename it into place: readers see the old file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    if hook:
        test_hook(hook)
    os.replace(tmp, path)


def _lines(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _read_lines(path: Path) -> list[dict[str, Any]]:
    """Complete lines of an earlier attempt; a last line cut by a kill is dropped from the file (and redone)."""
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.endswith("\n"):
            replace_file(path, lambda fh: fh.write("".join(lines[:-1]).encode()))
            break
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            raise RunDirError(f"{path}:{number} is not a JSON line (the file was edited or damaged); "
                              "--overwrite starts the run again") from None
    return rows


def shard_dirs(run_dir: Path) -> list[Path]:
    """The shard directories of an unfinished run of several processes (oldest attempts' included)."""
    folder = run_dir / SHARDS
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def shard_dir(run_dir: Path, rank: int, count: int) -> Path:
    return run_dir / SHARDS / f"rank{rank}-of-{count}"


class RunDir:
    """The directory of one run configuration, opened for writing under its lock (see the module doc)."""

    def __init__(self, path: Path, config: dict[str, Any]):
        self.path, self.config = path, config
        self.records: list[dict[str, Any]] = []
        self.skipped: list[dict[str, Any]] = []
        self._files: dict[str, IO[str]] = {}

    @classmethod
    @contextmanager
    def open(cls, path: Path, config: dict[str, Any], *, resume: bool, overwrite: bool) -> Iterator[RunDir]:
        """Lock ``path``, check that this run may write it, and yield it; the lock goes with the block."""
        config = {**config, "format": FORMAT, "fingerprint": fingerprint(config)}
        rundir = cls(path, config)
        lock = RunLock(path)
        lock.probe()
        if not overwrite:
            rundir._check(resume)  # refuse before creating anything (the check is repeated under the lock)
        try:
            path.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except OSError as err:  # a file in the way, a read-only folder: the cause and the fix, not an errno
            cause = "a file is in the way" if isinstance(err, (FileExistsError, NotADirectoryError)) else \
                (err.strerror or str(err)).lower()
            raise RunDirError(f"cannot make or lock the run directory {path}: {cause}; make the folder writable "
                              "(chmod u+w) or choose another --output-dir") from None
        try:
            rundir._start(resume, overwrite)
            yield rundir
        finally:
            for fh in rundir._files.values():
                fh.close()
            lock.release()

    # ------------------------------------------------------------------ state
    def _entries(self) -> set[str]:
        """Names in the directory, without the lock and the temporary files a kill may leave."""
        ignored = {LOCK, *(f"{name}.tmp" for name in RUN_FILES)}
        return {p.name for p in self.path.iterdir()} - ignored if self.path.is_dir() else set()

    @property
    def finished(self) -> bool:
        return (self.path / RESULTS).exists()

    def _check(self, resume: bool) -> bool:
        """True when the directory holds this run already; raises when this run may not write it."""
        entries = self._entries()
        if not entries:
            return False
        if CONFIG not in entries:
            raise RunDirError(f"{self.path} is not empty and holds no run ({', '.join(sorted(entries)[:5])}); "
                              "choose an empty or new --output-dir")
        try:
            old = json.loads((self.path / CONFIG).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise RunDirError(f"{self.path / CONFIG} is unreadable ({err}); --overwrite starts the run again") from None
        if old.get("format", 1) != FORMAT:
            written_by = old.get("versions", {}).get("fastrm_bench", "an older version")
            raise RunDirError(
                f"{self.path} holds a run written by fastrm-bench {written_by} (run-directory format {old.get('format', 1)}); "
                f"this version writes format {FORMAT} and does not mix its samples into it: choose another --output-dir, "
                "or --overwrite to discard it")
        if old.get("fingerprint") != self.config["fingerprint"]:
            diff = differences(old, self.config)
            raise RunDirError(f"{self.path} holds a run of another configuration ({'; '.join(diff)}); choose another "
                              "--output-dir, or --overwrite to discard it")
        if not resume:
            state = "a finished" if self.finished else "an unfinished"
            fix = "--resume just reports it, --overwrite runs it again" if self.finished else \
                "continue it with --resume, or --overwrite to start again"
            raise RunDirError(f"{self.path} holds {state} run of this configuration: {fix}")
        self.config = old  # kept as first written: resuming rewrites nothing of it
        return True

    def _start(self, resume: bool, overwrite: bool) -> None:
        if overwrite:
            for name in (*RUN_FILES, *(f"{name}.tmp" for name in RUN_FILES)):
                target = self.path / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        if not self._check(resume):
            replace_file(self.path / CONFIG, lambda fh: fh.write(json.dumps(self.config, indent=2).encode()))
            test_hook("config")
        if self.finished:
            return
        self.records = _read_lines(self.path / SAMPLES)
        self.skipped = _read_lines(self.path / SKIPPED)
        (self.path / MAPS_DIR).mkdir(exist_ok=True)
        missing = [i for i in range(len(self.records)) if not self._map_path(i).exists()]
        if missing:
            raise RunDirError(f"{self._map_path(missing[0])} of a finished sample is missing (the directory was edited); "
                              "--overwrite starts the run again")

    def _map_path(self, index: int) -> Path:
        return self.path / MAPS_DIR / f"{index:06d}.npz"

    @property
    def done_ids(self) -> set[str]:
        """Samples not to evaluate again: evaluated ones and skipped ones, here and in the run's shards."""
        done = {r["id"] for r in self.records} | {r["id"] for r in self.skipped}
        for shard in shard_dirs(self.path):
            done |= {r["id"] for r in _read_lines(shard / SAMPLES)} | {r["id"] for r in _read_lines(shard / SKIPPED)}
        return done

    # ------------------------------------------------------------------ writing
    def _append(self, name: str, row: dict[str, Any]) -> None:
        path = self.path / name
        try:
            if name not in self._files:
                self._files[name] = path.open("a")
            _append_line(self._files[name], json.dumps(row) + "\n")
        except OSError as err:
            raise self._write_error(path, err) from err

    def _write_error(self, path: Path, err: OSError) -> RunDirError:
        return RunDirError(f"cannot write {path}: {err.strerror or err}; what is already written stays consistent: "
                           "fix the cause (e.g. free disk space) and continue with --resume")

    def add_sample(self, record: dict[str, Any], sample_map: np.ndarray, token_maps: np.ndarray) -> None:
        """Save the sample's maps, then its line: maps without their line are redone, never a line without its maps."""
        path = self._map_path(len(self.records))
        try:
            replace_file(path, lambda fh: np.savez(fh, sample=sample_map, tokens=token_maps))
        except OSError as err:
            raise self._write_error(path, err) from err
        test_hook("map")
        self._append(SAMPLES, record)
        self.records.append(record)

    def add_skipped(self, sample_id: str, reason: str, **extra: Any) -> None:
        """One skipped sample's line: its id, the reason, and what else explains it (a failure's ``traceback``)."""
        row = {"id": sample_id, "reason": reason, **extra}
        self._append(SKIPPED, row)
        self.skipped.append(row)

    def absorb_shards(self) -> None:
        """Add every shard's finished samples (and skips) that this directory lacks, with their maps.

        Idempotent: a merge cut short by a kill is completed by the next one. The shards stay until
        the run is finished (`clean_up`), so nothing is lost in between.
        """
        have = {r["id"] for r in self.records}
        skipped = {r["id"] for r in self.skipped}
        for shard in shard_dirs(self.path):
            for index, record in enumerate(_read_lines(shard / SAMPLES)):
                if record["id"] not in have:
                    with np.load(shard / MAPS_DIR / f"{index:06d}.npz") as saved:
                        self.add_sample(record, saved["sample"], saved["tokens"])
                    have.add(record["id"])
            for row in _read_lines(shard / SKIPPED):
                if row["id"] not in skipped:
                    self.add_skipped(row["id"], row["reason"], **{k: v for k, v in row.items() if k not in ("id", "reason")})
                    skipped.add(row["id"])

    def ordered_records(self, order: list[str] | None) -> list[dict[str, Any]]:
        """The records in ``order`` (sample ids; records it does not name keep their place after it)."""
        rank = {i: k for k, i in enumerate(order or [])}
        return sorted(self.records, key=lambda r: rank.get(r["id"], len(rank)))

    def finish(self, results: dict[str, Any], order: list[str] | None = None) -> None:
        """maps.npz and token_maps.npz, then results.json (the mark of a finished run), then `clean_up`.

        ``order`` (sample ids) is the task's order: the final files list the samples in it, whatever
        order the processes finished them in (samples.jsonl is reordered by `clean_up`).
        """
        for fh in self._files.values():
            fh.close()
        self._files.clear()
        rank = {i: k for k, i in enumerate(order)} if order is not None else {}
        by_order = sorted(range(len(self.records)), key=lambda k: rank.get(self.records[k]["id"], len(rank) + k))
        sample_maps, token_maps = [], []
        for i in by_order:
            with np.load(self._map_path(i)) as saved:
                sample_maps.append(saved["sample"])
                token_maps.append(saved["tokens"])
        ids = [self.records[i]["id"] for i in by_order]
        skipped = sorted(self.skipped, key=lambda r: rank.get(r["id"], len(rank)))
        try:
            if skipped != self.skipped:
                replace_file(self.path / SKIPPED, lambda fh: fh.write(_lines(skipped)))
                self.skipped = skipped
            replace_file(self.path / MAPS, lambda fh: save_sample_maps(fh, ids, sample_maps), hook="maps.npz")
            replace_file(self.path / TOKEN_MAPS, lambda fh: save_token_maps(fh, ids, token_maps))
            replace_file(self.path / RESULTS, lambda fh: fh.write(json.dumps(results, indent=2).encode()), hook="results.json")
        except OSError as err:
            raise self._write_error(self.path, err) from err
        self.clean_up()

    def clean_up(self) -> None:
        """Once results.json is in place: samples.jsonl in maps.npz's order, then what only an unfinished run
        needs (the per-sample maps, the shards) goes. Repeated by a resume after a kill."""
        test_hook("cleanup")
        with np.load(self.path / MAPS) as data:
            order = {i: k for k, i in enumerate(data["ids"].tolist())}
        rows = _read_lines(self.path / SAMPLES)
        ordered = sorted(rows, key=lambda r: order.get(r["id"], len(order)))
        if ordered != rows:  # its lines no longer pair with maps/ by position: done only once maps.npz is final
            replace_file(self.path / SAMPLES, lambda fh: fh.write(_lines(ordered)))
        self.records = ordered
        shutil.rmtree(self.path / MAPS_DIR, ignore_errors=True)
        shutil.rmtree(self.path / SHARDS, ignore_errors=True)

    def results(self) -> dict[str, Any]:
        return read_json(self.path / RESULTS)


# ---------------------------------------------------------------------------- reading finished runs
#: what every run's config.json and results.json hold, as paths of keys: a file without one is no run's
REQUIRED = {CONFIG: (("model",), ("method_spec", "name"), ("task_spec", "name")), RESULTS: (("n",), ("metrics",))}
#: written by `fastrm-bench reproduce` into the runs of a FastRM ablation: the variants the run stands for
ABLATION = "ablation.json"


def read_json(path: Path) -> Any:
    """One JSON file of a run; a missing or damaged one is a RunDirError naming it, never a bare decoder error."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunDirError(f"{path} cannot be read ({err})") from None


def _read_object(path: Path) -> dict[str, Any]:
    """A run's config.json or results.json, checked to hold what every run's does (`REQUIRED`)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise RunDirError(f"{path} is not a JSON object")
    for keys in REQUIRED[path.name]:
        found: Any = data
        for key in keys:
            if not isinstance(found, dict) or key not in found:
                raise RunDirError(f"{path} lacks {'.'.join(keys)}")
            found = found[key]
    return data


def read_config(run_dir: Path) -> dict[str, Any]:
    """A run's config.json (finished or not): what re-aggregation reads without trusting results.json."""
    return _read_object(Path(run_dir) / CONFIG)


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    """A finished run's samples.jsonl in its order (blank lines skipped); a torn or edited line is an error
    naming the file and the line."""
    path = Path(run_dir) / SAMPLES
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise RunDirError(f"{path} cannot be read ({err})") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise RunDirError(f"{path}:{number} is not a complete JSON line ({err.msg}: the file was cut or edited); "
                              "run it again with --overwrite") from None
    return records


@dataclass
class Run:
    """A finished run as the report, the explorer and the leaderboard read it: its config, results and records."""

    path: Path
    config: dict[str, Any]
    results: dict[str, Any]
    #: the task's name, plus the data source where one report holds a task on several (set by make_report)
    task_label: str = ""

    @property
    def method(self) -> str:
        return self.config["method_spec"]["name"]

    @property
    def method_spec(self) -> dict[str, Any]:
        """The method's spec as recorded (name, implementation, params): what tells its class and its checkpoint."""
        return self.config["method_spec"]

    @property
    def task(self) -> str:
        return self.config["task_spec"]["name"]

    @property
    def task_implementation(self) -> str:
        """vqav2 / gqa / pope: the task's registered implementation (pope-* variants are POPE)."""
        return self.config["task_spec"]["implementation"]

    @property
    def model(self) -> str:
        """The model's registered name, or its folder's name."""
        return Path(self.config["model"]).name

    @property
    def model_ref(self) -> str:
        """The model as the run was given it: a registered name, a local folder or a hub id."""
        return self.config["model"]

    @property
    def weights_sha256(self) -> str | None:
        """The hash of the model's weights (runs of an older format did not record it)."""
        return self.config.get("model_weights_sha256")

    @property
    def data_source(self) -> str:
        """The data the task was built from (e.g. ``shapes``, ``shapes-shifted``)."""
        return self.config["data_source"]

    @property
    def data_root(self) -> str | None:
        """The folder of the task's data on this machine, where the run had one (a folder of the run's cache is
        looked up in this machine's: `fastrm_bench.cache.resolve_portable`)."""
        recorded = self.config.get("data_root")
        return None if recorded is None else str(resolve_portable(recorded))

    @property
    def aggregation(self) -> str:
        """How a sample map was made of its tokens' maps (runs before it was recorded took the mean)."""
        return self.config.get("run", {}).get("aggregation", "mean")

    @property
    def seed(self) -> int:
        return self.config["run"]["seed"]

    @property
    def n(self) -> int:
        """The number of samples the results aggregate."""
        return self.results["n"]

    @property
    def fractions(self) -> list[float] | None:
        """The removed fractions of the perturbation curves: the results', else the run's option (None: no curves)."""
        return self.results.get("curves", {}).get("fractions") or self.config.get("run", {}).get("fractions")

    def metric(self, key: str) -> float | None:
        return self.results["metrics"].get(key, {}).get("value")

    def records(self) -> list[dict[str, Any]]:
        """The samples' records (samples.jsonl), in the run's order: the task's order however the run was made."""
        return read_records(self.path)

    @property
    def has_sample_maps(self) -> bool:
        return (self.path / MAPS).is_file()

    @property
    def has_token_maps(self) -> bool:
        """False for runs from before per-token maps were kept."""
        return (self.path / TOKEN_MAPS).is_file()

    def sample_maps(self) -> dict[str, np.ndarray]:
        """{sample id: flat sample map} (maps.npz), in the run's order."""
        return load_sample_maps(self.path / MAPS)

    def token_maps(self) -> dict[str, np.ndarray]:
        """{sample id: ``[T, n]`` maps of the answer's tokens} (token_maps.npz; FileNotFoundError for older runs)."""
        return load_token_maps(self.path)

    @property
    def is_ablation(self) -> bool:
        """Whether the run is a variant of a FastRM ablation (compared in its own figure, ranked nowhere)."""
        return (self.path / ABLATION).exists()

    def ablation_tags(self) -> list[dict[str, Any]]:
        """The ablation variants the run stands for, as {kind, value} (one run can be several: the base recipe)."""
        return read_json(self.path / ABLATION)


def is_finished_run(path: Path) -> bool:
    """Whether ``path`` is a finished run's directory: results.json beside config.json."""
    return (path / RESULTS).exists() and (path / CONFIG).exists()


def read_run(path: Path) -> Run:
    """The finished run in ``path``; a missing, damaged or incomplete file is a RunDirError naming it."""
    path = Path(path)
    results = _read_object(path / RESULTS)
    return Run(path, _read_object(path / CONFIG), results)


def find_runs(root: Path) -> list[Path]:
    """The finished runs' directories under ``root`` (itself included), in path order."""
    return sorted(p.parent for p in Path(root).rglob(RESULTS) if (p.parent / CONFIG).exists())


def unfinished_runs(root: Path) -> list[tuple[Path, int]]:
    """Run directories under ``root`` without results.json (stopped, or still running), with their samples so far.

    The per-process shards inside a run of several processes are part of their run, not runs of their own.
    """
    found = []
    for config in sorted(Path(root).rglob(CONFIG)):
        run_dir = config.parent
        if (run_dir / RESULTS).exists() or run_dir.parent.name == SHARDS:
            continue
        samples = run_dir / SAMPLES
        done = sum(1 for line in samples.read_bytes().splitlines() if line.strip()) if samples.is_file() else 0
        found.append((run_dir, done))
    return found


def load_runs(roots: list[Path]) -> tuple[list[Run], list[Path]]:
    """Run directories (results.json + config.json) and profile directories (profile.json) under ``roots``."""
    runs, profiles = [], []
    for root in roots:
        runs += [read_run(path) for path in find_runs(root)]
        profiles += sorted(p.parent for p in Path(root).rglob("profile.json"))
    return runs, profiles


def label_tasks(runs: list[Run]) -> None:
    """Name each run's task; a task run on several data sources (e.g. a shifted world) gets the source added, one
    run with several models gets the model added: each figure panel and table row is one (task, source, model)."""
    sources: dict[str, set[str]] = {}
    models: dict[str, set[str]] = {}
    for r in runs:
        sources.setdefault(r.task, set()).add(r.data_source)
        models.setdefault(r.task, set()).add(r.model)
    for r in runs:
        facets = [r.data_source] if len(sources[r.task]) > 1 else []
        facets += [r.model] if len(models[r.task]) > 1 else []
        r.task_label = f"{r.task} ({', '.join(facets)})" if facets else r.task
