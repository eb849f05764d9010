"""`python -m fastrm_bench ...` is `fastrm-bench ...` (what `accelerate launch -m fastrm_bench` and torchrun start)."""

from fastrm_bench.cli import entrypoint

entrypoint()
