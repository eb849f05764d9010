"""`llava-hf`: the model adapter for every LLaVA-1.5 checkpoint in the Hugging Face format.

The embedded model and LLaVA-1.5-7B/13B go through this same class. It loads with eager
attention (explanation methods need the attention probabilities), finds image tokens with
``config.image_token_id``, derives the patch grid from the vision config, and can remove
chosen image tokens (``zero``: replace their LM-input embeddings by zeros; ``drop``: delete
them from the LM input) for perturbation metrics.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from fastrm_bench.checkpoint_files import InvalidWeightsFile, loading_problem, read_safetensors_shapes
from fastrm_bench.interfaces import Generation, ModelAdapter, ModelInputs

LLAVA_15_TEMPLATE = "USER: <image>\n{prompt} ASSISTANT:"
REMOVAL_STRATEGIES = ("zero", "drop")
#: optional file in a model folder: {"prompt_template": "..."} (the template belongs to the model)
HARNESS_CONFIG = "fastrm_bench.json"


class ModelLoadError(RuntimeError):
    """A checkpoint that cannot serve as a LLaVA-style model, with the reason and the fix."""


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class LlavaHFAdapter(ModelAdapter):
    """Adapter over `LlavaForConditionalGeneration` + `LlavaProcessor` (local dir or hub id)."""

    def __init__(self, model, processor, name: str, prompt_template: str = LLAVA_15_TEMPLATE, device: torch.device | None = None):
        self.model = model
        self.processor = processor
        self.name = name
        self.prompt_template = prompt_template
        self.device = device or next(model.parameters()).device
        cfg = model.config
        self.image_token_id = getattr(cfg, "image_token_id", None)
        if self.image_token_id is None:
            self.image_token_id = getattr(cfg, "image_token_index", None)
        if self.image_token_id is None:
            raise ModelLoadError(f"{name}: the model config has no image_token_id; not a LLaVA-style checkpoint")
        tokenizer = processor.tokenizer
        if tokenizer.convert_ids_to_tokens(int(self.image_token_id)) in (None, tokenizer.unk_token):
            raise ModelLoadError(f"{name}: the tokenizer has no image token for id {self.image_token_id}")
        self.processor.tokenizer.padding_side = "left"
        if "<image>" not in prompt_template:
            raise ModelLoadError(f"{name}: the prompt template {prompt_template!r} has no <image> placeholder")

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, *, prompt_template: str | None = None,
        device: str | torch.device | None = None, dtype: torch.dtype = torch.float32, name: str | None = None,
    ) -> LlavaHFAdapter:
        """Load model and processor from a local folder or a hub id (offline: from the HF cache).

        The prompt template is, in order: the argument, ``fastrm_bench.json`` in the model folder,
        LLaVA-1.5's ``USER: <image>\\n{prompt} ASSISTANT:``.
        """
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        source = str(name_or_path)
        local = Path(source)
        if prompt_template is None and (local / HARNESS_CONFIG).is_file():
            prompt_template = json.loads((local / HARNESS_CONFIG).read_text()).get("prompt_template")
        prompt_template = prompt_template or LLAVA_15_TEMPLATE
        if local.exists():
            if not (local / "config.json").is_file():
                raise ModelLoadError(f"{local} has no config.json: not a saved model folder")
            if not any((local / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "processor_config.json")):
                raise ModelLoadError(
                    f"{local} has no processor/tokenizer files (tokenizer.json, processor_config.json); "
                    "save them with processor.save_pretrained(dir)"
                )
            for weights in sorted(local.glob("*.safetensors")):
                try:
                    read_safetensors_shapes(weights)
                except InvalidWeightsFile as err:
                    raise ModelLoadError(str(err)) from None
        device = torch.device(device) if device else default_device()
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                processor = AutoProcessor.from_pretrained(source)
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"cannot load the processor of {source!r}: {err}") from err
        if not hasattr(processor, "tokenizer") or not hasattr(processor, "image_processor"):
            raise ModelLoadError(f"{source!r}: the processor has no tokenizer and image processor; not a LLaVA checkpoint")
        try:
            model, info = LlavaForConditionalGeneration.from_pretrained(
                source, attn_implementation="eager", dtype=dtype, output_loading_info=True, ignore_mismatched_sizes=True)
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"cannot load the model {source!r}: {err}") from err
        problem = loading_problem(info)
        if problem:
            raise ModelLoadError(f"{source}: {problem}")
        model.to(device).eval()
        model.requires_grad_(False)
        return cls(model, processor, name or source, prompt_template, device)

    # ---------------------------------------------------------------- geometry
    @property
    def grid_shape(self) -> tuple[int, int]:
        vision = self.model.config.vision_config
        size = vision.image_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return h // vision.patch_size, w // vision.patch_size

    @property
    def num_image_tokens(self) -> int:
        gh, gw = self.grid_shape
        return gh * gw

    def image_token_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.nonzero(input_ids == self.image_token_id).flatten()
        if positions.numel() != self.num_image_tokens:
            raise ValueError(
                f"found {positions.numel()} image tokens, expected {self.num_image_tokens} for a "
                f"{self.grid_shape} grid; check vision_feature_select_strategy and the processor's patch_size"
            )
        return positions

    # ---------------------------------------------------------------- inputs
    def format_prompt(self, prompt: str) -> str:
        return self.prompt_template.format(prompt=prompt)

    def build_inputs(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> ModelInputs:
        texts = [self.format_prompt(p) for p in prompts]
        enc = self.processor(images=list(images), text=texts, padding=True, return_tensors="pt")
        tensors = {k: v.to(self.device) for k, v in enc.items() if torch.is_tensor(v)}
        return ModelInputs(tensors=tensors, prompt_length=int(tensors["input_ids"].shape[1]))

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected image tokens ``[B, n_image_tokens, d]`` (what LLaVA scatters into the LM input)."""
        cfg = self.model.config
        out = self.model.model.get_image_features(
            pixel_values=pixel_values.to(self.model.dtype),
            vision_feature_layer=cfg.vision_feature_layer,
            vision_feature_select_strategy=cfg.vision_feature_select_strategy,
        )
        feats = out.pooler_output if hasattr(out, "pooler_output") else out
        return torch.stack(list(feats)) if isinstance(feats, (list, tuple)) else feats

    def embed(self, input_ids: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
        """LM input embeddings with ``image_features`` [B, n_image_tokens, d] at the image-token slots."""
        embeds = self.model.get_input_embeddings()(input_ids)
        slots = (input_ids == self.image_token_id).unsqueeze(-1).expand_as(embeds)
        return embeds.masked_scatter(slots, image_features.to(embeds.dtype))

    def perturbed_embeds(
        self, inputs: ModelInputs, image_keep: torch.Tensor, removal: str = "zero"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """LM input embeddings and attention mask with image tokens removed where keep == 0.

        ``image_keep`` [K, n] may give many removals of one sample (inputs of batch 1): the image
        is encoded once and broadcast, which is what makes perturbation curves cheap.
        """
        if removal not in REMOVAL_STRATEGIES:
            raise ValueError(f"unknown removal strategy {removal!r}; expected one of {REMOVAL_STRATEGIES}")
        ids = inputs.input_ids
        attn = inputs.tensors["attention_mask"]
        keep = image_keep.to(self.device)
        feats = self.image_features(inputs.tensors["pixel_values"])  # one sample: the vision tower runs once
        if ids.shape[0] == 1 and keep.shape[0] > 1:
            ids, attn = ids.expand(keep.shape[0], -1), attn.expand(keep.shape[0], -1)
            feats = feats.expand(keep.shape[0], -1, -1)
        if removal == "zero":
            feats = feats * keep.unsqueeze(-1).to(feats.dtype)
        embeds = self.embed(ids, feats)
        if removal == "zero":
            return embeds, attn
        # drop: delete removed image tokens, then left-pad the rows again
        rows, masks = [], []
        for b in range(ids.shape[0]):
            is_image = ids[b] == self.image_token_id
            row_keep = attn[b].bool().clone()
            row_keep[is_image] = keep[b].bool() & row_keep[is_image]
            rows.append(embeds[b][row_keep])
        length = max(r.shape[0] for r in rows)
        out = embeds.new_zeros(len(rows), length, embeds.shape[-1])
        out_mask = attn.new_zeros(len(rows), length)
        for b, r in enumerate(rows):
            out[b, length - r.shape[0] :] = r
            out_mask[b, length - r.shape[0] :] = 1
            masks.append(out_mask[b])
        return out, out_mask

    # ---------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(
        self, inputs: ModelInputs, max_new_tokens: int, *, return_hidden: bool = False, image_keep: torch.Tensor | None = None,
        removal: str = "zero", min_new_tokens: int = 0,
    ) -> list[Generation]:
        tok = self.processor.tokenizer
        kwargs = dict(
            max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, do_sample=False, num_beams=1,
            return_dict_in_generate=True, output_hidden_states=return_hidden, pad_token_id=tok.pad_token_id,
        )
        if image_keep is None:
            out = self.model.generate(**inputs.tensors, **kwargs)
            new = out.sequences[:, inputs.prompt_length :]
        else:
            embeds, attn = self.perturbed_embeds(inputs, image_keep, removal)
            out = self.model.generate(inputs_embeds=embeds, attention_mask=attn, **kwargs)
            new = out.sequences  # generation from embeddings returns only the new tokens
        results = []
        for b in range(new.shape[0]):
            ids = new[b]
            stop = [i for i, t in enumerate(ids.tolist()) if t in (tok.eos_token_id, tok.pad_token_id)]
            ids = ids[: stop[0]] if stop and min_new_tokens == 0 else ids
            hidden = None
            if return_hidden:
                steps = [out.hidden_states[0][-1][b]] + [h[-1][b] for h in out.hidden_states[1:]]
                hidden = torch.cat(steps, dim=0)  # [L0 + T_max - 1, d]
            results.append(
                Generation(
                    sequences=torch.cat([inputs.input_ids[b], ids]).unsqueeze(0) if image_keep is None else ids.unsqueeze(0),
                    prompt_length=inputs.prompt_length,
                    generated_ids=ids,
                    text=tok.decode(ids, skip_special_tokens=True).strip(),
                    last_hidden=hidden,
                )
            )
        return results
