"""Reading and writing a run's sample maps (``maps.npz``), whose lengths differ from sample to sample.

A map has one value per image token of its input's layout, and layouts differ between images on
dynamic-resolution models, so the maps are stored flat: ``values`` (all maps concatenated),
``offsets`` (``[N + 1]``, map i is ``values[offsets[i]:offsets[i+1]]``) and ``ids``. Runs written
before layouts existed hold ``maps`` ``[N, grid_h, grid_w]``; they are read as flat maps too. The
record of each sample in ``samples.jsonl`` holds its ``layout`` (or the run's square grid) to draw it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from fastrm_bench.layout import ImageLayout, centre_square, single_grid


def save_sample_maps(path: Path | BinaryIO, ids: Sequence[str], maps: Sequence[np.ndarray]) -> None:
    """Write ``maps.npz`` (a path, or an open binary file that the caller moves into place)."""
    flat = [np.asarray(m, dtype=np.float32).reshape(-1) for m in maps]
    offsets = np.concatenate([[0], np.cumsum([len(m) for m in flat])]).astype(np.int64)
    values = np.concatenate(flat) if flat else np.zeros(0, dtype=np.float32)
    np.savez_compressed(path, values=values, offsets=offsets, ids=np.array(list(ids)))


def load_sample_maps(path: Path) -> dict[str, np.ndarray]:
    """{sample id: flat map} in the run's order."""
    with np.load(path) as data:
        ids = data["ids"].tolist()
        if "values" in data:
            values, offsets = data["values"], data["offsets"]
            return {i: values[offsets[k] : offsets[k + 1]] for k, i in enumerate(ids)}
        maps = data["maps"]
        return {i: maps[k].reshape(-1) for k, i in enumerate(ids)}


def record_layout(record: dict[str, Any], run_config: dict[str, Any], image_size: tuple[int, int]) -> ImageLayout:
    """The layout a sample's map was made on: the record's own, or (older runs) the run's square grid
    over the centre crop, as LLaVA-1.5's processor sees the image."""
    if "layout" in record:
        return ImageLayout.from_dict(record["layout"])
    rows, cols = run_config["grid"]
    return single_grid(range(rows * cols), (rows, cols), centre_square(image_size), image_size)
