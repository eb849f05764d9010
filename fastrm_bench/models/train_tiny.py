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
Every step's data is a pure function of (seed, step), so a resumed run sees the same batches.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from fastrm_bench.metrics.localisation import mask_to_patches
from fastrm_bench.models.tiny_llava import EMBEDDED_TEMPLATE, TinyLlavaSize, build_model, build_processor, save_template
from fastrm_bench.world.questions import QUESTION_TYPES, Question, questions_for_scene
from fastrm_bench.world.scenes import (
    COLOR_NAMES,
    SHAPES,
    SceneConfig,
    generate_scene,
    jpeg_roundtrip,
    patch_labels,
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
    type_weights: dict[str, float] = field(
        default_factory=lambda: {
            "color": 1.0, "shape": 1.5, "count": 1.5, "exist": 1.5, "position": 1.5,
            "relate_color": 1.5, "relate_shape": 1.5, "relate_verify": 1.5,
        }
    )
    size: TinyLlavaSize = field(default_factory=TinyLlavaSize)


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


def format_prompt(question: str, suffix: str = "") -> str:
    return EMBEDDED_TEMPLATE.format(prompt=question + suffix)


def sample_questions(scene, rng: np.random.Generator, k: int, weights: dict[str, float]) -> list[Question]:
    names = list(QUESTION_TYPES)
    p = np.array([weights.get(n, 1.0) for n in names])
    out: list[Question] = []
    for _ in range(8 * k):
        if len(out) == k:
            break
        name = names[int(rng.choice(len(names), p=p / p.sum()))]
        q = questions_for_scene(scene, rng, (name,))
        if q:
            out.append(q[0])
    return out


def scene_config_at(cfg: TrainConfig, step: int) -> SceneConfig:
    """The scene geometry of ``step``: fewer objects early in training (see ``curriculum``)."""
    for until, max_objects in cfg.curriculum:
        if step < until:
            return SceneConfig(min_objects=1, max_objects=max_objects)
    return SceneConfig()


def make_batch(processor, cfg: TrainConfig, split: str, step: int, n_images: int, augment: bool,
               with_questions: bool = True) -> Batch:
    """Batch ``step`` of ``split`` ("train", "val", or "vision": stage-1 scenes from the train seeds)."""
    rng = np.random.default_rng([cfg.seed, step, {"train": 0, "val": 1, "vision": 2}[split]])
    scene_config = scene_config_at(cfg, step) if split == "train" else SceneConfig()
    if split == "vision":  # stage-1 scenes: train seeds far past the ones stage 2 uses
        split, step = "train", step + 1_000_000 // n_images
    grid = cfg.size.image_size // cfg.size.patch_size
    tok = processor.tokenizer
    images, seqs, answers, image_index, keeps, qtypes, aux_c, aux_s = [], [], [], [], [], [], [], []
    for i in range(n_images):
        scene = generate_scene(scene_seed(split, step * n_images + i, cfg.seed), scene_config)
        images.append(jpeg_roundtrip(scene.image))
        c, s = patch_labels(scene, grid)
        aux_c.append(c.reshape(-1))
        aux_s.append(s.reshape(-1))
        if not with_questions:
            continue
        for q in sample_questions(scene, rng, cfg.questions_per_image, cfg.type_weights):
            text = q.question
            if q.qtype == "exist" and rng.random() < 0.5:
                text = text[:-1] + " in the image?"
            suffix = PROMPT_SUFFIXES[int(rng.integers(len(PROMPT_SUFFIXES)))]
            seqs.append(format_prompt(text, suffix).replace("<image>", "<image>" * grid * grid))
            answers.append(q.answer)
            image_index.append(i)
            qtypes.append(q.qtype)
            keep = np.ones(grid * grid, dtype=np.float32)
            if augment and rng.random() < cfg.mask_aug_prob:
                masks = [scene.objects[r].mask for r in q.refs]
                referenced = mask_to_patches(np.logical_or.reduce(masks), (grid, grid)).reshape(-1) if masks \
                    else np.zeros(grid * grid, dtype=bool)
                free = np.flatnonzero(~referenced)
                k = int(rng.integers(1, cfg.max_masked_tokens + 1))
                keep[rng.choice(free, size=min(k, len(free)), replace=False)] = 0.0
            keeps.append(keep)
    if not with_questions:
        seqs, answers = [format_prompt("")], [""]
    prompt_ids = tok(seqs, add_special_tokens=True)["input_ids"]
    answer_ids = tok(answers, add_special_tokens=False)["input_ids"]
    full = [p + a + [tok.eos_token_id] for p, a in zip(prompt_ids, answer_ids)]
    length = max(len(f) for f in full)
    ids = torch.full((len(full), length), tok.pad_token_id, dtype=torch.long)
    labels = torch.full_like(ids, -100)
    attn = torch.zeros_like(ids)
    for r, (p, f) in enumerate(zip(prompt_ids, full)):
        ids[r, : len(f)] = torch.tensor(f)
        attn[r, : len(f)] = 1
        labels[r, len(p) : len(f)] = torch.tensor(f[len(p) :])
    pixel_values = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    return Batch(
        pixel_values=pixel_values,
        input_ids=ids,
        attention_mask=attn,
        labels=labels,
        image_index=torch.tensor(image_index),
        keep=torch.from_numpy(np.stack(keeps)) if keeps else torch.zeros(0, grid * grid),
        aux_color=torch.from_numpy(np.stack(aux_c)),
        aux_shape=torch.from_numpy(np.stack(aux_s)),
        qtypes=qtypes,
    )


class AuxHeads(torch.nn.Module):
    """Training-only per-patch classifiers on the projector's input; not shipped."""

    def __init__(self, hidden: int):
        super().__init__()
        self.color = torch.nn.Linear(hidden, len(COLOR_NAMES) + 1)
        self.shape = torch.nn.Linear(hidden, len(SHAPES) + 1)


def aux_loss(model, heads: AuxHeads, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-patch colour + shape cross-entropy, the vision features LLaVA projects)."""
    vision = model.model.vision_tower(batch.pixel_values, output_hidden_states=True)
    feats = vision.hidden_states[model.config.vision_feature_layer][:, 1:]  # "default": drop CLS
    aux = F.cross_entropy(heads.color(feats).flatten(0, 1), batch.aux_color.flatten()) + F.cross_entropy(
        heads.shape(feats).flatten(0, 1), batch.aux_shape.flatten()
    )
    return aux, feats


def forward_batch(model, heads: AuxHeads, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(answer loss, aux loss, per-question exact-match of the teacher-forced argmax).

    Teacher-forced exact match of all answer tokens and EOS equals greedy-decoding accuracy.
    """
    cfg = model.config
    aux, feats = aux_loss(model, heads, batch)
    image_embeds = model.model.multi_modal_projector(feats)[batch.image_index]
    image_embeds = image_embeds * batch.keep.unsqueeze(-1)
    embeds = model.get_input_embeddings()(batch.input_ids)
    image_slots = (batch.input_ids == cfg.image_token_id).unsqueeze(-1).expand_as(embeds)
    embeds = embeds.masked_scatter(image_slots, image_embeds.to(embeds.dtype))
    hidden = model.model.language_model(inputs_embeds=embeds, attention_mask=batch.attention_mask).last_hidden_state
    logits = model.lm_head(hidden[:, :-1])
    target = batch.labels[:, 1:]
    loss = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-100)
    answer_positions = target != -100
    correct = ((logits.argmax(-1) == target) | ~answer_positions).all(dim=1)
    return loss, aux, correct


def evaluate(model, heads, processor, cfg: TrainConfig) -> dict[str, float]:
    """Greedy-equivalent accuracy per question type on fresh validation scenes."""
    model.eval()
    per_type: dict[str, list[bool]] = {}
    with torch.no_grad():
        for chunk in range(0, cfg.eval_images, 50):
            batch = make_batch(processor, cfg, "val", chunk // 50, 50, augment=False)
            _, _, correct = forward_batch(model, heads, batch)
            for t, c in zip(batch.qtypes, correct.tolist()):
                per_type.setdefault(t, []).append(c)
    model.train()
    result = {t: float(np.mean(v)) for t, v in sorted(per_type.items())}
    result["overall"] = float(np.mean([c for v in per_type.values() for c in v]))
    return result


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


def train(cfg: TrainConfig, out_dir: Path, resume: bool = True, log=print) -> dict[str, float]:
    """Train from scratch (or resume from ``out_dir/checkpoint``); write the final model to out_dir."""
    torch.manual_seed(cfg.seed)
    processor = build_processor(cfg.size)
    model = build_model(processor.tokenizer, cfg.size)
    heads = AuxHeads(cfg.size.vision_hidden)
    params = list(model.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = out_dir / "checkpoint"
    start = 0
    if resume and (ckpt / "state.json").exists():
        state = json.loads((ckpt / "state.json").read_text())
        model.load_state_dict(load_file(str(ckpt / "model.safetensors")))
        heads.load_state_dict(load_file(str(ckpt / "heads.safetensors")))
        _load_optimizer(opt, ckpt)
        start = state["step"]
        log(f"resuming from step {start}")

    def lr_at(step: int) -> float:
        """Warmup then cosine, separately for the vision stage and the full stage."""
        stage_start, stage_len = (0, cfg.vision_steps) if step < cfg.vision_steps else (cfg.vision_steps, cfg.steps)
        local = step - stage_start
        if local < cfg.warmup_steps:
            return cfg.lr * (local + 1) / cfg.warmup_steps
        progress = (local - cfg.warmup_steps) / max(1, stage_len - cfg.warmup_steps)
        return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))

    model.train()
    log_file = (out_dir / "train_log.jsonl").open("a")
    total_steps = cfg.vision_steps + cfg.steps
    bar = tqdm(range(start, total_steps), initial=start, total=total_steps, desc="train-vlm", mininterval=5)
    t0 = time.time()
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        if step < cfg.vision_steps:  # stage 1: vision tower + aux heads only
            batch = make_batch(processor, cfg, "vision", step, 32, augment=False, with_questions=False)
            aux, _ = aux_loss(model, heads, batch)
            loss, correct, total = torch.zeros(()), torch.zeros(1), aux
        else:
            batch = make_batch(processor, cfg, "train", step - cfg.vision_steps, cfg.images_per_step, augment=True)
            loss, aux, correct = forward_batch(model, heads, batch)
            total = loss + cfg.aux_weight * aux
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", aux=f"{aux.item():.3f}", acc=f"{correct.float().mean():.2f}")
        record = {"step": step + 1, "loss": loss.item(), "aux": aux.item(), "train_acc": correct.float().mean().item(),
                  "elapsed_s": time.time() - t0}
        if step >= cfg.vision_steps and ((step + 1 - cfg.vision_steps) % cfg.eval_every == 0 or step + 1 == total_steps):
            record["val"] = evaluate(model, heads, processor, cfg)
            log(f"step {step + 1}: val {json.dumps(record['val'])}")
        log_file.write(json.dumps(record) + "\n")
        log_file.flush()
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == total_steps:
            tmp = out_dir / "checkpoint.tmp"
            tmp.mkdir(exist_ok=True)
            save_file(model.state_dict(), str(tmp / "model.safetensors"))
            save_file(heads.state_dict(), str(tmp / "heads.safetensors"))
            _save_optimizer(opt, tmp)
            (tmp / "state.json").write_text(json.dumps({"step": step + 1, "config": asdict(cfg)}))
            if ckpt.exists():
                for f in ckpt.iterdir():
                    f.unlink()
                ckpt.rmdir()
            tmp.rename(ckpt)
    final = evaluate(model, heads, processor, cfg)
    model.eval()
    model.save_pretrained(out_dir / "model", safe_serialization=True)
    processor.save_pretrained(out_dir / "model")
    save_template(out_dir / "model")
    (out_dir / "model" / "training.json").write_text(json.dumps({"config": asdict(cfg), "val": final}, indent=2))
    return final
