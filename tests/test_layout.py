"""`ImageLayout` on hand-computed cases: mask -> tokens (coverage), map -> image space, serialisation."""

from __future__ import annotations

import numpy as np
import pytest

from fastrm_bench.layout import ImageLayout, LayoutGroup, centre_square, single_grid, whole_image


def test_mask_coverage_rules_on_a_non_square_image():
    # 2 x 4 tokens over a 20 x 40 image: 10 x 10 px cells
    layout = single_grid(range(8), (2, 4), whole_image((20, 40)), (20, 40))
    mask = np.zeros((20, 40), dtype=bool)
    mask[0:10, 0:16] = True  # cell (0,0) fully, cell (0,1) 6/10
    mask[19, 39] = True  # one pixel of cell (1,3)
    assert np.flatnonzero(layout.mask_to_tokens(mask)).tolist() == [0, 1]  # >= half covered
    assert np.flatnonzero(layout.mask_to_tokens(mask, min_coverage=0.7)).tolist() == [0]
    assert np.flatnonzero(layout.mask_to_tokens(mask, min_coverage=0)).tolist() == [0, 1, 7]  # any pixel
    with pytest.raises(ValueError, match="mask of shape"):
        layout.mask_to_tokens(np.zeros((40, 20), dtype=bool))


def test_centre_crop_leaves_the_sides_unseen():
    layout = single_grid(range(4), (2, 2), centre_square((10, 30)), (10, 30))
    assert centre_square((10, 30)) == (0.0, 10.0, 10.0, 20.0)
    heat = layout.to_image(np.array([1.0, 2.0, 3.0, 4.0]))
    assert np.isnan(heat[:, :10]).all() and np.isnan(heat[:, 20:]).all()
    assert heat[0, 10] == 1 and heat[0, 19] == 2 and heat[9, 10] == 3 and heat[9, 19] == 4
    mask = np.zeros((10, 30), dtype=bool)
    mask[:, :10] = True  # an object the crop cuts away lands on no token
    assert not layout.mask_to_tokens(mask, min_coverage=0).any()


def test_overlapping_groups_are_averaged_and_split_in_order():
    base = LayoutGroup((5, 6), (1, 2), (0, 0, 4, 8))  # two tokens, left and right halves
    tiles = LayoutGroup((9, 10, 11, 12), (2, 2), (0, 0, 4, 8))
    layout = ImageLayout((base, tiles), (4, 8))
    assert layout.positions.tolist() == [5, 6, 9, 10, 11, 12] and layout.num_tokens == 6
    values = np.array([0.0, 10.0, 2.0, 4.0, 6.0, 8.0])
    first, second = layout.split(values)
    assert first.tolist() == [[0.0, 10.0]] and second.tolist() == [[2.0, 4.0], [6.0, 8.0]]
    heat = layout.to_image(values)
    assert heat[0, 0] == 1.0 and heat[0, 7] == 7.0 and heat[3, 0] == 3.0 and heat[3, 7] == 9.0
    assert layout.to_image(values, size=(2, 4))[1, 3] == 9.0  # drawn at another resolution
    assert layout.shifted(3).positions.tolist() == [8, 9, 12, 13, 14, 15]
    with pytest.raises(ValueError, match="does not fit a layout of 6"):
        layout.split(np.zeros(5))


def test_round_trip_through_a_run_record():
    layout = ImageLayout((LayoutGroup((3, 4, 5, 6), (2, 2), (0, 0, 4, 6)), LayoutGroup((8, 9), (1, 2), (0, 0, 4, 6))), (4, 6))
    again = ImageLayout.from_dict(layout.to_dict())
    values = np.arange(6.0)
    np.testing.assert_array_equal(again.to_image(values), layout.to_image(values))
    assert [g.grid for g in again.groups] == [(2, 2), (1, 2)]


def test_a_group_must_match_its_grid():
    with pytest.raises(ValueError, match="needs 4 positions"):
        LayoutGroup((1, 2, 3), (2, 2), (0, 0, 1, 1))
