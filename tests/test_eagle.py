"""eagle equals a port of the authors' search and map, written out here on the same regions and model scores.

Provenance: github.com/RuoyuChen10/EAGLE, ``interpretation/submodular_vision.py`` (class
``MLLMSubModularExplanationVision``: ``evaluation_maximun_sample``, ``get_merge_set``) and
``visualization/visualization.py`` (``add_value``), read 2026-12; transcribed with token masks for their pixel masks
and the harness' token removal for their blacked-out pixels.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from fastrm_bench.builders import create_method
from fastrm_bench.explainers.captum_methods import region_ids


def authors_search(mllm, v_set: list[np.ndarray], lambda1: float = 1.0, lambda2: float = 1.0):
    """submodular_vision.py's greedy loop: S_set in the order chosen and the saved scores."""
    saved = {"insertion_word_score": [], "deletion_word_score": [], "smdl_score": []}
    v_set = list(v_set)
    s_set = []
    refer_baseline = np.zeros_like(v_set[0])
    for _ in range(len(v_set)):
        alpha_batch = np.stack(v_set) + refer_baseline[None]
        insertion_scores = mllm(alpha_batch)
        deletion_scores = mllm(1 - alpha_batch)
        smdl_scores = (lambda1 * insertion_scores + lambda2 * (1 - deletion_scores)).mean(-1)
        arg_max_index = int(smdl_scores.argmax())
        saved["insertion_word_score"].append(insertion_scores[arg_max_index].tolist())
        saved["deletion_word_score"].append(deletion_scores[arg_max_index].tolist())
        saved["smdl_score"].append(float(smdl_scores[arg_max_index]))
        s_set.append(v_set[arg_max_index])
        refer_baseline = refer_baseline + v_set[arg_max_index]
        del v_set[arg_max_index]
    saved["org_score"] = saved["insertion_word_score"][-1]
    saved["baseline_score"] = saved["deletion_word_score"][-1]
    return s_set, saved


def authors_add_value(s_set, saved) -> np.ndarray:
    """visualization.py's add_value: the attribution map from the ordered subset."""
    single_mask = np.zeros_like(s_set[0], dtype=np.float64)
    value_list_1 = np.array(saved["smdl_score"])
    value_list_2 = np.array([np.mean(1 - np.array(saved["org_score"]) + np.array(saved["baseline_score"]))]
                            + saved["smdl_score"][:-1])
    value = 0
    for mask, smdl_value in zip(s_set, value_list_1 - value_list_2):
        value = value - abs(smdl_value)
        single_mask[mask == 1] = value
    attribution_map = single_mask - single_mask.min()
    return attribution_map / attribution_map.max()


@pytest.fixture(scope="module")
def answered(tiny_adapter):
    image = Image.new("RGB", (48, 48), "yellow")
    image.paste((30, 30, 200), (26, 6, 44, 24))
    inputs = replace(tiny_adapter.build_inputs([image], ["Where is the blue square?"]), sample_id="e")
    return inputs, tiny_adapter.generate(inputs, max_new_tokens=2, min_new_tokens=2)[0]


@pytest.mark.parametrize("cell", [2, 3])
def test_eagle_equals_the_port_of_the_authors_search(tiny_adapter, answered, cell):
    inputs, generation = answered
    regions = region_ids(inputs.layout, cell).numpy()
    v_set = [(regions == r).astype(np.float64) for r in range(regions.max() + 1)]

    def mllm(keep: np.ndarray) -> np.ndarray:  # the answer tokens' probabilities, as their adaptor's softmax gives
        rows = torch.from_numpy(keep).float()
        return tiny_adapter.answer_logprobs(inputs, generation, rows, "zero").double().exp().numpy()

    expected = authors_add_value(*authors_search(mllm, v_set))
    maps = create_method("eagle", cell=cell)[0].explain(tiny_adapter, inputs, generation).maps
    assert maps.shape == (2, inputs.layout.num_tokens)
    np.testing.assert_allclose(maps[0].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(maps[0], maps[1])  # one map for the whole answer
    assert maps.max() == 1 and maps.min() == 0
