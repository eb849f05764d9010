"""Why vision-side Grad-CAM misses the objects on the shipped model (README, "Grad-CAM misses the objects").

For the first answer token of correctly answered VQAv2-style val questions, the share of each
map's mass on the question's objects (`relevance_mass`), for Grad-CAM and for variants built from
the same activations A [patch, channel] and gradients G at ``vision_feature_layer``:
Grad-CAM ``relu(sum_c mean_p(G)_c A_pc)`` and its negation, per-patch gradient x activation
``sum_c G_pc A_pc`` (both signs), the norms of A and of G per patch, `gradcam-lm`, and random.
Usage:
    python docs/diagnostics/gradcam_variants.py [MODEL] [N_QUESTIONS]   (default: the shipped model, 150)
"""

import sys

import numpy as np
import torch

from fastrm_bench.builders import create_method, create_task
from fastrm_bench.explainers._attention import answer_scores, token_gradients
from fastrm_bench.metrics.localisation import object_tokens, relevance_mass
from fastrm_bench.models.zoo import load_model

adapter = load_model(sys.argv[1] if len(sys.argv) > 1 else "tiny-llava-shapes", device="cpu")
limit = int(sys.argv[2]) if len(sys.argv) > 2 else 150
task, _ = create_task("vqav2")
gradcam_lm = create_method("gradcam-lm")[0]
rng = torch.Generator().manual_seed(0)
mass: dict[str, list[float]] = {}
for sample in task.samples(limit=limit, seed=0):
    if sample.mask is None:
        continue
    inputs = adapter.build_inputs([sample.image], [task.prompt(sample)])
    generation = adapter.generate(inputs, 4)[0]
    if task.score(generation.text, sample) < 1:
        continue
    forward = adapter.teacher_forced(inputs, generation, vision_leaf=True)  # graph from vision_feature_layer
    acts = forward.leaf
    _, scores = answer_scores(forward, inputs, generation)
    (_, (grad,)), *_ = list(token_gradients(scores, [acts], 16))
    g, a = grad[0, 0, 1:].float(), acts[0, 1:].detach().float()  # first answer token, CLS dropped; [patches, channels]
    cam, gxa = (a * g.mean(0)).sum(-1), (a * g).sum(-1)
    maps = {
        "gradcam (relu of pooled-weight CAM)": cam.clamp_min(0),
        "relu(-CAM)": (-cam).clamp_min(0),
        "relu(grad x act), per patch": gxa.clamp_min(0),
        "relu(-grad x act), per patch": (-gxa).clamp_min(0),
        "|A| per patch": a.norm(dim=-1),
        "|G| per patch": g.norm(dim=-1),
        "gradcam-lm": gradcam_lm.explain(adapter, inputs, generation).maps[0].flatten(),
        "random": torch.rand(inputs.layout.num_tokens, generator=rng),
    }
    on_object = object_tokens(inputs.layout, sample.mask)
    for name, m in maps.items():
        mass.setdefault(name, []).append(relevance_mass(m, on_object))
print(f"{len(mass['random'])} correctly answered questions with object masks; share of the map on the objects:")
for name, values in mass.items():
    print(f"  {name:38s} {np.nanmean(values):.3f}")
