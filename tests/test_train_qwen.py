"""The Qwen2-VL shapes recipe: per-token labels follow Qwen's geometry, the folder loads and answers, resuming loses nothing."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

import fastrm_bench.embedded.train_qwen as train_qwen
from fastrm_bench.cli import app
from fastrm_bench.embedded.tiny_qwen import TinyQwenSize, build_processor, build_tokenizer
from fastrm_bench.embedded.train_qwen import (
    QWEN_QUESTIONS,
    QwenTrainConfig,
    describe_question,
    encode_batch,
    format_prompt,
    forward_batch,
    image_tokens,
    make_batch,
    token_labels,
    token_layout,
    token_owners,
)
from fastrm_bench.embedded.train_tiny import Asked, AuxHeads, _square_layout
from fastrm_bench.models.zoo import load_model
from fastrm_bench.world.questions import QUESTION_TYPES
from fastrm_bench.world.scenes import (
    COLOR_NAMES,
    SHAPES,
    ImageSizes,
    generate_scene,
    jpeg_roundtrip,
    patch_owners,
    scene_seed,
    scene_size,
)

TINY = QwenTrainConfig(steps=3, vision_steps=2, vision_images=2, images_per_step=2, questions_per_image=3, warmup_steps=1,
                       checkpoint_every=1, eval_every=100, eval_images=6, curriculum=((1, 2),),
                       size=TinyQwenSize(vision_hidden=32, vision_layers=1, vision_heads=2, text_hidden=32, text_layers=3,
                                         heads=2, kv_heads=1, mlp_ratio=2))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("qwen")
    train_qwen.train(TINY, out, log=lambda _: None)
    return out


@pytest.fixture(scope="module")
def adapter(trained):
    return load_model(str(trained / "model"))


def test_on_the_square_llava_grid_token_owners_are_patch_owners():
    """The layout-based owners generalise `patch_owners`: on LLaVA's 8x8 grid of a 64 px scene they agree."""
    for seed in range(40):
        scene = generate_scene(seed)
        assert np.array_equal(token_owners(scene, _square_layout(8, (64, 64))), patch_owners(scene, 8).reshape(-1))


def test_the_folder_loads_as_a_qwen2_vl_with_its_processor_and_answers(trained, adapter):
    assert adapter.family == "qwen2_vl" and type(adapter.model).__name__ == "Qwen2VLForConditionalGeneration"
    assert type(adapter.processor).__name__ == "Qwen2VLProcessor"
    assert json.loads((trained / "model/processor_config.json").read_text())["video_processor"]["patch_size"] == 4
    images = [Image.fromarray(generate_scene(s, size=size).image) for s, size in ((1, (48, 96)), (2, (80, 64)))]
    inputs = adapter.build_inputs(images, ["What color is the circle?", "Describe the objects from left to right."])
    answers = adapter.generate(inputs, max_new_tokens=16)
    assert len(answers) == 2 and all(isinstance(a.text, str) for a in answers)
    prompt = adapter.format_prompt("Is there a red circle?")
    assert prompt.index("Is there a red circle?") < prompt.index("<|image_pad|>")  # question before the image


def test_image_token_grids_follow_each_images_size_and_aspect(adapter):
    sizes = [(48, 96), (96, 48), (64, 64), (48, 48), (96, 96)]
    images = [Image.fromarray(generate_scene(0, size=size).image) for size in sizes]
    layouts = adapter.build_inputs(images, ["How many objects are there?"] * len(images)).layouts
    grids = [layout.groups[0].grid for layout in layouts]
    assert grids[:4] == [(5, 11), (11, 5), (8, 8), (6, 6)]  # 48x96 > 64*64 px: shrunk, aspect kept
    assert grids[4] == (8, 8)  # 96x96 shrinks to 64x64


def test_training_tensors_are_the_adapters_inputs_and_its_forward_the_models_own(adapter):
    """What training optimises is what the adapter asks: same ids, pixels and grids, and the loss the stock forward gives."""
    processor, model = adapter.processor, adapter.model
    scene = generate_scene(7, size=(56, 88))
    rng = np.random.default_rng(0)
    questions = [QUESTION_TYPES["count"](scene, rng), describe_question(scene, rng)]
    images, layouts = image_tokens(processor, [scene])
    batch = encode_batch(processor, [scene], images, layouts,
                         [Asked(0, q, format_prompt(processor, q.question), None) for q in questions])
    for row, q in enumerate(questions):
        inputs = adapter.build_inputs([jpeg_roundtrip(scene.image)], [q.question])
        assert torch.equal(batch.input_ids[row, : int(batch.prompt_length[row])], inputs.tensors["input_ids"][0])
        assert torch.equal(batch.pixel_values, inputs.tensors["pixel_values"])
        assert torch.equal(batch.image_grid_thw, inputs.tensors["image_grid_thw"])
    with torch.no_grad():
        ours = forward_batch(model, AuxHeads(TINY.size.text_hidden, TINY.size.text_hidden), batch).answer
        stock = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels,
                      pixel_values=batch.pixel_values.repeat(2, 1), image_grid_thw=batch.image_grid_thw.repeat(2, 1),
                      mm_token_type_ids=(batch.input_ids == model.config.image_token_id).int()).loss
    assert ours.item() == pytest.approx(stock.item(), rel=1e-5)


def test_token_labels_put_each_object_on_the_tokens_the_adapter_layout_gives(adapter):
    """Labels built in training land where `QwenVLFamily.layouts` (via the adapter) says each object's pixels are."""
    processor = build_processor(TINY.size)
    batch = make_batch(processor, replace(TINY, curriculum=()), "val", 0, 6, augment=False, with_questions=False)
    n_tokens = (batch.image_grid_thw.prod(-1) // 4).tolist()
    colours = torch.split(batch.aux_color, n_tokens)
    shapes = torch.split(batch.aux_shape, n_tokens)
    checked = 0
    for i in range(6):
        seed = scene_seed("val", i, TINY.seed)
        scene = generate_scene(seed, size=scene_size(seed, TINY.image_sizes))
        image = Image.fromarray(scene.image)
        layout = adapter.build_inputs([image], ["How many objects are there?"]).layouts[0]
        ours = token_layout(tuple(batch.image_grid_thw[i].tolist()), scene.image.shape[:2], 2)
        assert layout.groups[0].grid == ours.groups[0].grid and layout.groups[0].region == ours.groups[0].region
        for obj in scene.objects:
            labelled = ((colours[i] == COLOR_NAMES.index(obj.color) + 1) & (shapes[i] == SHAPES.index(obj.shape) + 1)).numpy()
            assert np.all(layout.mask_to_tokens(obj.mask, 0.5) <= labelled)  # mostly-covered tokens are the object's
            assert np.all(labelled <= layout.mask_to_tokens(obj.mask, 0.2))  # and labels need a 20% share
            assert labelled.any()
            checked += 1
    assert checked >= 12


def test_token_centres_are_scaled_per_axis_on_non_square_scenes():
    scene = generate_scene(3, size=(48, 96))
    layout = token_layout((1, 12, 24), (48, 96), 2)
    owners = token_owners(scene, layout)
    _, _, centre = token_labels(scene, owners)
    for i, obj in enumerate(scene.objects):
        x, y = obj.center
        assert np.allclose(centre[owners == i], [2 * x / 96 - 1, 2 * y / 48 - 1])


def test_every_question_and_answer_tokenises_without_unknown_words():
    tok = build_tokenizer()
    rng = np.random.default_rng(0)
    lengths = []
    for seed in range(60):
        scene = generate_scene(seed, size=scene_size(seed, ImageSizes()))
        for make in QWEN_QUESTIONS.values():
            q = make(scene, rng)
            if q is None:
                continue
            ids = tok(q.question + " " + q.answer + " Answer the question using a single word or phrase.")["input_ids"]
            assert tok.unk_token_id not in ids, q
            if q.qtype == "describe":
                lengths.append(len(tok(q.answer, add_special_tokens=False)["input_ids"]))
    assert min(lengths) >= 7 and max(lengths) <= 15


def test_describe_refs_are_the_objects_left_to_right():
    rng = np.random.default_rng(0)
    for seed in range(30):
        scene = generate_scene(seed)
        q = describe_question(scene, rng)
        if q is not None:
            xs = [scene.objects[i].center[0] for i in q.refs]
            assert xs == sorted(xs) and sorted(q.refs) == list(range(len(scene.objects)))


def test_interrupted_training_resumes_to_the_same_weights(trained, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    real, calls = train_qwen.make_batch, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # after 2 vision steps and 1 full step: 3 checkpoints written
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_qwen, "make_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_qwen.train(TINY, tmp_path, log=lambda _: None)
    monkeypatch.setattr(train_qwen, "make_batch", real)
    train_qwen.train(TINY, tmp_path, log=lambda _: None)
    a, b = load_file(str(trained / "model/model.safetensors")), load_file(str(tmp_path / "model/model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5]
    assert all(r["locate"] > 0 and r["role"] > 0 and r["loss"] > 0 for r in log if r["step"] > TINY.vision_steps)


def test_the_qwen_recipe_round_trips_and_the_cli_checks_family_and_fields(tmp_path):
    saved = json.loads(json.dumps({"config": asdict(TINY), "val": {}}))
    assert QwenTrainConfig.from_dict(saved) == TINY
    assert QwenTrainConfig().size.max_pixels == 64 * 64 and "describe" in QwenTrainConfig().type_weights
    bad = tmp_path / "recipe.json"
    bad.write_text(json.dumps({"image_size": 3}))
    result = CliRunner().invoke(app, ["train-vlm", "--out", str(tmp_path / "out"), "--family", "qwen2_vl", "--recipe", str(bad)])
    assert result.exit_code == 2 and "image_size" in result.output
    result = CliRunner().invoke(app, ["train-vlm", "--out", str(tmp_path / "out"), "--family", "gpt"])
    assert result.exit_code == 2 and "qwen2_vl" in result.output
    assert not (tmp_path / "out").exists()
