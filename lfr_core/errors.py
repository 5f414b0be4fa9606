"""Typed errors raised by lfr_core, so callers can branch on the kind of failure, not its text."""

from __future__ import annotations


class LfrCoreError(Exception):
    """Base class of every error lfr_core raises on purpose."""


class ModelNotBuiltError(LfrCoreError, FileNotFoundError):
    """The ONNX models are missing: run `make models` (python -m layers.face_models)."""


class InvalidImageError(LfrCoreError, ValueError):
    """Bytes that are not a usable image. `reason` is a short machine-friendly tag, safe to log."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class InvalidIndexError(LfrCoreError, ValueError):
    """A watchlist index artifact that is malformed or inconsistent."""


class DatasetNotFoundError(LfrCoreError, FileNotFoundError):
    """The shared evaluation datasets are not where we looked."""


class CalibrationError(LfrCoreError, ValueError):
    """No calibrated threshold for what was asked (outside the table, or the table is missing/bad)."""
