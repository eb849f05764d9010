"""eagle equals a port of the authors' search and map, written out here on the same regions and model scores.

Provenance: github.com/RuoyuChen10/EAGLE at commit 03bb45eb29d0dfae39697be8420c94a858239e49,
``interpretation/submodular_vision.py`` (class ``MLLMSubModularExplanationVision``: ``evaluation_maximun_sample``
lines 68-118, ``get_merge_set`` lines 120-132) and ``visualization/visualization.py`` (``add_value``, lines 24-51);
transcribed with token masks for their pixel masks and the harness' token removal for their blacked-out pixels.
Their word-level explanation (tutorials: one word selected) is the same search on that word's probability alone.
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


PICTURES = [("yellow", (30, 30, 200), (26, 6, 44, 24), "Where is the blue square?"),
            ("white", (200, 20, 20), (4, 20, 20, 40), "What color is the shape?"),
            ("black", (20, 200, 40), (10, 10, 38, 30), "Is there a green rectangle?")]


def _answer(adapter, picture: int):
    background, color, box, question = PICTURES[picture]
    image = Image.new("RGB", (48, 48), background)
    image.paste(color, box)
    inputs = replace(adapter.build_inputs([image], [question]), sample_id=f"e{picture}")
    return inputs, adapter.generate(inputs, max_new_tokens=3, min_new_tokens=3)[0]


@pytest.fixture(scope="module", params=range(len(PICTURES)), ids=["blue", "red", "green"])
def answered(request, tiny_adapter):
    """A 3-token answer on each picture."""
    return _answer(tiny_adapter, request.param)


@pytest.fixture(scope="module")
def first(tiny_adapter):
    """The first picture's answer, for the variants (cheaper than every picture)."""
    return _answer(tiny_adapter, 0)


def _port(adapter, inputs, generation, cell: int, token: int | None = None) -> tuple[np.ndarray, list, dict]:
    """The authors' map, S_set and saved scores on the same regions, of every answer token or one (word-level)."""
    regions = region_ids(inputs.layout, cell).numpy()
    v_set = [(regions == r).astype(np.float64) for r in range(regions.max() + 1)]

    def mllm(keep: np.ndarray) -> np.ndarray:  # the answer tokens' probabilities, as their adaptor's softmax gives
        rows = torch.from_numpy(keep).float()
        scores = adapter.answer_logprobs(inputs, generation, rows, "zero").double().exp().numpy()
        return scores if token is None else scores[:, token:token + 1]

    s_set, saved = authors_search(mllm, v_set)
    return authors_add_value(s_set, saved), s_set, saved


@pytest.mark.parametrize("cell", [2, 3])
def test_eagle_equals_the_port_of_the_authors_search(tiny_adapter, answered, cell):
    inputs, generation = answered
    expected = _port(tiny_adapter, inputs, generation, cell)[0]
    maps = create_method("eagle", cell=cell)[0].explain(tiny_adapter, inputs, generation).maps
    assert maps.shape == (3, inputs.layout.num_tokens)
    np.testing.assert_allclose(maps[0].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert all(torch.equal(maps[0], row) for row in maps)  # one map for the whole answer
    assert maps.max() == 1 and maps.min() == 0


def test_per_token_maps_equal_the_authors_word_level_search(tiny_adapter, first):
    inputs, generation = first
    maps = create_method("eagle", cell=2, per_token=True)[0].explain(tiny_adapter, inputs, generation).maps
    for t in range(generation.num_generated):
        expected = _port(tiny_adapter, inputs, generation, 2, token=t)[0]
        np.testing.assert_allclose(maps[t].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_a_step_budget_ranks_the_first_regions_as_the_full_search_and_the_rest_together(tiny_adapter, first):
    inputs, generation = first
    _, s_set, saved = _port(tiny_adapter, inputs, generation, 2)
    full = create_method("eagle", cell=2)[0].explain(tiny_adapter, inputs, generation).maps[0]
    last_but_one = create_method("eagle", cell=2, steps=len(s_set) - 1)[0]
    torch.testing.assert_close(last_but_one.explain(tiny_adapter, inputs, generation).maps[0], full)
    k = 3  # the authors' map of the first k regions chosen, then the rest as one region scored on the whole image
    whole = float(np.mean(np.array(saved["org_score"]) + 1 - np.array(saved["baseline_score"])))
    truncated = {**saved, "smdl_score": saved["smdl_score"][:k] + [whole]}
    expected = authors_add_value(s_set[:k] + [sum(s_set[k:])], truncated)
    budgeted = create_method("eagle", cell=2, steps=k)[0].explain(tiny_adapter, inputs, generation).maps[0]
    np.testing.assert_allclose(budgeted.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert len(budgeted.unique()) <= k + 1 < len(full.unique())


@pytest.mark.parametrize("steps", [0, 3])
def test_the_cost_is_the_documented_number_of_forwards(tiny_adapter, first, monkeypatch, steps):
    inputs, generation = first
    rows = []
    answer_logprobs = tiny_adapter.answer_logprobs

    def counted(inputs, generation, keep, removal):
        rows.append(len(keep))
        return answer_logprobs(inputs, generation, keep, removal)

    monkeypatch.setattr(tiny_adapter, "answer_logprobs", counted)
    create_method("eagle", cell=2, steps=steps)[0].explain(tiny_adapter, inputs, generation)
    regions = int(region_ids(inputs.layout, 2).max()) + 1
    assert sum(rows) == (regions * (regions + 1) if steps == 0 else steps * (2 * regions - steps + 1) + 2)


def test_bad_budgets_are_refused():
    for bad in ({"cell": 0}, {"steps": -1}, {"batch_size": 0}):
        with pytest.raises(ValueError, match="eagle needs"):
            create_method("eagle", **bad)
