"""`dex-ar` and `dex-ar-sentence`: DEX-AR (Bousselham et al.), per-token and sentence maps, every family.

Teacher-forced, one forward (hidden states and attention outputs as graph nodes; the attention
probabilities and their gradients recomputed on the rows read, `LayerAttention`). For generated token t
(class y_t, predicted at p_t) and each LM layer l among the last K:

- the layer's logit-lens logit ``z_l = lm_head(final_norm(h_l[p_t]))[y_t]`` (``h_l`` the layer's
  output before the final norm; for the last layer this is the model's own logit);
- ``G = relu(dz_l / dA_l)`` on the query row p_t, per head (the gradient alone, not times A);
- its keys split into image tokens and text tokens (the prompt's non-image tokens and the answer
  so far, keys <= p_t); head scores ``S_img = max_j G_img``, ``S_txt = max_j G_txt``; head weight
  ``w = relu(S_img - S_txt)`` keeps the heads that look at the image more than at the text;
- every ``G_img`` (all tokens, layers, heads) min-max normalised together; the per-token map is
  ``minmax(sum_{l,h} w * G_img)``;
- sentence map: token weight ``delta_t = relu(max_{l,h} S_img - max_{l,h} S_txt)`` (a token whose
  strongest head looks at text more than at the image is linguistic), ``minmax(sum_t delta_t
  sum_{l,h} w * G_img)``; `dex-ar-sentence` gives every token this map, so the runner's mean over
  tokens is the sentence map.

Unfiltered variants set w = 1 (and delta = 1). ``minmax`` of a constant vector is all zeros.

``convention``: "harness" (the formulas above) or "authors", the public code's maps (github.com/WalBouss/DEX-AR,
``dexar/wrapper.py``, ``compute_dexar``, commit 07830a1): its last layer's lens reads transformers' last hidden
state, which is already normalised, through the final norm again (``norm(norm(h_L))``), and its text keys leave out
the first token after the image (``grad[..., idx_img_tok_end + 1: -n - 1]``; the last prompt token and the answer
so far are kept, ``grad[..., -n - 1:]``). Like the harness, its text keys hold BOS and the chat template (every
prompt position outside the image span). Kept in both conventions: the image span is the layout's (theirs is
LLaVA-1.5's, 576 tokens after the tokenised text before ``<image>``), and a constant map is all zeros (theirs leaves
a constant per-token map as it is, and divides by zero when every image gradient is equal). Their wrapper reads the
last 10 layers, as ``layers`` does by default; their ``playground.py`` example sets ``layer_index=0`` (every layer).
"""

from __future__ import annotations

import torch

from fastrm_bench.aggregation import Aggregation
from fastrm_bench.explainers._attention import GradientMethod, predicting_positions, text_positions, token_gradients
from fastrm_bench.interfaces import Generation, MethodNeeds, ModelInputs

#: how the maps are computed: the documented formulas, or as the authors' public code computes them
CONVENTIONS = ("harness", "authors")


def minmax(values: torch.Tensor, dim: int | tuple[int, ...] | None = None) -> torch.Tensor:
    """``(x - min) / (max - min)`` over ``dim`` (all values when None); 0 where max == min."""
    dims = tuple(range(values.dim())) if dim is None else dim
    lo, hi = values.amin(dim=dims, keepdim=True), values.amax(dim=dims, keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (values - lo) / span.where(span > 0, torch.ones_like(span)), torch.zeros_like(values))


class DexAR(GradientMethod):
    """DEX-AR per-token maps: logit-lens gradients of the attention rows of the last K layers,
    heads weighted by how much more their gradient looks at the image than at the text."""

    name = "dex-ar"
    needs = MethodNeeds(gradients=True, attention="rows")
    cost_params = ("chunk_size",)

    def __init__(self, layers: int = 10, head_filter: bool = True, chunk_size: int = 16, convention: str = "harness"):
        if layers < 1 or chunk_size < 1:
            raise ValueError("layers and chunk_size must be >= 1")
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        self.layers = layers
        self.head_filter = head_filter
        self.chunk_size = chunk_size
        self.convention = convention

    def _maps(self, adapter, inputs: ModelInputs, generation: Generation) -> torch.Tensor:
        if generation.num_generated == 0:
            return torch.zeros(0, inputs.layout.num_tokens)
        weighted, _ = self._weighted_maps(adapter, inputs, generation)
        return minmax(weighted, dim=1)

    def token_weights(self, adapter, inputs: ModelInputs, generation: Generation) -> torch.Tensor:
        """DEX-AR's token weights ``delta_t`` ``[T]`` (0: a linguistic token), e.g. to aggregate another method's maps."""
        if generation.num_generated == 0:
            return torch.zeros(0)
        return self._weighted_maps(adapter, inputs, generation)[1]

    def _weighted_maps(self, adapter, inputs: ModelInputs, generation: Generation) -> tuple[torch.Tensor, torch.Tensor]:
        """(``sum_{l,h} w * minmax(G_img)`` per token ``[T, n]``, token weight ``delta_t`` ``[T]``)."""
        g_img, s_img, s_txt = self._gradients(adapter, inputs, generation)
        w = (s_img - s_txt).clamp_min(0) if self.head_filter else torch.ones_like(s_img)
        weighted = (w.unsqueeze(-1) * minmax(g_img)).sum(dim=(1, 2))
        delta = (s_img.amax(dim=(1, 2)) - s_txt.amax(dim=(1, 2))).clamp_min(0)
        return weighted, delta

    def _gradients(self, adapter, inputs: ModelInputs, generation: Generation
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``G_img`` ``[T, K, H, n]`` and the head scores ``S_img``, ``S_txt`` ``[T, K, H]`` (float32, CPU)."""
        forward = adapter.teacher_forced(inputs, generation, hidden_states=True, attention="capture")
        norm = adapter.final_norm()
        head = adapter.model.get_output_embeddings()
        device = forward.logits.device
        positions = predicting_positions(inputs, generation)
        targets = generation.generated_ids.to(device)
        image = inputs.layout.positions
        text = text_positions(inputs, generation, int(positions[-1]) + 1)
        after_image = int(image.max()) + 1
        if self.convention == "authors" and after_image < inputs.prompt_length - 1:  # their text keys skip it
            text = text[text != after_image]
        text_masks = torch.stack([text <= p for p in positions])  # [T, n_text]: the keys token t can see
        total = len(forward.attention)
        chosen = list(range(max(total - self.layers, 0), total))
        heads = forward.attention[0].num_heads
        n_tokens = generation.num_generated
        g_img = torch.zeros(n_tokens, len(chosen), heads, len(image))
        s_txt = torch.zeros(n_tokens, len(chosen), heads)
        for k, layer in enumerate(chosen):
            hidden = forward.hidden_states[layer][positions.to(device)]
            if self.convention == "authors" and layer == total - 1:  # their last hidden state is normalised already
                hidden = norm(hidden)
            lens = head(norm(hidden)).float()  # [T, vocab]
            z = lens[torch.arange(n_tokens, device=device), targets]
            attention = forward.attention[layer]
            for chunk, (grad,) in token_gradients(z, [attention.output], self.chunk_size):
                # dz/dA on each token's own query row p_t: dz/dO V^T (the layer's probabilities are never graph nodes)
                rows = attention.own_row_gradients(grad, positions[chunk]).clamp_min(0).cpu()
                g_img[chunk, k] = rows[..., image]  # rows: [chunk, H, N], the query row p_t of each head
                text_rows = rows[..., text].masked_fill(~text_masks[chunk].unsqueeze(1), 0.0)  # G >= 0: 0 is neutral
                s_txt[chunk, k] = text_rows.amax(dim=-1)
        return g_img, g_img.amax(dim=-1), s_txt


class DexARTokenWeights(Aggregation):
    """DEX-AR's visual-vs-linguistic token weights (head filtering over the last ``layers`` LM layers)."""

    name = "dex-ar"

    def __init__(self, layers: int = 10):
        self.dex_ar = DexAR(layers=layers, head_filter=True)

    def weights(self, adapter, inputs, generation, explanation) -> torch.Tensor:
        return self.dex_ar.token_weights(adapter, inputs, generation)


class DexARSentence(DexAR):
    """DEX-AR's sentence map, every token weighted by delta_t (visual vs linguistic), given to every token."""

    name = "dex-ar-sentence"
    needs = MethodNeeds(gradients=True, attention="rows")

    def __init__(self, layers: int = 10, head_filter: bool = True, token_filter: bool = True, chunk_size: int = 16,
                 convention: str = "harness"):
        super().__init__(layers=layers, head_filter=head_filter, chunk_size=chunk_size, convention=convention)
        self.token_filter = token_filter

    def _maps(self, adapter, inputs: ModelInputs, generation: Generation) -> torch.Tensor:
        if generation.num_generated == 0:
            return torch.zeros(0, inputs.layout.num_tokens)
        weighted, delta = self._weighted_maps(adapter, inputs, generation)
        delta = delta if self.token_filter else torch.ones_like(delta)
        sentence = minmax((delta.unsqueeze(-1) * weighted).sum(0))
        return sentence.expand(generation.num_generated, -1).clone()
