"""`HFVisionLanguageAdapter`: one adapter for every supported Hugging Face VLM family.

The family (`fastrm_bench.models.families`, chosen by ``config.model_type``) supplies the geometry;
this class does the rest the same way for all of them:

- loading with the attention implementation the user answers with (SDPA by default), a dtype and an
  optional ``device_map``; methods that read attention get it recomputed from a captured forward
  (`attention_capture`), never from eager probabilities unless asked;
- prompts: the model folder's ``fastrm_bench.json`` template, else the processor's chat template,
  else the family's fallback (LLaVA-1.5's ``USER: <image>\\n{prompt} ASSISTANT:``);
- every forward the harness makes goes through the family's own ``forward`` / ``generate`` (its
  position ids, M-RoPE included, and its attention masks). Hooks do the rest: a forward pre-hook on
  the language model reads, perturbs or detaches its input embeddings; a forward hook on the vision
  layer Grad-CAM targets makes its output a leaf.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image

from fastrm_bench.checkpoint_files import InvalidWeightsFile, loading_problem, read_safetensors_shapes
from fastrm_bench.interfaces import ATTENTION_KINDS, Generation, ModelAdapter, ModelInputs, TeacherForced, Video
from fastrm_bench.layer_attention import LayerAttention
from fastrm_bench.layout import ImageLayout, LayoutGroup, side_by_side
from fastrm_bench.models.attention_capture import (
    ATTN_IMPLEMENTATIONS,
    DEFAULT_ATTN_IMPLEMENTATION,
    AttentionCaptureError,
    capturing_attention,
)
from fastrm_bench.models.errors import ModelLoadError
from fastrm_bench.models.families import Family, LayoutError, family_for, family_key
from fastrm_bench.registry import FAMILIES

REMOVAL_STRATEGIES = ("zero", "drop")
#: optional file in a model folder: {"prompt_template": "..."} (the template belongs to the model)
HARNESS_CONFIG = "fastrm_bench.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: where `generate(return_hidden=True)` reads the final-norm hidden states (see its docstring)
HIDDEN_SOURCES = ("final_norm", "all_layers")


class _Captured(Exception):
    """Raised by a capture hook to stop a forward once the language model's inputs are known."""


def _family_of(config, source: str) -> Family:
    """The family serving the checkpoint's config (`family_key`); an unsupported type is a `ModelLoadError` naming
    it and the way to add one.

    The registry's own "did you mean" would suggest the nearest spelling (``internvl`` -> ``qwen2_vl``), which for a
    ``config.model_type`` read from a checkpoint is a different architecture, not a typo.
    """
    model_type = family_key(config)
    if model_type not in FAMILIES:
        raise ModelLoadError(
            f"{source}: no model family supports its model type {model_type!r}; supported: "
            f"{', '.join(FAMILIES.names())} (`fastrm-bench list families`). To add one, see \"Add your own model family\" "
            "in docs/extending.md (a family class registered by a `fastrm_bench.families` entry point)")
    return family_for(model_type)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class HFVisionLanguageAdapter(ModelAdapter):
    """A transformers VLM of a registered family, with its processor (local folder or hub id in the cache)."""

    #: whether this adapter explains models that read the image through cross-attention layers
    #: (`fastrm_bench.models.cross_attention.CrossAttentionAdapter`); `from_pretrained` refuses the other kind
    reads_cross_attention: ClassVar[bool] = False

    def __init__(self, model: torch.nn.Module, processor: Any, name: str, family: Family, prompt_template: str | None = None,
                 device: torch.device | None = None, processor_options: dict[str, Any] | None = None):
        self.model = model
        #: keyword arguments of every processor call (e.g. Gemma 3's ``do_pan_and_scan``), see `from_pretrained`
        self.processor_options = dict(processor_options or {})
        self.processor = processor
        self.name = name
        self.family_spec = family
        self.family = family.name
        self.prompt_template = prompt_template
        self.device = device or model.get_input_embeddings().weight.device
        self.image_token_id = family.image_token_id(model.config)
        tokenizer = processor.tokenizer
        if tokenizer.convert_ids_to_tokens(self.image_token_id) in (None, tokenizer.unk_token):
            raise ModelLoadError(f"{name}: the tokenizer has no image token for id {self.image_token_id}")
        tokenizer.padding_side = "left"
        if prompt_template is not None and "<image>" not in prompt_template:
            raise ModelLoadError(f"{name}: the prompt template {prompt_template!r} has no <image> placeholder")
        if prompt_template is None and getattr(processor, "chat_template", None) is None and family.fallback_template is None:
            raise ModelLoadError(f"{name}: the processor has no chat template; put a prompt template with an <image> "
                                 f"placeholder in {HARNESS_CONFIG} in the model folder")

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, *, prompt_template: str | None = None, device: str | torch.device | None = None,
        dtype: torch.dtype | str = torch.float32, device_map: str | None = None, name: str | None = None,
        attn_implementation: str = DEFAULT_ATTN_IMPLEMENTATION, processor_options: dict[str, Any] | None = None,
    ) -> HFVisionLanguageAdapter:
        """Load model and processor from a local folder or a hub id (offline: from the HF cache).

        The family comes from ``config.model_type``. The prompt template is, in order: the argument,
        ``fastrm_bench.json`` in the model folder, the processor's chat template, the family's fallback.
        ``processor_options`` (the argument, else ``fastrm_bench.json``'s) are keyword arguments of every
        processor call, e.g. ``{"do_pan_and_scan": true}`` for Gemma 3, whose processor's own defaults
        override the saved image processor config. ``device_map="auto"`` spreads a model larger than one GPU
        (accelerate); ``device`` is then ignored. ``attn_implementation`` is what the model answers with (SDPA
        by default); methods that read attention recompute it from what that implementation received
        (`attention_capture`), so it need not be eager.
        """
        if attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ModelLoadError(f"unknown attention implementation {attn_implementation!r}; "
                                 f"choose one of {', '.join(ATTN_IMPLEMENTATIONS)}")
        from transformers import AutoConfig

        from fastrm_bench.models.processors import load_processor

        source = str(name_or_path)
        harness = _harness_config(Path(source))
        try:
            config = AutoConfig.from_pretrained(source)
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"cannot read the config of {source!r}: {err}") from err
        family = _family_of(config, source)
        if family.cross_attention != cls.reads_cross_attention:
            raise ModelLoadError(f"{source}: the {family.name} family reads its image through cross-attention layers "
                                 f"{'' if family.cross_attention else 'not '}(load it with fastrm_bench.models.zoo.load_model, "
                                 "which picks the adapter)")
        processor = load_processor(source)
        if not hasattr(processor, "tokenizer") or not hasattr(processor, "image_processor"):
            raise ModelLoadError(f"{source!r}: the processor has no tokenizer and image processor; not a VLM checkpoint")
        model = _load_model(source, family, DTYPES[dtype] if isinstance(dtype, str) else dtype, device_map,
                            attn_implementation)
        if device_map is None:
            model.to(torch.device(device) if device else default_device())
        template = prompt_template if prompt_template is not None else harness.get("prompt_template")
        options = processor_options if processor_options is not None else harness.get("processor_options")
        return cls(model, processor, name or source, family, template, processor_options=options)

    # ---------------------------------------------------------------- properties of the contract
    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.get_text_config().hidden_size)

    @property
    def removals(self) -> tuple[str, ...]:
        return ("zero", "drop") if self.family_spec.embeds_suffice else ("zero",)

    @property
    def packs_removals(self) -> bool:
        return self.family_spec.embeds_suffice

    # ---------------------------------------------------------------- inputs
    def format_prompt(self, prompt: str, n_images: int = 1, video: bool = False) -> str:
        """The prompt as the model expects it, showing ``n_images`` images (or a video) before the question: the chat
        template's image (video) parts, or a fixed template's one image token repeated (one per line), as LLaVA-1.5's
        multi-image use."""
        if video and (self.prompt_template is not None or getattr(self.processor, "chat_template", None) is None):
            raise ValueError(f"video inputs need the processor's chat template; {self.name} has a fixed prompt template")
        if self.prompt_template is None and getattr(self.processor, "chat_template", None) is not None:
            visual = [{"type": "video"}] if video else [{"type": "image"}] * n_images
            content = [*visual, {"type": "text", "text": prompt}]
            messages = [{"role": "user", "content": content}]
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        template = self.prompt_template if self.prompt_template is not None else self.family_spec.fallback_template
        text = template.format(prompt=prompt)
        if n_images == 1:
            return text
        token = self.processor.tokenizer.convert_ids_to_tokens(self.image_token_id)
        if text.count(token) != 1:
            raise ValueError(f"{self.name}'s prompt template has {text.count(token)} image places ({token}); several images "
                             "per prompt need a template with one (repeated per image) or a chat template")
        return text.replace(token, "\n".join([token] * n_images), 1)

    def build_inputs(self, images: Sequence[Image.Image | Sequence[Image.Image] | Video], prompts: Sequence[str]
                     ) -> ModelInputs:
        if any(isinstance(entry, Video) for entry in images):
            return self._build_video_inputs(images, prompts)
        rows = [tuple(im.convert("RGB") for im in entry) if isinstance(entry, (list, tuple)) else (entry.convert("RGB"),)
                for entry in images]
        if any(not row for row in rows):
            raise ValueError("every prompt needs at least one image")
        texts = [self.format_prompt(p, len(row)) for p, row in zip(prompts, rows)]
        enc = self.processor(images=self.family_spec.batch_images(rows), text=texts, padding=True, return_tensors="pt",
                             **self.processor_options)
        # the harness never asks for a loss: training labels a processor adds (PaliGemma's) are not model inputs here
        tensors = {k: v.to(self.device) for k, v in enc.items() if torch.is_tensor(v) and k != "labels"}
        if "pixel_values" in tensors and tensors["pixel_values"].is_floating_point():
            tensors["pixel_values"] = tensors["pixel_values"].to(self.model.dtype)
        return ModelInputs(tensors=tensors, prompt_length=int(tensors["input_ids"].shape[1]),
                           layouts=self._layouts(tensors, rows), images=tuple(row[0] if len(row) == 1 else row for row in rows))

    def _layouts(self, tensors: dict[str, torch.Tensor], rows: Sequence[tuple[Image.Image, ...]]) -> list[ImageLayout]:
        """Each batch row's layout: the family's, or for a row of several images `_several_images_layout`."""
        if all(len(row) == 1 for row in rows):
            return self.family_spec.layouts(self.model, self.processor, tensors, [row[0] for row in rows])
        return [self._several_images_layout(ids, row) for ids, row in zip(tensors["input_ids"], rows)]

    def _build_video_inputs(self, videos: Sequence[Any], prompts: Sequence[str]) -> ModelInputs:
        """`build_inputs` for a batch of clips: the family encodes each (`Family.encode_video`), the prompt's one video
        token becomes the clip's count of them, and the layout has a group per time step (`Family.video_layouts`)."""
        if not all(isinstance(entry, Video) for entry in videos):
            raise ValueError("a batch mixes videos and images; give every row a video, or none")
        encoded = [self.family_spec.encode_video(self.model, self.processor, v.frames) for v in videos]
        token = self.family_spec.video_place(self.model, self.processor)
        texts = []
        for prompt, video, (video_inputs, count) in zip(prompts, videos, encoded):
            text = self.format_prompt(prompt, video=True)
            if text.count(token) != 1:
                raise ValueError(f"{self.name}'s chat template writes {text.count(token)} video places ({token}) for a video")
            texts.append(self.family_spec.expand_video_place(self.processor, text, token, video_inputs, count, video))
        tensors = dict(self.processor.tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False))
        if "mm_token_type_ids" in self.processor.model_input_names:  # M-RoPE reads each token's modality (2: video)
            tensors["mm_token_type_ids"] = torch.tensor(self.processor.create_mm_token_type_ids(tensors["input_ids"].tolist()))
        for key in encoded[0][0]:
            tensors[key] = torch.cat([inputs[key] for inputs, _ in encoded])
        tensors = {k: v.to(self.device) for k, v in tensors.items()}
        for key in encoded[0][0]:  # the pixels (pixel_values_videos; InternVL: pixel_values) in the model's dtype
            if tensors[key].is_floating_point():
                tensors[key] = tensors[key].to(self.model.dtype)
        layouts = self.family_spec.video_layouts(self.model, tensors, [v.frames for v in videos])
        return ModelInputs(tensors=tensors, prompt_length=int(tensors["input_ids"].shape[1]), layouts=layouts,
                           images=tuple(videos))

    def _several_images_layout(self, ids: torch.Tensor, images: Sequence[Image.Image]) -> ImageLayout:
        """The layout of a row showing several images: each image's own layout (the family's, from the image encoded
        alone), its tokens taken in order from the row's image tokens, drawn side by side on one canvas.

        This holds where the processor encodes an image the same way alone and beside others; where it does not
        (LLaVA-OneVision drops its anyres tiles for several images), the counts differ and the error says so."""
        found = torch.nonzero(ids == self.image_token_id).flatten().tolist()
        canvas, offsets = side_by_side([(im.height, im.width) for im in images])
        groups, start = [], 0
        for image, left in zip(images, offsets):
            alone = self.build_inputs([image], [""])
            alone_positions = torch.nonzero(alone.input_ids[0] == self.image_token_id).flatten().tolist()
            rank = {position: k for k, position in enumerate(alone_positions)}
            if start + len(alone_positions) > len(found):
                break
            layout = alone.layout
            moved = [LayoutGroup(tuple(found[start + rank[p]] for p in g.positions), g.grid, g.region) for g in layout.groups]
            groups.extend(ImageLayout(tuple(moved), layout.image_size).placed(left, canvas).groups)
            start += len(alone_positions)
        if start != len(found) or len(groups) == 0:
            raise LayoutError(f"the {self.family} processor encodes these {len(images)} images differently together than "
                              f"alone ({len(found)} image tokens together); several images per sample are not supported "
                              f"for the {self.family} family")
        return ImageLayout(tuple(groups), canvas)

    # ---------------------------------------------------------------- hooks on the language model's input
    @contextlib.contextmanager
    def _on_lm_call(self, change: Callable[[dict[str, Any]], None]) -> Iterator[None]:
        """Inside: ``change(kwargs)`` edits in place the keyword arguments of every language-model call that gets
        input embeddings (transformers' VLMs pass them, and the rest, by keyword)."""

        def pre_hook(module, args, kwargs):
            if kwargs.get("inputs_embeds") is None:
                return None
            change(kwargs)
            return args, kwargs

        language_model = self.family_spec.language_model(self.model)
        handle = language_model.register_forward_pre_hook(pre_hook, with_kwargs=True, prepend=True)
        try:
            yield
        finally:
            handle.remove()

    def _on_lm_input(self, change: Callable[[torch.Tensor], torch.Tensor]) -> contextlib.AbstractContextManager[None]:
        """Inside: the language model receives ``change(inputs_embeds)`` instead of its input embeddings."""

        def replace(kwargs: dict[str, Any]) -> None:
            kwargs["inputs_embeds"] = change(kwargs["inputs_embeds"])

        return self._on_lm_call(replace)

    def _removing_image_tokens(self, positions: torch.Tensor, keep: torch.Tensor) -> contextlib.AbstractContextManager[None]:
        """Inside: a language-model call over the prompt gets the image tokens at ``positions`` [B, n] scaled by
        ``keep`` [B, n] on every route the family's LM reads them by (`Family.remove_image_tokens`: the input
        embeddings, and Qwen3-VL's DeepStack features); decoding steps, which hold no image token, pass."""

        def remove(kwargs: dict[str, Any]) -> None:
            embeds = kwargs["inputs_embeds"]
            if embeds.shape[1] > positions.max():
                self.family_spec.remove_image_tokens(kwargs, _keep_factor(embeds, positions, keep))

        return self._on_lm_call(remove)

    def _removing(self, batch: ModelInputs, keep: torch.Tensor) -> contextlib.AbstractContextManager[None]:
        """Inside: the model's forwards over ``batch`` have its image tokens removed where ``keep`` [B, n] is 0 (the
        hook path of families whose LM needs more than embeddings)."""
        return self._removing_image_tokens(torch.stack([layout.positions for layout in batch.layouts]).to(self.device), keep)

    @torch.no_grad()
    def lm_input_embeds(self, inputs: ModelInputs) -> torch.Tensor:
        """The language model's input embeddings ``[B, L, d]`` (image features in place), computed once."""
        captured: dict[str, torch.Tensor] = {}

        def capture(embeds: torch.Tensor) -> torch.Tensor:
            captured["embeds"] = embeds
            raise _Captured

        with self._on_lm_input(capture), contextlib.suppress(_Captured):
            self.model(**inputs.tensors, use_cache=False)
        return captured["embeds"]

    def perturbed_embeds(self, inputs: ModelInputs, image_keep: torch.Tensor, removal: str = "zero",
                         keep_rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """LM input embeddings and attention mask with image tokens removed where keep == 0.

        For families whose language model depends on its input embeddings and mask alone (1D positions):
        ``image_keep`` [K, n] may give many removals of single-sample inputs, which are encoded once and
        broadcast (cheap perturbation curves), or with ``keep_rows`` [K] the removals of several samples of a
        batch (row k perturbs sample ``keep_rows[k]``; their images have the same number of tokens).
        ``drop`` deletes the removed tokens and left-pads again.
        """
        self._check_removal(removal)
        if not self.family_spec.embeds_suffice:
            raise ValueError(f"{self.family}: its language model needs more than embeddings (positions or masks of "
                             "its own); perturb through generate(image_keep=...) with removal 'zero'")
        keep = image_keep.to(self.device)
        embeds = self.lm_input_embeds(inputs)
        attn = inputs.tensors["attention_mask"]
        positions = torch.stack([layout.positions for layout in inputs.layouts]).to(self.device)
        if keep_rows is not None:
            rows = keep_rows.to(self.device)
            embeds, attn, positions = embeds[rows], attn[rows], positions[rows]
        elif embeds.shape[0] == 1 and keep.shape[0] > 1:
            embeds, attn = embeds.expand(keep.shape[0], -1, -1), attn.expand(keep.shape[0], -1)
            positions = positions.expand(keep.shape[0], -1)
        if removal == "zero":
            return _scale_rows(embeds, positions, keep), attn
        rows = []
        for b in range(embeds.shape[0]):
            row_keep = attn[b].bool().clone()
            row_keep[positions[b]] = keep[b].bool() & row_keep[positions[b]]
            rows.append(embeds[b][row_keep])
        length = max(r.shape[0] for r in rows)
        out = embeds.new_zeros(len(rows), length, embeds.shape[-1])
        out_mask = attn.new_zeros(len(rows), length)
        for b, r in enumerate(rows):
            out[b, length - r.shape[0] :] = r
            out_mask[b, length - r.shape[0] :] = 1
        return out, out_mask

    def _check_removal(self, removal: str) -> None:
        if removal not in REMOVAL_STRATEGIES:
            raise ValueError(f"unknown removal strategy {removal!r}; expected one of {REMOVAL_STRATEGIES}")
        if removal not in self.removals:
            raise ValueError(f"removal {removal!r} is not supported for the {self.family} family (its position ids or "
                             f"attention mask depend on the image tokens' places); use one of {self.removals}")

    # ---------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(
        self, inputs: ModelInputs, max_new_tokens: int, *, return_hidden: bool = False, image_keep: torch.Tensor | None = None,
        removal: str = "zero", min_new_tokens: int = 0, hidden_from: str = "final_norm", keep_rows: torch.Tensor | None = None,
    ) -> list[Generation]:
        """Greedy generation (see `ModelAdapter.generate`).

        ``return_hidden`` adds the final-norm hidden states of every position (``Generation.last_hidden``),
        read by ``hidden_from``: ``"final_norm"`` (default, lean) collects the output of the family's final
        norm with a forward hook, at prefill and at every decoding step, and nothing else;
        ``"all_layers"`` asks transformers for ``output_hidden_states=True`` (every layer's states of the
        prompt and of every step, kept until generation ends) and keeps the last layer's. Both give the
        same states; the second exists to check that and to measure what the first saves.
        """
        if hidden_from not in HIDDEN_SOURCES:
            raise ValueError(f"unknown hidden_from {hidden_from!r}; expected one of {HIDDEN_SOURCES}")
        tok = self.tokenizer
        all_layers = return_hidden and hidden_from == "all_layers"
        kwargs = dict(max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, do_sample=False, num_beams=1,
                      temperature=None, top_p=None, top_k=None, return_dict_in_generate=True,
                      output_hidden_states=all_layers, pad_token_id=tok.pad_token_id,
                      suppress_tokens=[self.image_token_id])  # an image placeholder in an answer would break re-encoding
        with self._final_norm_outputs(return_hidden and not all_layers) as normed:
            out, new, prompt_ids = self._generate(inputs, kwargs, image_keep, removal, keep_rows)
        stops = self.stop_ids()
        eos = self._eos_ids()
        # answering a batch of samples: each row's generation is given as that sample alone would have it
        # (left padding removed from its sequence, prompt length and hidden states)
        unpad = image_keep is None and len(inputs.layouts) > 1
        padding = (inputs.tensors["attention_mask"].cumsum(-1) == 0).sum(-1).tolist() if unpad else [0] * new.shape[0]
        results = []
        for b in range(new.shape[0]):
            ids = new[b]
            stop = [i for i, t in enumerate(ids.tolist()) if t in stops]
            ended = [i for i, t in enumerate(ids.tolist()) if t in eos]
            steps = ended[0] + 1 if ended else ids.numel()  # decoding steps generate takes for this row alone
            ids = ids[: stop[0]] if stop and min_new_tokens == 0 else ids
            hidden = None
            if all_layers:
                states = [out.hidden_states[0][-1][b]] + [h[-1][b] for h in out.hidden_states[1:]]
                hidden = torch.cat(states, dim=0)  # [L0 + T_max - 1, d]
            elif return_hidden:
                hidden = torch.cat([step[b] for step in normed], dim=0)  # prefill [L0, d], then one row per step
            pad = padding[b]
            if hidden is not None and unpad:
                hidden = hidden[pad : inputs.prompt_length + steps - 1]
            results.append(Generation(
                sequences=(torch.cat([prompt_ids[b][pad:], ids]) if prompt_ids is not None else ids).unsqueeze(0),
                prompt_length=inputs.prompt_length - pad, generated_ids=ids,
                text=tok.decode(ids, skip_special_tokens=True).strip(), last_hidden=hidden,
            ))
        return results

    @contextlib.contextmanager
    def _final_norm_outputs(self, active: bool) -> Iterator[list[torch.Tensor]]:
        """While active, every output of the family's final norm (``[B, L, d]``: the prompt at prefill, then one
        position per decoding step) is appended to the yielded list; the hook is removed on exit."""
        outputs: list[torch.Tensor] = []
        if not active:
            yield outputs
            return

        def keep(module, args, output):
            outputs.append((output[0] if isinstance(output, tuple) else output).detach())

        handle = self.final_norm().register_forward_hook(keep)
        try:
            yield outputs
        finally:
            handle.remove()

    def _generate(self, inputs: ModelInputs, kwargs: dict[str, Any], image_keep: torch.Tensor | None, removal: str,
                  keep_rows: torch.Tensor | None):
        """(transformers' output, the new ids ``[B, T_max]``, the prompt ids or None when the output lacks them)."""
        prompt_ids = inputs.input_ids
        if keep_rows is not None and (image_keep is None or not self.packs_removals):
            raise ValueError(f"keep_rows packs removals of several samples: it needs image_keep and a family whose "
                             f"language model takes embeddings alone (not {self.family})")
        model_length = int(inputs.tensors["input_ids"].shape[1])  # the prompt as the model gets it
        if image_keep is None:
            out = self.model.generate(**inputs.tensors, **kwargs)
            new = out.sequences[:, model_length:]
        elif self.family_spec.embeds_suffice:
            embeds, attn = self.perturbed_embeds(inputs, image_keep, removal, keep_rows)
            out = self.model.generate(inputs_embeds=embeds, attention_mask=attn, **kwargs)
            new = out.sequences  # generation from embeddings returns only the new tokens
            prompt_ids = None
        else:
            self._check_removal(removal)
            keep = image_keep.to(self.device)
            batch = inputs.repeat(keep.shape[0]) if len(inputs.layouts) == 1 and keep.shape[0] > 1 else inputs
            with self._removing(batch, keep):
                out = self.model.generate(**batch.tensors, **kwargs)
            new = out.sequences[:, model_length:]
            prompt_ids = None
        return out, new, prompt_ids

    def _eos_ids(self) -> set[int]:
        """The ids transformers' generate stops a row at (the generation config's)."""
        eos = self.model.generation_config.eos_token_id
        return set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])

    def stop_ids(self) -> set[int]:
        """The ids an answer ends before: generate's own, the tokenizer's end and padding."""
        return self._eos_ids() | {i for i in (self.tokenizer.eos_token_id, self.tokenizer.pad_token_id) if i is not None}

    def language_model(self) -> torch.nn.Module:
        return self.family_spec.language_model(self.model)

    def decoder_layers(self) -> torch.nn.ModuleList:
        return self.family_spec.decoder_layers(self.model)

    def final_norm(self) -> torch.nn.Module:
        return self.family_spec.final_norm(self.model)

    # ---------------------------------------------------------------- teacher forcing
    def _with_answer(self, inputs: ModelInputs, generation: Generation, length: int | None) -> dict[str, torch.Tensor]:
        """The prompt's tensors with the generated tokens appended (all but the last: it predicts nothing we need).

        Per-token tensors (shape ``[1, L0]``) are extended as the family's generate extends them
        (`Family.answer_inputs`: ids by the answer, the mask by ones, token types by the family's answer type);
        the rest (pixels, grids, sizes) is passed as the processor made it.
        """
        if len(inputs.layouts) != 1:
            raise ValueError("teacher forcing takes single-sample inputs")
        answer = generation.generated_ids[: max(generation.num_generated - 1, 0)].to(self.device).unsqueeze(0)
        prompt_shape = inputs.tensors["input_ids"].shape
        out = {}
        for key, value in inputs.tensors.items():
            if value.shape[:2] == prompt_shape:
                extra = self.family_spec.answer_inputs(key, answer)
                value = torch.cat([value, extra.to(value.dtype)], dim=1)
                value = value[:, :length] if length is not None else value
            out[key] = value
        return out

    @property
    def num_layers(self) -> int:
        """Number of the language model's decoder layers (one captured attention each)."""
        return int(self.model.config.get_text_config().num_hidden_layers)

    @property
    def attn_implementation(self) -> str:
        """The attention implementation the language model answers with (what a run records)."""
        return self.model.config.get_text_config()._attn_implementation or "eager"

    @contextlib.contextmanager
    def _eager_attention(self) -> Iterator[None]:
        """Inside: the whole model runs eager attention (the textbook path); the loaded implementation after."""
        loaded = self.model.config._attn_implementation
        if loaded == "eager":
            yield
            return
        self.model.set_attn_implementation("eager")
        try:
            yield
        finally:
            self.model.set_attn_implementation(loaded)

    def teacher_forced(self, inputs: ModelInputs, generation: Generation, length: int | None = None,
                       vision_leaf: bool = False, hidden_states: bool = False, attention: str = "none") -> TeacherForced:
        if attention not in ATTENTION_KINDS:
            raise ValueError(f"unknown attention kind {attention!r}; expected one of {ATTENTION_KINDS}")
        tensors = self._with_answer(inputs, generation, length)
        leaves: list[torch.Tensor] = []
        last: list[torch.Tensor] = []  # the final norm's input: the last layer's output before the norm
        with contextlib.ExitStack() as stack:
            self._graph_leaf(stack, leaves, vision_leaf)
            if hidden_states:
                # transformers returns the last hidden state after the final norm (``hidden_states[-1]``
                # tied to ``last_hidden_state``); the norm's input is the last layer's own output
                norm = self.family_spec.final_norm(self.model)
                handle = norm.register_forward_pre_hook(lambda module, args: last.append(args[0]))
                stack.callback(handle.remove)
            records: list[LayerAttention] = []
            if attention == "eager":
                stack.enter_context(self._eager_attention())
            elif attention == "capture":
                records = stack.enter_context(self._captured_attention())
            out = self.model(**tensors, output_attentions=attention == "eager", output_hidden_states=hidden_states,
                             use_cache=False)
        probabilities = tuple(out.attentions) if attention == "eager" else ()  # not sliced: a slice is outside the graph
        if attention == "eager" and (not probabilities or any(a is None for a in probabilities)):
            raise RuntimeError(f"{self.family}: eager attention returned no probabilities")
        if len(leaves) != 1:
            raise RuntimeError(f"{self.family}: expected one graph leaf from the hooks, got {len(leaves)}")
        layers = None
        if hidden_states:
            if len(out.hidden_states) != self.num_layers + 1 or len(last) != 1:
                raise RuntimeError(f"{self.family}: expected {self.num_layers + 1} hidden states and one final norm call, "
                                   f"got {len(out.hidden_states)} and {len(last)}")
            layers = tuple(h[0] for h in out.hidden_states[1:-1]) + (last[0][0],)  # [0]: the batch of one
        return TeacherForced(out.logits[0], leaves[0], tuple(records), probabilities, layers)

    @contextlib.contextmanager
    def _captured_attention(self) -> Iterator[list[LayerAttention]]:
        """`capturing_attention` on this model, its failures said in one line with the way out."""
        try:
            with capturing_attention(self.model, self.num_layers) as records:
                yield records
        except (AttentionCaptureError, ValueError, NotImplementedError) as err:
            raise AttentionCaptureError(
                f"{self.name}: the attention of the {self.family} family could not be recomputed under "
                f"{self.attn_implementation} attention ({err}); load the model with --attn-implementation eager"
            ) from err

    def _graph_leaf(self, stack: contextlib.ExitStack, leaves: list[torch.Tensor], vision_leaf: bool) -> None:
        """Make the graph start at the LM input embeddings, or at the vision activations Grad-CAM targets."""

        def make_leaf(activations: torch.Tensor) -> torch.Tensor:
            leaf = activations.detach().requires_grad_(True)
            leaves.append(leaf)
            return leaf

        if vision_leaf:
            handle = self.family_spec.vision_leaf_hook(self.model, make_leaf)
            stack.callback(handle.remove)
        else:
            stack.enter_context(self._on_lm_input(make_leaf))

    @torch.no_grad()
    def answer_logprobs(self, inputs: ModelInputs, generation: Generation, image_keep: torch.Tensor,
                        removal: str = "zero") -> torch.Tensor:
        self._check_removal(removal)
        n = generation.num_generated
        keep = image_keep.to(self.device)
        if n == 0:
            return torch.zeros(keep.shape[0], 0)
        # prompt + answer[:-1]: its last n positions predict the n answer tokens (with or without dropped tokens)
        if self.family_spec.embeds_suffice:  # the image encoded once, its removals broadcast (as in generate)
            embeds, attn = self.perturbed_embeds(inputs, keep, removal)
            answer = generation.generated_ids[: n - 1].to(self.device)
            answer_embeds = self.model.get_input_embeddings()(answer).to(embeds.dtype)
            embeds = torch.cat([embeds, answer_embeds.expand(embeds.shape[0], -1, -1)], dim=1)
            attn = torch.cat([attn, attn.new_ones(attn.shape[0], n - 1)], dim=1)
            positions = (attn.cumsum(-1) - 1).clamp_min(0)  # left padding: positions count real tokens, as generate does
            logits = self.model(inputs_embeds=embeds, attention_mask=attn, position_ids=positions, use_cache=False,
                                logits_to_keep=n).logits
        else:  # positions or masks of the family's own: its forward on the repeated inputs, image tokens zeroed by a hook
            single = ModelInputs(self._with_answer(inputs, generation, None), inputs.prompt_length, inputs.layouts)
            batch = single.repeat(keep.shape[0]) if keep.shape[0] > 1 else single
            with self._removing(batch, keep):
                logits = self.model(**batch.tensors, use_cache=False, logits_to_keep=n).logits
        logprobs = torch.log_softmax(logits[:, -n:].float(), dim=-1)
        targets = generation.generated_ids.to(logprobs.device)
        return logprobs.gather(-1, targets.expand(logprobs.shape[0], -1).unsqueeze(-1)).squeeze(-1).cpu()

    def vision_to_tokens(self, inputs: ModelInputs, values: torch.Tensor) -> torch.Tensor:
        """The family's pooling (`Family.vision_to_tokens`); a clip's through `Family.video_vision_to_tokens`; several
        images' one image at a time: the vision layer sees them one after another, so ``values`` is cut into each
        image's patches (`_vision_patches` of the image encoded alone) and each piece pooled as that image alone."""
        entry = inputs.images[0] if len(inputs.images) == 1 else None
        if isinstance(entry, Video):
            return self.family_spec.video_vision_to_tokens(self.model, inputs.tensors, values)
        if not isinstance(entry, tuple):
            return self.family_spec.vision_to_tokens(self.model, inputs.tensors, values)
        alone = [self.build_inputs([image], [""]).tensors for image in entry]
        sizes = [self._vision_patches(tensors) for tensors in alone]
        if sum(sizes) != values.shape[-1]:
            raise LayoutError(f"the {self.family} vision layer sees {values.shape[-1]} patches for {len(entry)} images, "
                              f"{sum(sizes)} when each is encoded alone; Grad-CAM cannot tell them apart")
        pieces = values.split(sizes, dim=-1)
        return torch.cat([self.family_spec.vision_to_tokens(self.model, tensors, piece)
                          for tensors, piece in zip(alone, pieces)], dim=-1)

    @torch.no_grad()
    def _vision_patches(self, tensors: dict[str, torch.Tensor]) -> int:
        """How many patches (positions of the leaf's token dims, crops or tiles included) the Grad-CAM vision layer
        outputs for these inputs: its output's size, read by a hook that stops the forward there."""
        sizes: list[int] = []

        def measure(activations: torch.Tensor) -> torch.Tensor:
            sizes.append(activations.shape[:-1].numel())
            raise _Captured

        handle = self.family_spec.vision_leaf_hook(self.model, measure)
        try:
            with contextlib.suppress(_Captured):
                self.model(**tensors, use_cache=False)
        finally:
            handle.remove()
        if len(sizes) != 1:
            raise RuntimeError(f"{self.family}: the Grad-CAM vision layer ran {len(sizes)} times for one input")
        return sizes[0]


def _harness_config(local: Path) -> dict[str, Any]:
    """The model folder's ``fastrm_bench.json`` ({} for a hub id or a folder without one), once the folder is
    checked to be a saved model: a config, processor files, and weights that are safetensors, each said in one line."""
    if not local.exists():
        return {}
    if not (local / "config.json").is_file():
        raise ModelLoadError(f"{local} has no config.json: not a saved model folder")
    if not any((local / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "processor_config.json")):
        raise ModelLoadError(
            f"{local} has no processor/tokenizer files (tokenizer.json, processor_config.json); "
            "save them with processor.save_pretrained(dir)"
        )
    for weights in sorted(local.glob("*.safetensors")):  # a pickle or a cut file: one line, not a traceback
        try:
            read_safetensors_shapes(weights)
        except InvalidWeightsFile as err:
            raise ModelLoadError(str(err)) from None
    harness = local / HARNESS_CONFIG
    return json.loads(harness.read_text()) if harness.is_file() else {}


def _load_model(source: str, family: Family, dtype: torch.dtype, device_map: str | None,
                attn_implementation: str) -> torch.nn.Module:
    """The family's model class loaded from ``source``, in eval mode without gradients; refused (one line) where
    transformers would re-initialise mismatched or missing tensors at random."""
    import transformers

    model_class = getattr(transformers, family.model_class)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            model, info = model_class.from_pretrained(
                source, attn_implementation=attn_implementation, dtype=dtype, device_map=device_map,
                output_loading_info=True, ignore_mismatched_sizes=True)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"cannot load the model {source!r}: {err}") from err
    problem = loading_problem(info)
    if problem:
        raise ModelLoadError(f"{source}: {problem}")
    model.eval()
    model.requires_grad_(False)
    return model


def _keep_factor(embeds: torch.Tensor, positions: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The per-token factor [B, L] of ``embeds`` [B, L, d]: ``keep`` [B, n] at ``positions`` [B, n], 1 elsewhere."""
    factor = torch.ones(embeds.shape[:2], device=embeds.device, dtype=embeds.dtype)
    return factor.scatter_(1, positions.to(embeds.device), keep.to(embeds.device, embeds.dtype))


def _scale_rows(embeds: torch.Tensor, positions: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``embeds`` [B, L, d] with the rows at ``positions`` [B, n] multiplied by ``keep`` [B, n]."""
    return embeds * _keep_factor(embeds, positions, keep).unsqueeze(-1)
