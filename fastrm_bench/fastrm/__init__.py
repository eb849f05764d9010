"""FastRM: a proxy that predicts relevancy maps from the LM's last hidden states."""

from fastrm_bench.fastrm.model import FastRM, FastRMConfig

__all__ = ["FastRM", "FastRMConfig"]
