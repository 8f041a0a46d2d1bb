"""What the store, API and PLC need from the station, as protocols they can fake in tests."""

from __future__ import annotations

from typing import Protocol

from cellinspect.entities import ImageU8, InspectedFrame


class ImageInspector(Protocol):
    """Runs the loaded recipe on one image (the API's upload path and the PLC's trigger path).

    `part_id` and `encoder` are what the PLC latched at trigger; `name` is the file name or
    other label recorded as the result's path. Never raises for bad image content: an
    unreadable or failing inspection comes back as a fail-safe result.
    """

    @property
    def recipe_name(self) -> str: ...

    @property
    def recipe_sha256(self) -> str:
        """Hash of the recipe file, for results the caller has to make itself (fail-safe)."""
        ...

    def inspect_image(
        self,
        image: ImageU8,
        name: str | None = None,
        part_id: int | None = None,
        encoder: int | None = None,
    ) -> InspectedFrame: ...
