"""Relational accuracy of a model by object count and by the anchor-target x gap (README, "Why, and the next checkpoint").

400 test-split scenes per relational type, teacher-forced exact match (= greedy accuracy). Usage:
    python docs/diagnostics/relational_accuracy.py MODEL_DIR
"""

import sys

import numpy as np
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

from fastrm_bench.models.train_tiny import AuxHeads, Batch, format_prompt, forward_batch
from fastrm_bench.world.questions import QUESTION_TYPES
from fastrm_bench.world.scenes import SceneConfig, generate_scene, jpeg_roundtrip, scene_seed

torch.set_num_threads(1)

path = sys.argv[1]
model = LlavaForConditionalGeneration.from_pretrained(path).eval()
proc = AutoProcessor.from_pretrained(path)
tok = proc.tokenizer
grid = 8
rows = []
rng = np.random.default_rng(123)
for qtype in ("relate_verify", "relate_color", "relate_shape"):
    images, seqs, answers, idx, meta = [], [], [], [], []
    i = 0
    while len(seqs) < 400:
        scene = generate_scene(scene_seed("test", 5000 + i), SceneConfig())
        i += 1
        q = QUESTION_TYPES[qtype](scene, rng)
        if q is None:
            continue
        t, a = q.refs
        dx = abs(scene.objects[t].center[0] - scene.objects[a].center[0])
        images.append(jpeg_roundtrip(scene.image))
        idx.append(len(images) - 1)
        seqs.append(format_prompt(q.question).replace("<image>", "<image>" * 64))
        answers.append(q.answer)
        meta.append((dx, len(scene.objects), q.answer))
    p = tok(seqs)["input_ids"]
    an = tok(answers, add_special_tokens=False)["input_ids"]
    full = [x + y + [tok.eos_token_id] for x, y in zip(p, an)]
    L = max(map(len, full))
    ids = torch.full((len(full), L), tok.pad_token_id)
    lab = torch.full_like(ids, -100)
    att = torch.zeros_like(ids)
    for r, (x, f) in enumerate(zip(p, full)):
        ids[r, : len(f)] = torch.tensor(f)
        att[r, : len(f)] = 1
        lab[r, len(x) : len(f)] = torch.tensor(f[len(x) :])
    pv = proc.image_processor(images, return_tensors="pt")["pixel_values"]
    z = torch.zeros(len(images), 64, dtype=torch.long)
    b = Batch(
        pv,
        ids,
        att,
        lab,
        torch.tensor(idx),
        torch.ones(len(full), 64),
        z,
        z,
        [qtype] * len(full),
        torch.full((len(images), 64, 2), float("nan")),
        torch.full((len(full), 2), float("nan")),
        torch.zeros(len(full), 64, dtype=torch.long),
        torch.tensor([len(x) for x in p]),
    )
    with torch.no_grad():
        correct = forward_batch(model, AuxHeads(128, 128), b).correct
    c = correct.numpy()
    dx = np.array([m[0] for m in meta])
    n = np.array([m[1] for m in meta])
    print(qtype, "acc", c.mean().round(3))
    for lo, hi in ((6, 9), (9, 12), (12, 16), (16, 24), (24, 64)):
        s = (dx >= lo) & (dx < hi)
        print(f"  dx [{lo},{hi}): n={s.sum():3d} acc={c[s].mean() if s.any() else float('nan'):.3f}")
    for k in (2, 3, 4):
        s = n == k
        print(f"  objects={k}: n={s.sum():3d} acc={c[s].mean() if s.any() else float('nan'):.3f}")
    if qtype == "relate_verify":
        ans = np.array([m[2] for m in meta])
        for a_ in ("yes", "no"):
            s = ans == a_
            print(f"  answer {a_}: n={s.sum()} acc={c[s].mean():.3f}")
