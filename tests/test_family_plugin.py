"""An external package adds a model family through the `fastrm_bench.families` entry point.

The family's code and entry point are the guide's (docs/extending.md) "Add your own model family" section verbatim,
installed as a real distribution (a .dist-info on sys.path). It describes ViP-LLaVA (``vipllava``),
which no built-in family claims: a tiny random checkpoint is built here offline with ViP-LLaVA's own
transformers classes and a PIL image processor, loaded through the plug-in, and run by
`fastrm-bench run` with two methods. A checkpoint of a model type no family describes is refused in
one line that names the type, lists the supported ones and points to the guide's section.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from fastrm_bench.cli import app
from fastrm_bench.embedded.tiny_random import build_word_tokenizer, force_eager, set_generation_ids
from fastrm_bench.layout import centre_square
from fastrm_bench.maps_io import load_token_maps
from fastrm_bench.models.adapter import HFVisionLanguageAdapter, ModelLoadError
from fastrm_bench.registry import FAMILIES
from tests.gradcam_pooling import assert_pooling_is_the_models_dependencies
from tests.test_plugin import GUIDE, install_guide_package

SECTION = "Add your own model family"
#: ViP-LLaVA's turns (``###Human: <image>\n...###Assistant:``), markers on their own words for the word-level tokenizer
_VIPLLAVA_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}###Human: {% else %}###Assistant: {% endif %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}###Assistant:{% endif %}"
)
#: 32 px crops in 8 px patches: a 4x4 grid of image tokens (each selected layer's CLS dropped)
GRID = (4, 4)


def build_tiny_vipllava(out: Path) -> Path:
    """A random-weight ViP-LLaVA saved to ``out``: a 3-layer CLIP whose projector reads two layers, a Llama LM,
    and the LLaVA processor ViP-LLaVA checkpoints ship (PIL image processor: no torchvision)."""
    from transformers import CLIPImageProcessorPil, LlavaProcessor, VipLlavaConfig, VipLlavaForConditionalGeneration

    tok = build_word_tokenizer(["<image>"], bos="<s>", eos="</s>", pad="<pad>", unk="<unk>", prepend_bos=True,
                               extra_special_tokens={"image_token": "<image>"}, words=("###", "Human", ":"))
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                            do_center_crop=True)
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=8, num_additional_image_tokens=1,
                               vision_feature_select_strategy="default", chat_template=_VIPLLAVA_TEMPLATE)
    text = {"model_type": "llama", "vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 512, "tie_word_embeddings": False}
    vision = {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
              "num_attention_heads": 2, "image_size": 32, "patch_size": 8, "projection_dim": 32}
    config = VipLlavaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
                            vision_feature_layer=[-2, 1])  # as the released (-2, -5, -8, -11, 6): a deep and a shallow layer
    torch.manual_seed(0)
    model = VipLlavaForConditionalGeneration(config).eval()
    force_eager(model.config)
    set_generation_ids(model, tok)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def vipllava_dir(tmp_path_factory) -> Path:
    return build_tiny_vipllava(tmp_path_factory.mktemp("tiny-vipllava"))


@pytest.fixture
def installed_family(tmp_path, monkeypatch) -> Path:
    """The guide's (docs/extending.md) family package and its .dist-info, on sys.path; the folder to put on PYTHONPATH."""
    pkg = install_guide_package(tmp_path / "pkg", "my_families", "family-plugin", "fastrm_bench.families")
    monkeypatch.syspath_prepend(str(pkg))
    # the process-wide registry looks for plugins once: let it look again, and forget the plugin afterwards
    monkeypatch.setattr(FAMILIES, "_entries", dict(FAMILIES._entries))
    monkeypatch.setattr(FAMILIES, "_plugins_loaded", False)
    return pkg


def test_the_family_is_found_by_its_entry_point_and_listed(installed_family):
    assert "vipllava" not in FAMILIES._entries  # not built in: only the plug-in can serve it
    assert FAMILIES.entry("vipllava").source == "plugin:my-families"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed_family), os.environ.get("PYTHONPATH", "")])}
    listed = subprocess.run([sys.executable, "-m", "fastrm_bench.cli", "list", "families"], capture_output=True, text=True,
                            env=env, check=True).stdout
    assert re.search(r"^vipllava\s+VipLlavaForConditionalGeneration: ViP-LLaVA", listed, re.M), listed


def test_two_methods_run_through_the_cli_on_the_family(installed_family, vipllava_dir, world_root, tmp_path):
    """`fastrm-bench run` with chefer and chefer-reference: finished runs, maps over the 4x4 grid, equal maps."""
    maps = {}
    for method in ("chefer", "chefer-reference"):
        out = tmp_path / method
        result = CliRunner().invoke(app, ["run", "--method", method, "--task", "pope", "--model", str(vipllava_dir),
                                          "--limit", "2", "--output-dir", str(out), "--data-root", str(world_root),
                                          "--device", "cpu", "--max-new-tokens", "3"])
        assert result.exit_code == 0, result.output
        assert json.loads((out / "results.json").read_text())["n"] == 2
        for line in (out / "samples.jsonl").read_text().splitlines():
            layout = json.loads(line)["layout"]
            (group,) = layout["groups"]
            assert group["grid"] == list(GRID) and group["region"] == list(centre_square(tuple(layout["image_size"])))
        maps[method] = load_token_maps(out)
    assert list(maps["chefer"]) == list(maps["chefer-reference"]) and len(maps["chefer"]) == 2
    for sample, fast in maps["chefer"].items():
        reference = maps["chefer-reference"][sample]
        assert fast.shape == reference.shape and fast.shape[0] >= 1 and fast.shape[1] == GRID[0] * GRID[1], sample
        scale = np.abs(reference).max(axis=1)
        assert np.all(scale > 0) and np.all(np.abs(fast - reference).max(axis=1) <= 1e-5 * scale), sample


def test_the_family_puts_its_maps_on_the_image_tokens(installed_family, vipllava_dir):
    """The layout is every image token of the input; Grad-CAM's target and pooling (the CLS the guide's (docs/extending.md) family
    drops) match the model's own dependencies: image token k depends on exactly the patches pooled into k."""
    adapter = HFVisionLanguageAdapter.from_pretrained(vipllava_dir, device="cpu")
    assert adapter.family == "vipllava"
    inputs = adapter.build_inputs([Image.new("RGB", (80, 48), (200, 30, 30))], ["What color is the circle?"])
    ids = inputs.input_ids[0]
    assert inputs.layout.positions.tolist() == torch.nonzero(ids == adapter.image_token_id).flatten().tolist()
    assert inputs.layout.num_tokens == GRID[0] * GRID[1]
    assert_pooling_is_the_models_dependencies(adapter, inputs)


def test_an_unsupported_model_type_is_named_with_the_way_to_add_it(world_root, tmp_path):
    """A checkpoint of a type no family describes: its type, the supported ones and the guide's section, no guess."""
    from transformers import Blip2Config

    folder = tmp_path / "blip2"
    Blip2Config().save_pretrained(folder)
    (folder / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ModelLoadError) as raised:
        HFVisionLanguageAdapter.from_pretrained(folder, device="cpu")
    message = str(raised.value)
    assert "'blip-2'" in message and "fastrm-bench list families" in message and f'"{SECTION}"' in message
    assert all(name in message for name in FAMILIES.names()) and "did you mean" not in message.lower()
    assert f"\n## {SECTION}\n" in GUIDE.read_text()  # the pointer leads somewhere
    result = CliRunner().invoke(app, ["run", "--method", "attention", "--task", "pope", "--model", str(folder), "--limit", "1",
                                      "--output-dir", str(tmp_path / "run"), "--data-root", str(world_root), "--device", "cpu"])
    assert result.exit_code != 0 and "'blip-2'" in result.output and SECTION in result.output, result.output
