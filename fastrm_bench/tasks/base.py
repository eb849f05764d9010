"""What the file-based tasks share: the data root, seeded subsampling, images and masks.

Every task reads official-format files from a data root. Without ``data_root`` it is the
embedded world (built and cached on first use), so a fresh install runs offline; pointing
``--data-root`` at a folder with the real files runs the same code on COCO / VQAv2 / GQA / POPE.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
from abc import abstractmethod
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fastrm_bench.cache import resolve_portable
from fastrm_bench.data_errors import CorruptImageError, MissingImageError, UnparsableRecordError, one_line
from fastrm_bench.interfaces import Sample, Task
from fastrm_bench.tasks.entries import INT, STR, TYPE_NAMES, Record, entry_problem, shown, type_name
from fastrm_bench.tasks.predictions import LLAVA_ANSWERS, AnswersFormat

log = logging.getLogger(__name__)

PAPER_SUFFIX = " Answer the question using up to two words."



class FileTask(Task):
    """A task over official files under a data root; subclasses parse their format in `load_records`."""

    #: Hugging Face column names of this task's fields (a spec's ``hf_columns`` overrides them)
    HF_COLUMNS: dict[str, str] = {"id": "question_id", "question": "question", "answers": "answers", "image": "image"}
    #: named scoring conventions (name -> what it does); the first is the default
    SCORINGS: dict[str, str] = {"default": "the task's score"}
    #: answers-file formats `fastrm-bench score` accepts, tried in order against the file's keys
    ANSWERS_FORMATS: tuple[AnswersFormat, ...] = (LLAVA_ANSWERS,)

    def __init__(self, data_root: str | Path | None = None, split: str = "val", prompt_suffix: str = PAPER_SUFFIX,
                 instances: str | None = "coco/annotations/instances_{split}2014.json", data_source: str | None = None,
                 hf_dataset: str | None = None, hf_config: str | None = None, hf_split: str = "test",
                 hf_columns: dict[str, str] | None = None, scoring: str | None = None):
        from fastrm_bench.world.build import ensure_world

        self.scoring = scoring or next(iter(self.SCORINGS))
        if self.scoring not in self.SCORINGS:
            choices = ", ".join(f"{k} ({v})" for k, v in self.SCORINGS.items())
            raise ValueError(f"unknown scoring {self.scoring!r} for {type(self).__name__}; expected one of: {choices}")
        self.hf_dataset, self.hf_config, self.hf_split = hf_dataset, hf_config, hf_split
        self.hf_columns = {**self.HF_COLUMNS, **(hf_columns or {})}
        if hf_dataset is not None and data_root is None:
            data_root = tempfile.mkdtemp(prefix="fastrm-hf-")  # nothing is read from it
            data_source = data_source or "hf"
        self.uses_embedded_world = data_root is None
        self.data_root = Path(ensure_world() if data_root is None else resolve_portable(str(data_root))).expanduser()
        if not self.data_root.is_dir():
            raise FileNotFoundError(f"data root {self.data_root} does not exist")
        self.split = split
        self.prompt_suffix = prompt_suffix
        self.instances_path = self.path(instances) if instances else None
        manifest = self.data_root / "manifest.json"
        world = json.loads(manifest.read_text()).get("data_source") if manifest.exists() else None
        self.data_source = data_source or world or "coco"

    def path(self, template: str) -> Path:
        return self.data_root / template.format(split=self.split)

    def read_json(self, template: str) -> Any:
        path = self.path(template)
        if not path.is_file():
            raise FileNotFoundError(f"{self.name}: expected {path} (under data root {self.data_root})")
        try:
            return json.loads(path.read_text())
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: not UTF-8 text (byte {err.start}); is it the right file?") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: malformed JSON at line {err.lineno}: {err.msg}") from None
        except RecursionError:
            raise ValueError(f"{path}: JSON nested too deeply to read") from None

    def read_entries(self, template: str, key: str | None, kinds: type = list) -> Any:
        """The file's ``key`` (or the whole file) when it is of ``kinds``; a file of another shape is one line, not a skip."""
        data = self.read_json(template)
        if key is not None:
            if not isinstance(data, dict) or key not in data:
                found = f"keys {sorted(data)[:8]}" if isinstance(data, dict) else type_name(data)
                raise ValueError(f"{self.path(template)}: expected an object with {key!r} ({self.name}'s official format), "
                                 f"found {found}")
            data = data[key]
        if not isinstance(data, kinds):
            where = f"{key!r} of {self.path(template)}" if key else str(self.path(template))
            raise ValueError(f"{where}: expected {TYPE_NAMES[kinds]}, found {type_name(data)}")
        return data

    @abstractmethod
    def load_records(self) -> list[Record]:
        """Parse the official files into records, sorted by id."""

    def unparsable(self, record_id: str, reason: str) -> Record:
        """A placeholder for an entry that cannot be parsed: it keeps its place in the order, and `sample` reports it."""
        return Record(record_id, self.data_root, "", [], error=one_line(reason))

    @cached_property
    def records(self) -> list[Record]:
        return self.load_hf_records() if self.hf_dataset else self.load_records()

    def open_hf_dataset(self):
        """A hub id, a `save_to_disk` folder or a folder of parquet files (needs the `datasets` package)."""
        try:
            import datasets
        except ImportError as err:
            raise ImportError("reading Hugging Face datasets needs `pip install fastrm-bench[hf]`") from err
        path = Path(self.hf_dataset).expanduser()
        if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
            ds = datasets.load_from_disk(str(path))
            return ds[self.hf_split] if isinstance(ds, datasets.DatasetDict) else ds
        if path.is_dir():
            return datasets.load_dataset("parquet", data_dir=str(path), split=self.hf_split)
        return datasets.load_dataset(self.hf_dataset, self.hf_config, split=self.hf_split)

    def hf_record(self, row: dict[str, Any], image: Callable[[], Image.Image]) -> Record | None:
        """One Hugging Face row as a record (None: not part of this task, e.g. another POPE category)."""
        c = self.hf_columns
        answers = row[c["answers"]]
        if isinstance(answers, str):
            answers = [answers]
        problem = entry_problem(row, {c["id"]: (INT, STR), c["question"]: STR})
        if problem is None and not (isinstance(answers, list) and answers and all(
                type(a) is str or (isinstance(a, dict) and type(a.get("answer")) is str) for a in answers)):
            problem = f"has {c['answers']!r} {shown(answers)}, expected a string or a non-empty list of answer strings"
        if problem is not None:
            return self.unparsable(str(row.get(c["id"])), f"{self.hf_dataset}: row {row.get(c['id'])!r} {problem}")
        answers = [a["answer"] if isinstance(a, dict) else a for a in answers]
        meta = {"type": row.get(c.get("type", ""), None)} if c.get("type") else {}
        return Record(str(row[c["id"]]), image, row[c["question"]], answers, meta)

    def load_hf_records(self) -> list[Record]:
        ds = self.open_hf_dataset()
        image_column = self.hf_columns["image"]
        missing = {v for k, v in self.hf_columns.items() if k in ("id", "question", "answers", "image")} - set(ds.column_names)
        if missing:
            raise ValueError(f"{self.hf_dataset}: no column(s) {sorted(missing)}; set hf_columns in the task spec "
                             f"(columns are {ds.column_names})")
        plain = ds.remove_columns([image_column])
        records = []
        for i, row in enumerate(plain):
            record = self.hf_record(row, lambda i=i: ds[i][image_column])
            if record is not None:
                records.append(record)
        return sorted(records, key=lambda r: (len(r.id), r.id))

    @cached_property
    def _coco(self):
        if self.instances_path is None or not self.instances_path.is_file():
            return None
        from pycocotools.coco import COCO

        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(self.instances_path))

    def mask_for(self, ann_ids: list[int]) -> np.ndarray | None:
        """Union of the referenced objects' masks, where an instances file provides them."""
        coco = self._coco
        if coco is None or not ann_ids:
            return None
        masks = [coco.annToMask(coco.anns[a]).astype(bool) for a in ann_ids if a in coco.anns]
        return np.logical_or.reduce(masks) if masks else None

    def masks_by_id(self, ann_ids: list[int]) -> dict[int, np.ndarray]:
        """Each referenced object's own mask by annotation id (those the instances file has)."""
        coco = self._coco
        if coco is None:
            return {}
        return {a: coco.annToMask(coco.anns[a]).astype(bool) for a in dict.fromkeys(ann_ids) if a in coco.anns}

    def select(self, limit: int | None, seed: int) -> list[Record]:
        """All records, or a seeded subsample of ``limit`` of them (kept in id order)."""
        records = self.records
        if limit is None or limit >= len(records):
            return records
        if limit <= 0:
            raise ValueError(f"--limit must be positive, got {limit}")
        keep = np.sort(np.random.default_rng(seed).choice(len(records), size=limit, replace=False))
        return [records[i] for i in keep]

    def sample(self, record: Record) -> Sample:
        """Open the record's image and masks; bad data raises a `SampleDataError` naming the question."""
        if record.error is not None:
            raise UnparsableRecordError(record.id, record.error)
        if callable(record.image):
            image = record.image().convert("RGB")
        else:
            try:
                found = record.image.is_file()
            except (OSError, ValueError):  # a name with a NUL byte, or too long for the file system
                found = False
            if not found:
                raise MissingImageError(record.id, f"{self.name}: image {record.image} of question {record.id} is missing")
            try:
                with Image.open(record.image) as im:
                    image = im.convert("RGB")
            except (OSError, Image.DecompressionBombError) as err:  # UnidentifiedImageError, truncated files
                raise CorruptImageError(record.id, f"{self.name}: image {record.image} cannot be decoded ({err})") from None
        return Sample(record.id, image, record.question, record.references, dict(record.meta), self.mask_for(record.ann_ids))

    def answer_id(self, raw: str) -> str:
        """The record id an answers file's question id stands for (POPE files number each category from 1)."""
        return raw

    def answers_order(self) -> list[str]:
        """Record ids in the order an answers file without ids lists them (POPE's official answers)."""
        return [r.id for r in self.records]

    def samples(self, limit: int | None = None, seed: int = 0) -> Iterator[Sample]:
        for record in self.select(limit, seed):
            yield self.sample(record)

    def aggregate(self, records: Sequence[dict[str, Any]]) -> dict[str, float]:
        """Accuracy overall and per question type (``meta["type"]``)."""
        out = super().aggregate(records)
        by_type: dict[str, list[float]] = defaultdict(list)
        for r in records:
            by_type[str(r.get("meta", {}).get("type"))].append(r["score"])
        out.update({f"accuracy/{t}": float(np.mean(v)) for t, v in sorted(by_type.items())})
        return out
