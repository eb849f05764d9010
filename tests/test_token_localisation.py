"""token-localisation on hand-made answers and maps, word alignment on two tokenizers, and in a run."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from fastrm_bench.builders import create_metric
from fastrm_bench.interfaces import Explanation, Generation, ModelInputs, Sample
from fastrm_bench.layout import single_grid, whole_image
from fastrm_bench.metrics.base import SampleContext
from fastrm_bench.metrics.token_localisation import TokenLocalisation, token_word_indices
from fastrm_bench.models.zoo import CHECKPOINTS
from fastrm_bench.runner import RunConfig, run
from fastrm_bench.world.build import WorldSizes, build_world

SIDE, GRID = 32, 4  # a 4x4 grid of image tokens over a 32x32 image: token r * 4 + c sees pixels [8r, 8r+8) x [8c, 8c+8)
RED_CIRCLE, BLUE_SQUARE, GREEN_TRIANGLE = 11, 12, 13
REFERENCE = "a red circle, a blue square"
WORDS = ["a", "red", "circle", ",", "a", "blue", "square"]
OBJECTS = [None, RED_CIRCLE, RED_CIRCLE, None, None, BLUE_SQUARE, BLUE_SQUARE]


def _cell_mask(*cells: int) -> np.ndarray:
    mask = np.zeros((SIDE, SIDE), dtype=bool)
    for cell in cells:
        r, c = divmod(cell, GRID)
        mask[8 * r + 2 : 8 * r + 6, 8 * c + 2 : 8 * c + 6] = True
    return mask


MASKS = {RED_CIRCLE: _cell_mask(0), BLUE_SQUARE: _cell_mask(15), GREEN_TRIANGLE: _cell_mask(3)}


def _map(**values: float) -> torch.Tensor:
    m = torch.zeros(GRID * GRID)
    for cell, value in values.items():
        m[int(cell[1:])] = value
    return m


@pytest.fixture(scope="module")
def word_tokenizer():
    return AutoTokenizer.from_pretrained(CHECKPOINTS / "tiny-llava-shapes")  # the shipped word-level tokenizer


def _context(tokenizer, answer: str, maps: list[torch.Tensor], meta: dict | None = None,
             masks: dict | None = None) -> SampleContext:
    ids = tokenizer(answer, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    assert len(ids) == len(maps), (len(ids), len(maps))
    layout = single_grid(range(GRID * GRID), (GRID, GRID), whole_image((SIDE, SIDE)), (SIDE, SIDE))
    sample = Sample("s1", Image.new("RGB", (SIDE, SIDE)), "Describe the objects from left to right.", [REFERENCE],
                    {"words": WORDS, "token_objects": OBJECTS} if meta is None else meta,
                    np.logical_or.reduce(list(MASKS.values())), dict(MASKS) if masks is None else masks)
    generation = Generation(torch.tensor([ids]), 0, torch.tensor(ids), answer)
    return SampleContext(sample, ModelInputs({}, 0, [layout]), generation, Explanation(torch.stack(maps)),
                         torch.stack(maps).mean(0), 1.0, 0.0, None, SimpleNamespace(tokenizer=tokenizer), None)


def test_maps_on_their_own_object_point_at_it(word_tokenizer):
    maps = [_map(c5=1.0),                    # "a": names nothing, not scored
            _map(c0=3.0, c15=1.0),           # "red": peak on its own object; 3/4 of its mass there, 1/4 on the others
            _map(c15=2.0, c3=1.0, c0=1.0),   # "circle": peak on the blue square, an other object
            _map(c0=1.0), _map(c0=1.0),      # ",", "a"
            _map(c15=1.0, c3=1.0, c9=2.0),   # "blue": peak on the background, 1/4 on the green triangle
            _map(c15=1.0, c12=0.5),          # "square": peak on its own object
            _map(c0=1.0)]                    # EOS
    fields = TokenLocalisation().update(_context(word_tokenizer, REFERENCE, maps))
    entries = fields["token_localisation"]
    assert [(e["token"], e["word"], e["object_id"]) for e in entries] == [
        (1, "red", RED_CIRCLE), (2, "circle", RED_CIRCLE), (5, "blue", BLUE_SQUARE), (6, "square", BLUE_SQUARE)]
    assert [e["pointing_own"] for e in entries] == [1.0, 0.0, 0.0, 1.0]
    assert [e["pointing_other"] for e in entries] == [0.0, 1.0, 0.0, 0.0]
    assert [e["mass_own"] for e in entries] == pytest.approx([3 / 4, 1 / 4, 1 / 4, 2 / 3])
    assert [e["mass_other"] for e in entries] == pytest.approx([1 / 4, 3 / 4, 1 / 4, 0.0])  # others: 2 objects
    assert all(e["own_patch_share"] == 1 / 16 for e in entries)
    assert fields["token_pointing_own"] == 0.5 and fields["token_pointing_other"] == 0.25
    assert fields["token_mass_own"] == pytest.approx((3 / 4 + 1 / 4 + 1 / 4 + 2 / 3) / 4)


def test_only_correct_content_words_count_each_at_its_own_place(word_tokenizer):
    # "green" is wrong at place 5; "square" at place 6 is right and is scored; "triangle" at place 7 is past the reference
    answer = "a red circle, a green square triangle"
    maps = [_map(c0=1.0)] * 9
    entries = TokenLocalisation().update(_context(word_tokenizer, answer, maps))["token_localisation"]
    assert [(e["token"], e["word"]) for e in entries] == [(1, "red"), (2, "circle"), (6, "square")]
    assert [e["pointing_own"] for e in entries] == [1.0, 1.0, 0.0]
    shifted = "a a red circle, a blue square"  # one word late: nothing is at its place
    fields = TokenLocalisation().update(_context(word_tokenizer, shifted, [_map(c0=1.0)] * 9))
    assert fields["token_localisation"] == [] and fields["token_pointing_own"] is None


def test_flat_maps_point_nowhere_and_zero_maps_have_no_mass(word_tokenizer):
    maps = [torch.zeros(16), torch.zeros(16), torch.ones(16)] + [torch.zeros(16)] * 5
    entries = TokenLocalisation().update(_context(word_tokenizer, REFERENCE, maps))["token_localisation"]
    red, circle = entries[0], entries[1]
    assert red["pointing_own"] is None and red["mass_own"] is None and red["mass_other"] is None
    assert circle["pointing_own"] is None and circle["mass_own"] == pytest.approx(1 / 16)
    assert circle["mass_other"] == pytest.approx(2 / 16)


def test_a_single_object_scene_has_no_other_objects(word_tokenizer):
    meta = {"words": WORDS[:3], "token_objects": OBJECTS[:3]}
    fields = TokenLocalisation().update(_context(word_tokenizer, "a red circle", [_map(c0=1.0)] * 4, meta,
                                                 {RED_CIRCLE: MASKS[RED_CIRCLE]}))
    assert [e["pointing_own"] for e in fields["token_localisation"]] == [1.0, 1.0]
    assert fields["token_pointing_other"] is None and fields["token_mass_other"] is None


def test_samples_without_per_word_truth_get_no_fields_and_bad_truth_is_refused(word_tokenizer):
    maps = [_map(c0=1.0)] * 8
    assert TokenLocalisation().update(_context(word_tokenizer, REFERENCE, maps, meta={"type": "color"})) == {}
    assert TokenLocalisation().update(_context(word_tokenizer, REFERENCE, maps, masks={})) == {}
    with pytest.raises(ValueError, match="7 words but 2 token_objects"):
        TokenLocalisation().update(_context(word_tokenizer, REFERENCE, maps, meta={"words": WORDS, "token_objects": [1, 2]}))
    with pytest.raises(ValueError, match=r"name \[12\], which object_masks lacks"):
        TokenLocalisation().update(_context(word_tokenizer, REFERENCE, maps, masks={RED_CIRCLE: MASKS[RED_CIRCLE]}))


class _PieceTokenizer:
    """A subword tokenizer in miniature: ids index pieces, decoding concatenates them; id 0 is EOS."""

    pieces = ["</s>", "a", " red", " tri", "angle", ",", " a", " blue", " square"]

    def decode(self, ids, skip_special_tokens=False):
        return "".join(self.pieces[i] for i in ids if not (skip_special_tokens and i == 0))


def test_tokens_of_one_word_belong_to_it_and_eos_to_none():
    assert token_word_indices([1, 2, 3, 4, 5, 6, 7, 8, 0], _PieceTokenizer()) == [0, 1, 2, 2, 3, 4, 5, 6, None]


def test_compute_averages_over_tokens_not_samples():
    entry = {"pointing_own": 1.0, "mass_own": 0.5, "pointing_other": 0.0, "mass_other": 0.25, "own_patch_share": 0.1}
    records = [{"score": 1.0, "token_localisation": [entry] * 3},
               {"score": 0.0, "token_localisation": [{**entry, "pointing_own": 0.0, "mass_own": None}]},
               {"score": 1.0}]  # a sample without per-word ground truth
    out = TokenLocalisation().compute(records, None)
    assert out["n_tokens_localised"] == 4 and out["token_pointing_own"] == 0.75
    assert out["token_mass_own"] == 0.5 and out["token_mass_other"] == 0.25
    assert TokenLocalisation().compute([{"score": 1.0}], None) == {}


def test_registered_with_directions():
    metric, _ = create_metric("token-localisation")
    assert isinstance(metric, TokenLocalisation)
    assert metric.direction("token_pointing_own") is True and metric.direction("token_pointing_other") is False
    assert metric.direction("token_own_patch_share") is None


def test_a_run_on_describe_and_on_pope(tiny_llava_dir, tmp_path):
    root = build_world(tmp_path / "world", seed=0, sizes=WorldSizes(train=2, val=6, test=2, pope_images=2), captions=True)
    common = dict(method="random", model=str(tiny_llava_dir), limit=2, data_root=str(root), device="cpu",
                  max_new_tokens=4, metrics=["token-localisation", "localisation"])
    run(RunConfig(task="describe", output_dir=str(tmp_path / "describe"), **common), log=lambda *_: None)
    run(RunConfig(task="pope", output_dir=str(tmp_path / "pope"), **common), log=lambda *_: None)
    describe = [json.loads(x) for x in (tmp_path / "describe/samples.jsonl").read_text().splitlines()]
    pope = [json.loads(x) for x in (tmp_path / "pope/samples.jsonl").read_text().splitlines()]
    assert len(describe) == 2 and all(isinstance(r["token_localisation"], list) and "relevance_mass" in r for r in describe)
    assert all(r["meta"]["token_objects"] for r in describe)
    assert len(pope) == 2 and not any("token_localisation" in r for r in pope)
