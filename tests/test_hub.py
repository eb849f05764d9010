"""Hub conventions: FastRM proxies save, load (folder or Hub id through the local cache) and push as Hub models with a
model card; the leaderboard as a parquet data set. Nothing here reaches the network."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from fastrm_bench.cli import app
from fastrm_bench.fastrm.distill import TrainConfig, train_proxy
from fastrm_bench.fastrm.model import CONFIG_NAME, WEIGHTS_NAME, CheckpointError, FastRM, FastRMConfig, model_card

CHECKPOINTS = Path(__file__).resolve().parent.parent / "fastrm_bench" / "checkpoints"
SHIPPED_PROXIES = sorted(p for p in CHECKPOINTS.glob("fastrm-*") if p.is_dir())
#: SHA-256 of each shipped proxy's weights as distilled: the Hub conventions must not change them
SHIPPED_WEIGHTS = {
    "fastrm-tam-tiny-llava-shapes": "85907a35b569a1d088236d9e74ec52b87844ffc9f0247452cb534532d9fb99ee",
    "fastrm-tiny-llava-shapes": "2ae7813b84736521835b9b0782412617bdde0cc56ab79c937018ba5910abd7d9",
    "fastrm-tiny-qwen-shapes": "978f5fcc97e22a437107338119895fbaf508c949d3a52bf6028183f34ca5458c",
    "fastrm-tiny-qwen-shapes-multi": "b7a4f91ab703d50aaf393c0bc04619cb1104ae88c49f47be241d0655767adfd7",
}
RESULTS = Path(__file__).resolve().parent.parent / "results" / "runs"


def _state_equal(a: FastRM, b: FastRM) -> bool:
    return a.state_dict().keys() == b.state_dict().keys() and all(
        torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def _proxy(hidden: int = 8) -> FastRM:
    torch.manual_seed(0)
    config = FastRMConfig(hidden, distilled_from="tiny-llava-shapes", model_weights_sha256="ab" * 32,
                          teacher={"name": "tam", "implementation": "tam", "params": {"kernel_size": 3}},
                          training_data={"questions": 12, "tasks": ["vqav2"], "splits": ["train"]},
                          metrics={"threshold_scores": {"0.5": {"f1": 0.5, "accuracy": 0.9}}, "train_tokens": 30,
                                   "held_out_tokens": 4})
    return FastRM(config)


def _cache_repo(cache: Path, repo_id: str, folder: Path) -> Path:
    """``folder``'s files as a cached snapshot of Hub repo ``repo_id`` (the layout `snapshot_download` reads offline)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return repo / "snapshots" / commit


# ---------------------------------------------------------------- save / load / push


def test_save_and_load_round_trip_weights_config_and_card(tmp_path):
    proxy = _proxy()
    assert proxy.save_pretrained(tmp_path / "p") == tmp_path / "p"
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["README.md", CONFIG_NAME, WEIGHTS_NAME]
    loaded = FastRM.from_pretrained(tmp_path / "p", expected_hidden_size=8)
    assert _state_equal(proxy, loaded) and asdict(loaded.config) == asdict(proxy.config)
    assert not loaded.training  # loaded for inference
    with pytest.raises(CheckpointError, match="hidden size 8 .* model's hidden size is 16"):
        FastRM.from_pretrained(tmp_path / "p", expected_hidden_size=16)


def test_the_card_written_at_save_is_the_one_its_reloaded_config_generates(tmp_path):
    """The config is saved with sorted keys: a teacher or training data recorded in another order must not make
    the saved card differ from `model_card` of the reloaded config."""
    config = FastRMConfig(8, teacher={"name": "chefer", "implementation": "chefer", "params": {"b": 1, "a": 2}},
                          training_data={"tasks": ["vqav2", "pairs"], "questions": 3, "splits": ["train"]})
    torch.manual_seed(0)
    FastRM(config).save_pretrained(tmp_path)
    reloaded = FastRM.from_pretrained(tmp_path).config
    assert (tmp_path / "README.md").read_text(encoding="utf-8") == str(model_card(reloaded))
    assert "implementation: chefer\n  name: chefer" in str(model_card(reloaded))


def test_a_folder_with_another_models_config_json_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="config.json"):
        _proxy().save_pretrained(tmp_path)
    assert (tmp_path / "config.json").read_text() == "{}" and not (tmp_path / WEIGHTS_NAME).exists()


def test_resaving_rewrites_the_card_with_the_weights(tmp_path):
    _proxy().save_pretrained(tmp_path)
    other = FastRM(FastRMConfig(8, distilled_from="tiny-qwen-shapes"))
    other.save_pretrained(tmp_path)
    assert ModelCard.load(tmp_path / "README.md").data.base_model == "tiny-qwen-shapes"


@pytest.mark.parametrize("folder", SHIPPED_PROXIES, ids=lambda p: p.name)
def test_each_shipped_proxy_loads_unchanged(folder):
    assert hashlib.sha256((folder / WEIGHTS_NAME).read_bytes()).hexdigest() == SHIPPED_WEIGHTS[folder.name]
    proxy = FastRM.from_pretrained(folder)
    stored = load_file(str(folder / WEIGHTS_NAME))
    assert stored.keys() == proxy.state_dict().keys()
    assert all(torch.equal(stored[k], v) for k, v in proxy.state_dict().items())
    recorded = json.loads((folder / CONFIG_NAME).read_text())
    assert {k: v for k, v in asdict(proxy.config).items() if k in recorded} == recorded


def test_a_hub_id_loads_through_the_local_cache_offline(tmp_path):
    proxy = _proxy()
    proxy.save_pretrained(tmp_path / "saved")
    cache = tmp_path / "hub"
    _cache_repo(cache, "someone/fastrm-proxy", tmp_path / "saved")
    loaded = FastRM.from_pretrained("someone/fastrm-proxy", cache_dir=cache, local_files_only=True,
                                    expected_hidden_size=8)
    assert _state_equal(proxy, loaded) and asdict(loaded.config) == asdict(proxy.config)
    with pytest.raises(CheckpointError, match="'someone/elsewhere' is no local folder and could not be fetched"):
        FastRM.from_pretrained("someone/elsewhere", cache_dir=cache, local_files_only=True)


def test_a_hub_repo_of_pickled_weights_is_refused(tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    torch.save(_proxy().state_dict(), pickled / "pytorch_model.bin")
    (pickled / CONFIG_NAME).write_text(json.dumps(asdict(_proxy().config)))
    _cache_repo(tmp_path / "hub", "someone/pickled", pickled)
    with pytest.raises(CheckpointError, match=f"no {WEIGHTS_NAME}"):
        FastRM.from_pretrained("someone/pickled", cache_dir=tmp_path / "hub", local_files_only=True)
    with pytest.raises(CheckpointError, match="pickled weights are refused"):  # the same folder, given as a folder
        FastRM.from_pretrained(pickled)


def test_push_to_hub_uploads_the_saved_folder(tmp_path, monkeypatch):
    """`push_to_hub` against a fake `HfApi`: what would be uploaded is what `save_pretrained` writes."""
    calls: dict[str, object] = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls["created"] = repo_id
            return type("RepoUrl", (), {"repo_id": repo_id})()

        def upload_folder(self, *, repo_id, folder_path, **kwargs):
            shutil.copytree(folder_path, tmp_path / "uploaded")
            calls["uploaded"] = repo_id
            return f"https://huggingface.co/{repo_id}/commit/0"

    monkeypatch.setattr("huggingface_hub.hub_mixin.HfApi", FakeApi)
    proxy = _proxy()
    assert proxy.push_to_hub("someone/fastrm-proxy", token="t") == "https://huggingface.co/someone/fastrm-proxy/commit/0"
    assert calls == {"token": "t", "created": "someone/fastrm-proxy", "uploaded": "someone/fastrm-proxy"}
    uploaded = tmp_path / "uploaded"
    assert sorted(p.name for p in uploaded.iterdir()) == ["README.md", CONFIG_NAME, WEIGHTS_NAME]
    assert _state_equal(proxy, FastRM.from_pretrained(uploaded))
    assert ModelCard.load(uploaded / "README.md").data.library_name == "fastrm-bench"


# ---------------------------------------------------------------- the model card


def _fake_dataset(folder: Path, questions: int = 10, tokens: int = 3, image_tokens: int = 4, hidden: int = 8) -> None:
    """A token dataset as `build_dataset` writes it (one shard and the manifest), without a model."""
    torch.manual_seed(0)
    folder.mkdir(parents=True)
    save_file({"query": torch.randn(questions * tokens, hidden), "keys": torch.randn(questions, image_tokens, hidden),
               "relevancy": torch.rand(questions * tokens, image_tokens),
               "owner": torch.arange(questions).repeat_interleave(tokens),
               "key_length": torch.full((questions,), image_tokens)}, str(folder / "shard_00000.safetensors"))
    teacher = {"name": "chefer", "implementation": "chefer", "params": {}}
    (folder / "dataset.json").write_text(json.dumps({"config": {"task": "gqa", "split": "train"}, "teacher": teacher,
                                                     "model_weights_sha256": "cd" * 32}))


def test_distillation_writes_a_card_with_the_hub_metadata(tmp_path):
    _fake_dataset(tmp_path / "data")
    proxy = train_proxy(tmp_path / "data", tmp_path / "proxy", TrainConfig(steps=4, batch_size=8, eval_every=2),
                        distilled_from="tiny-llava-shapes", log=lambda *_: None)
    card = ModelCard.load(tmp_path / "proxy" / "README.md")
    meta = card.data.to_dict()
    assert meta["library_name"] == "fastrm-bench" and {"fastrm", "explainability"} <= set(meta["tags"])
    assert meta["base_model"] == "tiny-llava-shapes" and meta["explained_model_weights_sha256"] == "cd" * 32
    assert meta["teacher"] == {"name": "chefer", "implementation": "chefer", "params": {}}
    assert meta["training_data"] == {"questions": 10, "tasks": ["gqa"], "splits": ["train"], "token_samples": 30,
                                     "sha256": proxy.config.training_data_sha256}
    f1 = proxy.config.metrics["threshold_scores"]["0.5"]["f1"]
    assert meta["proxy_metrics"]["held_out_f1"] == pytest.approx(f1) and meta["proxy_metrics"]["threshold"] == 0.5
    assert "pp_auc" not in meta["proxy_metrics"]  # distillation measures none
    assert "FastRM.from_pretrained(" in card.text and "run --method my-proxy --model tiny-llava-shapes --task gqa" in card.text
    assert "10 questions of gqa" in card.text


def test_a_recorded_pp_auc_is_in_the_card():
    proxy = _proxy()
    proxy.config.metrics["pp_auc"] = 0.21
    assert ModelCard(str(model_card(proxy.config))).data.proxy_metrics["pp_auc"] == 0.21
    assert "pp_auc" not in ModelCard(str(model_card(_proxy().config))).data.proxy_metrics


@pytest.mark.parametrize("folder", SHIPPED_PROXIES, ids=lambda p: p.name)
def test_each_shipped_card_is_what_its_config_generates(folder):
    """Shipped cards are `model_card` of the recorded config; after changing it: `write_model_card(folder)` each."""
    expected = str(model_card(FastRM.from_pretrained(folder).config))
    assert (folder / "README.md").read_text(encoding="utf-8") == expected
    meta = ModelCard.load(folder / "README.md").data.to_dict()
    assert meta["base_model"] == json.loads((folder / CONFIG_NAME).read_text())["distilled_from"]
    assert meta["proxy_metrics"]["held_out_f1"] > 0.5 and len(meta["training_data"]["sha256"]) == 64


# ---------------------------------------------------------------- the leaderboard as data


def test_leaderboard_parquet_loads_with_pandas_and_datasets(tmp_path):
    from datasets import load_dataset

    from fastrm_bench.leaderboard import leaderboard

    out = tmp_path / "board" / "leaderboard.parquet"
    result = CliRunner().invoke(app, ["leaderboard", str(RESULTS), "--format", "parquet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    expected = leaderboard(RESULTS)
    frame = pd.read_parquet(out)
    assert list(frame.columns) == list(expected.columns) and len(frame) == len(expected) > 10
    pd.testing.assert_frame_equal(frame, expected, check_dtype=False)
    data = load_dataset("parquet", data_files=str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert data.column_names == list(expected.columns)
    pd.testing.assert_frame_equal(data.to_pandas(), expected, check_dtype=False)


def test_leaderboard_parquet_needs_a_file(tmp_path):
    result = CliRunner().invoke(app, ["leaderboard", str(RESULTS), "--format", "parquet"])
    assert result.exit_code == 2 and "--out FILE" in result.output
