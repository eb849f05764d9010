"""`fastrm`: maps from the FastRM proxy and the hidden states captured during generation.

Paper Fig. 8: ``out = model.generate(...); rm = proxy(last_hidden)``. No gradients and no
attention tensors: the proxy reads the final-norm hidden states that `generate` already
computed with its KV cache (the adapter returns them with ``return_hidden=True``).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from fastrm_bench.fastrm.model import CheckpointError, FastRM
from fastrm_bench.interfaces import Explanation, ExplanationMethod, Generation, ModelAdapter, ModelInputs
from fastrm_bench.profiling import PeakMemory

CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"
#: the proxy shipped for each shipped model
SHIPPED = {"tiny-llava-shapes": CHECKPOINTS / "fastrm-tiny-llava-shapes"}


class FastRMMethod(ExplanationMethod):
    """FastRM proxy: per-patch relevance probabilities from the last hidden states (no gradients)."""

    name = "fastrm"

    def __init__(self, checkpoint: str | None = None):
        self.checkpoint = checkpoint
        self._proxy: FastRM | None = None

    def prepare(self, adapter: ModelAdapter) -> None:
        self.proxy_for(adapter)

    def proxy_for(self, adapter: ModelAdapter) -> FastRM:
        if self._proxy is None:
            path = Path(self.checkpoint) if self.checkpoint else SHIPPED.get(adapter.name)
            if path is None:
                raise CheckpointError(
                    f"no FastRM checkpoint ships for {adapter.name!r}: distil one with `fastrm-bench distill` "
                    "and pass it with a method spec (params: {checkpoint: DIR})"
                )
            proxy = FastRM.from_pretrained(path, expected_hidden_size=adapter.hidden_size)
            recorded = proxy.config.model_weights_sha256
            if recorded and recorded != adapter.weights_sha256:
                raise CheckpointError(
                    f"{path}: this FastRM proxy was distilled from other weights of "
                    f"{proxy.config.distilled_from or 'its model'!r} (sha256 {recorded[:12]}...) than {adapter.name!r} has "
                    "now; re-distil it with `fastrm-bench distill` for these weights"
                )
            self._proxy = proxy.to(adapter.device)
        return self._proxy

    @torch.no_grad()
    def explain(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation) -> Explanation:
        proxy = self.proxy_for(adapter)
        if generation.last_hidden is None:
            raise ValueError("fastrm needs the hidden states of generation: call adapter.generate(..., return_hidden=True)")
        start = time.perf_counter()
        with PeakMemory(adapter.device) as memory:
            image_positions = inputs.layout.positions.to(generation.last_hidden.device)
            rows = inputs.prompt_length - 1 + torch.arange(generation.num_generated, device=generation.last_hidden.device)
            hidden = generation.last_hidden.to(next(proxy.parameters()).dtype)
            probs = proxy(hidden[rows], hidden[image_positions].unsqueeze(0))
        maps = probs.reshape(generation.num_generated, -1).cpu()
        return Explanation(maps=maps, seconds=time.perf_counter() - start, peak_memory_bytes=memory.peak_bytes,
                           is_probability=True)
