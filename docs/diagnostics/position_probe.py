"""Does a model's image features encode where objects are? (README, "Why, and the next checkpoint")

Ridge and OLS probes from the vision features LLaVA projects (and from the projected ones) to the
centre (x, y) of the object owning each patch, on 600 train / 300 test scenes. Usage:
    python docs/diagnostics/position_probe.py [MODEL_DIR]   (default: the shipped checkpoint)
"""

import sys

import numpy as np
import torch
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.preprocessing import StandardScaler
from transformers import AutoProcessor, LlavaForConditionalGeneration

from fastrm_bench.embedded.train_tiny import patch_centres
from fastrm_bench.models.zoo import CHECKPOINTS
from fastrm_bench.world.scenes import generate_scene, jpeg_roundtrip, scene_seed

torch.set_num_threads(1)

path = sys.argv[1] if len(sys.argv) > 1 else str(CHECKPOINTS / "tiny-llava-shapes")
m = LlavaForConditionalGeneration.from_pretrained(path).eval()
proc = AutoProcessor.from_pretrained(path)


def data(split, n):
    scenes = [generate_scene(scene_seed(split, i)) for i in range(n)]
    pv = proc.image_processor([jpeg_roundtrip(s.image) for s in scenes], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        h = m.model.vision_tower(pv, output_hidden_states=True).hidden_states[m.config.vision_feature_layer][:, 1:]
        proj = m.model.multi_modal_projector(h)
    y = np.concatenate([patch_centres(s, 8) for s in scenes])
    X, P = h.reshape(-1, h.shape[-1]).numpy(), proj.reshape(-1, proj.shape[-1]).numpy()
    v = ~np.isnan(y[:, 0])
    # patch's own column as a baseline: how much of the centre is just "where this patch is"
    col = np.tile(np.arange(64) % 8, n)
    return X[v], P[v], y[v], col[v]


Xtr, Ptr, ytr, ctr = data("train", 600)
Xte, Pte, yte, cte = data("test", 300)
for name, A, B in (("vision feats", Xtr, Xte), ("projected", Ptr, Pte)):
    r = Ridge(1.0).fit(A, ytr)
    print(name, "R2 x/y:", [round(1 - ((r.predict(B)[:, k] - yte[:, k]) ** 2).mean() / yte[:, k].var(), 3) for k in (0, 1)])
pc = (cte * 8 + 4) / 32 - 1
print("patch-column baseline R2 x:", round(1 - ((pc - yte[:, 0]) ** 2).mean() / yte[:, 0].var(), 3))

s = StandardScaler().fit(Xtr)
print("scale", np.abs(Xtr).max(), Xtr.std())
r = LinearRegression().fit(s.transform(Xtr), ytr)
print(
    "std+OLS R2 x/y:",
    [round(1 - ((r.predict(s.transform(Xte))[:, k] - yte[:, k]) ** 2).mean() / yte[:, k].var(), 3) for k in (0, 1)],
)
r = LinearRegression().fit(Xtr, ctr)
print("column from feats R2:", 1 - ((r.predict(Xte) - cte) ** 2).mean() / cte.var())
print("y stats", ytr[:5], ytr.std(0), "X row var", Xtr.std(0)[:5])
r = LinearRegression().fit(Xtr, ytr[:, 0])
print("train R2", r.score(Xtr, ytr[:, 0]))
