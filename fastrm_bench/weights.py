"""The identity of a model's exact weights: runs, distillation datasets and FastRM proxies record it.

Low in the import graph (torch only), so that the adapter contract can hash its model without
importing the model zoo.
"""

from __future__ import annotations

import hashlib

import torch


def weights_hash(model: torch.nn.Module) -> str:
    """SHA-256 over parameter names and bytes (identifies the exact weights a run or a dataset used)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
