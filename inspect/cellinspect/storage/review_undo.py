"""Undo of QA labels, recorded in the audit trail without a schema change.

An undo is one more audit row (the trail is never rewritten): its `label` column holds
`undo:<restored label>` (or `undo` when the result is left unlabelled), its defect class the
restored class and its previous_* columns the label taken back. Replaying the trail as a stack
(a label pushes, an undo pops) tells which label is in effect and which one an undo removed,
so repeated undos walk back through the history one label at a time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from cellinspect.storage.records import ReviewLabel

UNDO = "undo"


class EventLike(Protocol):
    """The audit row fields the replay needs (ReviewEventRow has them)."""

    @property
    def revision(self) -> int: ...

    @property
    def label(self) -> str: ...


def undo_label(restored: ReviewLabel | None) -> str:
    """The `label` column of an undo row that leaves `restored` in effect."""
    return UNDO if restored is None else f"{UNDO}:{restored.value}"


def is_undo(stored_label: str) -> bool:
    return stored_label == UNDO or stored_label.startswith(f"{UNDO}:")


def label_of(stored_label: str) -> ReviewLabel | None:
    """The label an audit row leaves in effect (None: unlabelled after an undo)."""
    if stored_label == UNDO:
        return None
    return ReviewLabel(stored_label.removeprefix(f"{UNDO}:"))


E = TypeVar("E", bound=EventLike)


@dataclass(frozen=True, slots=True)
class Replay(Generic[E]):
    """The labels in effect after replaying a trail, oldest first, and what each undo removed."""

    stack: list[E]
    undone_by: dict[int, int]  # revision of an undo row -> revision of the label it removed


def replay(events: Iterable[E]) -> Replay[E]:
    """Replay audit rows in revision order."""
    stack: list[E] = []
    undone_by: dict[int, int] = {}
    for event in sorted(events, key=lambda e: e.revision):
        if is_undo(event.label):
            if stack:
                undone_by[event.revision] = stack.pop().revision
        else:
            stack.append(event)
    return Replay(stack, undone_by)
