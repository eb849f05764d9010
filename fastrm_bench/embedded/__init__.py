"""Models this package builds rather than loads: the embedded world's two trained models (their
architecture and training) and tiny random-weight checkpoints of every supported family.

Nothing here is on the path a user's checkpoint takes (`fastrm_bench.models` holds that); these
modules only make models that then go through it like any other.
"""
