"""Video inputs: a clip's frames encoded as each family's video inputs without torchvision, one layout group per
time step (Qwen2/2.5/3-VL: a pair of frames; LLaVA-OneVision: one frame).

The encoding is checked against the image processor it is built from (Qwen: a clip of one frame repeated is that
image's patches, each time step holds its own two frames; LLaVA-OneVision: each frame is its base image) and the
processor's own token counts and prompts, then the families that take video are checked as images are: the layout,
exact Chefer, and that removing every video token removes the clip.
"""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
from PIL import Image, ImageDraw

from fastrm_bench.embedded.tiny_random import build_tiny_random
from fastrm_bench.explainers.chefer import Chefer, CheferReference
from fastrm_bench.interfaces import Video
from fastrm_bench.models.adapter import HFVisionLanguageAdapter
from tests.gradcam_pooling import assert_pooling_is_the_models_dependencies

#: the families whose clips are temporal patches of two frames (the rest: one grid per frame)
QWEN_VIDEO = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
VIDEO_FAMILIES = (*QWEN_VIDEO, "llava_onevision", "internvl")
_BUILT: dict[str, HFVisionLanguageAdapter] = {}
QUESTION = "Where is the yellow circle?"


def clip(shift: int = 0, frames: int = 4) -> Video:
    """A yellow circle moving right over grey, 80x48 frames."""
    out = []
    for k in range(frames):
        frame = Image.new("RGB", (80, 48), (90, 90, 90))
        x = 4 + 14 * k + shift
        ImageDraw.Draw(frame).ellipse([x, 10, x + 16, 26], fill=(240, 220, 30))
        out.append(frame)
    return Video(tuple(out))


def _adapter(family: str, tmp_path_factory) -> HFVisionLanguageAdapter:
    """A tiny random model of ``family``, built once for the module's tests."""
    if family not in _BUILT:
        folder = build_tiny_random(family, tmp_path_factory.mktemp(f"video-{family}"), seed=0)
        _BUILT[family] = HFVisionLanguageAdapter.from_pretrained(folder, device="cpu")
    return _BUILT[family]


@pytest.fixture(params=VIDEO_FAMILIES)
def adapter(request, tmp_path_factory):
    return _adapter(request.param, tmp_path_factory)


@pytest.fixture(params=QWEN_VIDEO)
def qwen(request, tmp_path_factory):
    return _adapter(request.param, tmp_path_factory)


def frame_grid(adapter) -> tuple[int, int]:
    """(rows, cols) of patches the image processor gives one 80x48 frame (before 2x2 merging)."""
    _, h, w = adapter.processor.image_processor(images=[clip().frames[0]], return_tensors="pt")["image_grid_thw"][0].tolist()
    return h, w


def test_a_clip_of_one_frame_twice_is_that_image(qwen):
    """The image processor broadcasts one image over the temporal patch: a clip of that frame twice is the same input."""
    adapter, frame = qwen, clip().frames[1]
    encoded, count = adapter.family_spec.encode_video(adapter.model, adapter.processor, (frame, frame))
    image = adapter.processor.image_processor(images=[frame], return_tensors="pt")
    torch.testing.assert_close(encoded["pixel_values_videos"], image["pixel_values"], rtol=0, atol=0)
    h, w = frame_grid(adapter)  # Qwen2-VL's 14 px patches: 4 x 6; Qwen3-VL's 16 px: 6 x 8
    assert encoded["video_grid_thw"].tolist() == image["image_grid_thw"].tolist() == [[1, h, w]] and count == h * w // 4


def test_each_time_step_holds_its_own_frames_and_an_odd_last_frame_repeats(qwen):
    adapter, frames = qwen, clip(frames=3).frames
    encoded, count = adapter.family_spec.encode_video(adapter.model, adapter.processor, frames)
    t, h, w = encoded["video_grid_thw"][0].tolist()
    assert (t, h, w) == (2, *frame_grid(adapter)) and count == 2 * h * w // 4
    steps = encoded["pixel_values_videos"].view(t, h * w, 3, 2, -1)
    for k, (first, second) in enumerate(((0, 1), (2, 2))):
        for slot, index in ((0, first), (1, second)):
            alone = adapter.processor.image_processor(images=[frames[index]], return_tensors="pt")["pixel_values"]
            torch.testing.assert_close(steps[k, :, :, slot], alone.view(h * w, 3, 2, -1)[:, :, 0], rtol=0, atol=0)


def test_a_qwen_clips_token_count_is_what_its_processor_writes(qwen):
    from transformers.video_utils import VideoMetadata

    processor = copy.copy(qwen.processor)  # the tiny processors load image-only: the two numbers the method reads
    processor.video_processor = SimpleNamespace(merge_size=2, temporal_patch_size=2)
    encoded, count = qwen.family_spec.encode_video(qwen.model, processor, clip().frames)
    metadata = VideoMetadata(total_num_frames=4, fps=24.0, frames_indices=[0, 1, 2, 3])
    written = processor.replace_video_token({"video_grid_thw": encoded["video_grid_thw"], "video_metadata": [metadata]}, 0)
    assert count == written.count(processor.video_token) > 0


def test_the_layout_has_a_group_per_time_step_side_by_side(adapter):
    inputs = adapter.build_inputs([clip()], [QUESTION])
    layout = inputs.layout
    family, ids = adapter.family_spec.name, inputs.input_ids[0]
    if family == "internvl":  # the frames are images: 4 tiles of the processor's image_seq_length tokens
        side, firsts = math.isqrt(adapter.processor.image_seq_length), [0, 1, 2, 3]
        assert [g.grid for g in layout.groups] == [(side, side)] * 4
        assert torch.equal(layout.positions, torch.nonzero(ids == adapter.processor.image_token_id).flatten())
    else:
        video_tokens = torch.nonzero(ids == int(adapter.model.config.video_token_id)).flatten()
    if family in QWEN_VIDEO:  # 4 frames -> 2 time steps, each a merged grid of one frame's patches
        h, w = frame_grid(adapter)
        assert [g.grid for g in layout.groups] == [(h // 2, w // 2)] * 2
        firsts = [0, 2]  # each step drawn over its first frame
        assert torch.equal(layout.positions, video_tokens)
    elif family == "llava_onevision":  # each frame's 4x4 patches pooled to 2x2 (the processor's count), then a newline
        side = math.ceil(math.sqrt(adapter.processor.num_image_tokens) / 2)
        assert [g.grid for g in layout.groups] == [(side, side)] * 4 and side == 2
        firsts = [0, 1, 2, 3]
        assert torch.equal(layout.positions, video_tokens[:-1]) and len(video_tokens) == 4 * side * side + 1
    # all four frames side by side (80 px + 8 px gaps)
    assert [g.region for g in layout.groups] == [(0.0, 88.0 * k, 48.0, 88.0 * k + 80) for k in firsts]
    assert layout.image_size == (48, 4 * 80 + 3 * 8)


def test_internvl_takes_each_frame_as_one_tile_and_writes_the_processors_prompt(tmp_path_factory):
    adapter, frames = _adapter("internvl", tmp_path_factory), clip(frames=3).frames
    processor = adapter.processor
    encoded, count = adapter.family_spec.encode_video(adapter.model, processor, frames)
    for k, frame in enumerate(frames):  # the whole frame at the tile size: no crops, no thumbnail
        tile = processor.image_processor(images=[frame], crop_to_patches=False, return_tensors="pt")["pixel_values"]
        torch.testing.assert_close(encoded["pixel_values"][k : k + 1], tile, rtol=0, atol=0)
    assert encoded["pixel_values"].shape == (3, 3, 32, 32) and count == 3 * processor.image_seq_length
    inputs = adapter.build_inputs([Video(frames)], [QUESTION])
    written = processor.replace_video_token({"pixel_values_videos": encoded["pixel_values"][None]}, 0)
    prompt = adapter.format_prompt(QUESTION, video=True)
    assert prompt.count(processor.video_token) == 1 and written.count("Frame") == 3
    expected = processor.tokenizer(prompt.replace(processor.video_token, written), add_special_tokens=False,
                                   return_tensors="pt")["input_ids"]
    assert torch.equal(inputs.input_ids, expected)


def test_llava_onevision_gives_each_frame_its_base_image_and_the_processors_token_count(tmp_path_factory):
    adapter, frames = _adapter("llava_onevision", tmp_path_factory), clip(frames=3).frames
    encoded, count = adapter.family_spec.encode_video(adapter.model, adapter.processor, frames)
    for k, frame in enumerate(frames):  # the image processor's first patch: the whole frame at the tower's size
        base = adapter.processor.image_processor(images=[frame], return_tensors="pt")["pixel_values"][0, 0]
        torch.testing.assert_close(encoded["pixel_values_videos"][0, k], base, rtol=0, atol=0)
    assert encoded["pixel_values_videos"].shape == (1, 3, 3, 32, 32)
    written = adapter.processor.replace_video_token({"pixel_values_videos": encoded["pixel_values_videos"]}, 0)
    assert count == written.count(adapter.processor.video_token) == 3 * 4 + 1


def test_chefer_equals_the_reference_on_a_clip(adapter):
    inputs = adapter.build_inputs([clip()], [QUESTION])
    generation = adapter.generate(inputs, max_new_tokens=3, min_new_tokens=3)[0]
    fast = Chefer(chunk_size=2).explain(adapter, inputs, generation).maps
    reference = CheferReference().explain(adapter, inputs, generation).maps
    assert fast.shape == reference.shape == (3, inputs.layout.num_tokens)
    scale = reference.abs().amax(dim=1).clamp_min(1e-12)
    assert torch.all((fast - reference).abs().amax(dim=1) <= 1e-5 * scale)


def test_vision_side_gradcam_pools_a_clip_as_the_model_does(adapter):
    """Grad-CAM's pooling of a clip's frames into video tokens (Qwen's merge windows over time steps, InternVL's tile
    per frame, OneVision's bilinearly halved grid per frame) is the model's own dependency structure."""
    assert_pooling_is_the_models_dependencies(adapter, adapter.build_inputs([clip()], [QUESTION]))


def test_removing_every_video_token_removes_the_clip(adapter):
    inputs = [adapter.build_inputs([clip(shift)], [QUESTION]) for shift in (0, 9)]
    generation = adapter.generate(inputs[0], 3, min_new_tokens=3)[0]
    n = inputs[0].layout.num_tokens
    keep = torch.stack([torch.ones(n), torch.zeros(n)])
    first, second = (adapter.answer_logprobs(i, generation, keep, "zero") for i in inputs)
    assert not torch.allclose(first[0], second[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(first[1], second[1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("frames,fps", [(4, None), (3, 2.0)])
def test_qwen3_vl_gives_each_time_step_its_time_as_its_processor_writes_it(frames, fps, tmp_path):
    """transformers' Qwen3VLProcessor.replace_video_token (given the grid and the frames' metadata) is the reference:
    each step's ``<t seconds>``, then its tokens between vision start and end, in place of the template's wrapper."""
    from transformers.video_utils import VideoMetadata

    qwen3 = HFVisionLanguageAdapter.from_pretrained(build_tiny_random("qwen3_vl", tmp_path / "q3", seed=0), device="cpu")
    processor, video = qwen3.processor, Video(clip(frames=frames).frames, fps=fps)
    inputs = qwen3.build_inputs([video], [QUESTION])
    encoded, _ = qwen3.family_spec.encode_video(qwen3.model, processor, video.frames)
    processor.video_processor = SimpleNamespace(merge_size=2, temporal_patch_size=2)  # what the method reads of it
    metadata = VideoMetadata(total_num_frames=frames, fps=fps, frames_indices=list(range(frames)))
    expected = processor.replace_video_token({"video_grid_thw": encoded["video_grid_thw"], "video_metadata": [metadata]}, 0)
    wrapper = processor.vision_start_token + processor.video_token + processor.vision_end_token
    prompt = qwen3.format_prompt(QUESTION, video=True)
    assert prompt.count(wrapper) == 1
    written = processor.tokenizer(prompt.replace(wrapper, expected), add_special_tokens=False, return_tensors="pt")
    assert torch.equal(inputs.input_ids, written["input_ids"])
    assert expected.count(processor.vision_start_token) == 2  # two time steps, no wrapper around them all
    assert expected.startswith("<0.0 seconds>" if fps is None else "<0.2 seconds>")  # frames 0-1: 0.5 / fps
    assert "<1.0 seconds>" in expected if fps == 2.0 else "<0.1 seconds>" in expected  # 3 frames: the last one twice


def test_families_without_video_and_mixed_batches_refuse_in_one_line(adapter, tmp_path):
    with pytest.raises(ValueError, match="mixes videos and images"):
        adapter.build_inputs([clip(), clip().frames[0]], [QUESTION, QUESTION])
    llava = HFVisionLanguageAdapter.from_pretrained(build_tiny_random("llava", tmp_path / "llava"), device="cpu")
    with pytest.raises(ValueError, match="video inputs are not supported for the llava family") as raised:
        llava.build_inputs([clip()], [QUESTION])
    assert "\n" not in str(raised.value)
    with pytest.raises(ValueError, match="frames must share one size"):
        Video((Image.new("RGB", (8, 8)), Image.new("RGB", (9, 8))))
    with pytest.raises(ValueError, match="fps must be positive"):
        Video(clip().frames, fps=0)


# ---------------------------------------------------------------------------------------------- the clips task
def test_a_clip_moves_one_object_and_keeps_the_rest():
    import numpy as np

    from fastrm_bench.world.clips import generate_clip

    clip = generate_clip(12, frames=4)
    assert generate_clip(12, frames=4).direction == clip.direction and len(clip.frames) == len(clip.masks) == 4
    xs = [float(np.nonzero(mask)[1].mean()) for mask in clip.masks]
    assert (np.diff(xs) > 0).all() if clip.direction == "right" else (np.diff(xs) < 0).all()
    moved = np.logical_or.reduce(clip.masks)
    for frame in clip.frames[1:]:  # everything but the mover is the same in every frame
        assert np.array_equal(frame[~moved], clip.frames[0][~moved])


def test_clips_samples_are_videos_on_a_canvas_of_their_frames():
    from fastrm_bench.builders import create_task
    from fastrm_bench.layout import side_by_side_image

    task = create_task("clips")[0]
    samples = list(task.samples(limit=12))
    assert {s.references[0] for s in samples} == {"left", "right"}
    sample = samples[0]
    frames = sample.video.frames
    assert sample.model_images is sample.video and len(frames) == 4
    assert sample.image.size == side_by_side_image(frames).size
    width = frames[0].width
    for k in range(4):  # the mover's mask lies on every frame of the canvas
        assert sample.mask[:, k * (width + 8) : k * (width + 8) + width].any()
    assert sample.question.endswith("moving left or right?")
    assert task.score(f"it goes {sample.references[0]}", sample) == 1.0 and task.score("up", sample) == 0.0


def test_clips_and_pairs_run_end_to_end_on_the_second_shipped_model(tmp_path):
    """`run --model tiny-qwen-shapes` on a video task and a two-image task, with chefer and the shipped FastRM."""
    import json

    from typer.testing import CliRunner

    from fastrm_bench.cli import app

    for task in ("clips", "pairs"):
        for method in ("chefer", "fastrm"):
            out = tmp_path / task / method
            result = CliRunner().invoke(app, ["run", "--model", "tiny-qwen-shapes", "--method", method, "--task", task,
                                              "--limit", "2", "--output-dir", str(out), "--device", "cpu"])
            assert result.exit_code == 0, result.output
            records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines() if line.strip()]
            assert len(records) == 2 and all(len(r["layout"]["groups"]) == 2 for r in records), (task, method)


def test_explain_a_clip_draws_each_time_step_over_its_frames(tmp_path):
    """`fastrm-bench explain --frame ... --frame ...`: the model fine-tuned on clips answers the clips task's question
    about a clip given as files, and each time step's map lies over its first frame on the frames' canvas."""
    import json

    from typer.testing import CliRunner

    from fastrm_bench.builders import create_task
    from fastrm_bench.cli import app

    sample = next(iter(create_task("clips")[0].samples(limit=1)))
    paths = []
    for k, frame in enumerate(sample.video.frames):
        paths += ["--frame", str(tmp_path / f"frame{k}.png")]
        frame.save(tmp_path / f"frame{k}.png")
    result = CliRunner().invoke(app, ["explain", *paths, "--question", sample.question, "--model", "tiny-qwen-shapes-multi",
                                      "--method", "chefer", "--out", str(tmp_path / "out"), "--device", "cpu",
                                      "--no-warmup", "--max-new-tokens", "3"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "out" / "explanation.json").read_text())
    assert data["answer"].strip().lower() == sample.references[0]  # it saw the clip: held out it answers every one
    width = sample.video.frames[0].width
    assert data["layout"]["image_size"] == [sample.image.height, sample.image.width]
    assert [g["region"][1] for g in data["layout"]["groups"]] == [0.0, 2 * (width + 8)]  # frames 1 and 3
    assert (tmp_path / "out" / "explanation.png").is_file() and "4 frames side by side" in data["image_fit"]
    odd = CliRunner().invoke(app, ["explain", "--frame", str(tmp_path / "frame0.png"), "--frame",
                                   str(tmp_path / "out" / "explanation.png"), "--question", "q", "--out", str(tmp_path / "x")])
    assert odd.exit_code == 2 and "frames must share one size" in odd.output
