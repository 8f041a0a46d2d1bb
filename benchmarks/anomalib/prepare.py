"""Cut rendered flange parts the way the station does, for both sides of the anomalib benchmark.

Runs in the project's venv (`run.py` calls it through a subprocess): renders parts with the
project's datagen, applies `recipes/flange.yaml` (undistort, 224 px ROI) and writes each ROI as
a 224x224 PNG into class folders (`train/good`, `test/good`, `test/defect`). Both anomalib and
cellinspect then read identical pixels, with no recipe and no resize of their own.

Run: ``python -m benchmarks.anomalib.prepare --out DIR [--train 120 --test 120]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2

from cellinspect.config import load_recipe
from cellinspect.datagen.dataset import read_labels
from cellinspect.training.dataset import RoiReader

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "flange.yaml"
SIZE = 224
TRAIN_SEED = 11  # good parts to fit on
TEST_SEED = 7  # held-out good and defective parts (the seed default-models.md evaluates on)


def _render(out: Path, count: int, seed: int, defect_rate: float) -> Path:
    """Render `count` parts with the project's CLI into `out` (BMP, flat, labels.csv)."""
    cli = Path(sys.executable).with_name("cellinspect")
    command = [str(cli), "generate", str(out), "--count", str(count), "--seed", str(seed)]
    command += ["--defect-rate", str(defect_rate), "--format", "bmp", "--overwrite"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return out


def _cut(raw: Path, out: Path, reader: RoiReader, defect_folder: str) -> dict[str, int]:
    """Write every part's ROI to out/good or out/<defect_folder>; counts per folder."""
    counts: dict[str, int] = {}
    for row in read_labels(raw / "labels.csv"):
        roi = reader.read(raw / row["file"])
        if roi.shape[:2] != (SIZE, SIZE):
            raise ValueError(f"{raw / row['file']}: ROI {roi.shape[:2]}, expected {SIZE}x{SIZE}")
        folder = "good" if row["label"] == "good" else defect_folder
        name = Path(row["file"]).with_suffix(".png").name
        (out / folder).mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(out / folder / name), roi):
            raise OSError(f"{out / folder / name}: cannot write")
        counts[folder] = counts.get(folder, 0) + 1
    return counts


def prepare(out: Path, train: int, test: int) -> dict[str, dict[str, int]]:
    """Render and cut the fitting and test parts; counts per split and class folder."""
    reader = RoiReader(load_recipe(RECIPE))
    raw = out / "raw"
    fit = _cut(_render(raw / "train", train, TRAIN_SEED, 0.0), out / "train", reader, "defect")
    held = _cut(_render(raw / "test", test, TEST_SEED, 0.5), out / "test", reader, "defect")
    return {"train": fit, "test": held}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.anomalib.prepare")
    parser.add_argument("--out", type=Path, required=True, help="Folder for train/ and test/")
    parser.add_argument("--train", type=int, default=120, help="Good parts to fit on")
    parser.add_argument("--test", type=int, default=120, help="Test parts (half defective)")
    args = parser.parse_args(argv)
    counts = prepare(args.out, args.train, args.test)
    print(f"flange parts cut to {SIZE} px in {args.out}: {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
