"""`tam`: Token Activation Map (Li et al., ICCV 2025), gradient-free, for every family.

TAM reads the model's own output head at every position: the *activation* of a position j for a
target class c is the logit of c read from j's final hidden state, ``relu(lm_head(h_final[j])[c])``
(exactly the teacher-forced logits, so one forward without gradients gives every activation).
For generated token t (class y_t, predicted at p_t):

1. ``a = relu(logits[image positions, y_t])``: the image tokens' activation map for y_t;
2. estimated causal inference: the earlier text tokens u (the prompt's non-image tokens with
   their own id as class and their own position, the answer tokens y_k, k < t, with the position
   p_k that predicted them) each have an activation map ``A_u = relu(logits[image, c_u])``; those
   whose class differs from y_t are mixed with weights ``s_u / sum s``, ``s_u = relu(logits[q_u,
   y_t])`` (how much y_t is already active at u), into the interference ``b``; the least-squares
   scale ``lam = <a, b> / <b, b>`` removes it: ``m = relu(a - lam * b)``;
3. ``m`` is min-max normalised together with the text activations ``s_u`` of all earlier text
   tokens (as TAM normalises image and text tokens together);
4. the rank Gaussian filter (3x3, sigma = the window's coefficient of variation) on each layout
   group's grid.

The exact formula and where it departs from the public code are in docs/choices.md ("TAM").
"""

from __future__ import annotations

import torch

from fastrm_bench.explainers._attention import explaining, predicting_positions, text_positions
from fastrm_bench.interfaces import ExplanationMethod, Generation, MethodNeeds, ModelAdapter, ModelInputs
from fastrm_bench.layout import ImageLayout

#: added to the sum of interference weights, as TAM does, so that all-zero weights give no interference
WEIGHT_EPS = 1e-8


def rank_gaussian_filter(grid: torch.Tensor, kernel_size: int = 3) -> torch.Tensor:
    """TAM's denoising filter on one ``[rows, cols]`` grid.

    Each value becomes a Gaussian-weighted mean of its window's values *sorted by rank* (weights
    centred on the median, over rank offsets -k*k//2 .. k*k//2), with sigma the window's
    coefficient of variation (std / mean): a smooth window is averaged widely, a window with one
    outlier keeps close to its median. Windows whose mean is <= 0 give 0. Borders are mirrored
    without repeating the edge (numpy's "reflect"); an axis of length 1 repeats its only value.
    A window of equal positive values (sigma = 0) gives that value (the limit of the narrowing kernel).
    """
    rows, cols = grid.shape
    pad = kernel_size // 2
    offsets = torch.arange(kernel_size * kernel_size, dtype=torch.float64) - kernel_size * kernel_size // 2

    def mirror(index: torch.Tensor, n: int) -> torch.Tensor:
        if n == 1:
            return torch.zeros_like(index)
        index = index.abs()  # -1 -> 1
        return torch.where(index > n - 1, 2 * (n - 1) - index, index)  # n -> n - 2

    row_index = mirror(torch.arange(-pad, rows + pad), rows)
    col_index = mirror(torch.arange(-pad, cols + pad), cols)
    padded = grid.double()[row_index][:, col_index]
    windows = padded.unfold(0, kernel_size, 1).unfold(1, kernel_size, 1).reshape(rows, cols, -1)
    ranked = windows.sort(dim=-1).values
    mean = ranked.mean(-1, keepdim=True)
    sigma = ranked.std(-1, unbiased=False, keepdim=True) / mean.where(mean > 0, torch.ones_like(mean))
    gaussian = torch.exp(-(offsets**2) / (2 * sigma.where(sigma > 0, torch.ones_like(sigma)) ** 2))
    kernel = torch.where(sigma > 0, gaussian, (offsets == 0).double())  # sigma = 0: the median alone
    value = (ranked * kernel).sum(-1) / kernel.sum(-1)
    return torch.where(mean.squeeze(-1) > 0, value, torch.zeros_like(value)).to(grid.dtype)


def filter_groups(values: torch.Tensor, layout: ImageLayout, kernel_size: int = 3) -> torch.Tensor:
    """`rank_gaussian_filter` applied on every layout group's own grid (tiles are filtered apart)."""
    out, start = [], 0
    for group in layout.groups:
        n = len(group.positions)
        out.append(rank_gaussian_filter(values[start : start + n].reshape(group.grid), kernel_size).flatten())
        start += n
    return torch.cat(out)


class TokenActivationMap(ExplanationMethod):
    """TAM: logit-lens activations of the image tokens at the final layer, earlier tokens' interference
    removed by least squares, rank Gaussian filter; one forward, no gradients."""

    name = "tam"
    needs = MethodNeeds()  # one forward, no gradients, no attention

    def __init__(self, kernel_size: int = 3, interference: bool = True, filtered: bool = True):
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError("kernel_size must be odd and >= 1")
        self.kernel_size = kernel_size
        self.interference = interference
        self.filtered = filtered

    def compute_maps(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation) -> torch.Tensor:
        layout = inputs.layout
        with explaining(adapter.model), torch.no_grad():
            empty = generation.num_generated == 0
            return torch.zeros(0, layout.num_tokens) if empty else self._maps(adapter, inputs, generation, layout)

    def _maps(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation, layout: ImageLayout) -> torch.Tensor:
        forward = adapter.teacher_forced(inputs, generation)
        image = layout.positions
        targets = generation.generated_ids.cpu()
        answer_positions = predicting_positions(inputs, generation)
        prompt_text = text_positions(inputs, generation, inputs.prompt_length)
        prompt_ids = inputs.input_ids[0].cpu()
        # every text token that can precede a target: the prompt's, then the answer's (class, activation position)
        classes = torch.cat([prompt_ids[prompt_text], targets])
        places = torch.cat([prompt_text, answer_positions])
        n_prompt = len(prompt_text)
        # only the columns of these classes are ever read: [N, C] instead of [N, vocab] on the CPU
        needed, column = torch.unique(classes, return_inverse=True)
        logits = forward.logits[:, needed.to(forward.logits.device)].detach().float().cpu()
        token_maps = logits[image][:, column].clamp_min(0).T  # A_u, [U, n]
        rows = []
        for t in range(generation.num_generated):
            target = int(targets[t])
            target_column = int(column[n_prompt + t])
            a = logits[image, target_column].clamp_min(0)
            earlier = n_prompt + t  # the prompt's text tokens and the answer's first t
            s = logits[places[:earlier], target_column].clamp_min(0)
            m = a
            if self.interference:
                other = classes[:earlier] != target  # TAM leaves the same word out of the interference
                w = s[other] / (s[other].sum() + WEIGHT_EPS)
                b = (w[:, None] * token_maps[:earlier][other]).sum(0)
                norm = (b * b).sum()
                lam = (a * b).sum() / norm if norm > 0 else torch.zeros(())
                m = (a - lam * b).clamp_min(0)
            joint = torch.cat([m, s])
            lo, hi = joint.min(), joint.max()
            m = (m - lo) / (hi - lo) if hi > lo else torch.zeros_like(m)
            rows.append(filter_groups(m, layout, self.kernel_size) if self.filtered else m)
        return torch.stack(rows)
