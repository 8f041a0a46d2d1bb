"""The shipped cell: the flange recipes, their models and calibration, and the station files.

One copy of these files exists: at the top of the repository (recipes/, models/, calibration/,
stations/), where the tests, the docs and the README use them. Building a wheel copies the
files listed in FILES into the package as cellinspect/shipped_cell/ with the same layout
(setup.py), so the relative paths inside the recipes (../models/..., ../calibration/...) and
the station files (../recipes/...) resolve in a checkout, in an installed wheel, and in a
folder that `cellinspect init` filled.

The 40 sample images are not shipped: `init` renders them with the part generator, which is
deterministic (SAMPLE_*: the settings that made the repository's sample_images/).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Final

from cellinspect.errors import ConfigError

PACKAGE_DIR: Final = "shipped_cell"
"""Folder inside the installed package that holds FILES (setup.py writes it)."""

# setup.py reads this tuple with ast.literal_eval: keep it a plain literal of strings.
FILES: Final = (
    "recipes/flange.yaml",
    "recipes/flange-measure.yaml",
    "models/flange-anomaly/1/manifest.json",
    "models/flange-anomaly/1/model.onnx",
    "models/flange-classifier/1/manifest.json",
    "models/flange-classifier/1/model.onnx",
    "calibration/camera.yaml",
    "calibration/plane.yaml",
    "calibration/handeye.yaml",
    "stations/sim.yaml",
    "stations/example.yaml",
)
"""Every shipped file, relative to the repository root (and to PACKAGE_DIR in a wheel)."""

RECIPE: Final = "recipes/flange.yaml"
SIM_STATION: Final = "stations/sim.yaml"
SAMPLE_IMAGES_DIR: Final = "sample_images"
# How the repository's sample_images/ were rendered:
# `cellinspect generate sample_images --count 40 --seed 0 --defect-rate 0.4 --format bmp`.
SAMPLE_COUNT: Final = 40
SAMPLE_SEED: Final = 0
SAMPLE_DEFECT_RATE: Final = 0.4


def root() -> Path:
    """The folder the shipped files sit under: the package's copy, else this checkout."""
    here = Path(__file__).resolve().parent
    packaged = here / PACKAGE_DIR
    if packaged.is_dir():
        return packaged
    checkout = here.parents[1]  # inspect/cellinspect/shipped.py -> the repository root
    if all((checkout / name).is_file() for name in FILES):
        return checkout
    raise ConfigError(
        f"the shipped recipes, models and station files are missing: neither {packaged} "
        f"(an installed wheel) nor {checkout} (a checkout) holds them; reinstall cellinspect"
    )


def path(name: str) -> Path:
    """One shipped file by its name in FILES, e.g. `path("recipes/flange.yaml")`."""
    if name not in FILES:
        raise ValueError(f"{name} is not a shipped file")
    return root() / name


def recipe() -> Path:
    """The shipped station recipe (recipes/flange.yaml)."""
    return path(RECIPE)


def sim_station() -> Path:
    """The shipped simulated cell's station file (stations/sim.yaml)."""
    return path(SIM_STATION)


def is_packaged(file: Path) -> bool:
    """Whether `file` is inside the installed package's copy (where nothing should be written)."""
    packaged = Path(__file__).resolve().parent / PACKAGE_DIR
    return file.resolve().is_relative_to(packaged)


def existing_targets(dest: Path) -> list[Path]:
    """The files `copy_cell(dest)` would replace: shipped files and the sample images folder."""
    found = [dest / name for name in FILES if (dest / name).exists()]
    samples = dest / SAMPLE_IMAGES_DIR
    if samples.exists() and any(samples.iterdir()):
        found.append(samples)
    return found


def copy_cell(dest: Path) -> list[Path]:
    """Copy every shipped file into `dest` (same layout, so relative paths still resolve)."""
    source = root()
    written = []
    for name in FILES:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, target)
        written.append(target)
    return written


def render_sample_images(
    dest: Path, progress: Callable[[int, int], None] | None = None, overwrite: bool = False
) -> Path:
    """Render the 40 sample parts into dest/sample_images; returns its labels.csv."""
    from cellinspect.datagen.flange import generate_dataset

    return generate_dataset(
        dest / SAMPLE_IMAGES_DIR,
        count=SAMPLE_COUNT,
        seed=SAMPLE_SEED,
        defect_rate=SAMPLE_DEFECT_RATE,
        progress=progress,
        overwrite=overwrite,
        image_format="bmp",
    )
