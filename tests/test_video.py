"""Video inputs: a clip's frames encoded as Qwen2-VL's video inputs without torchvision, one layout group per time step.

The encoding is checked against the image processor it is built from (a clip of one frame repeated is that image's
patches; each time step holds its own two frames), then the families that take video are checked as images are:
the layout, exact Chefer, and that removing every video token removes the clip.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageDraw

from fastrm_bench.embedded.tiny_random import build_tiny_random
from fastrm_bench.explainers.chefer import Chefer, CheferReference
from fastrm_bench.interfaces import Video
from fastrm_bench.models.adapter import HFVisionLanguageAdapter

VIDEO_FAMILIES = ("qwen2_vl", "qwen2_5_vl")
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


@pytest.fixture(scope="module", params=VIDEO_FAMILIES)
def adapter(request, tmp_path_factory):
    folder = build_tiny_random(request.param, tmp_path_factory.mktemp(f"video-{request.param}"), seed=0)
    return HFVisionLanguageAdapter.from_pretrained(folder, device="cpu")


def test_a_clip_of_one_frame_twice_is_that_image(adapter):
    """The image processor broadcasts one image over the temporal patch: a clip of that frame twice is the same input."""
    frame = clip().frames[1]
    encoded, count = adapter.family_spec.encode_video(adapter.model, adapter.processor, (frame, frame))
    image = adapter.processor.image_processor(images=[frame], return_tensors="pt")
    torch.testing.assert_close(encoded["pixel_values_videos"], image["pixel_values"], rtol=0, atol=0)
    assert encoded["video_grid_thw"].tolist() == image["image_grid_thw"].tolist() == [[1, 4, 6]] and count == 6


def test_each_time_step_holds_its_own_frames_and_an_odd_last_frame_repeats(adapter):
    frames = clip(frames=3).frames
    encoded, count = adapter.family_spec.encode_video(adapter.model, adapter.processor, frames)
    t, h, w = encoded["video_grid_thw"][0].tolist()
    assert (t, h, w) == (2, 4, 6) and count == 2 * 6
    steps = encoded["pixel_values_videos"].view(t, h * w, 3, 2, -1)
    for k, (first, second) in enumerate(((0, 1), (2, 2))):
        for slot, index in ((0, first), (1, second)):
            alone = adapter.processor.image_processor(images=[frames[index]], return_tensors="pt")["pixel_values"]
            torch.testing.assert_close(steps[k, :, :, slot], alone.view(h * w, 3, 2, -1)[:, :, 0], rtol=0, atol=0)


def test_the_layout_has_a_group_per_time_step_side_by_side(adapter):
    inputs = adapter.build_inputs([clip()], [QUESTION])
    layout = inputs.layout
    assert [g.grid for g in layout.groups] == [(2, 3), (2, 3)]  # 4 frames -> 2 steps of 84x56 -> 6x4 patches, merged
    # all four frames side by side (80 px + 8 px gaps); each step drawn over its first frame (frames 0 and 2)
    assert [g.region for g in layout.groups] == [(0.0, 0.0, 48.0, 80.0), (0.0, 176.0, 48.0, 256.0)]
    assert layout.image_size == (48, 4 * 80 + 3 * 8)
    ids = inputs.input_ids[0]
    video_token = int(adapter.model.config.video_token_id)
    assert torch.equal(layout.positions, torch.nonzero(ids == video_token).flatten())


def test_chefer_equals_the_reference_on_a_clip(adapter):
    inputs = adapter.build_inputs([clip()], [QUESTION])
    generation = adapter.generate(inputs, max_new_tokens=3, min_new_tokens=3)[0]
    fast = Chefer(chunk_size=2).explain(adapter, inputs, generation).maps
    reference = CheferReference().explain(adapter, inputs, generation).maps
    assert fast.shape == reference.shape == (3, 12)
    scale = reference.abs().amax(dim=1).clamp_min(1e-12)
    assert torch.all((fast - reference).abs().amax(dim=1) <= 1e-5 * scale)


def test_removing_every_video_token_removes_the_clip(adapter):
    inputs = [adapter.build_inputs([clip(shift)], [QUESTION]) for shift in (0, 9)]
    generation = adapter.generate(inputs[0], 3, min_new_tokens=3)[0]
    n = inputs[0].layout.num_tokens
    keep = torch.stack([torch.ones(n), torch.zeros(n)])
    first, second = (adapter.answer_logprobs(i, generation, keep, "zero") for i in inputs)
    assert not torch.allclose(first[0], second[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(first[1], second[1], rtol=0, atol=1e-5)


def test_families_without_video_and_mixed_batches_refuse_in_one_line(adapter, tmp_path):
    with pytest.raises(ValueError, match="mixes videos and images"):
        adapter.build_inputs([clip(), clip().frames[0]], [QUESTION, QUESTION])
    llava = HFVisionLanguageAdapter.from_pretrained(build_tiny_random("llava", tmp_path / "llava"), device="cpu")
    with pytest.raises(ValueError, match="video inputs are not supported for the llava family") as raised:
        llava.build_inputs([clip()], [QUESTION])
    assert "\n" not in str(raised.value)
    with pytest.raises(ValueError, match="frames must share one size"):
        Video((Image.new("RGB", (8, 8)), Image.new("RGB", (9, 8))))


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
