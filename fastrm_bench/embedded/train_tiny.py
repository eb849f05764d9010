"""Training recipe of the embedded model (`fastrm-bench train-vlm`).

Why these choices (a 1M-parameter prototype stayed at chance on shape questions):
- an auxiliary per-patch loss on the vision features LLaVA feeds to the projector (colour and
  shape class of the object under each patch); a ViT trained from scratch learns shapes slowly
  (an 8x8 patch inside an object is a flat colour: the shape is only in how patches combine),
  so the recipe starts with a vision-only stage on that loss (cheap: no LM), as LLaVA starts
  from a pretrained CLIP;
- several questions share one image per step (the vision tower runs once per image);
- token-masking augmentation: some image tokens *not* belonging to the question's objects are
  zeroed at the LM input, so that removing irrelevant tokens (what perturbation metrics do)
  leaves the answer unchanged, while the answer still depends on the referenced tokens.
- where objects are, as values: attention retrieves an object's *features*, and RoPE positions
  shape only the attention weights, not the values; a model trained on colour/shape alone kept no
  linear trace of position in its image features (probe R^2 ~0 for object centre x) and could not
  compare two objects' positions ("is A left of B" at chance) though it answered quadrant
  questions. So every object patch's feature also regresses its object's centre (``centre_weight``),
  a middle LM layer at the last prompt token regresses the centre x of the question's target
  and anchor (``locate_weight``), and at that layer every image token says whether it belongs to
  the target, the anchor or neither (``role_weight``: without it "is A left of B", the only
  question naming two objects, stayed at chance); relational questions get more of each batch.
  These three are on by default (the shipped checkpoint's recipe).
Every step's data is a pure function of (seed, step), so a resumed run sees the same batches.
The loop (`run_stages`), question sampling (`ask`) and LM-side losses (`lm_losses`) are shared with the
Qwen2-VL recipe (`fastrm_bench.embedded.train_qwen`), which differs only in geometry and data.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import ClassVar, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from fastrm_bench.embedded.tiny_llava import EMBEDDED_TEMPLATE, TinyLlavaSize, build_model, build_processor, save_template
from fastrm_bench.layout import ImageLayout, centre_square, single_grid
from fastrm_bench.metrics.localisation import object_tokens
from fastrm_bench.world.questions import QUESTION_TYPES, Question
from fastrm_bench.world.scenes import (
    COLOR_NAMES,
    SHAPES,
    Scene,
    SceneConfig,
    generate_scene,
    jpeg_roundtrip,
    patch_labels,
    patch_owners,
    scene_seed,
)

PROMPT_SUFFIXES = ("", " Answer the question using up to two words.", " Answer the question using a single word or phrase.")


@dataclass
class TrainConfig:
    seed: int = 0
    steps: int = 2600
    images_per_step: int = 24
    questions_per_image: int = 4
    lr: float = 1.5e-3
    warmup_steps: int = 100
    #: stage 1: this many steps train only the vision tower on the per-patch loss (~0.2 s each)
    vision_steps: int = 2000
    weight_decay: float = 0.01
    aux_weight: float = 0.5
    mask_aug_prob: float = 0.5
    max_masked_tokens: int = 16
    #: curriculum: scenes hold at most this many objects during the first steps (then up to 4);
    #: one-object scenes teach the LM to read image tokens before it must pick among objects
    curriculum: tuple[tuple[int, int], ...] = ((300, 1), (700, 2), (1100, 3))
    checkpoint_every: int = 100
    eval_every: int = 300
    eval_images: int = 150
    #: "centre" auxiliary loss: every object patch's vision feature regresses its object's centre (x, y),
    #: so that attending to an object retrieves where it is (values carry no position otherwise)
    centre_weight: float = 1.0
    #: "locate" auxiliary loss: at the last prompt token, a middle LM layer regresses the centre x of the
    #: question's target object and (relational questions) of its anchor; 0 disables it
    locate_weight: float = 1.0
    #: "role" auxiliary loss: at the same layer, every image token (which follows the question) classifies
    #: itself as part of the question's target, its anchor, or neither; binds the named objects to
    #: their roles, which "is A left of B" needs and no other question type teaches
    role_weight: float = 1.0
    #: the LM layer (hidden_states index) the locate and role losses read
    locate_layer: int = 2
    type_weights: dict[str, float] = field(
        default_factory=lambda: {
            "color": 1.0, "shape": 1.5, "count": 1.5, "exist": 1.0, "position": 1.0,
            "relate_color": 2.0, "relate_shape": 2.0, "relate_verify": 3.0,
        }
    )
    size: TinyLlavaSize = field(default_factory=TinyLlavaSize)
    #: fields holding a dataclass, rebuilt from their dict by ``from_dict``
    nested: ClassVar[dict[str, type]] = {"size": TinyLlavaSize}

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """A recipe from a JSON dict: overrides of the defaults, or a model's ``training.json`` (its "config")."""
        values = dict(values.get("config", values))
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown recipe field(s) {sorted(unknown)}; known: {sorted(f.name for f in fields(cls))}")
        for name, kind in cls.nested.items():
            if isinstance(values.get(name), dict):
                values[name] = kind(**values[name])
        if "curriculum" in values:
            values["curriculum"] = tuple(tuple(stage) for stage in values["curriculum"])
        return cls(**values)


@dataclass
class Batch:
    pixel_values: torch.Tensor  # [I, 3, H, W]
    input_ids: torch.Tensor  # [Q, L] right-padded
    attention_mask: torch.Tensor
    labels: torch.Tensor  # [Q, L], -100 outside answer + EOS
    image_index: torch.Tensor  # [Q] which image each question is about
    keep: torch.Tensor  # [Q, n_patches] 1 = token kept, 0 = zeroed (augmentation)
    aux_color: torch.Tensor  # [I, n_patches]
    aux_shape: torch.Tensor
    qtypes: list[str]
    aux_centre: torch.Tensor  # [I, n_patches, 2] centre (x, y) in [-1, 1] of each patch's object, NaN for none
    locate: torch.Tensor  # [Q, 2] centre x in [-1, 1] of the target / anchor object, NaN where the question has none
    role: torch.Tensor  # [Q, n_patches] 1 = patch of a target object, 2 = of the anchor, 0 = neither
    prompt_length: torch.Tensor  # [Q] tokens before the answer



def _square_layout(grid: int, image_size: tuple[int, int]) -> ImageLayout:
    """The embedded model's layout: one grid x grid block over the centre square (what its processor keeps)."""
    return single_grid(range(grid * grid), (grid, grid), centre_square(image_size), image_size)

def object_centres(scene) -> np.ndarray:
    """[n_objects, 2] object centres (x, y) scaled to [-1, 1] (x by the width, y by the height)."""
    height, width = scene.image.shape[:2]
    return np.array([o.center for o in scene.objects], dtype=np.float32).reshape(-1, 2) * 2 / np.array(
        [width, height], dtype=np.float32) - 1


def patch_centres(scene, grid: int) -> np.ndarray:
    """[grid * grid, 2] centre of the object owning each patch (see ``patch_owners``), NaN for background."""
    owner = patch_owners(scene, grid).reshape(-1)
    out = np.full((grid * grid, 2), np.nan, dtype=np.float32)
    out[owner >= 0] = object_centres(scene)[owner[owner >= 0]]
    return out


def locate_targets(scene, q: Question) -> list[float]:
    """[target x, anchor x]: relational questions refer to (target, anchor); one-object questions to a target."""
    centres_x = object_centres(scene)[:, 0]
    xs = [float(centres_x[i]) for i in q.refs]
    if q.qtype.startswith("relate_"):
        return xs[:2]
    return [xs[0], math.nan] if len(xs) == 1 else [math.nan, math.nan]


def patch_roles(owners: np.ndarray, q: Question) -> np.ndarray:
    """[n_patches] role of each patch in ``q`` (``owners`` from ``patch_owners``, flattened): 1 target, 2 anchor."""
    role = np.zeros(owners.shape, dtype=np.int64)
    for k, ref in enumerate(q.refs):
        role[owners == ref] = 2 if (k == 1 and q.qtype.startswith("relate_")) else 1
    return role


def masked_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the non-NaN targets (0 when there is none)."""
    valid = ~torch.isnan(target)
    return ((prediction[valid] - target[valid]) ** 2).mean() if valid.any() else prediction.sum() * 0.0


def format_prompt(question: str, suffix: str = "") -> str:
    return EMBEDDED_TEMPLATE.format(prompt=question + suffix)


def sample_questions(scene: Scene, rng: np.random.Generator, k: int, weights: dict[str, float],
                     makers: dict[str, Callable[[Scene, np.random.Generator], Question | None]] = QUESTION_TYPES,
                     ) -> list[Question]:
    """Up to ``k`` questions about ``scene``, their types drawn by ``weights`` from ``makers`` (default: the world's)."""
    names = list(makers)
    p = np.array([weights.get(n, 1.0) for n in names])
    out: list[Question] = []
    for _ in range(8 * k):
        if len(out) == k:
            break
        name = names[int(rng.choice(len(names), p=p / p.sum()))]
        q = makers[name](scene, rng)
        if q is not None:
            out.append(q)
    return out


def scene_config_at(cfg: TrainConfig, step: int) -> SceneConfig:
    """The scene geometry of ``step``: fewer objects early in training (see ``curriculum``)."""
    for until, max_objects in cfg.curriculum:
        if step < until:
            return SceneConfig(min_objects=1, max_objects=max_objects)
    return SceneConfig()


def batch_source(cfg: TrainConfig, split: str, step: int, n_images: int
                 ) -> tuple[np.random.Generator, SceneConfig, str, int]:
    """Where batch ``step`` of ``split`` ("train", "val", or "vision") draws from: its random stream, its scene
    geometry, and the world split and step its scenes come from (stage-1 scenes: train seeds far past stage 2's)."""
    rng = np.random.default_rng([cfg.seed, step, {"train": 0, "val": 1, "vision": 2}[split]])
    scene_config = scene_config_at(cfg, step) if split == "train" else SceneConfig()
    if split == "vision":
        split, step = "train", step + 1_000_000 // n_images
    return rng, scene_config, split, step


@dataclass(frozen=True)
class Asked:
    """One question of a batch: the index of its scene, the question, its prompt and the image tokens it keeps."""

    scene: int
    question: Question
    prompt: str  # the prompt text with the family's one image placeholder (LLaVA: a ``format_prompt`` text, "<image>")
    keep: np.ndarray | None = None  # [n_patches] 1 = kept, 0 = zeroed (augmentation); None = all kept


def make_batch(processor, cfg: TrainConfig, split: str, step: int, n_images: int, augment: bool,
               with_questions: bool = True) -> Batch:
    """Batch ``step`` of ``split`` ("train", "val", or "vision": stage-1 scenes from the train seeds)."""
    rng, scene_config, split, step = batch_source(cfg, split, step, n_images)
    grid = cfg.size.image_size // cfg.size.patch_size
    scenes = [generate_scene(scene_seed(split, step * n_images + i, cfg.seed), scene_config) for i in range(n_images)]
    asked = [Asked(i, q, format_prompt(text), keep)
             for i, scene in enumerate(scenes if with_questions else [])
             for q, text, keep in ask(scene, rng, cfg, _square_layout(grid, scene.image.shape[:2]), augment)]
    return encode_batch(processor, scenes, asked, grid)


#: question types whose question says how to answer: no short-answer prompt suffix
FREE_FORM_TYPES = frozenset({"describe"})


def ask(scene: Scene, rng: np.random.Generator, cfg: TrainConfig, layout: ImageLayout, augment: bool,
        makers: dict[str, Callable[[Scene, np.random.Generator], Question | None]] = QUESTION_TYPES,
        ) -> list[tuple[Question, str, np.ndarray]]:
    """``cfg.questions_per_image`` sampled questions about ``scene``: each with its text (a paraphrase of existence
    questions, a prompt suffix) and which of ``layout``'s image tokens it keeps (token-removal augmentation:
    with ``augment``, some tokens not touching the question's objects are zeroed)."""
    out = []
    for q in sample_questions(scene, rng, cfg.questions_per_image, cfg.type_weights, makers):
        text = q.question
        if q.qtype == "exist" and rng.random() < 0.5:
            text = text[:-1] + " in the image?"
        if q.qtype not in FREE_FORM_TYPES:
            text += PROMPT_SUFFIXES[int(rng.integers(len(PROMPT_SUFFIXES)))]
        keep = np.ones(layout.num_tokens, dtype=np.float32)
        if augment and rng.random() < cfg.mask_aug_prob:
            masks = [scene.objects[r].mask for r in q.refs]
            referenced = object_tokens(layout, np.logical_or.reduce(masks)) if masks \
                else np.zeros(layout.num_tokens, dtype=bool)
            free = np.flatnonzero(~referenced)
            k = int(rng.integers(1, cfg.max_masked_tokens + 1))
            keep[rng.choice(free, size=min(k, len(free)), replace=False)] = 0.0
        out.append((q, text, keep))
    return out


def encode_batch(processor, scenes: list, asked: list[Asked], grid: int) -> Batch:
    """The tensors of ``asked`` about ``scenes``: teacher-forced answers + EOS, and every auxiliary target."""
    owners = [patch_owners(scene, grid).reshape(-1) for scene in scenes]
    labels_per_scene = [patch_labels(scene, grid) for scene in scenes]
    ids, attn, labels, prompt_length = teacher_forced_ids(
        processor.tokenizer, [a.prompt.replace("<image>", "<image>" * grid * grid) for a in asked],
        [a.question.answer for a in asked])
    n = grid * grid
    return Batch(
        pixel_values=processor.image_processor([jpeg_roundtrip(s.image) for s in scenes], return_tensors="pt")["pixel_values"],
        input_ids=ids,
        attention_mask=attn,
        labels=labels,
        image_index=torch.tensor([a.scene for a in asked], dtype=torch.long),
        keep=torch.from_numpy(np.stack([np.ones(n, np.float32) if a.keep is None else a.keep for a in asked]))
        if asked else torch.zeros(0, n),
        aux_color=torch.from_numpy(np.stack([c.reshape(-1) for c, _ in labels_per_scene])),
        aux_shape=torch.from_numpy(np.stack([s.reshape(-1) for _, s in labels_per_scene])),
        qtypes=[a.question.qtype for a in asked],
        aux_centre=torch.from_numpy(np.stack([patch_centres(scene, grid) for scene in scenes])),
        locate=torch.tensor([locate_targets(scenes[a.scene], a.question) for a in asked], dtype=torch.float32).reshape(-1, 2),
        role=torch.from_numpy(np.stack([patch_roles(owners[a.scene], a.question) for a in asked]))
        if asked else torch.zeros(0, n, dtype=torch.long),
        prompt_length=prompt_length,
    )


def teacher_forced_ids(tok, prompts: list[str], answers: list[str],
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input ids, attention mask, labels, prompt lengths): each prompt (image placeholders already expanded) +
    its answer + EOS, right-padded; labels are -100 outside answer + EOS."""
    prompt_ids = tok(prompts, add_special_tokens=True)["input_ids"] if prompts else []
    answer_ids = tok(answers, add_special_tokens=False)["input_ids"] if prompts else []
    full = [p + a + [tok.eos_token_id] for p, a in zip(prompt_ids, answer_ids)]
    ids = torch.full((len(full), max(map(len, full), default=0)), tok.pad_token_id, dtype=torch.long)
    labels = torch.full_like(ids, -100)
    attn = torch.zeros_like(ids)
    for r, (p, f) in enumerate(zip(prompt_ids, full)):
        ids[r, : len(f)] = torch.tensor(f)
        attn[r, : len(f)] = 1
        labels[r, len(p) : len(f)] = torch.tensor(f[len(p) :])
    return ids, attn, labels, torch.tensor([len(p) for p in prompt_ids], dtype=torch.long)


class AuxHeads(torch.nn.Module):
    """Training-only per-patch classifiers on the projector's input; not shipped."""

    def __init__(self, hidden: int, text_hidden: int):
        super().__init__()
        self.color = torch.nn.Linear(hidden, len(COLOR_NAMES) + 1)
        self.shape = torch.nn.Linear(hidden, len(SHAPES) + 1)
        self.centre = torch.nn.Linear(hidden, 2)
        self.locate = torch.nn.Linear(text_hidden, 2)
        self.role = torch.nn.Linear(text_hidden, 3)


def aux_loss(model, heads: AuxHeads, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-patch colour + shape cross-entropy, per-patch object-centre MSE, the vision features LLaVA projects)."""
    vision = model.model.vision_tower(batch.pixel_values, output_hidden_states=True)
    feats = vision.hidden_states[model.config.vision_feature_layer][:, 1:]  # "default": drop CLS
    aux = F.cross_entropy(heads.color(feats).flatten(0, 1), batch.aux_color.flatten()) + F.cross_entropy(
        heads.shape(feats).flatten(0, 1), batch.aux_shape.flatten()
    )
    return aux, masked_mse(heads.centre(feats), batch.aux_centre), feats


class Losses(NamedTuple):
    answer: torch.Tensor  # answer-token cross-entropy
    aux: torch.Tensor  # per-patch colour + shape cross-entropy of the vision features
    centre: torch.Tensor  # per-patch object-centre MSE of the vision features
    locate: torch.Tensor  # centre-x MSE of the referenced objects at the last prompt token (0 if off)
    role: torch.Tensor  # per-image-token target/anchor/neither cross-entropy (0 if off)
    correct: torch.Tensor  # [Q] teacher-forced exact match per question


def forward_batch(model, heads: AuxHeads, batch: Batch, locate_layer: int | None = None) -> Losses:
    """The losses of one batch; ``locate_layer`` (a LM hidden-states index) turns on the locate and role losses.

    Teacher-forced exact match of all answer tokens and EOS equals greedy-decoding accuracy.
    """
    cfg = model.config
    aux, centre, feats = aux_loss(model, heads, batch)
    image_embeds = model.model.multi_modal_projector(feats)[batch.image_index]
    image_embeds = image_embeds * batch.keep.unsqueeze(-1)
    embeds = model.get_input_embeddings()(batch.input_ids)
    image_slots = (batch.input_ids == cfg.image_token_id).unsqueeze(-1).expand_as(embeds)
    embeds = embeds.masked_scatter(image_slots, image_embeds.to(embeds.dtype))
    lm_out = model.model.language_model(inputs_embeds=embeds, attention_mask=batch.attention_mask,
                                        output_hidden_states=locate_layer is not None)
    answer, locate, role, correct = lm_losses(model, heads, lm_out, batch, image_slots[..., 0], locate_layer)
    return Losses(answer, aux, centre, locate, role, correct)


def lm_losses(model, heads: AuxHeads, lm_out, batch, image_slots: torch.Tensor, locate_layer: int | None,
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(answer cross-entropy, locate MSE, role cross-entropy, [Q] exact match) from the LM's output on ``batch``.

    ``image_slots`` [Q, L] marks the image tokens, whose role labels ``batch.role`` lists in that (row-major) order.
    """
    logits = model.lm_head(lm_out.last_hidden_state[:, :-1])
    target = batch.labels[:, 1:]
    loss = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-100)
    answer_positions = target != -100
    correct = ((logits.argmax(-1) == target) | ~answer_positions).all(dim=1)
    locate = role = torch.zeros(())
    if locate_layer is not None:
        states = lm_out.hidden_states[locate_layer]
        locate = masked_mse(heads.locate(states[torch.arange(len(states)), batch.prompt_length - 1]), batch.locate)
        role = F.cross_entropy(heads.role(states[image_slots]), batch.role.flatten())
    return loss, locate, role, correct


def accuracy_by_type(model: torch.nn.Module, answered: Callable[[int, int], tuple[list[str], torch.Tensor]],
                     images: int, chunk: int = 50) -> dict[str, float]:
    """Per-type and overall accuracy on ``images`` validation scenes, ``chunk`` at a time.

    ``answered(index, n)`` gives the question types and teacher-forced exact matches of chunk ``index`` of ``n`` scenes.
    """
    model.eval()
    per_type: dict[str, list[bool]] = {}
    with torch.no_grad():
        for start in range(0, images, chunk):
            qtypes, correct = answered(start // chunk, chunk)
            for t, c in zip(qtypes, correct.tolist()):
                per_type.setdefault(t, []).append(c)
    model.train()
    result = {t: float(np.mean(v)) for t, v in sorted(per_type.items())}
    result["overall"] = float(np.mean([c for v in per_type.values() for c in v]))
    return result


def evaluate(model, heads, processor, cfg: TrainConfig) -> dict[str, float]:
    """Greedy-equivalent accuracy per question type on fresh validation scenes."""

    def answered(index: int, n: int) -> tuple[list[str], torch.Tensor]:
        batch = make_batch(processor, cfg, "val", index, n, augment=False)
        return batch.qtypes, forward_batch(model, heads, batch).correct

    return accuracy_by_type(model, answered, cfg.eval_images)


def _save_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    tensors, meta = {}, {"param_groups": [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]}
    for i, state in opt.state_dict()["state"].items():
        for k, v in state.items():
            tensors[f"{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    save_file(tensors, str(path / "optimizer.safetensors"), metadata={"meta": json.dumps(meta)})


def _load_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    tensors = load_file(str(path / "optimizer.safetensors"))
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = value
    sd = opt.state_dict()
    sd["state"] = state
    opt.load_state_dict(sd)


@dataclass
class Stages:
    """What `run_stages` needs from a family's recipe: its modules, each step's losses, evaluation and saving."""

    model: torch.nn.Module
    heads: torch.nn.Module  # training-only heads (saved in checkpoints, not with the model)
    vision_losses: Callable[[int], tuple[torch.Tensor, torch.Tensor]]  # stage-1 step -> (aux, centre)
    full_losses: Callable[[int], Losses]  # stage-2 step, counted from 0 -> its losses
    evaluate: Callable[[], dict[str, float]]
    save_model: Callable[[Path], None]  # writes the loadable model folder (weights, processor, template)


def train(cfg: TrainConfig, out_dir: Path, resume: bool = True, log=print) -> dict[str, float]:
    """Train from scratch (or resume from ``out_dir/checkpoint``); write the final model to out_dir."""
    torch.manual_seed(cfg.seed)
    processor = build_processor(cfg.size)
    model = build_model(processor.tokenizer, cfg.size)
    heads = AuxHeads(cfg.size.vision_hidden, cfg.size.text_hidden)
    lm_aux = cfg.locate_weight or cfg.role_weight

    def vision_losses(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        aux, centre, _ = aux_loss(model, heads, make_batch(processor, cfg, "vision", step, 32, augment=False,
                                                           with_questions=False))
        return aux, centre

    def full_losses(step: int) -> Losses:
        batch = make_batch(processor, cfg, "train", step, cfg.images_per_step, augment=True)
        return forward_batch(model, heads, batch, cfg.locate_layer if lm_aux else None)

    def save_model(folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)
        processor.save_pretrained(folder)
        save_template(folder)

    stages = Stages(model, heads, vision_losses, full_losses, lambda: evaluate(model, heads, processor, cfg), save_model)
    return run_stages(cfg, stages, out_dir, resume, log)


def run_stages(cfg: TrainConfig, stages: Stages, out_dir: Path, resume: bool = True, log=print) -> dict[str, float]:
    """The two-stage loop every family shares: optimiser, schedule, log, checkpoints, resuming, final model.

    Resuming restores weights, heads and optimiser state from ``out_dir/checkpoint``; since each step's data is
    a pure function of (seed, step), a resumed run ends with the weights of an uninterrupted one.
    """
    model, heads = stages.model, stages.heads
    params = list(model.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = _resume(stages, opt, out_dir / "checkpoint", log) if resume else 0
    model.train()
    total_steps = cfg.vision_steps + cfg.steps
    bar = tqdm(range(start, total_steps), initial=start, total=total_steps, desc="train-vlm", mininterval=5)
    t0 = time.time()
    with (out_dir / "train_log.jsonl").open("a") as log_file:
        for step in bar:
            for group in opt.param_groups:
                group["lr"] = _learning_rate(cfg, step)
            losses = _step_losses(cfg, stages, step)
            opt.zero_grad(set_to_none=True)
            losses["total"].backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            correct = losses["correct"].float().mean()
            bar.set_postfix(loss=f"{losses['loss'].item():.3f}", aux=f"{losses['aux'].item():.3f}", acc=f"{correct:.2f}")
            record = {"step": step + 1, **{k: losses[k].item() for k in ("loss", "aux", "centre", "locate", "role")},
                      "train_acc": correct.item(), "elapsed_s": time.time() - t0}
            if step >= cfg.vision_steps and ((step + 1 - cfg.vision_steps) % cfg.eval_every == 0 or step + 1 == total_steps):
                record["val"] = stages.evaluate()
                log(f"step {step + 1}: val {json.dumps(record['val'])}")
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == total_steps:
                _save_checkpoint(cfg, stages, opt, out_dir, step + 1)
    final = stages.evaluate()
    model.eval()
    stages.save_model(out_dir / "model")
    (out_dir / "model" / "training.json").write_text(json.dumps({"config": asdict(cfg), "val": final}, indent=2))
    return final


def _resume(stages: Stages, opt: torch.optim.Optimizer, ckpt: Path, log) -> int:
    """Restore weights, heads and optimiser from the last checkpoint; the step to start at (0: none there)."""
    if not (ckpt / "state.json").exists():
        return 0
    state = json.loads((ckpt / "state.json").read_text())
    stages.model.load_state_dict(load_file(str(ckpt / "model.safetensors")))
    stages.heads.load_state_dict(load_file(str(ckpt / "heads.safetensors")))
    _load_optimizer(opt, ckpt)
    log(f"resuming from step {state['step']}")
    return state["step"]


def _learning_rate(cfg: TrainConfig, step: int) -> float:
    """Warmup then cosine, separately for the vision stage and the full stage."""
    stage_start, stage_len = (0, cfg.vision_steps) if step < cfg.vision_steps else (cfg.vision_steps, cfg.steps)
    local = step - stage_start
    if local < cfg.warmup_steps:
        return cfg.lr * (local + 1) / cfg.warmup_steps
    progress = (local - cfg.warmup_steps) / max(1, stage_len - cfg.warmup_steps)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def _step_losses(cfg: TrainConfig, stages: Stages, step: int) -> dict[str, torch.Tensor]:
    """One step's losses: stage 1 trains the vision tower and the auxiliary heads only, stage 2 everything."""
    if step < cfg.vision_steps:
        aux, centre = stages.vision_losses(step)
        zero = torch.zeros(())
        return {"loss": zero, "aux": aux, "centre": centre, "locate": zero, "role": zero, "correct": torch.zeros(1),
                "total": aux + cfg.centre_weight * centre}
    loss, aux, centre, locate, role, correct = stages.full_losses(step - cfg.vision_steps)
    total = loss + cfg.aux_weight * (aux + cfg.centre_weight * centre) + cfg.locate_weight * locate + cfg.role_weight * role
    return {"loss": loss, "aux": aux, "centre": centre, "locate": locate, "role": role, "correct": correct, "total": total}


def _save_checkpoint(cfg: TrainConfig, stages: Stages, opt: torch.optim.Optimizer, out_dir: Path, step: int) -> None:
    """Write the checkpoint beside the old one, then swap it in: a kill leaves one whole checkpoint."""
    ckpt, tmp = out_dir / "checkpoint", out_dir / "checkpoint.tmp"
    tmp.mkdir(exist_ok=True)
    save_file(stages.model.state_dict(), str(tmp / "model.safetensors"))
    save_file(stages.heads.state_dict(), str(tmp / "heads.safetensors"))
    _save_optimizer(opt, tmp)
    (tmp / "state.json").write_text(json.dumps({"step": step, "config": asdict(cfg)}))
    if ckpt.exists():
        for f in ckpt.iterdir():
            f.unlink()
        ckpt.rmdir()
    tmp.rename(ckpt)
