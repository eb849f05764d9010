"""FastRM: the proxy, its checkpoints, distillation from scratch, and the `fastrm` method."""

from __future__ import annotations

import json

import pytest
import torch

from fastrm_bench.explainers.fastrm_method import SHIPPED, FastRMMethod
from fastrm_bench.fastrm.distill import (
    DatasetConfig,
    TrainConfig,
    build_dataset,
    load_dataset,
    predict,
    split_tokens,
    train_proxy,
)
from fastrm_bench.fastrm.model import CheckpointError, FastRM, FastRMConfig
from fastrm_bench.metrics.threshold import binarise, threshold_scores
from fastrm_bench.models.zoo import load_model
from fastrm_bench.weights import weights_hash


def test_proxy_is_the_spec_formula():
    torch.manual_seed(0)
    proxy = FastRM(16)
    h_query, h_image = torch.randn(16), torch.randn(9, 16)
    q = proxy.query(proxy.norm(h_query))
    k = proxy.key(proxy.norm(h_image))
    torch.testing.assert_close(proxy(h_query, h_image), torch.sigmoid(k @ q / 4.0))


def test_checkpoint_round_trip_and_refusals(tmp_path):
    proxy = FastRM(16)
    proxy.save_pretrained(tmp_path / "ok")
    loaded = FastRM.from_pretrained(tmp_path / "ok", expected_hidden_size=16)
    assert all(torch.equal(a, b) for a, b in zip(proxy.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(CheckpointError, match="hidden size 16 .* model's hidden size is 4096"):
        FastRM.from_pretrained(tmp_path / "ok", expected_hidden_size=4096)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    torch.save(proxy.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickled weights are refused"):
        FastRM.from_pretrained(pickled)


def test_labels_follow_the_labeling_threshold():
    relevancy = torch.tensor([[0.0, 0.2, 0.29, 0.3, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    assert binarise(relevancy, 0.3).tolist() == [[False, False, False, True, True], [False] * 5]


def test_distillation_from_scratch_beats_an_untrained_proxy(world_root, tmp_path):
    data_dir = tmp_path / "data"
    build_dataset(DatasetConfig(model="tiny-llava-shapes", split="val", data_root=str(world_root), max_new_tokens=5,
                                shard_size=100), data_dir, log=lambda *_: None)
    data = load_dataset(data_dir)
    assert data["query"].shape[0] >= 300  # token samples
    recipe = TrainConfig(steps=200, lr=1e-3, eval_every=100)
    trained = train_proxy(data_dir, tmp_path / "proxy", recipe, distilled_from="tiny-llava-shapes", log=lambda *_: None)
    reloaded = FastRM.from_pretrained(tmp_path / "proxy", expected_hidden_size=data["query"].shape[1])
    assert reloaded.config.distilled_from == "tiny-llava-shapes" and len(reloaded.config.training_data_sha256) == 64
    assert reloaded.config.model_weights_sha256 == json.loads((data_dir / "dataset.json").read_text())["model_weights_sha256"]
    _, val = split_tokens(data, recipe)
    labels = binarise(data["relevancy"], 0.3)[val]
    torch.manual_seed(1)
    untrained = FastRM(data["query"].shape[1])
    f1 = threshold_scores(predict(trained, data, val), labels, (0.5,))[0.5]["f1"]
    f1_untrained = threshold_scores(predict(untrained, data, val), labels, (0.5,))[0.5]["f1"]
    assert f1 > f1_untrained + 0.05, (f1, f1_untrained)


def test_dataset_workers_write_the_same_shards_and_resume(world_root, tmp_path):
    """Shards are independent: two processes write what one does, and a lost shard is rebuilt."""
    from safetensors.torch import load_file

    cfg = DatasetConfig(model="tiny-llava-shapes", split="val", data_root=str(world_root), questions=24, max_new_tokens=3,
                        shard_size=8)
    serial = build_dataset(cfg, tmp_path / "serial", log=lambda *_: None)
    parallel = build_dataset(cfg, tmp_path / "parallel", log=lambda *_: None, workers=2)
    assert [p.name for p in serial] == [p.name for p in parallel] == [f"shard_{i:05d}.safetensors" for i in range(3)]
    for a, b in zip(serial, parallel):
        x, y = load_file(str(a)), load_file(str(b))
        assert x.keys() == y.keys()
        for key in x:
            torch.testing.assert_close(x[key], y[key], rtol=1e-4, atol=1e-5)
    parallel[1].unlink()
    kept = parallel[0].stat().st_mtime_ns
    build_dataset(cfg, tmp_path / "parallel", log=lambda *_: None, workers=2)
    assert parallel[1].exists() and parallel[0].stat().st_mtime_ns == kept


def test_a_dataset_of_other_weights_is_not_resumed(world_root, tmp_path):
    """Retraining a model keeps its name: shards labelled by the old weights must not be reused."""
    cfg = DatasetConfig(model="tiny-llava-shapes", split="val", data_root=str(world_root), questions=4, max_new_tokens=2,
                        shard_size=2)
    build_dataset(cfg, tmp_path / "data", log=lambda *_: None)
    manifest = tmp_path / "data" / "dataset.json"
    recorded = json.loads(manifest.read_text())
    assert len(recorded["model_weights_sha256"]) == 64
    build_dataset(cfg, tmp_path / "data", log=lambda *_: None)  # same weights: resumes
    for other in ({**recorded, "model_weights_sha256": "0" * 64}, {"config": recorded["config"]}):
        manifest.write_text(json.dumps(other))
        with pytest.raises(ValueError, match="other weights"):
            build_dataset(cfg, tmp_path / "data", log=lambda *_: None)


def test_fastrm_refuses_a_proxy_distilled_from_other_weights(tmp_path):
    """A retrained model keeps its name and hidden size; only the recorded weights tell its old proxy apart."""
    adapter = load_model("tiny-llava-shapes")
    hidden = adapter.hidden_size
    for recorded, refused in (("0" * 64, True), (weights_hash(adapter.model), False), ("", False)):
        FastRM(FastRMConfig(hidden, distilled_from="tiny-llava-shapes", model_weights_sha256=recorded)).save_pretrained(
            tmp_path / recorded
        )
        method = FastRMMethod(checkpoint=str(tmp_path / recorded))
        if refused:
            with pytest.raises(CheckpointError, match="distilled from other weights.*re-distil"):
                method.proxy_for(adapter)
        else:
            assert method.proxy_for(adapter).config.model_weights_sha256 == recorded


@pytest.mark.parametrize("model", sorted(SHIPPED))
def test_the_shipped_proxy_was_distilled_from_the_shipped_model(model):
    proxy = FastRM.from_pretrained(SHIPPED[model])
    assert proxy.config.distilled_from == model
    assert proxy.config.model_weights_sha256 == weights_hash(load_model(model).model)
