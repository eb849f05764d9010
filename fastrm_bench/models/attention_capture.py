"""The LM's attention as explanation methods need it, while the model runs its own fast attention.

Eager attention with ``output_attentions`` keeps every layer's ``H x N x N`` probabilities (with their
graph when gradients are asked): at thousands of image tokens that does not fit. Here a transformers
attention function, registered by the harness through `AttentionInterface`, wraps the implementation the
model was loaded with (SDPA by default): it returns that implementation's output unchanged and records, per
LM layer, what the attention received (queries and keys after rotary / M-RoPE, values, the mask, the
scaling and soft-capping) and its output as a graph node. From these a `LayerAttention`

- recomputes the probabilities eager attention returns, only for the query rows asked, block by block;
- gives the gradient of a score w.r.t. the probabilities from the gradient at the attention output alone:
  ``O = A V`` per head, so ``dY/dA = (dY/dO) V^T`` (``N x d`` per layer is all the backward keeps).

Only the language model's layers are captured (the text sub-config's implementation is switched for the
duration); the vision tower runs as loaded. Kernels that take no dense mask (FlashAttention) are replaced by
SDPA inside the captured forward: the same attention, with a mask the recomputation can read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

from fastrm_bench.layer_attention import LayerAttention

#: what the model may be loaded with; "eager" is the textbook path, kept for checks
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")
DEFAULT_ATTN_IMPLEMENTATION = "sdpa"
#: implementations the capture calls as they are (they take the dense masks transformers builds for them)
_DENSE_MASK = ("sdpa", "eager")
_CAPTURE_NAME = "fastrm_capture_{inner}"


class AttentionCaptureError(RuntimeError):
    """The LM's attention of a family cannot be recorded through transformers' attention interface."""


def _dense_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """The batch of one's mask ``[1 or H, q, kv]``; a 2-D padding mask (kernels without dense masks) is expanded."""
    if attention_mask is None:
        return None
    if attention_mask.dim() == 4:
        return attention_mask[0]
    raise AttentionCaptureError(f"an attention mask of shape {tuple(attention_mask.shape)} cannot be read back")


#: the record lists of the open captures (innermost last); the registered functions hold no records of their own,
#: so nothing of a finished capture (its graph nodes) outlives the caller's use of it
_OPEN: list[list[LayerAttention]] = []


def _recorder(inner: Callable[[torch.nn.Module], Callable[..., Any]]) -> Callable[..., Any]:
    """An attention function: the output of ``inner(module)``, and a `LayerAttention` appended to the open capture."""

    def capture(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, Any]:
        if query.shape[0] != 1:
            raise AttentionCaptureError("attention is captured for a batch of one")
        output, weights = inner(module)(module, query, key, value, attention_mask, **kwargs)
        scaling = kwargs.get("scaling")
        # as transformers' SDPA path decides: no mask means causal unless the module says otherwise
        causal = bool(kwargs.get("is_causal", getattr(module, "is_causal", True))) and query.shape[2] > 1
        _OPEN[-1].append(LayerAttention(
            query=query[0].detach(), key=key[0].detach(), value=value[0].detach(), mask=_dense_mask(attention_mask),
            causal=causal, scaling=float(scaling if scaling is not None else query.shape[-1] ** -0.5),
            softcap=kwargs.get("softcap"), output=output,
        ))
        return output, weights

    return capture


@contextlib.contextmanager
def capturing_attention(model: torch.nn.Module, num_layers: int) -> Iterator[list[LayerAttention]]:
    """Inside: every forward of ``model``'s language model appends one `LayerAttention` per layer to the yielded list.

    The text sub-config's attention implementation is switched to a registered wrapper of its own (or SDPA's,
    for kernels without dense masks) and switched back on exit. After the block the list must hold exactly
    ``num_layers`` records per forward, else the family's attention does not go through the interface.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    config = model.config.get_text_config()
    loaded = config._attn_implementation or "eager"
    inner_name = loaded if loaded in _DENSE_MASK else "sdpa"
    records: list[LayerAttention] = []
    name = _CAPTURE_NAME.format(inner=inner_name)
    inner = _eager_function if inner_name == "eager" else (lambda module: ALL_ATTENTION_FUNCTIONS[inner_name])
    AttentionInterface.register(name, _recorder(inner))
    ALL_MASK_ATTENTION_FUNCTIONS.register(name, ALL_MASK_ATTENTION_FUNCTIONS[inner_name])
    config._attn_implementation = name  # what the LM's attention modules and mask builders read at each call
    _OPEN.append(records)
    try:
        yield records
    finally:
        _OPEN.pop()
        config._attn_implementation = loaded
    if records and len(records) % num_layers:
        raise AttentionCaptureError(
            f"{model.config.model_type}: {len(records)} attention calls were recorded for {num_layers} LM layers; "
            "its language model's attention does not go through transformers' attention interface"
        )


def _eager_function(attention: torch.nn.Module) -> Callable[..., Any]:
    """The eager attention function of the attention module's own modeling file (as transformers falls back to it)."""
    import importlib

    return importlib.import_module(type(attention).__module__).eager_attention_forward
