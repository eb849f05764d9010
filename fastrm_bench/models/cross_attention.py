"""Cross-attention models (Llama 3.2 Vision, ``mllama``): the image is never tokens of the LM's sequence, so the harness
explains a *joint sequence*: the image's keys first, as image tokens, then the text.

Mllama's vision tower turns each of up to ``max_num_tiles`` tiles into ``num_patches`` states (a CLS and the patches),
projected to the LM's width: the ``cross_attention_states``. Some LM layers (``cross_attention_layers``) attend from
the text to them (tanh-gated); the others are ordinary causal self-attention over the text, and the text holds one
``<|image|>`` token that the image does not replace. The joint sequence puts those states before the text:

- positions ``0 .. V-1`` (``V = images x max_num_tiles x num_patches``, padding tiles and empty image slots included)
  are the keys, the layout's image tokens the real tiles' (per tile a CLS over the tile and its patch grid; tiles cover
  the resized image and its padding; several images side by side); then the text at ``V + i``
  (`ModelInputs.sequence_ids` writes the keys as image tokens). A left-padded batch row keeps its padding first, so a
  row is ``[padding, keys, text]``.
- a layer's attention over it (`PrefixedAttention`): text rows attend to the text (self-attention layers) or to the keys
  (cross-attention layers), key rows to themselves. Chefer's ``R = R + Abar R`` over it is the bi-modal rules of
  Chefer et al. (2021) with the image's self-relevance the identity (the LM never updates the image states): rules
  6-7 on self-attention layers, rule 10 as the authors' code computes it with ``apply_self_in_rule_10=False`` and
  rule 11 on cross-attention layers (docs/models.md says why not their default rule 10).
- the graph leaf is the joint ``[keys; text embeddings]``; hidden states of key rows are the keys themselves (the logit
  lens and FastRM read them through the final norm as every other row).
- removing an image token zeroes its key state: its key and value become zero (no bias, RMS-normed keys), so with every
  key removed the answer cannot depend on the image. Only "zero" removal; the keys keep their softmax places.

Generation, teacher forcing and removal go through the model's own ``generate`` / ``forward``; hooks on the language
model's call read or replace its ``cross_attention_states``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import torch
from PIL import Image

from fastrm_bench.interfaces import ATTENTION_KINDS, Generation, ModelInputs, TeacherForced, Video
from fastrm_bench.layer_attention import PrefixedAttention
from fastrm_bench.layout import ImageLayout
from fastrm_bench.models.adapter import HFVisionLanguageAdapter
from fastrm_bench.models.families import MllamaFamily

_JOINT_EAGER = "fastrm_joint_eager"


class CrossAttentionAdapter(HFVisionLanguageAdapter):
    """`HFVisionLanguageAdapter` for a model that reads its images through cross-attention layers, explained over the
    joint sequence ``[image keys; text]`` (module docstring). A batch of several prompts is answered one prompt at a
    time (`_row`: each as it would be built alone)."""

    family_spec: MllamaFamily
    reads_cross_attention = True

    def prefix_length(self, inputs: ModelInputs) -> int:
        """``V``: the image keys before each row's text (every image slot of the batch, padding tiles included)."""
        return self.family_spec.prefix_length(self.model, inputs.tensors)

    # ---------------------------------------------------------------- inputs
    def build_inputs(self, images: Sequence[Image.Image | Sequence[Image.Image] | Video], prompts: Sequence[str]
                     ) -> ModelInputs:
        if any(isinstance(entry, Video) for entry in images):
            raise ValueError(f"video inputs are not supported for the {self.family} family")
        inputs = super().build_inputs(images, prompts)
        ids, mask = inputs.tensors["input_ids"], inputs.tensors["attention_mask"]
        prefix = self.prefix_length(inputs)
        keys = ids.new_full((prefix,), self.image_token_id)
        rows = []
        for row, row_mask in zip(ids, mask):
            pad = int((row_mask.cumsum(-1) == 0).sum())
            rows.append(torch.cat([row[:pad], keys, row[pad:]]))
        return replace(inputs, prompt_length=inputs.prompt_length + prefix, sequence_ids=torch.stack(rows))

    def _layouts(self, tensors: dict[str, torch.Tensor], rows: Sequence[tuple[Image.Image, ...]]) -> list[ImageLayout]:
        """Every row's tiles among the keys, one image slot after another (`MllamaFamily.several_layouts`)."""
        return self.family_spec.several_layouts(self.model, self.processor, tensors, rows)

    def _row(self, inputs: ModelInputs, b: int) -> ModelInputs:
        """Row ``b`` of a left-padded batch as it would be built alone: its padding and its empty image slots removed."""
        ids = inputs.tensors["input_ids"]
        pad = int((inputs.tensors["attention_mask"][b].cumsum(-1) == 0).sum())
        entry = inputs.images[b]
        n_images = len(entry) if isinstance(entry, tuple) else 1
        slots = {"pixel_values", "aspect_ratio_ids", "aspect_ratio_mask"}
        tensors = {}
        for key, value in inputs.tensors.items():
            value = value[b : b + 1, pad:] if value.shape[:2] == ids.shape else value[b : b + 1]
            if key in slots:
                value = value[:, :n_images]
            elif key == "cross_attention_mask":  # [B, L, images, tiles]
                value = value[..., :n_images, :]
            tensors[key] = value
        prefix, kept = self.prefix_length(inputs), n_images * self.family_spec.image_keys(self.model)
        sequence = inputs.input_ids[b, pad:]
        sequence = torch.cat([sequence[:kept], sequence[prefix:]])[None]
        return ModelInputs(tensors, inputs.prompt_length - pad - (prefix - kept), [inputs.layouts[b].shifted(-pad)],
                           inputs.sample_id, inputs.draw, inputs.images[b : b + 1], sequence)

    # ---------------------------------------------------------------- hooks on the language model's call
    @contextlib.contextmanager
    def _on_cross_states(self, change: Callable[[dict[str, Any]], None], first: bool = True) -> Iterator[None]:
        """Inside: ``change(kwargs)`` edits the keyword arguments of every language-model call that gets the image's
        states (the prefill; decoding steps read them from the cache), given as ``[B, V, d]``; ``first``: before other
        such hooks."""

        def pre_hook(module, args, kwargs):
            states = kwargs.get("cross_attention_states")
            if states is None:
                return None
            text = kwargs["input_ids"] if kwargs.get("input_ids") is not None else kwargs["inputs_embeds"]
            # the projector's output is [batch x images x tiles, states, d]; the layers view it per batch row
            kwargs["cross_attention_states"] = states.reshape(text.shape[0], -1, states.shape[-1])
            change(kwargs)
            return args, kwargs

        handle = self.language_model().register_forward_pre_hook(pre_hook, with_kwargs=True, prepend=first)
        try:
            yield
        finally:
            handle.remove()

    def _removing(self, batch: ModelInputs, keep: torch.Tensor) -> contextlib.AbstractContextManager[None]:
        """Inside: the image states at the layouts' positions scaled by ``keep`` [B, n] (0 removes a key)."""
        pads = (batch.tensors["attention_mask"].cumsum(-1) == 0).sum(-1)
        positions = torch.stack([layout.positions for layout in batch.layouts]).to(self.device) - pads[:, None]

        def remove(kwargs: dict[str, Any]) -> None:
            states = kwargs["cross_attention_states"]
            factor = torch.ones(states.shape[:2], device=states.device, dtype=states.dtype)
            factor.scatter_(1, positions.to(states.device), keep.to(states.device, states.dtype))
            kwargs["cross_attention_states"] = states * factor.unsqueeze(-1)

        return self._on_cross_states(remove)

    # ---------------------------------------------------------------- generation
    def generate(self, inputs: ModelInputs, max_new_tokens: int, *, return_hidden: bool = False,
                 image_keep: torch.Tensor | None = None, removal: str = "zero", min_new_tokens: int = 0,
                 hidden_from: str = "final_norm", keep_rows: torch.Tensor | None = None) -> list[Generation]:
        """`HFVisionLanguageAdapter.generate`, over the joint sequence: each Generation's sequence and prompt length
        include the image keys, and its hidden states (``return_hidden``) start with the keys' (final-norm) states."""
        options = dict(return_hidden=return_hidden, removal=removal, min_new_tokens=min_new_tokens, hidden_from=hidden_from)
        if image_keep is None and len(inputs.layouts) > 1:
            return [g for b in range(len(inputs.layouts)) for g in self.generate(self._row(inputs, b), max_new_tokens,
                                                                                    **options)]
        states: list[torch.Tensor] = []
        with self._on_cross_states(lambda kwargs: states.append(kwargs["cross_attention_states"]), first=False):
            generations = super().generate(inputs, max_new_tokens, image_keep=image_keep, keep_rows=keep_rows, **options)
        if not return_hidden:
            return generations
        keys = self.final_norm()(states[0]).detach()
        return [replace(g, last_hidden=torch.cat([keys[min(b, len(keys) - 1)], g.last_hidden]))
                for b, g in enumerate(generations)]

    # ---------------------------------------------------------------- teacher forcing
    def _with_answer(self, inputs: ModelInputs, generation: Generation, length: int | None) -> dict[str, torch.Tensor]:
        """The model's tensors over prompt + answer; ``length`` counts joint positions. The cross-attention mask goes on
        as generate continues it: each answer token sees what the last prompt token sees."""
        real = None if length is None else length - self.prefix_length(inputs)
        if real is not None and real < 1:
            raise ValueError(f"a teacher-forced forward of the {self.family} family needs at least one text position")
        mask = inputs.tensors["cross_attention_mask"]
        tensors = super()._with_answer(replace(inputs, tensors={k: v for k, v in inputs.tensors.items()
                                                                 if k != "cross_attention_mask"}), generation, None)
        extra = tensors["input_ids"].shape[1] - mask.shape[1]
        tensors["cross_attention_mask"] = torch.cat([mask, mask[:, -1:].expand(-1, extra, -1, -1)], dim=1)
        if real is not None:
            tensors = {k: v[:, :real] if v.shape[:2] == tensors["input_ids"].shape else v for k, v in tensors.items()}
        return tensors

    def teacher_forced(self, inputs: ModelInputs, generation: Generation, length: int | None = None,
                       vision_leaf: bool = False, hidden_states: bool = False, attention: str = "none") -> TeacherForced:
        if attention not in ATTENTION_KINDS:
            raise ValueError(f"unknown attention kind {attention!r}; expected one of {ATTENTION_KINDS}")
        if len(inputs.layouts) != 1:
            raise ValueError("teacher forcing takes single-sample inputs")
        tensors = self._with_answer(inputs, generation, length)
        leaves: list[torch.Tensor] = []
        keys: list[torch.Tensor] = []
        last: list[torch.Tensor] = []
        with contextlib.ExitStack() as stack:
            self._graph_leaf(stack, leaves, vision_leaf)  # the joint input (`_on_lm_input`), or the vision states
            stack.enter_context(self._on_cross_states(lambda kwargs: keys.append(kwargs["cross_attention_states"]),
                                                      first=False))  # the image states as the layers read them
            if hidden_states:
                handle = self.final_norm().register_forward_pre_hook(lambda module, args: last.append(args[0]))
                stack.callback(handle.remove)
            records = []
            if attention == "eager":
                stack.enter_context(self._joint_eager_attention(self.prefix_length(inputs)))
            elif attention == "capture":
                records = stack.enter_context(self._captured_attention())
            out = self.model(**tensors, output_attentions=attention == "eager", output_hidden_states=hidden_states,
                             use_cache=False)
        if len(leaves) != 1 or len(keys) != 1:
            raise RuntimeError(f"{self.family}: expected one graph leaf and one image-state call, got {len(leaves)}, "
                               f"{len(keys)}")
        prefix = keys[0][0]
        prefix_length = self.prefix_length(inputs)
        logits = torch.cat([out.logits.new_zeros(prefix_length, out.logits.shape[-1]), out.logits[0]])
        layers = None
        if hidden_states:
            layers = tuple(torch.cat([prefix, h[0]]) for h in out.hidden_states[1:-1]) + (torch.cat([prefix, last[0][0]]),)
        cross_layers = set(self.model.config.text_config.cross_attention_layers)
        joint = tuple(self._prefixed(record, prefix_length, layer in cross_layers) for layer, record in enumerate(records))
        return TeacherForced(logits, leaves[0], joint, tuple(out.attentions) if attention == "eager" else (), layers)

    def _on_lm_input(self, change: Callable[[torch.Tensor], torch.Tensor]) -> contextlib.AbstractContextManager[None]:
        """Inside: the language model's input seen and replaced as the joint sequence ``[B, pad + V + L, d]`` (each row's
        padding, the image states, the text embeddings); the call then reads its image states and text from
        ``change(joint)``. The graph leaf of a teacher-forced forward is made here, as for every family."""

        def replace_joint(kwargs: dict[str, Any]) -> None:
            embeds = kwargs.get("inputs_embeds")
            embeds = self.model.get_input_embeddings()(kwargs["input_ids"]) if embeds is None else embeds
            states = kwargs["cross_attention_states"]
            embeds = embeds.to(states.dtype)
            mask = kwargs.get("attention_mask")
            pads = (mask.cumsum(-1) == 0).sum(-1).tolist() if mask is not None and mask.dim() == 2 else [0] * len(embeds)
            joint = change(torch.stack([torch.cat([e[:pad], s, e[pad:]]) for e, s, pad in zip(embeds, states, pads)]))
            width = states.shape[1]
            images = torch.stack([j[pad : pad + width] for j, pad in zip(joint, pads)])
            text = torch.stack([torch.cat([j[:pad], j[pad + width :]]) for j, pad in zip(joint, pads)])
            kwargs.update(input_ids=None, cross_attention_states=images, inputs_embeds=text)

        return self._on_cross_states(replace_joint)

    @staticmethod
    def _prefixed(record, prefix: int, cross: bool) -> PrefixedAttention:
        """A captured layer's attention over the joint sequence (a cross-attention layer's keys are the image's)."""
        fields = {name: getattr(record, name) for name in record.__dataclass_fields__}
        return PrefixedAttention(**fields, prefix=prefix, reads_prefix=cross)

    @contextlib.contextmanager
    def _joint_eager_attention(self, prefix: int) -> Iterator[None]:
        """Inside: the language model's attention is eager, and each layer returns its probabilities over the joint
        sequence ``[1, H, V + N, V + N]`` (key rows attend to themselves, as `PrefixedAttention`'s) as the graph node its
        output is computed from (`chefer-reference` takes gradients there); the vision tower runs as loaded."""
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

        cross_layers = set(self.model.config.text_config.cross_attention_layers)

        def attend(module, query, key, value, attention_mask, scaling: float, dropout: float = 0.0, **kwargs):
            groups = query.shape[1] // key.shape[1]
            key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
            scores = torch.matmul(query, key.transpose(2, 3)) * scaling
            if attention_mask is not None:
                scores = scores + attention_mask
            weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
            n = query.shape[2]
            keys_attend_themselves = torch.zeros(prefix + n, prefix + n, dtype=weights.dtype, device=weights.device)
            keys_attend_themselves[:prefix, :prefix] = torch.eye(prefix, dtype=weights.dtype, device=weights.device)
            if module.layer_idx in cross_layers:  # text rows over the image's keys
                joint = torch.nn.functional.pad(weights, (0, n, prefix, 0)) + keys_attend_themselves
                used = joint[..., prefix:, :prefix]
            else:
                joint = torch.nn.functional.pad(weights, (prefix, 0, prefix, 0)) + keys_attend_themselves
                used = joint[..., prefix:, prefix:]
            return torch.matmul(used, value).transpose(1, 2).contiguous(), joint

        AttentionInterface.register(_JOINT_EAGER, attend)
        ALL_MASK_ATTENTION_FUNCTIONS.register(_JOINT_EAGER, ALL_MASK_ATTENTION_FUNCTIONS["eager"])
        config = self.model.config.get_text_config()
        loaded = config._attn_implementation
        config._attn_implementation = _JOINT_EAGER
        try:
            yield
        finally:
            config._attn_implementation = loaded

    def vision_to_tokens(self, inputs: ModelInputs, values: torch.Tensor) -> torch.Tensor:
        return self.family_spec.vision_to_tokens(self.model, inputs.tensors, values)

