"""Training recipe of the Qwen2-VL shapes model (`fastrm-bench train-vlm --family qwen2_vl`).

The embedded LLaVA's recipe (`fastrm_bench.embedded.train_tiny`, whose docstring says why each part exists),
carried over where it does not depend on the family: a vision-only first stage on per-token colour / shape /
centre labels, a curriculum on object count, token-removal augmentation at the LM input, and the locate / role
losses at a middle LM layer. What differs is Qwen's geometry and the data:

- dynamic resolution: scenes are drawn at the variable-size world's sizes (`ImageSizes`: 48-96 px a side,
  any aspect), and the Qwen2-VL image processor keeps each one's aspect ratio, so every image has its own
  token grid (``image_grid_thw``); images above ``max_pixels`` shrink. Labels per LM token come from each
  image's `ImageLayout` (the one `QwenVLFamily.layouts` gives: one grid of 2x2-merged patches over the whole
  image) projected from the scene's exact masks, so they follow the resize and any grid shape;
- the auxiliary vision losses read the patch merger's output (one vector per LM token): the merger is where
  Qwen2-VL turns patches into LM tokens, so the per-token labels apply there directly;
- the describe task ("Describe the objects from left to right." -> "a red circle, a blue square, ...") joins
  the question types, answered with up to 15 words; its answer names every object, so its role label marks
  them all as targets and token removal only touches the background;
- the LM positions are Qwen's M-RoPE ids (`get_rope_index`), computed by the model from the image grids.

Every step's data is a pure function of (seed, step), so a resumed run sees the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from transformers.modeling_outputs import BaseModelOutputWithPooling

from fastrm_bench.embedded.tiny_qwen import TinyQwenSize, build_model, build_processor, save_model
from fastrm_bench.embedded.train_tiny import (
    Asked,
    AuxHeads,
    Losses,
    Stages,
    TrainConfig,
    accuracy_by_type,
    ask,
    batch_source,
    lm_losses,
    locate_targets,
    masked_mse,
    object_centres,
    patch_roles,
    run_stages,
    teacher_forced_ids,
)
from fastrm_bench.layout import ImageLayout, single_grid, whole_image
from fastrm_bench.world.captions import DESCRIBE_QUESTION, describe_scene
from fastrm_bench.world.questions import QUESTION_TYPES, Question
from fastrm_bench.world.scenes import (
    COLOR_NAMES,
    SHAPES,
    ImageSizes,
    Scene,
    SceneConfig,
    generate_scene,
    jpeg_roundtrip,
    scene_seed,
    scene_size,
)

#: a token belongs to the object covering most of it, if that covers at least this share (as `patch_owners`)
OWNER_COVERAGE = 0.2


def describe_question(scene: Scene, rng: np.random.Generator) -> Question | None:
    """The describe task as a question: its answer is the caption, its refs the objects left to right."""
    caption = describe_scene(scene)
    if caption is None:
        return None
    refs = tuple(dict.fromkeys(o for o in caption.objects if o is not None))
    return Question("describe", "coco", DESCRIBE_QUESTION, caption.text, refs)


#: what the Qwen recipe asks: every question type of the world, and the describe task
QWEN_QUESTIONS = {**QUESTION_TYPES, "describe": describe_question}


@dataclass
class QwenTrainConfig(TrainConfig):
    """The LLaVA recipe's fields with the Qwen model's defaults, plus the world's image sizes."""

    #: fewer steps than LLaVA's 2600 / 2000: a step costs more (4 px patches, longer describe answers), and the
    #: recipe must fit 90 minutes on 2 CPU cores; raise them where a clean timing shows headroom
    steps: int = 2500
    vision_steps: int = 1000
    #: scenes per stage-1 step (each is up to 256 patches of 4 px: fewer than LLaVA's 32 keep a step cheap)
    vision_images: int = 16
    #: 96 questions a step as LLaVA's 24 x 4, on fewer images: the vision tower, 4x LLaVA's patches per image,
    #: runs once per image
    images_per_step: int = 16
    questions_per_image: int = 6
    image_sizes: ImageSizes = field(default_factory=ImageSizes)
    type_weights: dict[str, float] = field(
        default_factory=lambda: {
            "color": 1.0, "shape": 1.5, "count": 1.5, "exist": 1.0, "position": 1.0,
            "relate_color": 2.0, "relate_shape": 2.0, "relate_verify": 3.0, "describe": 3.0,
        }
    )
    size: TinyQwenSize = field(default_factory=TinyQwenSize)  # type: ignore[assignment]
    nested: ClassVar[dict[str, type]] = {"size": TinyQwenSize, "image_sizes": ImageSizes}


def token_layout(grid_thw: tuple[int, int, int], image_size: tuple[int, int], merge: int) -> ImageLayout:
    """The LM image tokens of one image as `QwenVLFamily.layouts` lays them out (positions numbered from 0)."""
    t, h, w = grid_thw
    grid = (t * h // merge, w // merge)
    return single_grid(range(grid[0] * grid[1]), grid, whole_image(image_size), image_size)


def token_owners(scene: Scene, layout: ImageLayout) -> np.ndarray:
    """[num_tokens] index of the object covering most of each token (at least `OWNER_COVERAGE`), -1 for none."""
    owner = np.full(layout.num_tokens, -1, dtype=np.int64)
    best = np.zeros(layout.num_tokens)
    for i, obj in enumerate(scene.objects):
        cover = layout.coverage(obj.mask)
        take = (cover > best) & (cover >= OWNER_COVERAGE)
        owner[take] = i
        best = np.where(take, cover, best)
    return owner


def token_labels(scene: Scene, owners: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-token colour class, shape class (0 = background) and object centre (x, y) in [-1, 1] (NaN: none)."""
    colour = np.zeros(owners.shape, dtype=np.int64)
    shape = np.zeros(owners.shape, dtype=np.int64)
    centre = np.full((len(owners), 2), np.nan, dtype=np.float32)
    centres = object_centres(scene)
    for i, obj in enumerate(scene.objects):
        colour[owners == i] = COLOR_NAMES.index(obj.color) + 1
        shape[owners == i] = SHAPES.index(obj.shape) + 1
        centre[owners == i] = centres[i]
    return colour, shape, centre


@dataclass
class QwenBatch:
    """A Qwen training batch. Per-token fields are flat: image tokens of all images (or of all questions) in order."""

    pixel_values: torch.Tensor  # [patches of all images, 3 * 2 * p * p] (the image processor's flattened patches)
    image_grid_thw: torch.Tensor  # [I, 3] patch grid of each image
    input_ids: torch.Tensor  # [Q, L] right-padded
    attention_mask: torch.Tensor
    labels: torch.Tensor  # [Q, L], -100 outside answer + EOS
    image_index: torch.Tensor  # [Q] which image each question is about
    keep: torch.Tensor  # [image tokens of all questions] 1 = kept, 0 = zeroed (augmentation)
    role: torch.Tensor  # [image tokens of all questions] 1 = target's token, 2 = anchor's, 0 = neither
    aux_color: torch.Tensor  # [image tokens of all images]
    aux_shape: torch.Tensor
    aux_centre: torch.Tensor  # [image tokens of all images, 2]
    locate: torch.Tensor  # [Q, 2] centre x of the target / anchor, NaN where the question has none
    prompt_length: torch.Tensor  # [Q] tokens before the answer
    qtypes: list[str]


def scenes_at(cfg: QwenTrainConfig, split: str, first: int, n: int, config: SceneConfig) -> list[Scene]:
    """Scenes ``first .. first + n - 1`` of ``split``, each at its own size from ``cfg.image_sizes``."""
    seeds = [scene_seed(split, first + i, cfg.seed) for i in range(n)]
    return [generate_scene(s, config, size=scene_size(s, cfg.image_sizes)) for s in seeds]


def format_prompt(processor, question: str) -> str:
    """The prompt the adapter builds for ``question`` (the processor's chat template, one image)."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def image_tokens(processor, scenes: list[Scene]) -> tuple[dict[str, torch.Tensor], list[ImageLayout]]:
    """The processor's pixel values and grids of ``scenes`` (as written to JPEG and read back), and each one's token layout."""
    images = processor.image_processor([jpeg_roundtrip(s.image) for s in scenes], return_tensors="pt")
    merge = processor.image_processor.merge_size
    layouts = [token_layout(tuple(thw.tolist()), s.image.shape[:2], merge) for thw, s in zip(images["image_grid_thw"], scenes)]
    return images, layouts


def make_batch(processor, cfg: QwenTrainConfig, split: str, step: int, n_images: int, augment: bool,
               with_questions: bool = True) -> QwenBatch:
    """Batch ``step`` of ``split`` ("train", "val", or "vision": stage-1 scenes from the train seeds)."""
    rng, scene_config, split, step = batch_source(cfg, split, step, n_images)
    scenes = scenes_at(cfg, split, step * n_images, n_images, scene_config)
    images, layouts = image_tokens(processor, scenes)
    asked = [Asked(i, q, format_prompt(processor, text), keep) for i, scene in enumerate(scenes if with_questions else [])
             for q, text, keep in ask(scene, rng, cfg, layouts[i], augment, QWEN_QUESTIONS)]
    return encode_batch(processor, scenes, images, layouts, asked)


def encode_batch(processor, scenes: list[Scene], images: dict[str, torch.Tensor], layouts: list[ImageLayout],
                 asked: list[Asked]) -> QwenBatch:
    """The tensors of ``asked`` about ``scenes`` (``images`` and ``layouts`` from `image_tokens`): teacher-forced
    answers + EOS, and every auxiliary target per image token."""
    owners = [token_owners(s, layout) for s, layout in zip(scenes, layouts)]
    labels = [token_labels(s, o) for s, o in zip(scenes, owners)]
    image_token = processor.image_token
    ids, attn, target, prompt_length = teacher_forced_ids(
        processor.tokenizer, [a.prompt.replace(image_token, image_token * layouts[a.scene].num_tokens) for a in asked],
        [a.question.answer for a in asked])

    def flat(arrays: list[np.ndarray], dtype: torch.dtype) -> torch.Tensor:
        return torch.from_numpy(np.concatenate(arrays)).to(dtype) if arrays else torch.zeros(0, dtype=dtype)

    return QwenBatch(
        pixel_values=images["pixel_values"],
        image_grid_thw=images["image_grid_thw"],
        input_ids=ids,
        attention_mask=attn,
        labels=target,
        image_index=torch.tensor([a.scene for a in asked], dtype=torch.long),
        keep=flat([np.ones(layouts[a.scene].num_tokens, np.float32) if a.keep is None else a.keep for a in asked],
                  torch.float32),
        role=flat([patch_roles(owners[a.scene], a.question) for a in asked], torch.long),
        aux_color=flat([c for c, _, _ in labels], torch.long),
        aux_shape=flat([s for _, s, _ in labels], torch.long),
        aux_centre=flat([c for _, _, c in labels], torch.float32),
        locate=torch.tensor([locate_targets(scenes[a.scene], a.question) for a in asked], dtype=torch.float32).reshape(-1, 2),
        prompt_length=prompt_length,
        qtypes=[a.question.qtype for a in asked],
    )


def vision_losses(model, heads: AuxHeads, batch: QwenBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-token colour + shape cross-entropy, per-token centre MSE, the merger's output [image tokens, d_lm])."""
    tokens = model.model.visual(batch.pixel_values, grid_thw=batch.image_grid_thw).pooler_output
    aux = F.cross_entropy(heads.color(tokens), batch.aux_color) + F.cross_entropy(heads.shape(tokens), batch.aux_shape)
    return aux, masked_mse(heads.centre(tokens), batch.aux_centre), tokens


def forward_batch(model, heads: AuxHeads, batch: QwenBatch, locate_layer: int | None = None) -> Losses:
    """The losses of one batch (see `train_tiny.forward_batch`): each image's tokens go to its questions, with the
    augmentation's removed tokens zeroed, and the model places them and computes M-RoPE positions itself."""
    aux, centre, tokens = vision_losses(model, heads, batch)
    merge = model.config.vision_config.spatial_merge_size
    per_image = torch.split(tokens, (batch.image_grid_thw.prod(-1) // merge**2).tolist())
    image_embeds = torch.cat([per_image[i] for i in batch.image_index.tolist()]) * batch.keep.unsqueeze(-1)
    image_slots = batch.input_ids == model.config.image_token_id
    encoded = {"image": BaseModelOutputWithPooling(pooler_output=(image_embeds,))}
    lm_out = model.model(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, image_grid_thw=batch.image_grid_thw[batch.image_index],
        mm_token_type_ids=image_slots.int(), mm_encoder_outputs=encoded, output_hidden_states=locate_layer is not None,
    )
    answer, locate, role, correct = lm_losses(model, heads, lm_out, batch, image_slots, locate_layer)
    return Losses(answer, aux, centre, locate, role, correct)


def evaluate(model, heads: AuxHeads, processor, cfg: QwenTrainConfig) -> dict[str, float]:
    """Greedy-equivalent accuracy per question type (describe included) on fresh validation scenes."""

    def answered(index: int, n: int) -> tuple[list[str], torch.Tensor]:
        batch = make_batch(processor, cfg, "val", index, n, augment=False)
        return batch.qtypes, forward_batch(model, heads, batch).correct

    return accuracy_by_type(model, answered, cfg.eval_images)


def train(cfg: QwenTrainConfig, out_dir: Path, resume: bool = True, log=print) -> dict[str, float]:
    """Train from scratch (or resume from ``out_dir/checkpoint``); write the final model to ``out_dir/model``."""
    torch.manual_seed(cfg.seed)
    processor = build_processor(cfg.size)
    model = build_model(processor.tokenizer, cfg.size)
    heads = AuxHeads(cfg.size.text_hidden, cfg.size.text_hidden)  # the vision losses read the merger's output
    lm_aux = cfg.locate_weight or cfg.role_weight

    def stage_one(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch = make_batch(processor, cfg, "vision", step, cfg.vision_images, augment=False, with_questions=False)
        aux, centre, _ = vision_losses(model, heads, batch)
        return aux, centre

    def stage_two(step: int) -> Losses:
        batch = make_batch(processor, cfg, "train", step, cfg.images_per_step, augment=True)
        return forward_batch(model, heads, batch, cfg.locate_layer if lm_aux else None)

    stages = Stages(model, heads, stage_one, stage_two, lambda: evaluate(model, heads, processor, cfg),
                    lambda folder: save_model(model, processor, folder))
    return run_stages(cfg, stages, out_dir, resume, log)
