"""Relational accuracy of a model by object count and by the anchor-target x gap (README, "Why, and the next checkpoint").

400 test-split scenes per relational type, teacher-forced exact match (= greedy accuracy). Usage:
    python docs/diagnostics/relational_accuracy.py MODEL_DIR
"""

import sys

import numpy as np
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

from fastrm_bench.embedded.train_tiny import Asked, AuxHeads, encode_batch, format_prompt, forward_batch
from fastrm_bench.world.questions import QUESTION_TYPES
from fastrm_bench.world.scenes import SceneConfig, generate_scene, scene_seed

torch.set_num_threads(1)

path = sys.argv[1]
model = LlavaForConditionalGeneration.from_pretrained(path).eval()
proc = AutoProcessor.from_pretrained(path)
rng = np.random.default_rng(123)
for qtype in ("relate_verify", "relate_color", "relate_shape"):
    scenes, asked, meta = [], [], []
    i = 0
    while len(asked) < 400:
        scene = generate_scene(scene_seed("test", 5000 + i), SceneConfig())
        i += 1
        q = QUESTION_TYPES[qtype](scene, rng)
        if q is None:
            continue
        t, a = q.refs
        meta.append((abs(scene.objects[t].center[0] - scene.objects[a].center[0]), len(scene.objects), q.answer))
        asked.append(Asked(len(scenes), q, format_prompt(q.question)))
        scenes.append(scene)
    batch = encode_batch(proc, scenes, asked, grid=8)
    heads = AuxHeads(model.config.vision_config.hidden_size, model.config.text_config.hidden_size)
    with torch.no_grad():
        correct = forward_batch(model, heads, batch).correct
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
