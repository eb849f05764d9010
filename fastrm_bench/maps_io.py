"""Reading and writing a run's maps, whose sizes differ from sample to sample.

- ``maps.npz``: one map per sample (the run's aggregation of its answer tokens' maps);
- ``token_maps.npz``: every answer token's map, ``[T_i, n_i]`` for sample i (`load_token_maps`); the
  tokens' texts are the ``tokens`` of each sample's record in ``samples.jsonl``.


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


def save_token_maps(path: Path | BinaryIO, ids: Sequence[str], maps: Sequence[np.ndarray]) -> None:
    """Write ``token_maps.npz``: ``values`` (all maps flat), ``offsets`` ``[N + 1]``, ``tokens`` ``[N]`` (T_i), ``ids``."""
    arrays = [np.asarray(m, dtype=np.float32) for m in maps]
    counts = np.array([a.shape[0] for a in arrays], dtype=np.int64)
    flat = [a.reshape(-1) for a in arrays]
    offsets = np.concatenate([[0], np.cumsum([len(f) for f in flat])]).astype(np.int64)
    values = np.concatenate(flat) if flat else np.zeros(0, dtype=np.float32)
    np.savez_compressed(path, values=values, offsets=offsets, tokens=counts, ids=np.array(list(ids)))


def load_token_maps(run_dir: str | Path) -> dict[str, np.ndarray]:
    """{sample id: ``[T, n_image_tokens]`` maps of the answer's tokens} of a finished run, in the run's order.

    Row t is the map the method gave generated token t (its text: ``tokens[t]`` of the sample's record);
    columns follow the sample's ``layout``. Runs written before token maps were kept have none (an error).
    """
    path = Path(run_dir) / "token_maps.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the run is unfinished, or older than per-token maps")
    with np.load(path) as data:
        values, offsets, counts = data["values"], data["offsets"], data["tokens"]
        return {i: values[offsets[k] : offsets[k + 1]].reshape(int(counts[k]), -1) if counts[k] else
                np.zeros((0, 0), np.float32) for k, i in enumerate(data["ids"].tolist())}


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
