"""Why FastRM and rollout keep part of their maps when every LM layer is re-initialised (README, sanity check).

FastRM: the proxy reads final-norm hidden states. Re-initialised layers (std 0.02 weights) add little to the
residual stream, so the image tokens' states stay close to their input embeddings: the vision tower's and
projector's features, which the check does not randomise. FastRM's sample maps are compared between
  original   the model as loaded,
  random     every decoder layer re-initialised (the check's full depth, same seed),
  no LM      the final norm applied to the LM's input embeddings (prompt + answer): no decoder layer at all.
Rollout: a random layer's attention is close to uniform over the causal prefix, so the rollout of the random
model ranks image tokens by position alone; the original's rollout is partly positional too. Its sample maps
(and raw attention's, for comparison) are correlated with the image token's index.
Same questions as the check (VQAv2-style val questions of the embedded world, seeded subsample).
Usage:
    python docs/diagnostics/sanity_failures.py [N_QUESTIONS]   (default 50, the check's subsample)
"""

import sys
from dataclasses import replace

import numpy as np
import torch

from fastrm_bench.builders import create_method, create_task
from fastrm_bench.models.zoo import load_model
from fastrm_bench.sanity import final_hidden, randomised_copy, sample_map_of, spearman

adapter = load_model("tiny-llava-shapes", device="cpu")
limit = int(sys.argv[1]) if len(sys.argv) > 1 else 50
task, _ = create_task("vqav2")
fastrm = create_method("fastrm")[0]
fastrm.prepare(adapter)
positional = {name: create_method(name)[0] for name in ("rollout", "attention")}
randomised = randomised_copy(adapter, len(adapter.family_spec.decoder_layers(adapter.model)), seed=0)
norm = adapter.family_spec.final_norm(adapter.model)
pairs = {"original~random": [], "random~no LM": [], "original~no LM": []}
position = {name: {"original": [], "random": []} for name in positional}
for sample in task.samples(limit=limit, seed=0):
    inputs = adapter.build_inputs([sample.image], [task.prompt(sample)])
    generation = adapter.generate(inputs, 10)[0]
    if not generation.num_generated:
        continue

    def smap(method, model, gen=generation, inputs=inputs):
        return sample_map_of(method.explain(model, inputs, gen).maps, gen, adapter.tokenizer)

    with torch.no_grad():
        answer = adapter.model.get_input_embeddings()(generation.generated_ids[:-1].to(adapter.device))
        no_lm = norm(torch.cat([adapter.lm_input_embeds(inputs)[0], answer]))
    hidden = {"original": final_hidden(adapter, inputs, generation), "random": final_hidden(randomised, inputs, generation),
              "no LM": no_lm}
    maps = {k: smap(fastrm, adapter, replace(generation, last_hidden=h)) for k, h in hidden.items()}
    for key in pairs:
        a, b = key.split("~")
        pairs[key].append(spearman(maps[a], maps[b]))
    index = np.arange(inputs.layout.num_tokens)
    for name, method in positional.items():
        position[name]["original"].append(spearman(smap(method, adapter), index))
        position[name]["random"].append(spearman(smap(method, randomised), index))
print(f"{len(pairs['original~random'])} questions (NaN: a constant map, left out of the means)")
print("FastRM sample maps, mean Spearman")
for key, values in pairs.items():
    print(f"  {key:16s} {np.nanmean(values):+.3f}  ({int(np.isnan(values).sum())} undefined)")
print("mean Spearman of the sample map with the image token's index (its position in the grid, row-major)")
for name, by_model in position.items():
    original, random = np.nanmean(by_model["original"]), np.nanmean(by_model["random"])
    print(f"  {name:9s} original {original:+.3f}   all layers random {random:+.3f}")
