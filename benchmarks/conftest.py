"""Benchmarks run on demand: `python -m pytest benchmarks -m benchmark --benchmark-only`."""

import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(2)
