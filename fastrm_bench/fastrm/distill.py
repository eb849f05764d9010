"""`fastrm-bench distill`: build a FastRM training set labelled by a teacher method, then train the proxy.

1. Dataset: answer the task's training questions greedily; for every generated token store the
   final-norm hidden state at p_t, the image tokens' hidden states (once per question) and the
   teacher's map of that token. The teacher is any registered method or method spec (``teacher``,
   default ``chefer``, the paper's exact Chefer relevancy), called as a run calls it
   (``explain_sample``). Shards of ``shard_size`` questions are written atomically and skipped on
   resume. The raw maps are stored, so every labeling threshold (an ablation) reuses them.
2. Training: labels ``y_j = 1 if map_j >= labeling_threshold * max(map)`` per token
   (`fastrm_bench.metrics.threshold.binarise`); binary cross-entropy on sigmoid outputs, Adam, lr
   2e-5, batch 128, 3,500 steps by default (the paper's recipe); a seeded held-out split of
   questions; loss and val F1 (against the teacher's labels) logged.
3. ``save_pretrained``: safetensors + JSON (hidden size, labeling threshold, the LVLM, its teacher:
   name, implementation and spec params, the recipe, the tasks and question count, a SHA-256 of the
   training shards and of the LVLM's weights, the held-out scores) + a model card (README.md with
   the same facts as Hub metadata), so that the folder can be pushed to the Hub as it is.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from fastrm_bench.fastrm.model import LEGACY_TEACHER, FastRM, FastRMConfig
from fastrm_bench.metrics.threshold import binarise, threshold_scores
from fastrm_bench.parallel import Ranks, current_ranks


@dataclass
class DatasetConfig:
    model: str = "tiny-llava-shapes"
    task: str = "vqav2"
    split: str = "train"
    data_root: str | None = None
    questions: int | None = None  # seeded subsample of the split; None = all
    seed: int = 0
    max_new_tokens: int = 10
    shard_size: int = 200
    teacher: str = "chefer"  # the method (registered name or spec) whose per-token maps become the labels
    attn_implementation: str = "sdpa"  # what the model answers with (float rounding only: not part of the dataset's identity)


@dataclass
class TrainConfig:
    labeling_threshold: float = 0.3
    steps: int = 3500
    batch_size: int = 128
    lr: float = 2e-5
    val_fraction: float = 0.1
    data_size: int | None = None  # token samples used for training (ablation); None = all
    seed: int = 0
    eval_every: int = 500


def teacher_spec(name: str) -> dict[str, Any]:
    """The teacher as a proxy records it: ``{"name", "implementation", "params"}`` of its method spec."""
    from fastrm_bench.specs import resolve

    spec = resolve("methods", name)
    return {"name": spec.name, "implementation": spec.implementation, "params": dict(spec.params)}


def _make_teacher(spec: dict[str, Any]):
    """The teacher method from its recorded spec (worker processes do not see the parent's --spec-dir)."""
    from fastrm_bench.builders import check_params
    from fastrm_bench.registry import METHODS
    from fastrm_bench.specs import Spec

    factory = METHODS.get(spec["implementation"])
    check_params("methods", Spec(spec["name"], spec["implementation"], params=spec["params"]), factory, spec["params"])
    method = factory(**spec["params"])
    method.name = spec["name"]
    return method


class _ShardMaker:
    """Model, task, question list and teacher of one process; writes one shard per call."""

    def __init__(self, cfg: DatasetConfig, teacher: dict[str, Any], threads: int | None = None,
                 device: str | None = None) -> None:
        from fastrm_bench.builders import create_task_for_model
        from fastrm_bench.models.zoo import load_model

        if threads:
            torch.set_num_threads(threads)
        self.cfg = cfg
        # a rank's own GPU, else the default device
        self.adapter = load_model(cfg.model, device=device, attn_implementation=cfg.attn_implementation)
        self.task, _ = create_task_for_model(cfg.task, cfg.model, cfg.data_root, split=cfg.split)
        self.samples = self.task.select(cfg.questions, cfg.seed)
        self.teacher = _make_teacher(teacher)
        self.teacher.prepare(self.adapter)

    def __call__(self, index: int, path: Path) -> None:
        """Answer questions ``index*shard_size ...``, explain every token, write ``path`` atomically."""
        start = index * self.cfg.shard_size
        queries, keys, relevancy, owner = [], [], [], []
        for record in self.samples[start : start + self.cfg.shard_size]:
            sample = self.task.sample(record)
            inputs = replace(self.adapter.build_inputs([sample.model_images], [self.task.prompt(sample)]), sample_id=sample.id)
            generation = self.adapter.generate(inputs, self.cfg.max_new_tokens, return_hidden=True)[0]
            if generation.num_generated == 0:
                continue
            maps = self.teacher.explain_sample(self.adapter, inputs, generation, sample).maps.flatten(1)
            if maps.shape[0] != generation.num_generated:
                raise ValueError(f"teacher {self.teacher.name!r} gave {maps.shape[0]} maps for {generation.num_generated} "
                                 f"tokens of question {sample.id}; a teacher needs one map per generated token")
            image_positions = inputs.layout.positions.to(generation.last_hidden.device)
            rows = inputs.prompt_length - 1 + torch.arange(generation.num_generated)
            owner += [len(keys)] * generation.num_generated  # index into this shard's keys (skipped questions have none)
            queries.append(generation.last_hidden[rows].float().cpu())
            keys.append(generation.last_hidden[image_positions].float().cpu())
            relevancy.append(maps.float())
        # a dynamic-resolution model gives each image its own token count: pad to the shard's longest, record lengths
        tensors = {"query": torch.cat(queries), "keys": _pad_stack(keys), "relevancy": _pad_cat(relevancy),
                   "owner": torch.tensor(owner, dtype=torch.long),
                   "key_length": torch.tensor([k.shape[0] for k in keys], dtype=torch.long)}
        tmp = path.with_suffix(".tmp")
        save_file(tensors, str(tmp))
        os.replace(tmp, path)


def _make_shards(cfg: DatasetConfig, teacher: dict[str, Any], todo: list[tuple[int, Path]], threads: int | None = None,
                 progress: bool = False) -> None:
    """Write the shards ``todo`` (index, path) in this process."""
    maker = _ShardMaker(cfg, teacher, threads=threads)
    for index, path in tqdm(todo, desc="distill data (shards)", unit="shard", disable=not progress):
        maker(index, path)


def same_teacher(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two recorded teachers label a dataset the same: same method and spec, up to the parameters that
    change only its cost (`ExplanationMethod.cost_params`, e.g. Chefer's gradient chunk)."""
    from fastrm_bench.registry import METHODS

    if (a["name"], a["implementation"]) != (b["name"], b["implementation"]):
        return False
    cost = set(METHODS.get(a["implementation"]).cost_params)
    return {k: v for k, v in a["params"].items() if k not in cost} == {k: v for k, v in b["params"].items() if k not in cost}


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    """What makes two datasets the same: the configuration less the attention implementation (float rounding)."""
    return {k: v for k, v in config.items() if k != "attn_implementation"}


def _claim_folder(out: Path, wanted: dict[str, Any], model: str) -> str | None:
    """Write the dataset's manifest in ``out``, unless the folder holds another dataset (then: why, nothing written)."""
    manifest = out / "dataset.json"
    if manifest.exists():
        found = json.loads(manifest.read_text())
        found_config = {"teacher": "chefer", **found["config"]}  # datasets from before teachers were chosen: Chefer's
        same_config = _identity(found_config) == _identity(wanted["config"])
        if not same_config or not same_teacher(found.get("teacher", LEGACY_TEACHER), wanted["teacher"]):
            return f"{out} holds a dataset built with another configuration (or teacher); use another folder"
        if found.get("model_weights_sha256") != wanted["model_weights_sha256"]:
            return (f"{out} holds a dataset built with other weights of {model!r} (or with unrecorded weights); "
                    "use another folder or delete it")
    out.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps(wanted, indent=2))
    return None


def build_dataset(cfg: DatasetConfig, out: Path, log=print, workers: int = 1, ranks: Ranks | None = None) -> list[Path]:
    """Stage 1: shards ``out/shard_XXXXX.safetensors``; completed shards are kept on resume.

    Shards are independent, so they are shared between processes: the ranks of a launched job
    (``ranks``, default the launcher's: `fastrm-bench distill --num-processes N`, `accelerate launch`),
    or ``workers`` processes started here (one thread each). Every way writes the same files.
    """
    from fastrm_bench.builders import create_task_for_model
    from fastrm_bench.models.zoo import load_model

    ranks = ranks or current_ranks()
    teacher = teacher_spec(cfg.teacher)
    maker: _ShardMaker | None = None
    if ranks.parallel or workers <= 1:  # this process writes shards: its model gives the weights' hash
        with ranks.main_first():  # the embedded world is built once
            maker = _ShardMaker(cfg, teacher, device=ranks.device)
        weights, n_questions = maker.adapter.weights_sha256, len(maker.samples)
    else:
        task, _ = create_task_for_model(cfg.task, cfg.model, cfg.data_root, split=cfg.split)
        weights, n_questions = load_model(cfg.model, device="cpu").weights_sha256, len(task.select(cfg.questions, cfg.seed))
    # the labels depend on the exact weights, not only the model's name: a retrained checkpoint under the
    # same name must not silently resume (or reuse) shards of the old one. The main process checks the
    # folder and writes the manifest; every rank stops on its verdict
    wanted = {"config": asdict(cfg), "model_weights_sha256": weights, "teacher": teacher}
    error = ranks.from_main(_claim_folder(out, wanted, cfg.model) if ranks.is_main else None)
    if error:
        raise ValueError(error)
    shards = [out / f"shard_{i:05d}.safetensors" for i in range(-(-n_questions // cfg.shard_size))]
    todo = [(i, p) for i, p in enumerate(shards) if not p.exists()]
    if maker is not None:
        for index, path in tqdm(ranks.share(todo), desc="distill data (shards)", unit="shard", disable=not ranks.is_main):
            maker(index, path)
        ranks.wait_for_everyone()
    else:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        procs = [context.Process(target=_make_shards, args=(cfg, teacher, Ranks(k, workers).share(todo), 1, k == 0))
                 for k in range(workers)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        failed = [k for k, proc in enumerate(procs) if proc.exitcode != 0]
        if failed:
            raise RuntimeError(f"dataset worker(s) {failed} failed (exit codes {[procs[k].exitcode for k in failed]}); "
                               "the shards they finished are kept: run the command again to complete the dataset")
    if ranks.is_main:
        log(f"dataset: {n_questions} questions in {len(shards)} shards at {out}")
    return shards


def _pad_stack(keys: list[torch.Tensor]) -> torch.Tensor:
    """[n_img_i, d] tensors -> [n, max n_img_i, d], zero-padded after each question's image tokens."""
    return torch.nn.utils.rnn.pad_sequence(keys, batch_first=True)


def _pad_cat(maps: list[torch.Tensor], width: int | None = None) -> torch.Tensor:
    """[tokens_i, n_img_i] maps -> [sum tokens_i, width or max n_img_i], zero-padded on the right."""
    width = width or max(m.shape[1] for m in maps)
    return torch.cat([F.pad(m, (0, width - m.shape[1])) for m in maps])


def _dirs(data_dirs: Path | Sequence[Path]) -> list[Path]:
    return [Path(data_dirs)] if isinstance(data_dirs, (str, Path)) else [Path(d) for d in data_dirs]


def _shards(data_dirs: Path | Sequence[Path]) -> list[Path]:
    """The shards of one dataset folder, or of several (one per task) in the order given."""
    shards = []
    for data_dir in _dirs(data_dirs):
        found = sorted(Path(data_dir).glob("shard_*.safetensors"))
        if not found:
            raise FileNotFoundError(f"no shard_*.safetensors in {data_dir}: run the dataset stage first")
        shards += found
    return shards


def load_dataset(data_dirs: Path | Sequence[Path]) -> dict[str, torch.Tensor]:
    """All shards of one dataset folder (or of several: a proxy of several tasks) concatenated; ``owner``
    re-indexed to the concatenated ``keys``; ``key_mask`` [questions, image tokens] marks each question's real
    image tokens (keys and maps are zero-padded to the longest image of the dataset: a dynamic-resolution model's
    images have different token counts)."""
    parts = [load_file(str(p)) for p in _shards(data_dirs)]
    width = max(p["keys"].shape[1] for p in parts)
    offset, owners, keys, lengths = 0, [], [], []
    for part in parts:
        owners.append(part["owner"] + offset)
        offset += part["keys"].shape[0]
        keys.append(F.pad(part["keys"], (0, 0, 0, width - part["keys"].shape[1])))
        # shards from before dynamic resolution hold one image-token count and no lengths
        lengths.append(part.get("key_length", torch.full((part["keys"].shape[0],), part["keys"].shape[1])))
    length = torch.cat(lengths)
    return {"query": torch.cat([p["query"] for p in parts]), "keys": torch.cat(keys),
            "relevancy": _pad_cat([p["relevancy"] for p in parts], width), "owner": torch.cat(owners),
            "key_mask": torch.arange(width).unsqueeze(0) < length.unsqueeze(1)}


def data_hash(data_dirs: Path | Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in _shards(data_dirs):
        h.update(p.read_bytes())
    return h.hexdigest()


def _manifest(data_dirs: Path | Sequence[Path]) -> dict[str, Any]:
    """The datasets' common manifest (weights and teacher); several folders must agree on both."""
    found = [json.loads(m.read_text()) for d in _dirs(data_dirs) if (m := Path(d) / "dataset.json").exists()]
    if not found:
        return {}
    first = found[0]
    for other in found[1:]:
        if other.get("model_weights_sha256") != first.get("model_weights_sha256") or not same_teacher(
                other.get("teacher", LEGACY_TEACHER), first.get("teacher", LEGACY_TEACHER)):
            raise ValueError("the datasets were labelled with other weights or another teacher: a proxy learns one "
                             "teacher on one model; build them with the same --model and --teacher")
    return first


def _training_data(data_dirs: Path | Sequence[Path], data: dict[str, torch.Tensor]) -> dict[str, Any]:
    """What the proxy records of its data (for its card): the datasets' tasks and splits, and the questions answered
    (those whose answer had at least one token)."""
    configs = [json.loads(m.read_text())["config"] for d in _dirs(data_dirs) if (m := Path(d) / "dataset.json").exists()]
    record: dict[str, Any] = {"questions": int(data["keys"].shape[0])}
    if configs:
        record["tasks"] = list(dict.fromkeys(c["task"] for c in configs))
        record["splits"] = list(dict.fromkeys(c["split"] for c in configs))
    return record


def split_tokens(data: dict[str, torch.Tensor], cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(train token indices, val token indices), split by question so no question is in both."""
    n_questions = data["keys"].shape[0]
    rng = np.random.default_rng(cfg.seed)
    val_questions = set(rng.permutation(n_questions)[: max(1, int(round(cfg.val_fraction * n_questions)))].tolist())
    is_val = torch.tensor([int(o) in val_questions for o in data["owner"]])
    train, val = torch.nonzero(~is_val).flatten(), torch.nonzero(is_val).flatten()
    if cfg.data_size is not None:
        train = train[torch.from_numpy(rng.permutation(len(train))[: cfg.data_size])]
    return train, val


def predict(proxy: FastRM, data: dict[str, torch.Tensor], tokens: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    """The proxy's probabilities of ``tokens`` over their questions' real image tokens, flattened."""
    with torch.no_grad():
        probs = torch.cat([proxy(data["query"][t], data["keys"][data["owner"][t]]) for t in torch.split(tokens, batch)])
    return probs[data["key_mask"][data["owner"][tokens]]]


def _loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BCE over the real image tokens (the plain mean where no question is padded, as before padding existed)."""
    if bool(mask.all()):
        return F.binary_cross_entropy_with_logits(logits, labels)
    return F.binary_cross_entropy_with_logits(logits[mask], labels[mask])


def train_proxy(data_dir: Path | Sequence[Path], out: Path, cfg: TrainConfig, distilled_from: str = "",
                log=print) -> FastRM:
    """Stage 2: train FastRM on the stored shards (of one dataset folder, or of one per task) and save it to ``out``."""
    torch.manual_seed(cfg.seed)
    data = load_dataset(data_dir)
    labels = binarise(data["relevancy"], cfg.labeling_threshold).float()
    train, val = split_tokens(data, cfg)
    val_labels = labels[val][data["key_mask"][data["owner"][val]]]
    found = _manifest(data_dir)
    model_weights = found.get("model_weights_sha256", "")
    # a dataset's manifest names its teacher; one from before teachers were chosen was labelled by Chefer
    teacher = {**found.get("teacher", LEGACY_TEACHER), "model_weights_sha256": model_weights} if found else {}
    proxy = FastRM(FastRMConfig(hidden_size=data["query"].shape[1], labeling_threshold=cfg.labeling_threshold,
                                distilled_from=distilled_from, recipe=asdict(cfg), training_data_sha256=data_hash(data_dir),
                                model_weights_sha256=model_weights, teacher=teacher,
                                training_data=_training_data(data_dir, data)))
    optimizer = torch.optim.Adam(proxy.parameters(), lr=cfg.lr)
    rng = torch.Generator().manual_seed(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    history = []
    bar = tqdm(range(cfg.steps), desc="distill train", mininterval=2)
    start = time.time()
    for step in bar:
        batch = train[torch.randint(len(train), (cfg.batch_size,), generator=rng)]
        logits = proxy.logits(data["query"][batch], data["keys"][data["owner"][batch]])
        loss = _loss(logits, labels[batch], data["key_mask"][data["owner"][batch]])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            val_f1 = threshold_scores(predict(proxy, data, val), val_labels, (0.5,))[0.5]["f1"]
            history.append({"step": step + 1, "loss": loss.item(), "val_f1@0.5": val_f1, "elapsed_s": time.time() - start})
            bar.set_postfix(loss=f"{loss.item():.4f}", val_f1=f"{val_f1:.3f}")
    proxy.eval()
    scores = threshold_scores(predict(proxy, data, val), val_labels)
    proxy.config.metrics = {"held_out_tokens": len(val), "train_tokens": len(train), "history": history,
                            "threshold_scores": {str(c): v for c, v in scores.items()}}
    proxy.save_pretrained(out)
    log(f"FastRM written to {out}: held-out F1@0.5 {scores[0.5]['f1']:.3f}, accuracy {scores[0.5]['accuracy']:.3f} "
        f"(against {proxy.config.teacher_name} labels)")
    return proxy
