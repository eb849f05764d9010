"""occlusion and kernel-shap are Captum's own attributions on the harness' regions, removal and answer log-probabilities."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from captum.attr import FeatureAblation, KernelShap
from PIL import Image

from fastrm_bench.builders import create_method
from fastrm_bench.explainers.captum_methods import region_ids
from fastrm_bench.layout import ImageLayout, LayoutGroup
from fastrm_bench.seeding import sample_seed


@pytest.fixture(scope="module")
def answered(tiny_adapter):
    image = Image.new("RGB", (48, 48), "yellow")
    inputs = replace(tiny_adapter.build_inputs([image], ["Where is the yellow square?"]), sample_id="q7")
    return inputs, tiny_adapter.generate(inputs, max_new_tokens=3, min_new_tokens=3)[0]


def _hand_regions(n_rows: int, n_cols: int, cell: int) -> torch.Tensor:
    """Region ids written out: token (r, c) of a row-major grid is in block (r // cell, c // cell)."""
    blocks_per_row = (n_cols + cell - 1) // cell
    return torch.tensor([[(r // cell) * blocks_per_row + c // cell for r in range(n_rows) for c in range(n_cols)]])


def test_regions_cut_each_group_into_cells_numbered_group_after_group():
    layout = ImageLayout((LayoutGroup(tuple(range(6)), (2, 3), (0, 0, 2, 3)), LayoutGroup((9,), (1, 1), (0, 0, 2, 3))), (2, 3))
    assert region_ids(layout, 2).tolist() == [0, 0, 1, 0, 0, 1, 2]
    assert region_ids(layout, 1).tolist() == list(range(7))
    with pytest.raises(ValueError, match="cell"):
        region_ids(layout, 0)


def test_occlusion_equals_captum_feature_ablation_called_directly(tiny_adapter, answered):
    inputs, generation = answered
    (group,) = inputs.layout.groups
    mask = _hand_regions(*group.grid, cell=2)
    n = inputs.layout.num_tokens

    def logprobs(keep):
        return tiny_adapter.answer_logprobs(inputs, generation, keep, "zero")

    direct = FeatureAblation(logprobs).attribute(torch.ones(1, n), baselines=torch.zeros(1, n), feature_mask=mask)
    maps = create_method("occlusion")[0].explain(tiny_adapter, inputs, generation).maps
    assert maps.shape == (3, n)
    torch.testing.assert_close(maps, direct.reshape(3, n), rtol=1e-5, atol=1e-5)
    # what it means: region 0 removed alone, the drop of each token's log-probability
    keep = (mask != 0).float()
    by_hand = logprobs(torch.ones(1, n))[0] - logprobs(keep)[0]
    torch.testing.assert_close(maps[:, 0], by_hand, rtol=1e-5, atol=1e-5)


def test_kernel_shap_equals_captum_kernel_shap_called_directly(tiny_adapter, answered):
    inputs, generation = answered
    (group,) = inputs.layout.groups
    mask = _hand_regions(*group.grid, cell=3)
    n = inputs.layout.num_tokens
    method = create_method("kernel-shap", n_samples=24, cell=3)[0]
    maps = method.explain(tiny_adapter, inputs, generation).maps
    rows = []
    for t in range(3):
        torch.manual_seed(sample_seed(0, "q7", 0))
        rows.append(KernelShap(lambda keep, t=t: tiny_adapter.answer_logprobs(inputs, generation, keep, "zero")[:, t])
                    .attribute(torch.ones(1, n), baselines=torch.zeros(1, n), feature_mask=mask, n_samples=24))
    torch.testing.assert_close(maps, torch.cat(rows), rtol=1e-4, atol=1e-4)
    assert (maps[:, mask[0] == 0] == maps[:, :1]).all()  # one value per region


def test_kernel_shap_leaves_the_callers_random_state_alone(tiny_adapter, answered):
    inputs, generation = answered
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    create_method("kernel-shap", n_samples=8, cell=3)[0].explain(tiny_adapter, inputs, generation)
    assert torch.equal(torch.rand(3), expected)


def test_kernel_shap_of_one_region_is_the_exact_shapley_value(tiny_adapter, answered):
    """Below 3 regions KernelSHAP has nothing to sample: the exact Shapley values; one region's is the whole drop."""
    inputs, generation = answered
    n = inputs.layout.num_tokens
    assert int(region_ids(inputs.layout, 6).max()) + 1 == 1
    maps = create_method("kernel-shap", cell=6)[0].explain(tiny_adapter, inputs, generation).maps  # one region
    whole = tiny_adapter.answer_logprobs(inputs, generation, torch.stack([torch.ones(n), torch.zeros(n)]), "zero")
    torch.testing.assert_close(maps, (whole[0] - whole[1])[:, None].expand(-1, n), rtol=1e-5, atol=1e-5)
