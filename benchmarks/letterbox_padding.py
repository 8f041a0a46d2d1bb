"""What the letterbox pads with, measured: good-part score scale and AUROC on small banks.

An exploratory run scored good non-square frames higher letterboxed (2.57) than stretched
(1.34) with a small PatchCore bank. This compares, on the same features and draws, how a
non-square part meets the 224 px input:

* `stretch`: both sides scaled (reference; the aspect ratio changes);
* `letterbox`: the current padding, the backbone's mean grey (normalises to 0);
* `replicate`: letterbox with the image's edge pixels repeated into the padding;
* `letterbox+mask` / `replicate+mask`: padded cells of the patch grid left out of the bank and
  out of the held-out scale and the score (the station already cuts them from the score).

Parts: flanges rendered with the shipped renderer, cut by recipes/flange.yaml and then to the
middle 224 x 112 band of the ROI (a defect counts only where its truth mask lies in the band);
and elpv cells (stretched 1-99 %) cut to their middle 300 x 150 band (labels are the whole
cell's, so a few "defective" bands show no defect: the same for every variant). Banks of 10
and 25 good parts, three draws each; PatchCore as `fit-anomaly` fits it (numpy, one bag, 20 %
held out, scale = worst held-out good). Figures: median good test-part score (1.0 = the worst
held-out good part; the lower and nearer 1, the fewer false rejects at review_at 1.0), the
share of good test parts above 1.0, and AUROC.

Run: `nice -n 5 .venv/bin/python -m benchmarks.letterbox_padding --out /tmp/letterbox.json`
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_auc_score

from benchmarks.few_shot import _nn_distance, draw_order
from cellinspect.entities import ImageU8
from cellinspect.inference.manifest import ResizeMode, load_manifest
from cellinspect.inference.patchcore import (
    PATCHES_OUTPUT,
    build_patch_feature_graph,
    greedy_coreset,
    random_projection,
)
from cellinspect.preprocess.model_input import letterbox_box, preparer_for
from cellinspect.training.anomaly_params import AnomalyFitParams
from cellinspect.training.fit_anomaly import _session, run_batched

F32 = npt.NDArray[np.float32]
BACKBONE = Path("models/efficientnet-lite0/1/model.onnx")
CELL = 8  # stride of the patch grid, input pixels
SIZES = (10, 25)
DRAWS = 3


@dataclass(frozen=True)
class Parts:
    name: str
    pool: list[ImageU8]  # good parts for the banks
    test: list[ImageU8]
    defective: npt.NDArray[np.bool_]
    note: str


def replicate_letterbox(image: ImageU8, size: int) -> ImageU8:
    """Letterbox with the edge pixels repeated into the padding (cv2.BORDER_REPLICATE)."""
    h, w = image.shape[:2]
    box = letterbox_box(w, h, size, size)
    inter = cv2.INTER_AREA if box.width < w else cv2.INTER_LINEAR
    scaled = cv2.resize(image, (box.width, box.height), interpolation=inter)
    out = cv2.copyMakeBorder(
        scaled,
        box.y,
        size - box.height - box.y,
        box.x,
        size - box.width - box.x,
        cv2.BORDER_REPLICATE,
    )
    return np.asarray(out, np.uint8)


def image_cells(width: int, height: int, size: int) -> npt.NDArray[np.bool_]:
    """Per patch-grid cell (row-major): whether it touches the letterboxed image."""
    box = letterbox_box(width, height, size, size)
    grid = size // CELL
    rows = np.zeros(grid, bool)
    cols = np.zeros(grid, bool)
    rows[box.y // CELL : -(-(box.y + box.height) // CELL)] = True
    cols[box.x // CELL : -(-(box.x + box.width) // CELL)] = True
    return np.asarray((rows[:, None] & cols[None, :]).reshape(-1))


def flange_parts(pool_count: int, test_count: int) -> Parts:
    from cellinspect.config import load_recipe
    from cellinspect.datagen.part import plan_parts
    from cellinspect.datagen.render import render_part, render_part_truth
    from cellinspect.training.dataset import RoiReader

    recipe = load_recipe(Path("recipes/flange.yaml"))
    reader = RoiReader(recipe, recipe.rois[0].name)

    def band(image: ImageU8) -> ImageU8:
        return np.ascontiguousarray(image[56:168])  # the middle 224 x 112 of the 224 ROI

    pool = [band(reader(render_part(s))) for s in plan_parts(pool_count, 101, 0.0)]
    test, bad = [], []
    for spec in plan_parts(test_count, 202, 0.5):
        part = render_part_truth(spec)
        mask = band(reader(np.asarray(cv2.cvtColor(part.defect_mask, cv2.COLOR_GRAY2BGR))))
        in_band = bool((mask > 127).any())
        if spec.label != "good" and not in_band:
            continue  # its defect lies outside the band: neither good nor a visible defect
        test.append(band(reader(part.image)))
        bad.append(spec.label != "good")
    return Parts(
        "flange 224x112",
        pool,
        test,
        np.array(bad),
        f"{pool_count} good rendered (seed 101); test {len(test)} rendered (seed 202), "
        f"{int(np.sum(bad))} with the defect inside the band",
    )


def elpv_parts(pool_count: int, test_per_class: int) -> Parts:
    from benchmarks.elpv.data import data_root, load_items, read_images, stratified_split
    from cellinspect.config import StretchOp
    from cellinspect.training.dataset import RoiReader

    root = data_root()
    split = stratified_split(load_items(root))
    reader = RoiReader.whole_frame((StretchOp(),), "letterbox elpv")
    rng = np.random.default_rng(0)
    good = [i for i in split.train if i.functional]
    pool_items = [good[i] for i in sorted(rng.choice(len(good), pool_count, replace=False))]
    bad = [i for i in split.test if i.defective]
    rest = [i for i in split.test if not i.defective]
    test_items = [bad[i] for i in sorted(rng.choice(len(bad), test_per_class, replace=False))]
    test_items += [rest[i] for i in sorted(rng.choice(len(rest), test_per_class, replace=False))]

    def band(image: ImageU8) -> ImageU8:
        h = image.shape[0]
        return np.ascontiguousarray(image[h // 4 : h // 4 + h // 2])  # the middle half

    def bgr(image: ImageU8) -> ImageU8:
        return image if image.ndim == 3 else np.asarray(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))

    pool = [band(bgr(reader(im))) for im in read_images(root, pool_items)]
    test = [band(bgr(reader(im))) for im in read_images(root, test_items)]
    return Parts(
        "elpv 300x150",
        pool,
        test,
        np.array([i.defective for i in test_items]),
        f"{pool_count} functional training cells; test {test_per_class} defective "
        f"(p >= 0.5) and {test_per_class} others from the test split (seed 0)",
    )


def fit_score(
    pool: F32,
    test: F32,
    mask: npt.NDArray[np.bool_] | None,
    on_image: npt.NDArray[np.bool_],
    params: AnomalyFitParams,
    seed: int,
) -> F32:
    """PatchCore as fit_anomaly fits it (one bag), scores of `test` on its scale. `mask`:
    the grid cells on the image; without it the bank and held-out scale take every cell.
    The score is the highest `on_image` cell (what the station reads back from a
    letterboxed map)."""
    n = len(pool)
    n_hold = max(1, round(n * params.holdout_fraction))
    order = np.random.default_rng(seed).permutation(n)
    hold, bank_idx = order[:n_hold], order[n_hold:]
    channels = pool.shape[2]
    fit = pool[bank_idx] if mask is None else pool[bank_idx][:, mask]
    projection = random_projection(channels, params.projection_dim, seed)
    flat = np.ascontiguousarray(fit.reshape(-1, channels) @ projection, np.float32)
    bank = flat[greedy_coreset(flat, params.coreset_size, seed)]
    held = _nn_distance(np.asarray(pool[hold] @ projection, np.float32), bank)
    scale = float((held if mask is None else held[:, mask]).max())
    maps = _nn_distance(np.asarray(test @ projection, np.float32), bank)
    return np.asarray(maps[:, on_image].max(axis=1) / scale, np.float32)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sets", default="flange,elpv")
    args = parser.parse_args(argv)
    backbone = load_manifest(BACKBONE)
    size = backbone.input.width
    letterbox = preparer_for(backbone.input.model_copy(update={"resize": ResizeMode.LETTERBOX}))
    stretch = preparer_for(backbone.input.model_copy(update={"resize": ResizeMode.STRETCH}))
    prepares: dict[str, Callable[[ImageU8], ImageU8]] = {
        "stretch": stretch.fit_image,
        "letterbox": letterbox.fit_image,
        "replicate": lambda im: replicate_letterbox(im, size),
    }
    params = AnomalyFitParams()
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        session = _session(build_patch_feature_graph(BACKBONE, Path(tmp) / "f.onnx"))
        for name in args.sets.split(","):
            parts = flange_parts(25, 60) if name == "flange" else elpv_parts(25, 50)
            print(f"[letterbox] {parts.name}: {parts.note}", flush=True)
            h, w = parts.pool[0].shape[:2]
            cells = image_cells(w, h, size)
            feats: dict[str, tuple[F32, F32]] = {}
            for how, prepare in prepares.items():
                start = time.perf_counter()
                pool, test = (
                    run_batched(session, PATCHES_OUTPUT, [prepare(i) for i in s], backbone, 8)
                    for s in (parts.pool, parts.test)
                )
                feats[how] = (pool, test)
                print(f"[letterbox] {how}: features in {time.perf_counter() - start:.0f} s")
            variants = [
                ("stretch", "stretch", False),
                ("letterbox", "letterbox", False),
                ("replicate", "replicate", False),
                ("letterbox+mask", "letterbox", True),
                ("replicate+mask", "replicate", True),
            ]
            good = ~parts.defective
            for label, how, masked in variants:
                on_image = np.ones(len(cells), bool) if how == "stretch" else cells
                pool, test = feats[how]
                for n in SIZES:
                    medians, above, aurocs = [], [], []
                    for draw in range(DRAWS):
                        idx = draw_order(len(pool), draw, 0)[:n]
                        scores = fit_score(
                            pool[idx], test, cells if masked else None, on_image, params, draw
                        )
                        medians.append(float(np.median(scores[good])))
                        above.append(float(np.mean(scores[good] > 1.0)))
                        aurocs.append(float(roc_auc_score(parts.defective, scores)))
                    row = {
                        "set": parts.name,
                        "variant": label,
                        "bank_parts": n,
                        "good_median": float(np.median(medians)),
                        "good_above_1": float(np.median(above)),
                        "auroc": float(np.median(aurocs)),
                        "aurocs": aurocs,
                        "good_medians": medians,
                    }
                    results.append(row)
                    print(
                        f"[letterbox] {parts.name:15s} {label:15s} n={n:2d}  good median "
                        f"{row['good_median']:.2f}  good >1 {row['good_above_1']:.0%}  "
                        f"AUROC {row['auroc']:.3f}  {[round(a, 3) for a in aurocs]}",
                        flush=True,
                    )
    args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
