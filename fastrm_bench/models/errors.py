"""The error of a model that cannot be loaded, apart so that the adapter and the processor loader share it."""


class ModelLoadError(RuntimeError):
    """A checkpoint that cannot serve as a supported vision-language model, with the reason and the fix."""
