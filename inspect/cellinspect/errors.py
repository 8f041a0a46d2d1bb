"""One small exception hierarchy, so callers can catch what they can act on."""

from __future__ import annotations


class CellInspectError(Exception):
    """Base of every error cellinspect raises on purpose."""


class ConfigError(CellInspectError):
    """A recipe or settings file is missing, unreadable or invalid."""


class SourceError(CellInspectError):
    """A frame source cannot be opened or has failed for good."""


class FrameReadError(CellInspectError):
    """One frame could not be read or decoded (the source itself may go on)."""


class PreprocessError(CellInspectError):
    """A preprocessing step got input it cannot handle."""


class CalibrationError(CellInspectError):
    """A calibration file is missing, invalid, or does not fit the camera."""


class ModelError(CellInspectError):
    """A model file or manifest is missing, mismatched, or failed to run."""


class DeadlineExceededError(CellInspectError):
    """An inspection did not finish within the recipe's deadline."""


class MeasurementError(CellInspectError):
    """A dimension could not be measured in this image."""
