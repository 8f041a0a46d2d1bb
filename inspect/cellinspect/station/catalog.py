"""The station's recipe catalog: numbers the PLC selects, the files behind them, checked early.

Every recipe in the catalog is read and validated when the station starts, so a typo in
recipe 7 is found at start-up rather than when the PLC first selects it on a night shift.
Models are loaded only for the recipe that goes live.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cellinspect.config import Recipe, RecipeInvalidError, load_recipe
from cellinspect.errors import CellInspectError, ConfigError


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    number: int
    path: Path
    recipe: Recipe


class RecipeCatalog:
    """Number -> validated recipe; `lookup` also accepts a recipe's name (OPC UA ExternalId)."""

    def __init__(self, entries: Mapping[int, CatalogEntry]) -> None:
        self.entries = dict(sorted(entries.items()))

    @classmethod
    def load(cls, recipes: Mapping[int, Path], where: str) -> RecipeCatalog:
        """Validate every recipe file; one ConfigError listing each problem with its key."""
        entries: dict[int, CatalogEntry] = {}
        problems: list[str] = []
        for number, path in sorted(recipes.items()):
            try:
                entries[number] = CatalogEntry(number, path, load_recipe(path))
            except RecipeInvalidError as err:
                problems.extend(f"{where}: recipes.{number}: {line}" for line in err.problems)
            except CellInspectError as err:
                problems.append(f"{where}: recipes.{number}: {err}")
        if problems:
            raise ConfigError("\n".join(problems))
        return cls(entries)

    def __contains__(self, number: object) -> bool:
        return number in self.entries

    def __getitem__(self, number: int) -> CatalogEntry:
        return self.entries[number]

    @property
    def numbers(self) -> list[int]:
        return list(self.entries)

    def lookup(self, external_id: str) -> int | None:
        """A catalog number from "3" or from a recipe name; None when unknown."""
        text = external_id.strip()
        if text.isdigit() and int(text) in self.entries:
            return int(text)
        for number, entry in self.entries.items():
            if entry.recipe.name == text:
                return number
        return None

    def external_ids(self) -> list[str]:
        """What OPC UA PrepareRecipe accepts: each number and each recipe name."""
        ids = [str(n) for n in self.entries]
        ids += [e.recipe.name for e in self.entries.values()]
        return ids
