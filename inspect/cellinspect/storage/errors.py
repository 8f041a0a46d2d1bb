"""Errors the store raises on purpose (subclasses of the package's CellInspectError)."""

from __future__ import annotations

from cellinspect.errors import CellInspectError


class StoreError(CellInspectError):
    """The result store or its image folder cannot do what was asked."""


class ResultNotFoundError(StoreError):
    """No stored result has the given id (or it has no image of the given kind)."""


class ReviewInvalidError(StoreError):
    """A review label does not fit the rules (a defect needs a class, a good part has none)."""


class ReviewConflictError(StoreError):
    """A review was based on a revision that someone else has changed since."""


class NothingToUndoError(ResultNotFoundError):
    """The result has no label left to undo (answered 404, like a missing result)."""


class ReviewOwnerError(StoreError):
    """Only the user who made a label (or an admin) may undo it."""
