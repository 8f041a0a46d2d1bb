"""The kinds of slow fault the simulated line can inject; its own module so that the command
line can offer them without importing OpenCV."""

from __future__ import annotations

import enum


class DriftKind(enum.StrEnum):
    """What goes wrong slowly (`cellinspect line --drift`)."""

    FOCUS = "focus"  # the lens goes soft
    LIGHT = "light"  # the lamp dims
    SHIFT = "shift"  # the camera is knocked or its bracket slips
    WEAR = "wear"  # a worn tool coarsens the finish of good parts
