"""Errors of the PLC, robot and OPC UA links (subclasses of the project's hierarchy)."""

from __future__ import annotations

from cellinspect.errors import CellInspectError


class PlcError(CellInspectError):
    """A PLC-side interface could not start or was used in a way it does not allow."""


class PlcLinkError(PlcError):
    """A Modbus connection failed or a request got no valid answer (the link may recover)."""


class RobotError(CellInspectError):
    """The robot link failed or the robot refused a target."""
