"""Model families: the geometry of each Hugging Face VLM family, behind one small interface.

A `Family` knows, for its transformers classes: where an input's image tokens are and what image
region each covers (`layouts`), which vision module Grad-CAM targets and how its patches become LM
tokens (`vision_target`, `vision_to_tokens`), and which perturbation removals it supports. Everything
else (loading, prompts, generation, teacher-forced forwards, hooks) is family-agnostic and lives in
`fastrm_bench.models.adapter`. Families register under their ``config.model_type`` in `FAMILIES`,
so loading a checkpoint dispatches on its config.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch.utils.hooks import RemovableHandle

from fastrm_bench.interfaces import Video
from fastrm_bench.layout import ImageLayout, LayoutGroup, Region, centre_square, side_by_side, single_grid, whole_image
from fastrm_bench.registry import FAMILIES


class LayoutError(ValueError):
    """The processor's output does not have the image tokens the family's geometry predicts."""


def _output_hook(module: torch.nn.Module, make_leaf: Callable[[torch.Tensor], torch.Tensor]) -> RemovableHandle:
    """A forward hook replacing ``module``'s output (or its first element) by ``make_leaf(output)``; prepended, so
    transformers' own output recorders (hidden_states) see the leaf, not the original."""

    def hook(module, args, output):
        first = output[0] if isinstance(output, tuple) else output
        leaf = make_leaf(first)
        return (leaf, *output[1:]) if isinstance(output, tuple) else leaf

    return module.register_forward_hook(hook, prepend=True)


def _vision_transformer(tower: torch.nn.Module) -> torch.nn.Module:
    """The transformer inside a vision tower: CLIP/SigLIP `*VisionModel` wrappers hold it as ``vision_model``."""
    return tower.vision_model if hasattr(tower, "vision_model") else tower


@dataclass(frozen=True)
class Family:
    """Base family: LLaVA-1.5 style (one grid of patches, CLS dropped by the "default" strategy)."""

    name: str
    model_class: str  # the transformers class (documentation, and loading by class name)
    layout_note: str  # one line for the family table (docs/models.md)
    #: the language model's output depends on its input embeddings and attention mask alone (1D positions from
    #: the mask, causal attention): then perturbed inputs can be built once as embeddings, and "drop" is possible
    embeds_suffice: bool = True
    #: prompt used when neither the model folder nor the processor gives one (LLaVA-1.5's)
    fallback_template: str | None = None
    #: the LM reads the image through cross-attention layers, not as tokens of its sequence: the adapter explains the
    #: joint sequence [image keys; text] (`fastrm_bench.models.cross_attention`)
    cross_attention: bool = False

    # ------------------------------------------------------------------ helpers shared by families
    @staticmethod
    def image_token_id(config) -> int:
        for key in ("image_token_id", "image_token_index"):
            value = getattr(config, key, None)
            if value is not None:
                return int(value)
        raise LayoutError("the model config has no image_token_id; not a vision-language checkpoint of a supported family")

    @staticmethod
    def _image_positions(input_ids: torch.Tensor, token_id: int) -> list[int]:
        return torch.nonzero(input_ids == token_id).flatten().tolist()

    @staticmethod
    def _check(count: int, expected: int, what: str) -> None:
        if count != expected:
            raise LayoutError(f"found {count} image tokens, expected {expected} for {what}; "
                              "check the processor's patch size / vision_feature_select_strategy against the model config")

    def batch_images(self, rows: Sequence[Sequence[Image.Image]]) -> list:
        """A batch's images (``rows``: each prompt's images, in order) as the family's processor takes them: one flat
        list, the processor giving each prompt's image places the next images."""
        return [image for row in rows for image in row]

    def encode_video(self, model, processor, frames: Sequence[Image.Image]) -> tuple[dict[str, torch.Tensor], int]:
        """A clip's model inputs (e.g. ``pixel_values_videos``, ``video_grid_thw``) and its number of video tokens.

        Families that take no video (or not yet) refuse it in one line."""
        raise ValueError(f"video inputs are not supported for the {self.name} family (families with video: "
                         "qwen2_vl, qwen2_5_vl, qwen3_vl, qwen3_vl_moe, llava_onevision, internvl)")

    def video_place(self, model, processor) -> str:
        """The token the chat template writes where a message has a video (the model's video token)."""
        return processor.tokenizer.convert_ids_to_tokens(int(model.config.video_token_id))

    def expand_video_place(self, processor, text: str, token: str, video_inputs: dict[str, torch.Tensor], count: int,
                           video: Video) -> str:
        """The prompt with its one video place (``token``, as the chat template writes it) made the clip's ``count``
        video tokens, and whatever the family puts around them."""
        return text.replace(token, token * count)

    def video_layouts(self, model, tensors: dict[str, torch.Tensor], videos: Sequence[Sequence[Image.Image]]
                      ) -> list[ImageLayout]:
        """One layout per row of a batch of clips (`encode_video`'s inputs, tokenized)."""
        raise ValueError(f"video inputs are not supported for the {self.name} family")

    def answer_inputs(self, key: str, answer: torch.Tensor) -> torch.Tensor:
        """A per-token model input (``key``) over the answer tokens ``answer`` [1, T], as the family's generate
        continues it: teacher forcing appends these to the prompt's. Ids are the answer, the attention mask ones,
        anything else (Gemma 3's token types: text) zeros."""
        if key == "input_ids":
            return answer
        return torch.ones_like(answer) if key == "attention_mask" else torch.zeros_like(answer)

    def remove_image_tokens(self, lm_kwargs: dict[str, Any], factor: torch.Tensor) -> None:
        """Scale, in place in the keyword arguments of a language-model call over the prompt, every route by which
        the image tokens reach the LM by ``factor`` [B, L] (1 outside the image; 0 removes, 1 keeps a token).

        A removal must remove all the image reaches the LM through, or perturbation metrics measure a model that
        still sees what was "removed". Most families' only route is the input embeddings.
        """
        embeds = lm_kwargs["inputs_embeds"]
        lm_kwargs["inputs_embeds"] = embeds * factor.to(embeds.device, embeds.dtype).unsqueeze(-1)

    def language_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The decoder whose input embeddings the harness reads and perturbs."""
        return model.get_decoder()

    def final_norm(self, model: torch.nn.Module) -> torch.nn.Module:
        """The decoder's last normalisation, the one before the LM head.

        The logit lens (`dex-ar`) reads an intermediate layer's hidden state the way the model reads its
        last one, ``lm_head(final_norm(h))``; the adapter also hooks this module to get the last layer's
        output before the norm. Every supported decoder (Llama, Qwen2, Gemma 3, Mistral) names it ``norm``.
        """
        return self.language_model(model).norm

    def decoder_layers(self, model: torch.nn.Module) -> torch.nn.ModuleList:
        """The decoder's layers, bottom to top: the sanity check re-initialises them from the top.

        Every supported decoder (Llama, Qwen2, Gemma 3, Mistral) holds them as ``layers``.
        """
        return self.language_model(model).layers

    def _whole_image_grids(self, model, tensors, images, grid_of: Callable[[int], tuple[int, int]], what: str
                           ) -> list[ImageLayout]:
        """One grid per input over its whole image, ``grid_of(row)`` (rows, cols) of the batch row's image tokens."""
        out = []
        for row, (ids, image) in enumerate(zip(tensors["input_ids"], images)):
            grid = grid_of(row)
            positions = self._image_positions(ids, self.image_token_id(model.config))
            self._check(len(positions), grid[0] * grid[1], f"a {grid[0]}x{grid[1]} {what}")
            image_size = (image.height, image.width)
            out.append(single_grid(positions, grid, whole_image(image_size), image_size))
        return out

    # ------------------------------------------------------------------ geometry (override per family)
    def keeps_cls(self, config) -> bool:
        """Whether the LM sees the vision tower's CLS token: LLaVA's ``vision_feature_select_strategy`` "full"
        keeps it, "default" drops it. A family whose checkpoints always drop it overrides this."""
        return config.vision_feature_select_strategy != "default"

    def _extra_tokens(self, model) -> int:
        """Image tokens per image that are not patches: the vision tower's CLS token when `keeps_cls`
        (CLIP: 1; SigLIP, which has none: 0)."""
        if not self.keeps_cls(model.config):
            return 0
        embeddings = _vision_transformer(model.model.vision_tower).embeddings
        return int(embeddings.num_positions - embeddings.num_patches)

    def layouts(self, model, processor, tensors: dict[str, torch.Tensor], images: Sequence[Image.Image]) -> list[ImageLayout]:
        """One grid over the (centre-cropped) image; with ``vision_feature_select_strategy: "full"`` the CLS token,
        which comes first and sees the whole crop, is a 1x1 group over the same region before the grid, so that a
        map has a value for it and removing every image token removes it too."""
        config = model.config
        vision = config.vision_config
        size = vision.image_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        grid = (h // vision.patch_size, w // vision.patch_size)
        extra = self._extra_tokens(model)
        crops = bool(getattr(processor.image_processor, "do_center_crop", False))
        out = []
        for ids, image in zip(tensors["input_ids"], images):
            positions = self._image_positions(ids, self.image_token_id(config))
            self._check(len(positions), extra + grid[0] * grid[1],
                        f"a {grid[0]}x{grid[1]} grid + {extra} CLS token (CLS kept: {self.keeps_cls(config)})")
            image_size = (image.height, image.width)
            region = centre_square(image_size) if crops else whole_image(image_size)
            cls = tuple(LayoutGroup((p,), (1, 1), region) for p in positions[:extra])
            out.append(ImageLayout((*cls, LayoutGroup(tuple(positions[extra:]), grid, region)), image_size))
        return out

    def vision_target(self, model) -> torch.nn.Module:
        """The vision layer whose output feeds the projector (`vision_feature_layer`, an int)."""
        layer = model.config.vision_feature_layer
        encoder_layers = _vision_transformer(model.model.vision_tower).encoder.layers
        # hidden_states[k] is the output of encoder layer k-1 (k >= 1) or of layer k (k < 0)
        return encoder_layers[layer if layer < 0 else layer - 1]

    def vision_leaf_hook(self, model, make_leaf: Callable[[torch.Tensor], torch.Tensor]) -> RemovableHandle:
        """Hook the activations Grad-CAM targets so that ``make_leaf(activations)`` replaces them in the forward.

        By default the output of `vision_target`. A LLaVA-style list of ``vision_feature_layer`` (``[-2, -5]``)
        has no one layer whose output feeds the projector: its input is hooked instead, the layers' features
        concatenated along channels (CLS dropped or kept as the strategy says), each layer's features an
        independent input of the projector, as Grad-CAM on the concatenation asks.
        """
        if isinstance(getattr(model.config, "vision_feature_layer", None), (list, tuple)):
            return model.model.multi_modal_projector.register_forward_pre_hook(
                lambda module, args: (make_leaf(args[0]), *args[1:]), prepend=True)
        return _output_hook(self.vision_target(model), make_leaf)

    def vision_to_tokens(self, model, tensors: dict[str, torch.Tensor], values: torch.Tensor) -> torch.Tensor:
        """Per-patch values ``[..., n_patches]`` (the target's token dim) -> per LM token: the last grid's worth
        ("default" drops the CLS at the vision layer; the projector's input has none left to drop)."""
        grid = model.config.vision_config.image_size // model.config.vision_config.patch_size
        return values if self.keeps_cls(model.config) else values[..., -grid * grid :]


    def video_vision_to_tokens(self, model, tensors: dict[str, torch.Tensor], values: torch.Tensor) -> torch.Tensor:
        """`vision_to_tokens` for a clip's inputs (`encode_video`): per-patch values of the frames -> per video token.
        By default the same pooling as images (Qwen's merge windows, InternVL's tiles, one per frame)."""
        return self.vision_to_tokens(model, tensors, values)


class LlavaNextFamily(Family):
    """LLaVA-NeXT (1.6): a base grid over the whole (resized) image, then the anyres tiles as one grid whose
    rows end in an image-newline token (not a patch: not in the layout), unpadded to the image's aspect."""

    @staticmethod
    def _anyres(model, image_size: tuple[int, int]) -> tuple[int, int, int]:
        """(patches per crop side, tile rows, tile columns) the model's anyres rule gives ``image_size``."""
        from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape

        config = model.config
        side = config.vision_config.image_size // config.vision_config.patch_size
        nph, npw = get_anyres_image_grid_shape(list(image_size), config.image_grid_pinpoints, config.vision_config.image_size)
        return side, nph, npw

    def _arrange_tiles(self, model, image_size: tuple[int, int], values: torch.Tensor) -> torch.Tensor:
        """Per-patch values of the anyres tiles ``[C, tiles x patches]`` (the crops' order) -> ``[C, rows, cols]``, the
        grid the LM sees: the tiles put side by side and the padding rows or columns cut off, as the model packs them."""
        from transformers.models.llava_next.modeling_llava_next import unpad_image

        side, nph, npw = self._anyres(model, image_size)
        grid = values.reshape(-1, nph, npw, side, side).permute(0, 1, 3, 2, 4).reshape(-1, nph * side, npw * side)
        return unpad_image(grid, list(image_size))

    def _tile_grid_shape(self, model, image_size: tuple[int, int]) -> tuple[int, int]:
        """(rows, cols) of the tile grid the LM sees (`_arrange_tiles` of a dummy map)."""
        side, nph, npw = self._anyres(model, image_size)
        rows, cols = self._arrange_tiles(model, image_size, torch.zeros(1, nph * npw * side * side)).shape[-2:]
        return int(rows), int(cols)

    def layouts(self, model, processor, tensors, images) -> list[ImageLayout]:
        config = model.config
        side = config.vision_config.image_size // config.vision_config.patch_size
        out = []
        for row, (ids, image) in enumerate(zip(tensors["input_ids"], images)):
            image_size = tuple(int(x) for x in tensors["image_sizes"][row].tolist())
            positions = self._image_positions(ids, self.image_token_id(config))
            rows, cols = self._tile_grid_shape(model, image_size)
            self._check(len(positions), side * side + rows * (cols + 1), f"a {side}x{side} base + {rows}x{cols} tiles + newlines")
            base = LayoutGroup(tuple(positions[: side * side]), (side, side), whole_image(image_size))
            tile_positions = torch.tensor(positions[side * side :]).view(rows, cols + 1)[:, :cols]  # newline slots left out
            tile_group = LayoutGroup(tuple(tile_positions.flatten().tolist()), (rows, cols), whole_image(image_size))
            out.append(ImageLayout((base, tile_group), (image.height, image.width)))
        return out

    def vision_to_tokens(self, model, tensors, values):
        config = model.config
        side = config.vision_config.image_size // config.vision_config.patch_size
        # the vision layer sees the crops as a batch: [..., crops * tokens per crop] (CLS first in each crop)
        n_crops = tensors["pixel_values"].shape[1]
        crops = values.reshape(*values.shape[:-1], n_crops, -1)[..., -side * side :]
        image_size = tuple(int(x) for x in tensors["image_sizes"][0].tolist())
        base = crops[..., 0, :]
        tiles = crops[..., 1:, :].flatten(-2)
        grid = self._arrange_tiles(model, image_size, tiles.reshape(-1, tiles.shape[-1]))
        return torch.cat([base, grid.reshape(*tiles.shape[:-1], -1)], dim=-1)


class LlavaOnevisionFamily(LlavaNextFamily):
    """LLaVA-OneVision: LLaVA-NeXT's base grid + unpadded anyres tiles (rows ending in a newline token), except that
    a tile grid larger than ``anyres_max_N`` base grids (by more than 10%) is bilinearly downsampled, as the model
    does; a token of the downsampled grid mixes its neighbouring patches, and Grad-CAM pools them the same way.

    A clip: every frame at the base resolution, its patch grid bilinearly halved (``ceil(side / 2)``), the frames'
    grids one after another and one newline token after them all (`get_video_features`)."""

    def encode_video(self, model, processor, frames):
        """A clip as LLaVA-OneVision's video inputs: each frame as the image processor makes its base image (the whole
        frame resized to the vision tower's size, normalised), built without torchvision (the video processor resizes
        the same way with its own kernel, so pixels may differ slightly); ``frames x pooled grid + 1`` video tokens."""
        bases = [processor.image_processor(images=[frame], return_tensors="pt")["pixel_values"][0, 0] for frame in frames]
        return {"pixel_values_videos": torch.stack(bases)[None]}, len(frames) * self._pooled_side(model) ** 2 + 1

    @staticmethod
    def _pooled_side(model) -> int:
        """Tokens per side of a video frame: the vision tower's patch grid, bilinearly halved (`apply_pooling`)."""
        return math.ceil(model.config.vision_config.image_size // model.config.vision_config.patch_size / 2)

    def video_layouts(self, model, tensors, videos):
        """Per row, one group per frame: its pooled grid over that frame on the canvas of the clip's frames side by
        side (`layout.side_by_side`); the closing newline token is not in the layout."""
        side, token = self._pooled_side(model), int(model.config.video_token_id)
        out = []
        for ids, frames in zip(tensors["input_ids"], videos):
            positions = self._image_positions(ids, token)
            self._check(len(positions), len(frames) * side * side + 1, f"{len(frames)} frames of {side}x{side} pooled "
                        "patches and a newline")
            out.append(grid_per_frame(positions, side, frames))
        return out

    def video_vision_to_tokens(self, model, tensors, values):
        """``[..., frames x (CLS + patches)]`` -> ``[..., frames x pooled tokens]``: CLS dropped ("default"), each frame's
        grid bilinearly halved as `apply_pooling` halves its features (bilinear interpolation is linear in them)."""
        side = model.config.vision_config.image_size // model.config.vision_config.patch_size
        frames = values.reshape(*values.shape[:-1], tensors["pixel_values_videos"].shape[1], -1)
        grids = frames[..., -side * side :].reshape(-1, 1, side, side)
        pooled = torch.nn.functional.interpolate(grids, size=[self._pooled_side(model)] * 2, mode="bilinear")
        return pooled.reshape(*values.shape[:-1], -1)

    def _arrange_tiles(self, model, image_size, values):
        grid = super()._arrange_tiles(model, image_size, values)
        side = model.config.vision_config.image_size // model.config.vision_config.patch_size
        max_tiles = int(model.config.vision_aspect_ratio.removeprefix("anyres_max_"))
        _, height, width = grid.shape
        ratio = math.sqrt(height * width / (max_tiles * side**2))
        if ratio > 1.1:  # the model's own rule and rounding (pack_image_features)
            grid = torch.nn.functional.interpolate(grid[None], [int(height // ratio), int(width // ratio)], mode="bilinear")[0]
        return grid


class QwenVLFamily(Family):
    """Qwen2-VL / Qwen2.5-VL: dynamic resolution, one grid per image of 2x2-merged patches (`image_grid_thw`),
    M-RoPE position ids; the image is resized as a whole (no crop)."""

    def layouts(self, model, processor, tensors, images) -> list[ImageLayout]:
        merge = model.config.vision_config.spatial_merge_size

        def grid_of(row: int) -> tuple[int, int]:
            t, h, w = (int(x) for x in tensors["image_grid_thw"][row].tolist())
            return t * h // merge, w // merge

        return self._whole_image_grids(model, tensors, images, grid_of, "merged grid")

    def encode_video(self, model, processor, frames):
        """A clip as Qwen2-VL's video inputs: each frame resized and normalised as the image processor does one image,
        then consecutive frames paired into temporal patches (``temporal_patch_size``; an odd last frame repeated, as
        the video processor pads), in the video processor's patch order. Built from the image processor so that no
        torchvision is needed; where the stock video processor resizes differently (its own pixel limits), the token
        count differs, the model's handling of the tokens does not."""
        ip = processor.image_processor
        step, merge = ip.temporal_patch_size, ip.merge_size
        per_frame = [ip(images=[frame], return_tensors="pt") for frame in frames]
        _, h, w = (int(x) for x in per_frame[0]["image_grid_thw"][0].tolist())
        # each frame's patches (channels, time, rows, columns) carry the frame `step` times (the image processor's
        # broadcast of one image): keep one copy per frame
        singles = [f["pixel_values"].view(h * w, 3, step, -1)[:, :, 0] for f in per_frame]
        singles += [singles[-1]] * (-len(singles) % step)
        slots = [torch.stack(singles[k : k + step], dim=2).reshape(h * w, -1) for k in range(0, len(singles), step)]
        grid = torch.tensor([[len(slots), h, w]])
        return {"pixel_values_videos": torch.cat(slots), "video_grid_thw": grid}, len(slots) * h * w // merge**2

    def video_layouts(self, model, tensors, videos):
        """Per row, one group per time step (a pair of frames): a grid of merged patches drawn over the step's first
        frame, on the canvas of all the clip's frames side by side (`layout.side_by_side`); the step's second frame,
        which the same tokens see, is left uncovered."""
        merge = model.config.vision_config.spatial_merge_size
        step = model.config.vision_config.temporal_patch_size
        token = int(model.config.video_token_id)
        out = []
        for row, (ids, frames) in enumerate(zip(tensors["input_ids"], videos)):
            t, h, w = (int(x) for x in tensors["video_grid_thw"][row].tolist())
            positions = self._image_positions(ids, token)
            per_step = (h // merge) * (w // merge)
            self._check(len(positions), t * per_step, f"{t} time steps of {h // merge}x{w // merge} merged patches")
            canvas, offsets = side_by_side([(f.height, f.width) for f in frames])
            groups = []
            for k in range(t):
                first = min(k * step, len(frames) - 1)
                left, frame = offsets[first], frames[first]
                groups.append(LayoutGroup(tuple(positions[k * per_step : (k + 1) * per_step]), (h // merge, w // merge),
                                          (0.0, float(left), float(frame.height), float(left + frame.width))))
            out.append(ImageLayout(tuple(groups), canvas))
        return out

    def vision_target(self, model):
        return model.model.visual.blocks[-1]  # feeds the patch merger

    def vision_to_tokens(self, model, tensors, values):
        merge = model.config.vision_config.spatial_merge_size
        return values.reshape(*values.shape[:-1], -1, merge * merge).mean(-1)  # the merger's 2x2 windows


class Qwen25VLFamily(QwenVLFamily):
    """Qwen2.5-VL: as Qwen2-VL, but the vision blocks run on the merge units in window-attention order
    (the merger's output is put back in image order), so Grad-CAM's units are reordered the same way."""

    def vision_to_tokens(self, model, tensors, values):
        units = super().vision_to_tokens(model, tensors, values)
        visual = model.model.visual
        if hasattr(visual, "get_window_index"):  # transformers < 5.17
            window_index, _ = visual.get_window_index(tensors["image_grid_thw"])
        else:
            from transformers.vision_utils import get_vision_window_index

            window_index, _ = get_vision_window_index(tensors["image_grid_thw"], spatial_merge_size=visual.spatial_merge_size,
                                                      window_size=visual.window_size, patch_size=visual.patch_size)
        return units[..., torch.argsort(window_index.to(units.device))]

    def video_vision_to_tokens(self, model, tensors, values):
        """As images, the window order taken from the clip's grid (``video_grid_thw``)."""
        return self.vision_to_tokens(model, {**tensors, "image_grid_thw": tensors["video_grid_thw"]}, values)


class Qwen3VLFamily(QwenVLFamily):
    """Qwen3-VL: Qwen2-VL's merged grid (16 px patches, no window attention, so units stay in image order) and
    interleaved M-RoPE, plus DeepStack: the outputs of some vision blocks (``deepstack_visual_indexes``), merged
    like the last block's, are added to the image tokens' hidden states after the first LM layers. The LM gets
    them as ``deepstack_visual_embeds`` (one ``[image tokens, d]`` per layer) at ``visual_pos_masks``.

    Removing an image token zeroes its input embedding AND its DeepStack features. Grad-CAM's target stays the
    last vision block (the merger's input): the DeepStack features come from earlier blocks, not through it.
    A clip is encoded as Qwen2-VL's; its prompt gives each time step its time, as Qwen3-VL's processor writes it
    (`expand_video_place`), and the video tokens carry DeepStack features as image tokens do.
    """

    def expand_video_place(self, processor, text, token, video_inputs, count, video):
        """Each time step as ``<t seconds><|vision_start|>`` + its video tokens + ``<|vision_end|>`` in place of the chat
        template's one wrapped video token: t is the mean time of the step's first and last frame (an odd last frame
        repeated), at the clip's fps (None: 24, as transformers assumes for frames without metadata)."""
        steps = int(video_inputs["video_grid_thw"][0, 0])
        start, end = processor.vision_start_token, processor.vision_end_token
        seconds, step, last = 1.0 / (video.fps or 24.0), processor.image_processor.temporal_patch_size, len(video.frames) - 1
        times = [(k * step + min(k * step + step - 1, last)) / 2 * seconds for k in range(steps)]
        places = "".join(f"<{t:.1f} seconds>{start}{token * (count // steps)}{end}" for t in times)
        wrapped = start + token + end
        return text.replace(wrapped, places, 1) if wrapped in text else text.replace(token, places, 1)

    def remove_image_tokens(self, lm_kwargs: dict[str, Any], factor: torch.Tensor) -> None:
        super().remove_image_tokens(lm_kwargs, factor)
        deepstack = lm_kwargs.get("deepstack_visual_embeds")
        if deepstack is None:  # a forward without pixels (a decoding step) carries no DeepStack features
            return
        # the features are the masked positions in row-major order (batch, then sequence), as the model scatters them
        visual = factor[lm_kwargs["visual_pos_masks"].to(factor.device)]
        lm_kwargs["deepstack_visual_embeds"] = [
            features * visual.to(features.device, features.dtype).unsqueeze(-1) for features in deepstack]


def grid_per_frame(positions: Sequence[int], side: int, frames: Sequence[Image.Image]) -> ImageLayout:
    """A clip whose every frame is one ``side x side`` grid of tokens (in frame order, from ``positions``), each drawn
    over its frame on the canvas of the frames side by side (`layout.side_by_side`)."""
    canvas, offsets = side_by_side([(f.height, f.width) for f in frames])
    groups = [LayoutGroup(tuple(positions[k * side * side : (k + 1) * side * side]), (side, side),
                          (0.0, float(left), float(frame.height), float(left + frame.width)))
              for k, (frame, left) in enumerate(zip(frames, offsets))]
    return ImageLayout(tuple(groups), canvas)


def tiles_and_whole_image(positions: Sequence[int], tiles: tuple[int, int], side: int, image_size: tuple[int, int]
                          ) -> ImageLayout:
    """``rows x cols`` tiles (row-major, each a ``side x side`` grid over its rectangle of the image), then one more
    grid over the whole image (Idefics3's global image, InternVL's thumbnail); ``(0, 0)`` tiles: the whole image alone."""
    rows, cols = tiles
    height, width = image_size
    per_tile = side * side
    groups = []
    for k in range(rows * cols):
        i, j = divmod(k, cols)
        region = (i * height / rows, j * width / cols, (i + 1) * height / rows, (j + 1) * width / cols)
        groups.append(LayoutGroup(tuple(positions[k * per_tile : (k + 1) * per_tile]), (side, side), region))
    groups.append(LayoutGroup(tuple(positions[rows * cols * per_tile :]), (side, side), whole_image(image_size)))
    return ImageLayout(tuple(groups), image_size)


class TiledFamily(Family):
    """Families that cut the image into a grid of tiles (row-major) and add the whole image as one more grid
    (Idefics3's global image, InternVL's thumbnail), every grid ``side x side`` tokens (`tiles_and_whole_image`)."""

    def _side(self, model) -> int:
        """Tokens per tile side."""
        raise NotImplementedError

    def _tile_grid(self, processor, ids: torch.Tensor, image_size: tuple[int, int]) -> tuple[int, int]:
        """(rows, cols) of tiles of this input; (0, 0) when the whole image comes alone."""
        raise NotImplementedError

    def layouts(self, model, processor, tensors, images) -> list[ImageLayout]:
        side = self._side(model)
        out = []
        for ids, image in zip(tensors["input_ids"], images):
            positions = self._image_positions(ids, self.image_token_id(model.config))
            image_size = (image.height, image.width)
            rows, cols = self._tile_grid(processor, ids, image_size)
            self._check(len(positions), side * side * (rows * cols + 1), f"{rows}x{cols} tiles + the whole image")
            out.append(tiles_and_whole_image(positions, (rows, cols), side, image_size))
        return out


class Idefics3Family(TiledFamily):
    """Idefics3 / SmolVLM: the image split into tiles (row-major) plus the global image last, each tile a
    square grid after the connector's pixel shuffle; `<row_i_col_j>` markers say how the tiles are laid out."""

    def batch_images(self, rows):
        return [list(row) for row in rows]  # its processor takes each prompt's images as a list

    def _tiles(self, processor, ids: torch.Tensor) -> tuple[int, int]:
        tokenizer = processor.tokenizer
        rows = cols = 0
        for token in tokenizer.convert_ids_to_tokens(ids.tolist()):
            if token and token.startswith("<row_") and "_col_" in token:
                r, c = token[len("<row_") : -1].split("_col_")
                rows, cols = max(rows, int(r)), max(cols, int(c))
        return rows, cols

    def _side(self, model) -> int:
        vision = model.config.vision_config
        return vision.image_size // vision.patch_size // model.config.scale_factor

    def _tile_grid(self, processor, ids: torch.Tensor, image_size: tuple[int, int]) -> tuple[int, int]:
        return self._tiles(processor, ids)  # the <row_i_col_j> markers the processor wrote

    def vision_target(self, model):
        return _vision_transformer(model.model.vision_model).post_layernorm  # what the connector reads

    def vision_to_tokens(self, model, tensors, values):
        scale = model.config.scale_factor
        vision = model.config.vision_config
        patches = vision.image_size // vision.patch_size
        side = patches // scale
        blocks = values.reshape(*values.shape[:-1], -1, side, scale, side, scale)  # [..., tiles, r, s, c, s]
        return blocks.mean(dim=(-1, -3)).flatten(-3)  # pixel shuffle merges s x s patches into one token


def pan_and_scan_regions(image_size: tuple[int, int], crops: int) -> list[Region]:
    """The image rectangles of Gemma 3's pan-and-scan crops, in the processor's order (its ``pan_and_scan``).

    The number of crops fixes them: the image is cut along its long side (width when width >= height) into
    ``crops`` slices of ``ceil(side / crops)`` pixels, the last one cut at the border.
    """
    height, width = image_size
    if crops == 0:
        return []
    if width >= height:
        step = math.ceil(width / crops)
        return [(0.0, float(i * step), float(height), float(min((i + 1) * step, width))) for i in range(crops)]
    step = math.ceil(height / crops)
    return [(float(i * step), 0.0, float(min((i + 1) * step, height)), float(width)) for i in range(crops)]


class Gemma3Family(Family):
    """Gemma 3: a fixed grid of soft image tokens (avg-pooled SigLIP patches) over the whole resized image, then
    with pan-and-scan (the processor option ``do_pan_and_scan``) one such grid per crop of the image's long side;
    the image tokens attend to each other bidirectionally (token_type_ids), so `drop` is refused."""

    def batch_images(self, rows):
        return [list(row) for row in rows]  # its processor counts images per prompt

    def layouts(self, model, processor, tensors, images) -> list[ImageLayout]:
        side = int(round(model.config.mm_tokens_per_image ** 0.5))
        per_image = side * side
        out = []
        for ids, image in zip(tensors["input_ids"], images):
            positions = self._image_positions(ids, self.image_token_id(model.config))
            crops = len(positions) // per_image - 1  # the whole image first, then its pan-and-scan crops
            self._check(len(positions), per_image * (crops + 1), f"{side}x{side} soft tokens per image and crop")
            image_size = (image.height, image.width)
            regions = [whole_image(image_size), *pan_and_scan_regions(image_size, crops)]
            groups = [LayoutGroup(tuple(positions[k * per_image : (k + 1) * per_image]), (side, side), region)
                      for k, region in enumerate(regions)]
            out.append(ImageLayout(tuple(groups), image_size))
        return out

    def vision_target(self, model):
        return _vision_transformer(model.model.vision_tower).post_layernorm

    def vision_to_tokens(self, model, tensors, values):
        """``[..., crops x patches]`` (the image, then its crops) -> ``[..., crops x soft tokens]``."""
        vision = model.config.vision_config
        patches = vision.image_size // vision.patch_size
        side = int(round(model.config.mm_tokens_per_image ** 0.5))
        k = patches // side
        blocks = values.reshape(*values.shape[:-1], -1, side, k, side, k)
        return blocks.mean(dim=(-1, -3)).flatten(-3)  # the projector's average pooling, crop by crop


class PaliGemmaFamily(Family):
    """PaliGemma: one grid of SigLIP patches over the whole resized image (no pooling), then <bos> and the prompt;
    image and prompt are a prefix the model reads bidirectionally (token type 0), the answer a causal suffix (1),
    so `drop` is refused and teacher forcing marks the answer tokens as suffix, as its generate does."""

    def layouts(self, model, processor, tensors, images) -> list[ImageLayout]:
        vision = model.config.vision_config
        side = vision.image_size // vision.patch_size
        out = []
        for ids, image in zip(tensors["input_ids"], images):
            positions = self._image_positions(ids, self.image_token_id(model.config))
            self._check(len(positions), side * side, f"a {side}x{side} grid of patches")
            image_size = (image.height, image.width)
            out.append(single_grid(positions, (side, side), whole_image(image_size), image_size))
        return out

    def answer_inputs(self, key: str, answer: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(answer) if key == "token_type_ids" else super().answer_inputs(key, answer)

    def vision_target(self, model):
        return _vision_transformer(model.model.vision_tower).post_layernorm  # its last_hidden_state feeds the projector

    def vision_to_tokens(self, model, tensors, values):
        return values  # one LM token per patch


class InternVLFamily(TiledFamily):
    """InternVL (2.5 / 3): the image resized to the tile grid whose aspect is closest to its own (``crop_to_patches``:
    ``min_patches``..``max_patches`` tiles, row-major), then a thumbnail of the whole image when there is more than one
    tile; each tile's patches (CLS dropped) pixel-shuffled 2x2 into ``image_seq_length`` tokens, the tiles' tokens in
    tile order between ``<img>`` and ``</img>``. A causal Qwen2 / Llama LM with 1D positions."""

    def _canvas(self, processor, image_size: tuple[int, int]) -> tuple[int, int]:
        """(rows, cols) of the tile grid the image processor cuts ``image_size`` into (its own rule)."""
        from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas

        ip = processor.image_processor
        size = ip.size
        cols, rows = get_optimal_tiled_canvas(tuple(image_size), (size["height"], size["width"]), ip.min_patches, ip.max_patches)
        return rows, cols

    def _side(self, model) -> int:
        """Tokens per tile side: patches per side times the downsample ratio (pixel shuffle)."""
        vision = model.config.vision_config
        return int(vision.image_size[0] // vision.patch_size[0] * model.config.downsample_ratio)

    def _tile_grid(self, processor, ids: torch.Tensor, image_size: tuple[int, int]) -> tuple[int, int]:
        rows, cols = self._canvas(processor, image_size)
        return (rows, cols) if rows * cols > 1 else (0, 0)  # one tile: the thumbnail alone

    def encode_video(self, model, processor, frames):
        """A clip as InternVL takes one: every frame one tile (the whole frame resized to the tile size, no crops, no
        thumbnail), as the image processor makes it without torchvision; ``image_seq_length`` image tokens a frame."""
        tiles = [processor.image_processor(images=[frame], crop_to_patches=False, return_tensors="pt")["pixel_values"]
                 for frame in frames]
        return {"pixel_values": torch.cat(tiles)}, len(frames) * int(processor.image_seq_length)

    def video_place(self, model, processor):
        return processor.video_token

    def expand_video_place(self, processor, text, token, video_inputs, count, video):
        """``FrameN: <img>`` + the frame's image tokens + ``</img>``, one line a frame, as InternVL's processor writes a
        video (the model sees its frames as images)."""
        per_frame = processor.start_image_token + processor.image_token * (count // len(video.frames)) + processor.end_image_token
        return text.replace(token, "\n".join(f"Frame{i + 1}: {per_frame}" for i in range(len(video.frames))), 1)

    def video_layouts(self, model, tensors, videos):
        """Per row, one group per frame: its tile's grid over that frame on the canvas of the clip's frames side by
        side (`layout.side_by_side`)."""
        side, out = self._side(model), []
        for ids, frames in zip(tensors["input_ids"], videos):
            positions = self._image_positions(ids, self.image_token_id(model.config))
            self._check(len(positions), len(frames) * side * side, f"{len(frames)} frames of one {side}x{side} tile")
            out.append(grid_per_frame(positions, side, frames))
        return out

    def vision_target(self, model):
        """The features the pixel shuffle reads: the tower's final norm for layer -1 (``last_hidden_state``;
        an identity with mean pooling, as in InternVL's checkpoints), else that encoder layer."""
        layer = model.config.vision_feature_layer
        tower = model.model.vision_tower
        return tower.layernorm if layer == -1 else tower.encoder.layer[layer if layer < 0 else layer - 1]

    def vision_to_tokens(self, model, tensors, values):
        """``[..., tiles x (CLS + patches)]`` -> ``[..., tiles x tokens]``: CLS dropped, 2x2 patches pooled."""
        side = self._side(model)
        scale = int(round(1 / model.config.downsample_ratio))
        tiles = values.reshape(*values.shape[:-1], tensors["pixel_values"].shape[0], -1)
        patches = tiles[..., -(side * scale) ** 2 :]  # "default" drops the CLS token
        blocks = patches.reshape(*patches.shape[:-1], side, scale, side, scale)
        return blocks.mean(dim=(-1, -3)).flatten(-3)


class Mistral3Family(Family):
    """Mistral 3 (Mistral Small 3.1 / Pixtral's tower): the image resized whole (longest edge capped, sides to
    multiples of patch x merge), its patches 2x2-merged (``spatial_merge_size``) into one grid of ``[IMG]`` tokens;
    each row ends in ``[IMG_BREAK]`` and the image in ``[IMG_END]``, text tokens that are not in the layout."""

    def _merge(self, config) -> int:
        """Patches per merged token side (Mistral 3's ``spatial_merge_size``)."""
        return config.spatial_merge_size

    def _grid(self, model, tensors, row: int) -> tuple[int, int]:
        """(rows, cols) of merged tokens of the input's image: its processed size over patch x merge."""
        unit = model.config.vision_config.patch_size * self._merge(model.config)
        height, width = (int(x) for x in tensors["image_sizes"][row].tolist())
        return height // unit, width // unit

    def layouts(self, model, processor, tensors, images) -> list[ImageLayout]:
        return self._whole_image_grids(model, tensors, images, lambda row: self._grid(model, tensors, row),
                                       "grid of merged patches")

    def vision_target(self, model):
        """The transformer layer ``vision_feature_layer`` selects (Pixtral has no norm after its last layer)."""
        layer = model.config.vision_feature_layer
        return model.model.vision_tower.transformer.layers[layer if layer < 0 else layer - 1]

    def vision_to_tokens(self, model, tensors, values):
        """``[..., patches]`` (row-major over the image's patch grid) -> ``[..., merged tokens]``: the merger's windows."""
        merge = self._merge(model.config)
        rows, cols = self._grid(model, tensors, 0)
        blocks = values.reshape(*values.shape[:-1], rows, merge, cols, merge)
        return blocks.mean(dim=(-1, -3)).flatten(-2)


class PixtralLlavaFamily(Mistral3Family):
    """Pixtral-12B as transformers holds it: `LlavaForConditionalGeneration` with a Pixtral tower, one ``[IMG]`` token
    per 16 px patch (no merging), rows ending in ``[IMG_BREAK]`` (its checkpoints select "full" features: Pixtral has
    no CLS token)."""

    def _merge(self, config) -> int:
        return 1


class MllamaFamily(Family):
    """Llama 3.2 Vision: each image resized into an aspect-matched canvas of up to 4 tiles (row-major, padded at the
    bottom and right), each tile a CLS and a patch grid; the images are read through cross-attention layers
    (`fastrm_bench.models.cross_attention.CrossAttentionAdapter`), their keys before the text in the joint sequence,
    image after image (each with ``max_num_tiles`` tiles' room, its padding tiles masked by the model)."""

    def batch_images(self, rows):
        return [list(row) for row in rows]  # its processor takes each prompt's images as a list

    @staticmethod
    def tile_tokens(model) -> int:
        """States per tile: the CLS and the patches (``vision_model.num_patches``)."""
        return int(model.model.vision_model.num_patches)

    def image_keys(self, model) -> int:
        """Keys an image takes in ``cross_attention_states``, its padding tiles included."""
        return int(model.config.vision_config.max_num_tiles) * self.tile_tokens(model)

    def prefix_length(self, model, tensors: dict[str, torch.Tensor]) -> int:
        """``V``: the keys before each row's text, every image slot of the batch (``pixel_values`` ``[B, images, ...]``)."""
        return int(tensors["pixel_values"].shape[1]) * self.image_keys(model)

    @staticmethod
    def tiles(processor, image_size: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
        """((tile rows, tile columns), (resized height, width)) the image processor gives an image of ``image_size``."""
        from transformers.models.mllama.image_processing_pil_mllama import (
            get_image_size_fit_to_canvas,
            get_optimal_tiled_canvas,
        )

        ip = processor.image_processor
        tile = int(ip.size["height"])
        canvas_h, canvas_w = get_optimal_tiled_canvas(image_size[0], image_size[1], ip.max_image_tiles, tile)
        resized = get_image_size_fit_to_canvas(image_size[0], image_size[1], canvas_h, canvas_w, tile)
        return (int(canvas_h) // tile, int(canvas_w) // tile), (int(resized[0]), int(resized[1]))

    def _image_layout(self, model, processor, image: Image.Image, start: int, real_tiles: int) -> ImageLayout:
        """One image's tiles (row-major), keys from ``start``: per tile its CLS as a 1x1 group over the tile, then its
        patch grid. A tile's rectangle is the canvas's mapped back to the image (the padding below and right of the
        resized image lies past the image's border)."""
        vision = model.config.vision_config
        side, per_tile = vision.image_size // vision.patch_size, self.tile_tokens(model)
        (rows, cols), (height, width) = self.tiles(processor, (image.height, image.width))
        self._check(real_tiles * per_tile, rows * cols * per_tile, f"{rows}x{cols} tiles of {per_tile} states")
        tile = int(processor.image_processor.size["height"])
        sy, sx = image.height / height, image.width / width
        groups = []
        for k in range(rows * cols):
            i, j = divmod(k, cols)
            region = (i * tile * sy, j * tile * sx, (i + 1) * tile * sy, (j + 1) * tile * sx)
            first = start + k * per_tile
            groups.append(LayoutGroup((first,), (1, 1), region))
            groups.append(LayoutGroup(tuple(range(first + 1, first + per_tile)), (side, side), region))
        return ImageLayout(tuple(groups), (image.height, image.width))

    def layouts(self, model, processor, tensors, images) -> list[ImageLayout]:
        return self.several_layouts(model, processor, tensors, [(image,) for image in images])

    def several_layouts(self, model, processor, tensors, rows: Sequence[Sequence[Image.Image]]) -> list[ImageLayout]:
        """Per batch row, its images' tile layouts (`_image_layout`), positions in the joint sequence after the row's
        left padding, image ``i``'s keys from ``i x image_keys``; several images drawn side by side (`side_by_side`)."""
        out = []
        for row, images in enumerate(rows):
            pad = int((tensors["attention_mask"][row].cumsum(-1) == 0).sum())
            real = tensors["aspect_ratio_mask"][row].sum(-1).tolist()
            parts = [self._image_layout(model, processor, image, pad + i * self.image_keys(model), int(real[i]))
                     for i, image in enumerate(images)]
            if len(parts) == 1:
                out.append(parts[0])
                continue
            canvas, lefts = side_by_side([part.image_size for part in parts])
            out.append(ImageLayout(tuple(g for part, left in zip(parts, lefts) for g in part.placed(left, canvas).groups),
                                   canvas))
        return out

    def vision_leaf_hook(self, model, make_leaf: Callable[[torch.Tensor], torch.Tensor]):
        """The projector's input: the vision tower's output per tile state (``[B, images, tiles, states, C]``)."""
        return model.model.multi_modal_projector.register_forward_pre_hook(
            lambda module, args: (make_leaf(args[0]), *args[1:]), prepend=True)

    def vision_to_tokens(self, model, tensors, values):
        """One key per tile state: each image's real tiles' states, image after image (padding tiles left out)."""
        per_image, per_tile = self.image_keys(model), self.tile_tokens(model)
        real = tensors["aspect_ratio_mask"][0].sum(-1).tolist()
        return torch.cat([values[..., i * per_image : i * per_image + int(n) * per_tile] for i, n in enumerate(real) if n],
                         dim=-1)

    def video_place(self, model, processor) -> str:
        raise ValueError("video inputs are not supported for the mllama family")


_LLAVA_15 = "USER: <image>\n{prompt} ASSISTANT:"
for _family, _types in (
    (Family("llava", "LlavaForConditionalGeneration", "one square grid over the centre crop (CLS dropped)",
            fallback_template=_LLAVA_15), ("llava",)),
    (LlavaNextFamily("llava_next", "LlavaNextForConditionalGeneration",
                     "base grid + anyres tile grid (unpadded), rows end in a newline token", fallback_template=_LLAVA_15),
     ("llava_next",)),
    (LlavaOnevisionFamily("llava_onevision", "LlavaOnevisionForConditionalGeneration",
                          "as LLaVA-NeXT, the tile grid bilinearly downsampled beyond anyres_max_N base grids"),
     ("llava_onevision",)),
    (QwenVLFamily("qwen2_vl", "Qwen2VLForConditionalGeneration", "one non-square grid of 2x2-merged patches per image",
                  embeds_suffice=False), ("qwen2_vl",)),
    (Qwen25VLFamily("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", "as Qwen2-VL (window attention in the vision tower)",
                  embeds_suffice=False), ("qwen2_5_vl",)),
    (Qwen3VLFamily("qwen3_vl", "Qwen3VLForConditionalGeneration",
                   "as Qwen2-VL (16 px patches); DeepStack features removed with their tokens", embeds_suffice=False),
     ("qwen3_vl",)),
    (Qwen3VLFamily("qwen3_vl_moe", "Qwen3VLMoeForConditionalGeneration", "as Qwen3-VL (MoE language model)",
                   embeds_suffice=False), ("qwen3_vl_moe",)),
    (Idefics3Family("idefics3", "Idefics3ForConditionalGeneration", "one grid per tile + the global image (pixel shuffle)"),
     ("idefics3",)),
    (Idefics3Family("smolvlm", "SmolVLMForConditionalGeneration", "as Idefics3"), ("smolvlm",)),
    (Gemma3Family("gemma3", "Gemma3ForConditionalGeneration", "one fixed grid of soft tokens over the whole image",
                  embeds_suffice=False),
     ("gemma3",)),
    (InternVLFamily("internvl", "InternVLForConditionalGeneration",
                    "one grid per tile (aspect-matched tile canvas) + a thumbnail (pixel shuffle)"), ("internvl",)),
    (Mistral3Family("mistral3", "Mistral3ForConditionalGeneration",
                    "one grid of 2x2-merged patches over the whole image; rows end in [IMG_BREAK] (not in the layout)"),
     ("mistral3",)),
    (PixtralLlavaFamily("llava-pixtral", "LlavaForConditionalGeneration",
                        "LLaVA with a Pixtral tower (Pixtral-12B): one grid of 16 px patches; rows end in [IMG_BREAK]"),
     ("llava-pixtral",)),
    (MllamaFamily("mllama", "MllamaForConditionalGeneration",
                  "keys of up to 4 tiles (CLS + patch grid each) before the text, read by cross-attention layers",
                  embeds_suffice=False, cross_attention=True), ("mllama",)),
    (PaliGemmaFamily("paligemma", "PaliGemmaForConditionalGeneration", "one grid over the whole image, prefix attention",
                     embeds_suffice=False, fallback_template="<image>answer en {prompt}"), ("paligemma",)),
):
    for _type in _types:
        FAMILIES.register(_type, _family, description=_family.layout_note)


def family_key(config) -> str:
    """The registry key of a checkpoint's family: ``<model_type>-<vision model_type>`` where a family is registered
    for that pair (a LLaVA checkpoint with a Pixtral tower: ``llava-pixtral``), else ``config.model_type``."""
    vision = getattr(config, "vision_config", None)
    paired = f"{config.model_type}-{vision.model_type}" if vision is not None else None
    return paired if paired is not None and paired in FAMILIES else config.model_type


def family_for(model_type: str) -> Family:
    """The family serving ``config.model_type`` (clear error with the supported list otherwise)."""
    return FAMILIES.get(model_type)
