"""Shared fixtures: a small embedded world and a tiny random-weight LLaVA-1.5-shaped model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(2)

SMALL_WORLD = {"train": 12, "val": 60, "test": 40, "pope_images": 10}


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory) -> None:
    """Never touch the user's cache: the default data root lives in a temp folder."""
    os.environ["FASTRM_BENCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def world_root(tmp_path_factory) -> Path:
    from fastrm_bench.world.build import WorldSizes, build_world

    return build_world(tmp_path_factory.mktemp("world") / "shapes", seed=0, sizes=WorldSizes(**SMALL_WORLD))


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory) -> Path:
    """A random-weight LLaVA-1.5-shaped checkpoint (CLIP + Llama) with a 6x6 grid, saved to disk."""
    from fastrm_bench.embedded.tiny_llava import TinyLlavaSize, build_model, build_processor

    size = TinyLlavaSize(image_size=48, patch_size=8, vision_hidden=32, vision_layers=2, text_hidden=32, text_layers=2, heads=2)
    torch.manual_seed(0)
    processor = build_processor(size)
    model = build_model(processor.tokenizer, size)
    out = tmp_path_factory.mktemp("tiny-random-llava")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_adapter(tiny_llava_dir):
    from fastrm_bench.models.adapter import HFVisionLanguageAdapter

    return HFVisionLanguageAdapter.from_pretrained(tiny_llava_dir, device="cpu")
