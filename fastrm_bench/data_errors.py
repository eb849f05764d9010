"""Errors of one sample's data (its image or its record), which a run may skip instead of stopping.

A run's ``--on-error skip`` policy catches exactly `SampleDataError`: everything else (model,
checkpoint, configuration, disk) stops the run, because it would fail every sample alike.
"""

from __future__ import annotations


class SampleDataError(Exception):
    """One sample cannot be read; the message names the question and what is wrong with it."""

    def __init__(self, sample_id: str, reason: str):
        self.sample_id, self.reason = sample_id, one_line(reason)
        super().__init__(f"question {one_line(sample_id)}: {self.reason}")


def one_line(text: str) -> str:
    """``text`` with its line breaks escaped: a value from a damaged file must not split a one-line report."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


class MissingImageError(SampleDataError, FileNotFoundError):
    """The sample's image file does not exist."""


class CorruptImageError(SampleDataError, ValueError):
    """The sample's image file exists but cannot be decoded."""


class UnparsableRecordError(SampleDataError, ValueError):
    """The sample's entry in the task's files cannot be parsed (a malformed line, a missing key)."""
