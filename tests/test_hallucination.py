"""chair, hallucination and image-reliance on hand-made captions, maps and log-probabilities, and in a run."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from fastrm_bench.builders import create_metric
from fastrm_bench.interfaces import Explanation, Generation, ModelInputs, Sample
from fastrm_bench.layout import single_grid
from fastrm_bench.metrics.base import RunSettings, SampleContext
from fastrm_bench.metrics.chair import Chair, Mention, object_mentions, scene_objects
from fastrm_bench.metrics.hallucination import HallucinationDetection, normalised_entropy, top_mass
from fastrm_bench.metrics.image_reliance import ImageReliance
from fastrm_bench.metrics.uncertainty import bootstrap_intervals
from fastrm_bench.models.zoo import CHECKPOINTS
from fastrm_bench.runner import RunConfig, run
from fastrm_bench.world.build import WorldSizes, build_world

N = 16  # image tokens of the hand-made maps
SETTINGS = RunSettings(fractions=(0.0, 1.0), removal="zero", seed=0, max_new_tokens=8)
# scene A: a red circle (id 1) and a blue square (id 2); scene B: a green triangle, a yellow circle, a red circle
SCENE_A = {"words": ["a", "red", "circle", ",", "a", "blue", "square"], "token_objects": [None, 1, 1, None, None, 2, 2]}
SCENE_B = {"words": ["a", "green", "triangle", ",", "a", "yellow", "circle", ",", "a", "red", "circle"],
           "token_objects": [None, 3, 3, None, None, 4, 4, None, None, 5, 5]}


def _caption_context(text: str, meta: dict) -> SimpleNamespace:
    return SimpleNamespace(sample=SimpleNamespace(meta=meta), generation=SimpleNamespace(text=text))


# ---------------------------------------------------------------- CHAIR


def test_mentions_pair_each_shape_with_the_colour_before_it():
    words = ["a", "red", "circle", ",", "a", "blue", ",", "squares", "green"]
    assert object_mentions(words) == [Mention((1, 2), "red", "circle"), Mention((5,), "blue", None),
                                      Mention((7,), None, "square"), Mention((8,), "green", None)]
    assert scene_objects(SCENE_B) == [("green", "triangle"), ("yellow", "circle"), ("red", "circle")]
    assert scene_objects({"words": ["a"]}) is None


def test_chair_equals_the_hand_computation_on_four_captions():
    """Rohrbach et al. (EMNLP 2018): CHAIR_i = |hallucinated objects| / |all objects mentioned|,
    CHAIR_s = |captions with a hallucinated object| / |all captions|; an object is hallucinated when its
    class is not among the image's objects (here a class is colour + shape)."""
    captions = [("a red circle, a blue square", SCENE_A),  # 2 mentions, none hallucinated
                ("a red square, a blue square", SCENE_A),  # 2 mentions: no red square in A
                ("a green triangle, a yellow circle, a blue triangle, a red", SCENE_B),  # 4: the blue triangle
                ("circles, a square", SCENE_B)]  # 2: B has circles but no square
    mentions, hallucinated = [2, 2, 4, 2], [0, 1, 1, 1]
    metric = Chair()
    records = [metric.update(_caption_context(text, meta)) for text, meta in captions]
    out = metric.compute(records + [{"score": 1.0}], SETTINGS)  # a sample of another task is left out
    assert out["chair_i"] == pytest.approx(sum(hallucinated) / sum(mentions))
    assert out["chair_s"] == pytest.approx(sum(h > 0 for h in hallucinated) / len(captions))
    assert out["chair_n_mentions"] == sum(mentions) and out["chair_n_hallucinated"] == sum(hallucinated)
    assert [[m["hallucinated"] for m in r["chair_mentions"]] for r in records][2] == [False, False, True, False]
    assert metric.update(_caption_context("a red circle", {})) == {} and metric.compute([{"score": 0.0}], SETTINGS) == {}


def test_a_caption_without_objects_counts_for_chair_s_only():
    metric = Chair()
    records = [metric.update(_caption_context("yes", SCENE_A)), metric.update(_caption_context("a red square", SCENE_A))]
    out = metric.compute(records, SETTINGS)
    assert out["chair_i"] == 1.0 and out["chair_s"] == 0.5
    assert math.isnan(metric.compute(records[:1], SETTINGS)["chair_i"])


# ---------------------------------------------------------------- token-level detection


@pytest.fixture(scope="module")
def word_tokenizer():
    return AutoTokenizer.from_pretrained(CHECKPOINTS / "tiny-llava-shapes")  # the shipped word-level tokenizer


PEAKED = torch.tensor([4.0] + [0.1] * (N - 1))
DIFFUSE = torch.linspace(0.9, 1.1, N)


def _word_context(tokenizer, answer: str, meta: dict, hallucinated_map: torch.Tensor,
                  grounded_map: torch.Tensor, hallucinated_words: set[int]) -> SampleContext:
    """A context whose tokens of the words in ``hallucinated_words`` get one map and every other token the other."""
    ids = tokenizer(answer, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    maps = torch.stack([hallucinated_map if k in hallucinated_words else grounded_map for k in range(len(ids))])
    sample = Sample("s", Image.new("RGB", (8, 8)), "Describe the objects from left to right.", ["-"], meta)
    generation = Generation(torch.tensor([ids]), 0, torch.tensor(ids), answer)
    return SampleContext(sample, ModelInputs({}, 0, []), generation, Explanation(maps), maps.mean(0), 1.0, 0.0,
                         SETTINGS, SimpleNamespace(tokenizer=tokenizer), None)


def _records(tokenizer, hallucinated_map: torch.Tensor, grounded_map: torch.Tensor) -> list[dict]:
    """Two captions; by hand, words 5, 6 ("red square") of the first and 1, 2 ("green circle") of the second are
    hallucinated, words 1, 2 of the first and 5, 6 of the second grounded (one token per word)."""
    metric = HallucinationDetection()
    first = _word_context(tokenizer, "a red circle, a red square", SCENE_A, hallucinated_map, grounded_map, {5, 6})
    second = _word_context(tokenizer, "a green circle, a blue square", SCENE_A, hallucinated_map, grounded_map, {1, 2})
    return [{"score": 1.0, **metric.update(first)}, {"score": 0.0, **metric.update(second)}]


def test_word_labels_and_scores(word_tokenizer):
    records = _records(word_tokenizer, DIFFUSE, PEAKED)
    words = [(e["word"], e["tokens"], e["hallucinated"]) for e in records[0]["hallucination_words"]]
    assert words == [(1, [1], False), (2, [2], False), (5, [5], True), (6, [6], True)]
    entry = records[0]["hallucination_words"][2]
    p = DIFFUSE / DIFFUSE.sum()
    assert entry["entropy"] == pytest.approx(float(-(p * p.log()).sum() / math.log(N)))
    assert entry["peak"] == pytest.approx(float(DIFFUSE.max()))
    assert entry["top_mass"] == pytest.approx(float(DIFFUSE.sort(descending=True).values[:2].sum() / DIFFUSE.sum()))
    json.dumps(records)  # a record is a line of samples.jsonl


def test_diffuse_hallucination_maps_are_detected_perfectly_and_the_reverse_scores_zero(word_tokenizer):
    metric = HallucinationDetection()
    detected = metric.compute(_records(word_tokenizer, DIFFUSE, PEAKED), SETTINGS)
    reversed_ = metric.compute(_records(word_tokenizer, PEAKED, DIFFUSE), SETTINGS)
    assert detected["hallucination_n_grounded"] == 4 and detected["hallucination_n_hallucinated"] == 4
    for score in ("entropy", "peak", "top_mass"):
        assert detected[f"hallucination_auroc_{score}"] == 1.0 and detected[f"hallucination_auprc_{score}"] == 1.0
        assert reversed_[f"hallucination_auroc_{score}"] == 0.0
        assert reversed_[f"hallucination_auprc_{score}"] < 1.0


def test_one_class_gives_nan_and_the_bootstrap_resamples_the_records(word_tokenizer):
    metric = HallucinationDetection()
    records = _records(word_tokenizer, DIFFUSE, PEAKED)
    only_grounded = [{**r, "hallucination_words": [e for e in r["hallucination_words"] if not e["hallucinated"]]}
                     for r in records]
    out = metric.compute(only_grounded, SETTINGS)
    assert math.isnan(out["hallucination_auroc_entropy"]) and math.isnan(out["hallucination_auprc_peak"])
    assert out["hallucination_n_hallucinated"] == 0 and metric.compute([{"score": 1.0}], SETTINGS) == {}
    pool = records * 5 + only_grounded[:1] * 5  # resamples differ in how many hallucinated words they hold
    intervals = bootstrap_intervals(pool, lambda rows: metric.compute(rows, SETTINGS), seed=0, resamples=50)
    assert intervals["hallucination_auroc_entropy"] == (1.0, 1.0)  # every resample with both classes separates them
    assert intervals["hallucination_n_hallucinated"][0] < intervals["hallucination_n_hallucinated"][1]


def test_an_all_zero_map_reads_as_uniform():
    assert normalised_entropy(torch.zeros(N)) == pytest.approx(1.0)
    assert top_mass(torch.zeros(N)) == pytest.approx(2 / N)  # ceil(0.1 * 16) = 2 tokens
    assert normalised_entropy(torch.ones(N)) == pytest.approx(1.0) and top_mass(PEAKED) > top_mass(DIFFUSE)


# ---------------------------------------------------------------- image reliance


class _FakeAdapter:
    """Answer log-probabilities that depend on how much of the image a row keeps; remembers the rows."""

    def __init__(self, with_image: list[float], without: list[float], blind_answer: str = "a b",
                 without_question: list[float] | None = None):
        self.rows: list[torch.Tensor] = []
        self.values = {True: with_image, False: without}
        self.blind_answer, self.without_question = blind_answer, without_question or with_image

    def build_inputs(self, images, prompts: list[str]) -> ModelInputs:
        assert prompts == [""]  # the text control: the question left out
        return ModelInputs({"input_ids": torch.tensor([[1, 2, 3]])}, 3, [single_grid(range(N), (4, 4), (0, 0, 8, 8), (8, 8))])

    def answer_logprobs(self, inputs, generation, image_keep: torch.Tensor, removal: str) -> torch.Tensor:
        if inputs.prompt_length == 3:  # the empty question's prompt: the answer follows it
            assert generation.sequences.tolist() == [[1, 2, 3, 5, 6]]
            return torch.tensor([self.without_question])
        self.rows.append(image_keep.clone())
        return torch.tensor([self.values[bool(row.all())] for row in image_keep])

    def generate(self, inputs, max_new_tokens: int, image_keep: torch.Tensor, removal: str) -> list[Generation]:
        assert (image_keep == 0).all()  # only the whole image removed is answered again
        return [Generation(torch.tensor([[5]]), 0, torch.tensor([5]), self.blind_answer)]


def _reliance_context(adapter: _FakeAdapter) -> SampleContext:
    generation = Generation(torch.tensor([[5, 6]]), 0, torch.tensor([5, 6]), "a b")
    return SampleContext(Sample("s", Image.new("RGB", (8, 8)), "q", ["a"], {}), ModelInputs({}, 0, []), generation,
                         Explanation(torch.rand(2, N)), torch.rand(N), 1.0, 0.0, SETTINGS, adapter, None)


def test_image_reliance_removes_the_whole_image_and_thresholds_the_drop():
    with_image, without = [-0.2, -0.4], [-1.0, -2.0]
    adapter = _FakeAdapter(with_image, without)
    record = ImageReliance().update(_reliance_context(adapter))
    rows = torch.cat(adapter.rows)
    assert rows.shape == (2, N) and (rows[0] == 1).all() and (rows[1] == 0).all()
    assert record["image_reliance"] == pytest.approx(np.mean(with_image) - np.mean(without))
    assert record["image_dependent"] is True
    strict = ImageReliance(threshold=record["image_reliance"] + 0.5).update(_reliance_context(_FakeAdapter(with_image, without)))
    assert strict["image_dependent"] is False
    out = ImageReliance().compute([record, strict, {"score": 1.0}], SETTINGS)
    assert out["image_dependent_share"] == 0.5 and out["image_reliance_n"] == 2
    assert out["image_reliance"] == pytest.approx(record["image_reliance"])


def test_an_answer_that_changes_without_the_image_is_image_dependent_whatever_the_drop():
    """SPEC 4c: dependent when the drop exceeds the threshold OR the answer without the image differs."""
    same = ImageReliance(threshold=10.0).update(_reliance_context(_FakeAdapter([-0.2], [-0.3], blind_answer="a b")))
    changed = ImageReliance(threshold=10.0).update(_reliance_context(_FakeAdapter([-0.2], [-0.3], blind_answer="c")))
    assert same["answer_changed"] is False and same["image_dependent"] is False
    assert changed["answer_changed"] is True and changed["image_dependent"] is True
    assert changed["answer_without_image"] == "c"


def test_the_text_control_leaves_the_question_out_and_keeps_the_image():
    record = ImageReliance().update(_reliance_context(_FakeAdapter([-0.2, -0.4], [-1.0, -2.0], without_question=[-3.0, -1.0])))
    assert record["logprob_without_question"] == pytest.approx(-2.0)
    assert record["text_reliance"] == pytest.approx(-0.3 + 2.0)


def test_a_run_reports_every_metric_on_the_image_dependent_subset_too():
    """summarise's ``image_dependent`` section: the metrics of the dependent samples alone, their number and share."""
    from fastrm_bench.registry import TASKS
    from fastrm_bench.runner import RunConfig, summarise

    task = TASKS.create("vqav2")
    rows = [{"id": str(i), "score": float(i % 2), "prediction": "x", "reference": ["x"], "meta": {"type": "color"},
             "image_reliance": float(i), "image_dependent": i % 2 == 1, "logprob_with_image": 0.0,
             "logprob_without_image": -float(i)} for i in range(8)]
    results = summarise(task, rows, RunConfig(method="random", task="vqav2", metrics=["image-reliance"]))
    section = results["image_dependent"]
    assert (section["n"], section["of"], section["share"]) == (4, 8, 0.5)
    assert section["metrics"]["accuracy"]["value"] == 1.0 and results["metrics"]["accuracy"]["value"] == 0.5
    assert section["metrics"]["image_reliance"]["value"] == pytest.approx(np.mean([1, 3, 5, 7]))
    assert "image_dependent" not in summarise(task, [{k: v for k, v in r.items() if "image" not in k} for r in rows],
                                              RunConfig(method="random", task="vqav2", metrics=[]))


def test_registered_with_directions():
    for name, cls in (("chair", Chair), ("hallucination", HallucinationDetection), ("image-reliance", ImageReliance)):
        metric = create_metric(name)[0]
        assert isinstance(metric, cls) and set(metric.columns.values()) <= set(metric.higher_is_better)
    assert create_metric("chair")[0].direction("chair_i") is False
    assert create_metric("hallucination")[0].direction("hallucination_auroc_entropy") is True
    assert create_metric("image-reliance")[0].needs.perturbation


def test_the_whole_image_removed_on_the_tiny_model_under_every_removal(tiny_adapter):
    inputs = tiny_adapter.build_inputs([Image.new("RGB", (48, 48), "yellow")], ["Describe the objects from left to right."])
    generation = tiny_adapter.generate(inputs, max_new_tokens=3, min_new_tokens=3)[0]
    rows = torch.stack([torch.ones(inputs.layout.num_tokens), torch.zeros(inputs.layout.num_tokens)])
    for removal in tiny_adapter.removals:
        values = tiny_adapter.answer_logprobs(inputs, generation, rows, removal).mean(1)
        assert torch.isfinite(values).all() and values[0] != values[1], removal


def test_a_describe_run_on_the_tiny_random_model(tiny_llava_dir, tmp_path):
    root = build_world(tmp_path / "world", seed=0, sizes=WorldSizes(train=2, val=6, test=2, pope_images=2), captions=True)
    out = tmp_path / "run"
    run(RunConfig(task="describe", method="random", model=str(tiny_llava_dir), limit=2, data_root=str(root),
                  device="cpu", max_new_tokens=6, output_dir=str(out), metrics=["chair", "hallucination", "image-reliance"]),
        log=lambda *_: None)
    records = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 2
    assert all(isinstance(r["chair_mentions"], list) and isinstance(r["hallucination_words"], list) for r in records)
    assert all(math.isfinite(r["image_reliance"]) for r in records)
    metrics = json.loads((out / "results.json").read_text())["metrics"]
    assert {"chair_s", "hallucination_n_grounded", "image_reliance", "image_dependent_share"} <= set(metrics)
    assert metrics["image_reliance"]["ci95"] is not None


# ---------------------------------------------------------------- CHAIR on COCO captions and instances


def _coco_dir(root, captions: dict[int, list[str]], instances: dict[int, list[str]]):
    """A COCO-format describe dataset: images, plain captions (no ``tokens``), instances with square polygons."""
    from fastrm_bench.metrics.coco_vocabulary import synonym_table

    names = sorted(set(synonym_table().values()))
    cats = [{"id": i + 1, "name": n, "supercategory": "x"} for i, n in enumerate(names)]
    cat_id = {c["name"]: c["id"] for c in cats}
    (root / "coco" / "images" / "val2014").mkdir(parents=True)
    (root / "coco" / "annotations").mkdir(parents=True)
    images = [{"id": i, "file_name": f"img{i}.png", "width": 32, "height": 32} for i in captions]
    for image in images:
        Image.new("RGB", (32, 32), "gray").save(root / "coco" / "images" / "val2014" / image["file_name"])
    caps = [{"id": 100 * i + k, "image_id": i, "caption": c} for i, texts in captions.items() for k, c in enumerate(texts)]
    anns = [{"id": 1000 * i + k, "image_id": i, "category_id": cat_id[n], "iscrowd": 0, "area": 64.0, "bbox": [4, 4, 8, 8],
             "segmentation": [[4, 4, 12, 4, 12, 12, 4, 12]]} for i, found in instances.items() for k, n in enumerate(found)]
    (root / "coco" / "annotations" / "captions_val2014.json").write_text(json.dumps({"images": images, "annotations": caps}))
    (root / "coco" / "annotations" / "instances_val2014.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


def test_chair_on_coco_captions_equals_a_hand_count():
    """Rohrbach et al.'s rules: synonyms to categories, plurals, double words, "baby bird" is no person, a toilet's seat
    no chair. Caption 1 names a person (man), a motorcycle (motor bike) and dogs (absent): 1 of 3 hallucinated.
    Caption 2 names a bird and a toilet, both present. CHAIR_i = 1/5, CHAIR_s = 1/2."""
    from fastrm_bench.metrics.chair import chair, coco_labelled_mentions

    first = coco_labelled_mentions("A man riding a motor bike next to two dogs.", ["person", "motorcycle"])
    second = coco_labelled_mentions("A baby bird sits on the seat of a toilet.", ["bird", "toilet"])
    assert [(m["category"], m["hallucinated"]) for m in first] == [("person", False), ("motorcycle", False), ("dog", True)]
    assert [m["words"] for m in first] == [[1], [4, 5], [9]]
    assert [(m["category"], m["hallucinated"]) for m in second] == [("bird", False), ("toilet", False)]
    out = chair([first, second])
    assert out["chair_i"] == pytest.approx(1 / 5) and out["chair_s"] == pytest.approx(1 / 2)
    assert (out["chair_n_mentions"], out["chair_n_hallucinated"], out["chair_n_captions"]) == (5, 1, 2)


def test_plain_coco_captions_give_one_describe_sample_per_image_with_its_categories(tmp_path):
    """The ground truth is the image's instances' categories and the objects its reference captions name."""
    from fastrm_bench.tasks.describe import DescribeTask

    root = _coco_dir(tmp_path, {1: ["A man with a puppy.", "A person and a dog."], 2: ["Two buses."]},
                     {1: ["person"], 2: ["bus", "car"]})
    task = DescribeTask(data_root=root)
    samples = list(task.samples())
    assert [s.id for s in samples] == ["1", "2"]
    assert samples[0].meta["coco_objects"] == ["dog", "person"] and samples[1].meta["coco_objects"] == ["bus", "car"]
    assert samples[0].references == ["A man with a puppy.", "A person and a dog."]
    assert len(samples[1].object_masks) == 2 and samples[1].mask.sum() > 0


def test_a_chair_run_on_user_coco_data(tiny_llava_dir, tmp_path):
    root = _coco_dir(tmp_path / "data", {1: ["A man with a dog."], 2: ["A cat on a couch."]}, {1: ["person", "dog"], 2: ["cat"]})
    out = tmp_path / "run"
    run(RunConfig(task="describe", method="random", model=str(tiny_llava_dir), limit=2, data_root=str(root), device="cpu",
                  max_new_tokens=4, output_dir=str(out), metrics=["chair", "hallucination"]), log=lambda *_: None)
    records = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(isinstance(r["chair_mentions"], list) for r in records)
    metrics = json.loads((out / "results.json").read_text())["metrics"]
    assert metrics["chair_n_captions"]["value"] == 2


def test_a_yes_to_an_existence_question_is_a_word_hallucinated_when_the_object_is_absent():
    from fastrm_bench.metrics.hallucination import existence_mentions

    assert existence_mentions("Is there a red circle in the image?", ["no"], "yes") == [{"words": [0], "hallucinated": True}]
    assert existence_mentions("Is there a red circle?", ["yes"] * 10, "Yes, there is") == [{"words": [0], "hallucinated": False}]
    assert existence_mentions("Is there a red circle?", ["no"], "no") == []  # a "no" names nothing
    assert existence_mentions("What colour is the circle?", ["red"], "red") is None
    assert existence_mentions("Is there a circle left of it?", ["blue"], "yes") is None  # not a yes/no reference
