"""One LM layer's attention, recomputable row by row: what methods read instead of eager attention maps.

`fastrm_bench.models.attention_capture` records it while the model runs its own attention; methods ask it
for the probabilities of the query rows they need (`probabilities`) and for the gradient of a score w.r.t.
those probabilities from the gradient at the attention output (`probability_gradients`), block by block
(`row_blocks`), so that no layer's ``H x N x N`` matrix is ever held whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

#: bytes of float32 scores one block of recomputed rows may take (rows per block follow from it)
DEFAULT_BLOCK_BYTES = 2 * 2**20


@dataclass
class LayerAttention:
    """One LM layer's attention inputs for a batch of one, and its output as a graph node.

    ``query`` ``[H, N, d]``, ``key`` and ``value`` ``[H_kv, N, d]`` (grouped-query heads are repeated on
    use), ``mask`` ``[1 or H, N, N]`` (bool, True where a query attends; or additive float) or None with
    ``causal`` telling whether None meant a causal mask. ``output`` ``[1, N, H, d_v]`` is what the layer's
    output projection received (the node itself, batch dim included: a slice of it would be outside the
    graph), still in the graph when the forward kept one; its gradients ``[..., 1, N, H, d_v]`` are what
    `probability_gradients` and `own_row_gradients` take.
    """

    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    mask: torch.Tensor | None
    causal: bool
    scaling: float
    softcap: float | None
    output: torch.Tensor

    @property
    def num_heads(self) -> int:
        return int(self.query.shape[0])

    @property
    def length(self) -> int:
        return int(self.key.shape[1])

    def _per_head(self, kv: torch.Tensor) -> torch.Tensor:
        groups = self.num_heads // kv.shape[0]
        return kv if groups == 1 else kv.repeat_interleave(groups, dim=0)

    def probabilities(self, rows: torch.Tensor) -> torch.Tensor:
        """The attention probabilities ``[H, len(rows), N]`` (float32) of the query ``rows``, as eager attention
        computes them: scaled scores, soft-capping, the mask added, softmax in float32."""
        rows = rows.to(self.query.device)
        scores = torch.matmul(self.query[:, rows].float(), self._per_head(self.key).float().transpose(-1, -2)) * self.scaling
        if self.softcap is not None:
            scores = torch.tanh(scores / self.softcap) * self.softcap
        lowest = torch.finfo(scores.dtype).min
        if self.mask is not None:
            mask = self.mask[:, rows]
            scores = scores.masked_fill(~mask, lowest) if mask.dtype == torch.bool else scores + mask.float()
        elif self.causal:
            columns = torch.arange(self.key.shape[1], device=scores.device)
            scores = scores.masked_fill(columns[None, :] > rows[:, None], lowest)
        return scores.softmax(dim=-1)

    def probability_gradients(self, output_grads: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``dY/dA`` ``[..., H, len(rows), N]`` of the query ``rows`` from ``dY/dO`` ``[..., 1, N, H, d_v]`` (float32)."""
        rows = rows.to(output_grads.device)
        grads = output_grads.squeeze(-4)[..., rows, :, :].float().transpose(-3, -2)  # [..., H, r, d_v]
        return torch.matmul(grads, self._per_head(self.value).float().transpose(-1, -2))

    def own_row_gradients(self, output_grads: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``dY_c/dA`` ``[c, H, N]`` of each score c's own query row ``rows[c]``, from ``dY_c/dO`` ``[c, 1, N, H, d_v]``."""
        copies = torch.arange(len(rows), device=output_grads.device)
        own = output_grads.squeeze(-4)[copies, rows.to(output_grads.device)]  # [c, H, d_v]
        return torch.einsum("chd,hnd->chn", own.float(), self._per_head(self.value).float())

    def row_blocks(self, rows: torch.Tensor, copies: int = 1, block_bytes: int = DEFAULT_BLOCK_BYTES) -> Iterator[torch.Tensor]:
        """``rows`` in blocks whose float32 ``[copies, H, block, N]`` scores take at most ``block_bytes``."""
        per_row = max(copies * self.num_heads * self.length * 4, 1)
        yield from torch.split(rows, max(1, block_bytes // per_row))


@dataclass
class PrefixedAttention(LayerAttention):
    """A layer's attention seen over ``[prefix; sequence]``: a cross-attention model's image keys (the prefix, never
    updated by the LM) before its text. A cross-attention layer's queries are the text and its keys the prefix; a
    self-attention layer's keys the text. Rows and columns are positions of that joint sequence: a text row's
    probabilities are the layer's own on its keys and zero on the rest; a prefix row attends only to itself (the image
    states pass every layer unchanged), and the gradients at prefix rows are zero (no output there).

    With Chefer's rule ``R = R + Abar R`` this is the bi-modal rule of Chefer et al. (ICCV 2021) for text queries and
    image keys whose own relevance stays the identity: a self-attention layer updates text-to-text and text-to-image
    relevance, a cross-attention layer adds its text-to-image attention (``R_ti += Abar_ti``).
    """

    prefix: int = 0
    reads_prefix: bool = False  # a cross-attention layer: its keys are the prefix

    @property
    def length(self) -> int:
        return self.prefix + int(self.query.shape[1])

    def _columns(self, inner: torch.Tensor) -> torch.Tensor:
        """``inner`` ``[..., r, K]`` over the layer's own keys, placed among the joint columns ``[..., r, length]``."""
        before = 0 if self.reads_prefix else self.prefix
        return torch.nn.functional.pad(inner, (before, self.length - before - inner.shape[-1]))

    def _split(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = rows.to(self.query.device)
        text = rows >= self.prefix
        return text, rows[text] - self.prefix

    def probabilities(self, rows: torch.Tensor) -> torch.Tensor:
        text, inner_rows = self._split(rows)
        out = torch.zeros(self.num_heads, len(rows), self.length, device=self.query.device)
        out[:, text] = self._columns(super().probabilities(inner_rows))
        image = torch.nonzero(~text).flatten()
        out[:, image, rows.to(out.device)[image]] = 1.0
        return out

    def probability_gradients(self, output_grads: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        text, inner_rows = self._split(rows)
        inner = self._columns(super().probability_gradients(output_grads, inner_rows))  # [..., H, r_text, length]
        out = inner.new_zeros(*inner.shape[:-2], len(rows), self.length)
        out[..., text, :] = inner
        return out

    def own_row_gradients(self, output_grads: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        text, inner_rows = self._split(rows)
        if not bool(text.all()):
            raise ValueError("own-row gradients are of text rows (answer positions), not of the image prefix")
        return self._columns(super().own_row_gradients(output_grads, inner_rows))
