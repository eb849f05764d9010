"""The FastRM proxy (SPEC section 3): LayerNorm, one attention head with one query, sigmoid.

``q = W_q LN(h[p_t])``, ``k_j = W_k LN(h[j])`` for the image positions j, ``s_j = q.k_j / sqrt(d)``,
``prob_j = sigmoid(s_j)``. Its input is what the LM computes anyway (the final-norm hidden states
that feed ``lm_head``), so a map costs two small matrix products: no gradients, no attentions.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from fastrm_bench.checkpoint_files import InvalidWeightsFile, read_safetensors_shapes

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "fastrm_config.json"
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

    @property
    def teacher_name(self) -> str:
        """The teacher's method name (``chefer`` for a checkpoint that records none)."""
        return self.teacher.get("name") or LEGACY_TEACHER["name"]


class FastRM(torch.nn.Module):
    """Predicts, for the token generated at p_t, the probability that each image token is relevant."""

    def __init__(self, hidden_size: int | FastRMConfig):
        super().__init__()
        self.config = hidden_size if isinstance(hidden_size, FastRMConfig) else FastRMConfig(hidden_size)
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

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, str(directory / WEIGHTS_NAME))
        (directory / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2, sort_keys=True))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, expected_hidden_size: int | None = None) -> FastRM:
        """Load a checkpoint; every way it can be unusable is one `CheckpointError` naming the file and the fix."""
        directory = Path(directory)
        weights, config_path = directory / WEIGHTS_NAME, directory / CONFIG_NAME
        if not directory.is_dir():
            raise CheckpointError(f"FastRM checkpoint folder {directory} does not exist: pass the folder that "
                                  "`fastrm-bench distill --out DIR` wrote")
        if not weights.is_file():
            pickles = [p.name for p in directory.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]
            hint = f" (found {', '.join(pickles)}: pickled weights are refused; convert them to safetensors)" if pickles else ""
            raise CheckpointError(f"{directory}: no {WEIGHTS_NAME}{hint}")
        if not config_path.is_file():
            raise CheckpointError(f"{directory}: no {CONFIG_NAME}")
        try:
            config = FastRMConfig(**json.loads(config_path.read_text()))
        except (json.JSONDecodeError, TypeError) as err:
            raise CheckpointError(f"{config_path} is not a FastRM config ({err}); re-save the proxy with "
                                  "FastRM.save_pretrained") from None
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
