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

``convention``: "harness" (the steps above) or "authors", the public code's maps (github.com/xmed-lab/TAM,
``tam.py``, ``TAM``, commit 7c7df1d; `authors_text_tokens`): there the first answer token is given the map of the
first prompt token (round 0 recurses over the prompt tokens and returns the first one's), whose class is the greedy
prediction at that position, with no interference removed; the interference list holds, where y_0's map belongs,
the map of the last prompt token's own id (the class read at the position that predicts y_0), still compared with
y_0 by the same-word test; the last prompt token is not a prompt text token. The prompt's text tokens stay the
harness's (every non-image position; the public code reads a span written per model, the question's words in its
Qwen2-VL demo), and so do the float map (theirs is cast to 8 bits: ``floor(255 m)``) and the median where a window
is constant (theirs divides by zero).
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class TextTokens:
    """The earlier text tokens u of the interference, in order, and the class each answer token's map explains."""

    classes: torch.Tensor  # [U] c_u, the class of u's activation map A_u
    places: torch.Tensor  # [U] q_u, the position whose activation s_u is read
    words: torch.Tensor  # [U] the token compared with the explained one (the same word is left out)
    n_prompt: int  # how many precede every answer token (row t sees the first n_prompt + t)
    explained: torch.Tensor  # [T] the class row t explains
    first_alone: bool  # row 0 removes no interference


def harness_text_tokens(inputs: ModelInputs, generation: Generation, logits: torch.Tensor) -> TextTokens:
    """Every prompt text position with its own id, then the answer tokens y_k at the positions p_k that chose them."""
    prompt_text = text_positions(inputs, generation, inputs.prompt_length)
    targets = generation.generated_ids.cpu()
    classes = torch.cat([inputs.input_ids[0].cpu()[prompt_text], targets])
    places = torch.cat([prompt_text, predicting_positions(inputs, generation)])
    return TextTokens(classes, places, classes, len(prompt_text), targets, first_alone=False)


def authors_text_tokens(inputs: ModelInputs, generation: Generation, logits: torch.Tensor) -> TextTokens:
    """TAM's public code's list (``tam.py``, ``TAM``): the prompt text before the last prompt token, the first one's
    class its greedy prediction ``argmax logits[q_1]``; the last prompt token with its own id where y_0 belongs (its
    word for the same-word test is y_0); y_k, k >= 1. Row 0 explains the first prompt token's class, alone."""
    last = inputs.prompt_length - 1
    prompt_text = text_positions(inputs, generation, last)
    prompt_ids, targets = inputs.input_ids[0].cpu(), generation.generated_ids.cpu()
    classes = torch.cat([prompt_ids[prompt_text], prompt_ids[last:last + 1], targets[1:]])
    if len(prompt_text):
        classes[0] = logits[int(prompt_text[0])].argmax().cpu()
    places = torch.cat([prompt_text, predicting_positions(inputs, generation)])
    words = torch.cat([prompt_ids[prompt_text], targets])
    explained = torch.cat([classes[:1], targets[1:]])
    return TextTokens(classes, places, words, len(prompt_text), explained, first_alone=True)


#: the text tokens each convention takes (`harness_text_tokens`, `authors_text_tokens`)
CONVENTIONS = {"harness": harness_text_tokens, "authors": authors_text_tokens}


def remove_interference(a: torch.Tensor, s: torch.Tensor, maps: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """TAM's estimated causal inference: ``relu(a - lam b)``, ``b`` the other words' maps weighted by ``s / sum s``."""
    w = s[other] / (s[other].sum() + WEIGHT_EPS)
    b = (w[:, None] * maps[other]).sum(0)
    norm = (b * b).sum()
    lam = (a * b).sum() / norm if norm > 0 else torch.zeros(())
    return (a - lam * b).clamp_min(0)


class TokenActivationMap(ExplanationMethod):
    """TAM: logit-lens activations of the image tokens at the final layer, earlier tokens' interference
    removed by least squares, rank Gaussian filter; one forward, no gradients."""

    name = "tam"
    needs = MethodNeeds()  # one forward, no gradients, no attention

    def __init__(self, kernel_size: int = 3, interference: bool = True, filtered: bool = True,
                 convention: str = "harness"):
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError("kernel_size must be odd and >= 1")
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {tuple(CONVENTIONS)}, got {convention!r}")
        self.kernel_size = kernel_size
        self.interference = interference
        self.filtered = filtered
        self.convention = convention

    def compute_maps(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation) -> torch.Tensor:
        layout = inputs.layout
        with explaining(adapter.model), torch.no_grad():
            empty = generation.num_generated == 0
            return torch.zeros(0, layout.num_tokens) if empty else self._maps(adapter, inputs, generation, layout)

    def _maps(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation, layout: ImageLayout) -> torch.Tensor:
        forward = adapter.teacher_forced(inputs, generation)
        image = layout.positions
        text = CONVENTIONS[self.convention](inputs, generation, forward.logits)
        # only the columns of these classes are ever read: [N, C] instead of [N, vocab] on the CPU
        needed, column = torch.unique(torch.cat([text.classes, text.explained]), return_inverse=True)
        logits = forward.logits[:, needed.to(forward.logits.device)].detach().float().cpu()
        token_maps = logits[image][:, column[: len(text.classes)]].clamp_min(0).T  # A_u, [U, n]
        explained = column[len(text.classes):]
        rows = []
        for t in range(generation.num_generated):
            earlier = text.n_prompt + t  # the prompt's text tokens and the answer's first t
            target_column = int(explained[t])
            a = logits[image, target_column].clamp_min(0)
            s = logits[text.places[:earlier], target_column].clamp_min(0)
            m = a
            if self.interference and not (t == 0 and text.first_alone):
                other = text.words[:earlier] != text.explained[t]  # TAM leaves the same word out of the interference
                m = remove_interference(a, s, token_maps[:earlier], other)
            joint = torch.cat([m, s])
            lo, hi = joint.min(), joint.max()
            m = (m - lo) / (hi - lo) if hi > lo else torch.zeros_like(m)
            rows.append(filter_groups(m, layout, self.kernel_size) if self.filtered else m)
        return torch.stack(rows)
