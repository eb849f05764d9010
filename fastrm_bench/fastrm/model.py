"""The FastRM proxy (SPEC section 3): LayerNorm, one attention head with one query, sigmoid.

``q = W_q LN(h[p_t])``, ``k_j = W_k LN(h[j])`` for the image positions j, ``s_j = q.k_j / sqrt(d)``,
``prob_j = sigmoid(s_j)``. Its input is what the LM computes anyway (the final-norm hidden states
that feed ``lm_head``), so a map costs two small matrix products: no gradients, no attentions.

A proxy is a Hugging Face Hub model (``ModelHubMixin``): ``save_pretrained(folder)`` writes ``model.safetensors``,
``fastrm_config.json`` and a model card (README.md, `model_card`); ``from_pretrained`` takes that folder or a Hub id
(read through the local Hugging Face cache); ``push_to_hub`` uploads the same three files.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard, ModelCardData, ModelHubMixin, snapshot_download
from huggingface_hub.utils import HFValidationError, validate_repo_id
from safetensors.torch import load_file, save_file

from fastrm_bench.checkpoint_files import InvalidWeightsFile, read_safetensors_shapes

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "fastrm_config.json"
CARD_NAME = "README.md"
LIBRARY_NAME = "fastrm-bench"
#: the Hub tags of every proxy's card (the mixin adds ``model_hub_mixin``)
CARD_TAGS = ["fastrm", "explainability", "relevancy-maps", "vision-language"]
#: the teacher of a proxy whose config names none: distillation used Chefer's maps before teachers could be chosen
LEGACY_TEACHER = {"name": "chefer", "implementation": "chefer", "params": {"chunk_size": 16}}


class CheckpointError(ValueError):
    """A FastRM checkpoint that cannot be used (missing files, pickles, wrong hidden size)."""


@dataclass
class FastRMConfig:
    hidden_size: int
    labeling_threshold: float = 0.3
    distilled_from: str = ""
    recipe: dict[str, Any] = field(default_factory=dict)
    training_data_sha256: str = ""
    #: weights_hash of the LVLM whose hidden states and Chefer labels it learned from ("" = unrecorded):
    #: a proxy read from other weights of a same-named model is meaningless, so `fastrm` refuses it
    model_weights_sha256: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    #: the method whose per-token maps were binarised into the labels: {"name", "implementation", "params" (its
    #: spec's), "model_weights_sha256" (the LVLM it explained)}; empty in checkpoints from before teachers were chosen
    teacher: dict[str, Any] = field(default_factory=dict)
    #: what the proxy learned from: {"tasks", "splits", "questions"} (empty in proxies distilled before it was recorded)
    training_data: dict[str, Any] = field(default_factory=dict)

    @property
    def teacher_name(self) -> str:
        """The teacher's method name (``chefer`` for a checkpoint that records none)."""
        return self.teacher.get("name") or LEGACY_TEACHER["name"]


class FastRM(torch.nn.Module, ModelHubMixin, library_name=LIBRARY_NAME, tags=CARD_TAGS):
    """Predicts, for the token generated at p_t, the probability that each image token is relevant."""

    def __init__(self, hidden_size: int | FastRMConfig):
        super().__init__()
        self.config = hidden_size if isinstance(hidden_size, FastRMConfig) else FastRMConfig(hidden_size)
        # the mixin would write its own config.json from __init__'s arguments: the config is fastrm_config.json
        self._hub_mixin_config = None
        d = self.config.hidden_size
        self.norm = torch.nn.LayerNorm(d)
        self.query = torch.nn.Linear(d, d)
        self.key = torch.nn.Linear(d, d)

    def logits(self, query_states: torch.Tensor, image_states: torch.Tensor) -> torch.Tensor:
        """``query_states`` [..., d] (h at p_t), ``image_states`` [..., n_img, d] -> scores [..., n_img]."""
        q = self.query(self.norm(query_states)).unsqueeze(-2)
        k = self.key(self.norm(image_states))
        return (q * k).sum(-1) / math.sqrt(self.config.hidden_size)

    def forward(self, query_states: torch.Tensor, image_states: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(query_states, image_states))

    # ------------------------------------------------------------------ persistence (ModelHubMixin)
    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> Path | str:
        """The mixin's save (``push_to_hub=True, repo_id=...`` also uploads): the folder, or the commit's URL if pushed.

        A folder holding a ``config.json`` (an LVLM's) is refused: the mixin deletes that file before saving.
        """
        directory = Path(save_directory)
        if (directory / "config.json").exists():
            raise CheckpointError(f"{directory} holds a config.json (another model's?): save the FastRM proxy in a "
                                  "folder of its own")
        url = super().save_pretrained(directory, **kwargs)
        return directory if url is None else url

    def _save_pretrained(self, save_directory: Path) -> None:
        """Weights (safetensors), ``fastrm_config.json`` and the card; the card is rewritten with them, so that
        re-saving into a folder never leaves another proxy's card beside new weights."""
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()},
                  str(save_directory / WEIGHTS_NAME))
        (save_directory / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2, sort_keys=True))
        self.generate_model_card().save(save_directory / CARD_NAME)

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The card of this proxy's config (`model_card`); the mixin's template arguments do not apply."""
        return model_card(self.config)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, expected_hidden_size: int | None = None, *,
                        force_download: bool = False, token: str | bool | None = None,
                        cache_dir: str | Path | None = None, local_files_only: bool = False,
                        revision: str | None = None) -> FastRM:
        """A proxy from a local folder or a Hub id (``owner/name``, through the Hugging Face cache; offline with
        ``HF_HUB_OFFLINE=1``). Replaces the mixin's, which would look for a ``config.json``: the config is
        ``fastrm_config.json``, read and checked by `_from_pretrained`."""
        return cls._from_pretrained(model_id=str(pretrained_model_name_or_path), revision=revision, cache_dir=cache_dir,
                                    force_download=force_download, local_files_only=local_files_only, token=token,
                                    expected_hidden_size=expected_hidden_size)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None, cache_dir: str | Path | None,
                         force_download: bool, local_files_only: bool, token: str | bool | None,
                         expected_hidden_size: int | None = None) -> FastRM:
        """The mixin's loading hook: find the folder (fetching only the weights and config from the Hub), then load it."""
        folder = _checkpoint_folder(model_id, revision=revision, cache_dir=cache_dir, force_download=force_download,
                                    local_files_only=local_files_only, token=token)
        return cls._load_folder(folder, expected_hidden_size)

    @classmethod
    def _load_folder(cls, directory: Path, expected_hidden_size: int | None = None) -> FastRM:
        """Load a checkpoint folder; every way it can be unusable is one `CheckpointError` naming the file and the fix."""
        config = _read_config(directory)
        weights, config_path = directory / WEIGHTS_NAME, directory / CONFIG_NAME
        if expected_hidden_size is not None and config.hidden_size != expected_hidden_size:
            raise CheckpointError(
                f"{directory}: FastRM was distilled for hidden size {config.hidden_size} "
                f"({config.distilled_from or 'unknown model'}), but the model's hidden size is {expected_hidden_size}"
            )
        try:
            shapes = read_safetensors_shapes(weights)
        except InvalidWeightsFile as err:
            raise CheckpointError(str(err)) from None
        model = cls(config)
        expected = {k: list(v.shape) for k, v in model.state_dict().items()}
        if set(shapes) != set(expected):
            raise CheckpointError(f"{weights} holds the weights of another model (tensors {sorted(shapes)[:4]}..., a FastRM "
                                  f"proxy has {sorted(expected)}); pass a folder written by `fastrm-bench distill`")
        wrong = [k for k in expected if shapes[k] != expected[k]]
        if wrong:
            raise CheckpointError(f"{weights} does not match {config_path}: {wrong[0]} has shape {shapes[wrong[0]]}, the "
                                  f"config's hidden size {config.hidden_size} needs {expected[wrong[0]]}; keep the "
                                  "weights and config that were saved together")
        model.load_state_dict(load_file(str(weights)))
        return model.eval()


def _is_hub_id(name: str) -> bool:
    """``owner/name`` as the Hub spells it (a path such as ``/tmp/x``, ``./x`` or ``a/b/c`` is not one)."""
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return name.count("/") == 1 and not name.startswith(".")


def _checkpoint_folder(name: str, **hub: Any) -> Path:
    """``name`` if it is a folder (or no Hub id); else the Hub repo's snapshot in the Hugging Face cache, with only the
    safetensors weights and the config fetched (a pickle in the repo is never downloaded)."""
    path = Path(name)
    if path.is_dir() or not _is_hub_id(name):
        if not path.is_dir():
            raise CheckpointError(f"FastRM checkpoint folder {path} does not exist: pass the folder that "
                                  "`fastrm-bench distill --out DIR` wrote, or the Hub id (owner/name) of a pushed proxy")
        return path
    try:
        return Path(snapshot_download(name, allow_patterns=[WEIGHTS_NAME, CONFIG_NAME], **hub))
    except (OSError, ValueError) as err:  # the Hub's errors: HTTP, not found, offline without a cached copy
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"FastRM checkpoint {name!r} is no local folder and could not be fetched from the Hub "
                              f"({reason}); pass the folder `fastrm-bench distill --out DIR` wrote, or download the "
                              "repo once while online (HF_HUB_OFFLINE unset)") from None


def _read_config(directory: Path) -> FastRMConfig:
    """The folder's `FastRMConfig`, after checking that its weights are safetensors (pickles are refused)."""
    weights, config_path = directory / WEIGHTS_NAME, directory / CONFIG_NAME
    if not weights.is_file():
        pickles = [p.name for p in directory.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]
        hint = f" (found {', '.join(pickles)}: pickled weights are refused; convert them to safetensors)" if pickles else ""
        raise CheckpointError(f"{directory}: no {WEIGHTS_NAME}{hint}")
    if not config_path.is_file():
        raise CheckpointError(f"{directory}: no {CONFIG_NAME}")
    try:
        return FastRMConfig(**json.loads(config_path.read_text()))
    except (json.JSONDecodeError, TypeError) as err:
        raise CheckpointError(f"{config_path} is not a FastRM config ({err}); re-save the proxy with "
                              "FastRM.save_pretrained") from None


# ---------------------------------------------------------------------- the model card
def _recorded_teacher(config: FastRMConfig) -> dict[str, Any]:
    """The teacher as the card shows it: name, implementation, params (Chefer's for a proxy that records none)."""
    return {k: v for k, v in (config.teacher or LEGACY_TEACHER).items() if k != "model_weights_sha256"}


def _held_out_metrics(config: FastRMConfig) -> dict[str, Any]:
    """What the proxy recorded of its quality: held-out F1 / accuracy at 0.5 against its teacher's labels, and a PP AUC
    where one was recorded (distillation itself measures none: that takes `fastrm-bench run`)."""
    recorded = config.metrics
    at_half = recorded.get("threshold_scores", {}).get("0.5", {})
    metrics = {"held_out_f1": at_half.get("f1"), "held_out_accuracy": at_half.get("accuracy"),
               "threshold": 0.5 if at_half else None, "held_out_tokens": recorded.get("held_out_tokens"),
               "train_tokens": recorded.get("train_tokens"), "pp_auc": recorded.get("pp_auc")}
    return {k: v for k, v in metrics.items() if v is not None}


def card_data(config: FastRMConfig) -> ModelCardData:
    """The card's YAML metadata: the Hub's keys (library, tags, the explained model as ``base_model``), then the
    teacher, the training data and the recorded metrics."""
    training = {**config.training_data, "sha256": config.training_data_sha256 or None}
    tokens = [config.metrics.get(k) for k in ("train_tokens", "held_out_tokens")]
    if all(isinstance(n, int) for n in tokens):
        training["token_samples"] = sum(tokens)
    hub = FastRM._hub_mixin_info.model_card_data
    # keys sorted as the saved config sorts them: the card written at save equals the one its reload generates
    training, teacher = _sorted_keys(training), _sorted_keys(_recorded_teacher(config))
    return ModelCardData(library_name=hub.library_name, tags=list(hub.tags), base_model=config.distilled_from or None,
                         explained_model_weights_sha256=config.model_weights_sha256 or None,
                         teacher=teacher,
                         training_data={k: v for k, v in training.items() if v is not None} or None,
                         proxy_metrics=_held_out_metrics(config) or None, hidden_size=config.hidden_size,
                         labeling_threshold=config.labeling_threshold)


def _sorted_keys(value: Any) -> Any:
    """`value` with every mapping's keys in sorted order, as ``json.dumps(sort_keys=True)`` writes them."""
    if isinstance(value, dict):
        return {k: _sorted_keys(value[k]) for k in sorted(value)}
    return [_sorted_keys(v) for v in value] if isinstance(value, list) else value


def _card_body(config: FastRMConfig) -> str:
    """What the proxy is and how to load it, in words."""
    model, teacher = config.distilled_from or "its vision-language model", _recorded_teacher(config)["name"]
    data = config.training_data
    learned = (f"{data['questions']} questions of {', '.join(data['tasks'])}" if {"questions", "tasks"} <= set(data)
               else "questions whose task and count it does not record")
    task = data.get("tasks", ["vqav2"])[0]
    return f"""
# FastRM proxy of `{model}`

A FastRM proxy written by fastrm-bench: a LayerNorm and one attention head over the final-norm
hidden states of `{model}` that predict, for each generated token, the probability that each
image token is relevant. It learned the maps of the `{teacher}` method (labels: map >=
{config.labeling_threshold} x its maximum) from the answers to {learned}.

It explains only the weights whose SHA-256 it records (`explained_model_weights_sha256`): the
`fastrm` method refuses it for other weights of a model of the same name.

## Use

```python
from fastrm_bench.fastrm.model import FastRM

proxy = FastRM.from_pretrained("THIS_FOLDER_OR_HUB_ID")  # a local folder, or owner/name on the Hub
```

With the command line, a method spec `SPECS/methods/my-proxy.yaml`:

```yaml
name: my-proxy
implementation: fastrm
params: {{checkpoint: THIS_FOLDER_OR_HUB_ID}}
```

and `fastrm-bench --spec-dir SPECS run --method my-proxy --model {config.distilled_from or "MODEL"} --task {task}`.
"""


def model_card(config: FastRMConfig) -> ModelCard:
    """The proxy's model card (README.md): YAML metadata (`card_data`) and a short body, both from its config only."""
    return ModelCard(f"---\n{card_data(config).to_yaml()}\n---\n{_card_body(config)}")


def write_model_card(folder: str | Path) -> Path:
    """(Re)write the card of a saved proxy from its config: for proxies saved before cards were written."""
    path = Path(folder) / CARD_NAME
    model_card(_read_config(Path(folder))).save(path)
    return path
