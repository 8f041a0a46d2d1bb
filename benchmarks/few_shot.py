"""Few good parts: image AUROC against the number of good parts fitted, and what closes the gap.

`python -m benchmarks.few_shot --out runs/few-shot` fits the patchcore and gaussian detectors
on 10, 25, 50, 100, 200 and all good parts (three seeded draws per size; each draw a prefix
of its own permutation of the pool, so a larger size holds the smaller) and scores a fixed test
set that no draw touches. Two data sets: elpv solar cells (fitting pool: the functional cells of
the training split; test: a seeded, stratified subsample of the test split) and rendered flange
parts (fitting pool: good parts rendered with their own seed; test: the shipped sample_images
plus rendered parts of a third seed). Levers: augmenting the bank / statistics with flips and
shifts (`--augment`, bank_augment.py), heavier covariance shrinkage (gaussian), a larger
backbone.

Features are extracted once per image (and per augmented view); each fit then runs in numpy
with the fit's own functions (`fit_gaussian`, `greedy_coreset`, `position_stats`) and scores
as the ONNX graph would (tests/benchmarks/test_few_shot.py checks this against the graph).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_auc_score

from benchmarks.few_shot_views import bench_augment_features, bench_view_names, parse_views
from cellinspect.entities import ImageU8
from cellinspect.errors import CellInspectError, ModelError
from cellinspect.inference.gaussian import (
    GaussianParams,
    mahalanobis,
    route,
    texture_descriptor,
    top_k_mean,
)
from cellinspect.inference.manifest import load_manifest
from cellinspect.inference.patchcore import (
    PATCHES_OUTPUT,
    PatchCoreParams,
    build_patch_feature_graph,
    greedy_coreset,
    is_identity,
    position_stats,
    random_projection,
)
from cellinspect.training.anomaly_params import AnomalyFitParams
from cellinspect.training.bank_augment import AugmentedPatches
from cellinspect.training.dataset import no_stage
from cellinspect.training.fit_anomaly import _session, run_batched
from cellinspect.training.fit_gaussian import fit_gaussian

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
BOOL = npt.NDArray[np.bool_]

SIZES: tuple[int | None, ...] = (10, 25, 50, 100, 200, None)  # None: the whole pool
DRAWS = 3
BACKBONE = Path("models/efficientnet-lite0/1/model.onnx")
Log = Callable[[str], None]


def _print(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class FeatureSet:
    """One data set's patch features, extracted once: the fitting pool, its augmented views
    (of the pool images any draw of at most `augment_upto` parts uses) and the test set."""

    name: str
    pool: F32  # (N, P, C)
    test: F32  # (T, P, C)
    defective: BOOL  # (T,)
    views: AugmentedPatches | None = None  # sources index `pool`
    note: dict[str, Any] = field(default_factory=dict)
    augments: tuple[str, ...] = ("flips", "shifts")  # what `views` were made of

    def views_for(self, augment: Sequence[str]) -> AugmentedPatches | None:
        """Only the views a lever's `augment` makes (the cache may hold more kinds)."""
        return None if self.views is None else select_views(self.views, self.augments, augment)


@dataclass(frozen=True)
class Lever:
    """One way of fitting: a detector, its parameters, and the augmentation of the fit set."""

    name: str
    params: AnomalyFitParams
    augment_upto: int | None = None  # augmented fits only up to this size (None: no limit)
    keep_groups: bool = False  # the base's texture groups at every size (not 1 below 100)

    @property
    def detector(self) -> str:
        return self.params.detector


def draw_order(pool: int, draw: int, seed: int) -> I64:
    """The permutation of the pool one draw takes its prefixes from."""
    return np.random.default_rng([seed, draw]).permutation(pool).astype(np.int64)


def select_views(
    views: AugmentedPatches, made: Sequence[str], wanted: Sequence[str]
) -> AugmentedPatches:
    """The rows of `views` (made by `bench_augment_features` with `made`: each image's views in
    turn, in `bench_view_names` order) that `wanted` would have made."""
    names = bench_view_names(made)
    missing = set(bench_view_names(wanted)) - set(names)
    if missing:
        raise ModelError(f"views {sorted(missing)} were not extracted (made: {list(made)})")
    keep = np.isin(
        np.arange(len(views.source)) % len(names),
        np.flatnonzero([n in bench_view_names(wanted) for n in names]),
    )
    return AugmentedPatches(views.patches[keep], views.source[keep])


def subset_views(views: AugmentedPatches, idx: I64) -> AugmentedPatches:
    """The views of pool images `idx`, their sources renumbered to positions in `idx`."""
    where = {int(i): k for k, i in enumerate(idx)}
    keep = np.array([int(s) in where for s in views.source], dtype=bool)
    source = np.array([where[int(s)] for s in views.source[keep]], dtype=np.int64)
    return AugmentedPatches(views.patches[keep], source)


def fit_params_for(base: AnomalyFitParams, n: int, keep_groups: bool = False) -> AnomalyFitParams:
    """The base parameters, scaled down to what `n` good parts allow (as a user would have to):
    one texture group below 100 parts (unless `keep_groups`), no position z-scores below 20
    held-out parts."""
    held = n if base.cross_fitted else max(1, round(n * base.holdout_fraction))
    groups = base.groups if n >= 100 or keep_groups else 1
    return replace(base, groups=groups, position_norm=base.position_norm and held >= 20)


def _nn_distance(x: F32, bank: F32, batch: int = 16) -> F32:
    """(N, P, D) projected patches -> (N, P) distance to the nearest bank row, as the graph."""
    bank_sq = np.einsum("ij,ij->i", bank, bank)
    out = np.empty(x.shape[:2], np.float32)
    for s in range(0, len(x), batch):
        chunk = x[s : s + batch]
        partial = chunk @ (-2.0 * bank.T) + bank_sq
        d2 = partial.min(axis=2) + np.einsum("npd,npd->np", chunk, chunk)
        out[s : s + batch] = np.sqrt(np.maximum(d2, 0.0))
    return out


def fit_patchcore(
    patches: F32, params: AnomalyFitParams, views: AugmentedPatches | None
) -> PatchCoreParams:
    """fit_anomaly's one-bag PatchCore fit, in numpy: split, project, coreset, z-scores, scale."""
    n = len(patches)
    n_hold = max(1, round(n * params.holdout_fraction))
    order = np.random.default_rng(params.seed).permutation(n)
    hold_idx, bank_idx = order[:n_hold], order[n_hold:]
    channels = patches.shape[2]
    fit_set = patches[bank_idx] if views is None else views.with_sources(patches, bank_idx)
    projection = random_projection(channels, params.projection_dim, params.seed)
    projected = np.ascontiguousarray(fit_set.reshape(-1, channels) @ projection, np.float32)
    bank = projected[greedy_coreset(projected, params.coreset_size, params.seed)]
    maps = _nn_distance(np.asarray(patches[hold_idx] @ projection, np.float32), bank)
    mean: F32 | None = None
    std: F32 | None = None
    if params.position_norm:
        mean, std = position_stats(maps)
        maps = (maps - mean) / std
    scale = float(np.quantile(maps.max(axis=1), params.scale_quantile))
    return PatchCoreParams(projection, bank, scale, mean, std)


def score_patchcore(fitted: PatchCoreParams, patches: F32) -> F32:
    """Image scores as the PatchCore graph gives them."""
    maps = _nn_distance(np.asarray(patches @ fitted.projection, np.float32), fitted.bank)
    if fitted.position_mean is not None and fitted.position_std is not None:
        maps = (maps - fitted.position_mean) / fitted.position_std
    scores: F32 = (maps.max(axis=1) / fitted.score_scale).astype(np.float32)
    return scores


def score_gaussian(fitted: GaussianParams, patches: F32) -> F32:
    """Image scores as the gaussian graph gives them: routed, Mahalanobis, z-scored, top-k."""
    x = patches if is_identity(fitted.projection) else patches @ fitted.projection
    x = np.asarray(x, np.float32)
    groups = (
        np.zeros(len(patches), np.int64)
        if fitted.router is None
        else route(fitted.router, texture_descriptor(patches))
    )
    scores = np.zeros(len(patches), np.float32)
    for g, group in enumerate(fitted.groups):
        sel = np.flatnonzero(groups == g)
        if not len(sel):
            continue
        maps = mahalanobis(x[sel], group.mean, group.whiten)
        if group.position_mean is not None and group.position_std is not None:
            maps = (maps - group.position_mean) / group.position_std
        scores[sel] = top_k_mean(maps, fitted.top_k) / group.scale
    return scores


def fit_and_score(
    pool: F32, views: AugmentedPatches | None, params: AnomalyFitParams, test: F32
) -> F32:
    """Fit one detector on `pool` (and `views` of it) and score `test`."""
    if params.detector == "gaussian":
        n_hold = max(1, round(len(pool) * params.holdout_fraction))
        fit = fit_gaussian(pool, n_hold, params, no_stage, views)
        return score_gaussian(fit.params, test)
    return score_patchcore(fit_patchcore(pool, params, views), test)


@dataclass(frozen=True)
class Point:
    """One (lever, size) point of the curve: an AUROC per draw, or why it could not be fitted."""

    lever: str
    detector: str
    size: int
    aurocs: tuple[float, ...]
    fit_seconds: float
    refused: str | None = None

    def row(self) -> dict[str, Any]:
        a = np.array(self.aurocs) if self.aurocs else None
        return {
            "lever": self.lever,
            "detector": self.detector,
            "good_parts": self.size,
            "aurocs": list(self.aurocs),
            "median": None if a is None else float(np.median(a)),
            "min": None if a is None else float(a.min()),
            "max": None if a is None else float(a.max()),
            "fit_seconds_median": self.fit_seconds,
            "refused": self.refused,
        }


def curve(
    features: FeatureSet,
    levers: Sequence[Lever],
    sizes: Sequence[int | None] = SIZES,
    draws: int = DRAWS,
    seed: int = 0,
    log: Log = _print,
) -> list[Point]:
    """AUROC against the number of good parts for each lever: `draws` seeded draws per size.

    A size the pool cannot give is left out; a size the detector refuses (too few parts for
    its statistics) is a point with the refusal, not a silent gap."""
    n_pool = len(features.pool)
    if features.defective.all() or not features.defective.any():
        raise ModelError(f"{features.name}: the test set needs good and defective parts")
    points = []
    for lever in levers:
        for size in sizes:
            n = n_pool if size is None else size
            if n > n_pool or (size is not None and size == n_pool and None in sizes):
                continue
            augmented = lever.params.augment
            if augmented and lever.augment_upto is not None and n > lever.augment_upto:
                continue
            params = fit_params_for(lever.params, n, lever.keep_groups)
            aurocs: list[float] = []
            seconds: list[float] = []
            refused = None
            for d in range(draws):
                idx = np.sort(draw_order(n_pool, d, seed)[:n])
                views = None
                if augmented:
                    chosen = features.views_for(lever.params.augment)
                    if chosen is None:
                        raise ModelError(f"{features.name}: no augmented views were extracted")
                    views = subset_views(chosen, idx)
                    if len(np.unique(views.source)) != n:
                        raise ModelError(f"{features.name}: views missing for a {n}-part draw")
                start = time.perf_counter()
                try:
                    scores = fit_and_score(
                        features.pool[idx], views, replace(params, seed=seed + d), features.test
                    )
                except ModelError as err:
                    refused = str(err)
                    break
                seconds.append(time.perf_counter() - start)
                aurocs.append(float(roc_auc_score(features.defective, scores)))
            point = Point(
                lever.name,
                lever.detector,
                n,
                tuple(aurocs),
                float(np.median(seconds)) if seconds else 0.0,
                refused,
            )
            points.append(point)
            row = point.row()
            what = (
                f"refused: {refused[:90]}"
                if refused
                else f"AUROC median {row['median']:.4f} ({row['min']:.4f}-{row['max']:.4f}), "
                f"fit {point.fit_seconds:.1f} s"
            )
            log(f"[few-shot] {features.name} {lever.name} n={n}: {what}")
    return points


# ---- data sets -------------------------------------------------------------------------------


class Extractor:
    """Patch features through the fit's own graph (backbone + feature head), in batches."""

    def __init__(self, backbone: Path, tmp: Path, batch_size: int = 16) -> None:
        self.manifest = load_manifest(backbone)
        self.session = _session(build_patch_feature_graph(backbone, tmp / "features.onnx"))
        self.batch_size = batch_size

    def __call__(self, images: Sequence[ImageU8]) -> F32:
        return run_batched(self.session, PATCHES_OUTPUT, images, self.manifest, self.batch_size)


def _views_for(
    name: str,
    images: Sequence[ImageU8],
    upto: int,
    draws: int,
    seed: int,
    augment: tuple[str, ...],
    extract: Extractor,
    log: Log,
) -> AugmentedPatches | None:
    """Views of the pool images that draws of at most `upto` parts use (the rest never are)."""
    if not augment:
        return None
    upto = min(upto, len(images))
    used = np.unique(
        np.concatenate([draw_order(len(images), d, seed)[:upto] for d in range(draws)])
    )
    log(f"[few-shot] {name}: {len(used)} pool images get {augment} views")
    views = bench_augment_features(
        [images[i] for i in used],
        augment,
        extract,
        progress=lambda d, t: log(f"[few-shot] {name} views {d}/{t}") if d % 64 == 0 else None,
    )
    assert views is not None
    return AugmentedPatches(views.patches, used[views.source].astype(np.int64))


def _extract_logged(
    name: str, what: str, images: Sequence[ImageU8], extract: Extractor, log: Log
) -> F32:
    start = time.perf_counter()
    out = extract(images)
    log(f"[few-shot] {name}: {what} features {out.shape} in {time.perf_counter() - start:.0f} s")
    return out


def elpv_features(
    extract: Extractor,
    test_per_class: int,
    augment: tuple[str, ...],
    upto: int,
    draws: int,
    seed: int,
    log: Log = _print,
) -> FeatureSet:
    """elpv: pool = the functional training cells of the fixed split; test = a seeded subsample
    of the test split, `test_per_class` defective (p >= 0.5) and as many others (p < 0.5)."""
    from benchmarks.elpv.data import data_root, load_items, read_images, stratified_split
    from cellinspect.config import StretchOp
    from cellinspect.training.dataset import RoiReader

    root = data_root()
    split = stratified_split(load_items(root))
    reader = RoiReader.whole_frame((StretchOp(),), "few-shot elpv")
    pool_items = [i for i in split.train if i.functional]
    rng = np.random.default_rng(seed)
    bad = [i for i in split.test if i.defective]
    rest = [i for i in split.test if not i.defective]
    take_bad = sorted(rng.choice(len(bad), min(test_per_class, len(bad)), replace=False))
    take_rest = sorted(rng.choice(len(rest), min(test_per_class, len(rest)), replace=False))
    test_items = [bad[i] for i in take_bad] + [rest[i] for i in take_rest]
    log(f"[few-shot] elpv: pool {len(pool_items)} functional cells, test {len(test_items)}")
    pool_images = [reader(img) for img in read_images(root, pool_items)]
    test_images = [reader(img) for img in read_images(root, test_items)]
    pool = _extract_logged("elpv", "pool", pool_images, extract, log)
    test = _extract_logged("elpv", "test", test_images, extract, log)
    views = _views_for("elpv", pool_images, upto, draws, seed, augment, extract, log)
    return FeatureSet(
        "elpv",
        pool,
        test,
        np.array([i.defective for i in test_items]),
        views,
        {
            "pool": "functional cells (p = 0) of the training split (split seed 0, 75/25)",
            "test": f"{len(take_bad)} defective (p >= 0.5) and {len(take_rest)} other cells "
            f"(p < 0.5) drawn (seed {seed}) from the test split",
            "preprocess": "grey-level stretch 1-99 %, as eval-elpv",
        },
    )


def flange_features(
    extract: Extractor,
    pool_count: int,
    test_count: int,
    augment: tuple[str, ...],
    upto: int,
    draws: int,
    seed: int,
    log: Log = _print,
) -> FeatureSet:
    """Flanges: pool = `pool_count` good parts rendered with seed 101; test = the shipped
    sample_images plus `test_count` parts (half defective) rendered with seed 202, cut by
    recipes/flange.yaml as the station cuts them."""
    from cellinspect.config import load_recipe
    from cellinspect.datagen.flange import plan_parts, render_part
    from cellinspect.training.dataset import RoiReader, load_dataset

    recipe = load_recipe(Path("recipes/flange.yaml"))
    reader = RoiReader(recipe, recipe.rois[0].name)
    log(f"[few-shot] flange: rendering {pool_count} good and {test_count} test parts")
    pool_images = [reader(render_part(s)) for s in plan_parts(pool_count, 101, 0.0)]
    test_specs = plan_parts(test_count, 202, 0.5)
    shipped = load_dataset(Path("sample_images"))
    test_images = [reader(render_part(s)) for s in test_specs]
    test_images += [reader.read(i.path) for i in shipped.items]
    defective = [s.label != "good" for s in test_specs] + [i.label != "good" for i in shipped.items]
    pool = _extract_logged("flange", "pool", pool_images, extract, log)
    test = _extract_logged("flange", "test", test_images, extract, log)
    views = _views_for("flange", pool_images, upto, draws, seed, augment, extract, log)
    return FeatureSet(
        "flange",
        pool,
        test,
        np.array(defective),
        views,
        {
            "pool": f"{pool_count} good parts rendered with seed 101",
            "test": f"{len(shipped.items)} shipped sample_images and {test_count} parts "
            f"rendered with seed 202 (defect rate 0.5): {int(np.sum(defective))} defective "
            f"of {len(defective)}",
            "preprocess": "recipes/flange.yaml (its preprocessing and ROI)",
        },
    )


# ---- levers ----------------------------------------------------------------------------------


def levers_for(
    data: str, detectors: Sequence[str], augment_upto: int, gaussian_dim: int | None = None
) -> list[Lever]:
    """The baseline of each detector and its levers, with each data set's base parameters:
    elpv as eval-elpv fits it (one bag for patchcore), flanges as the CLI defaults."""
    if data == "elpv":
        patch = AnomalyFitParams(coreset_size=2000, projection_dim=96, position_norm=True)
        gauss = AnomalyFitParams(
            detector="gaussian", projection_dim=None, position_norm=True, groups=2, top_k=20
        )
    else:
        patch = AnomalyFitParams(coreset_size=2000, projection_dim=96)
        gauss = AnomalyFitParams(detector="gaussian", projection_dim=96)
    if gaussian_dim is not None:  # 0: all channels
        gauss = replace(gauss, projection_dim=gaussian_dim or None)
    out: list[Lever] = []
    if "patchcore" in detectors:
        out += [
            Lever("patchcore", patch),
            # a bigger bank makes the coreset search slower in proportion: bounded sizes
            Lever("patchcore +flips", replace(patch, augment=("flips",)), min(augment_upto, 50)),
            Lever(
                "patchcore +flips+shifts",
                replace(patch, augment=("flips", "shifts")),
                min(augment_upto, 50),
            ),
        ]
    if "gaussian" in detectors:
        out += [
            Lever("gaussian", gauss),
            Lever("gaussian +flips", replace(gauss, augment=("flips",)), augment_upto),
            Lever(
                "gaussian +flips+shifts",
                replace(gauss, augment=("flips", "shifts")),
                augment_upto,
            ),
            Lever("gaussian shrinkage 0.5", replace(gauss, shrinkage=0.5)),
            Lever("gaussian 1 group", replace(gauss, groups=1)),
            # weights estimated from each fit's parts: strong for few, weak for many
            Lever("gaussian oas", replace(gauss, shrinkage_rule="oas")),
            Lever("gaussian ledoit-wolf", replace(gauss, shrinkage_rule="ledoit-wolf")),
            Lever("gaussian +rotations", replace(gauss, augment=("rotations",)), augment_upto),
            Lever(
                "gaussian +flips+rotations",
                replace(gauss, augment=("flips", "rotations")),
                augment_upto,
            ),
            Lever(
                "gaussian oas +flips+shifts",
                replace(gauss, augment=("flips", "shifts"), shrinkage_rule="oas"),
                augment_upto,
            ),
            Lever(
                "gaussian oas +flips+rotations",
                replace(gauss, augment=("flips", "rotations"), shrinkage_rule="oas"),
                augment_upto,
            ),
        ]
        # two texture groups (elpv: mono and poly cells) already at 25-50 parts: each group's
        # folds need 20 images to fit on, which flips make possible
        out += [
            Lever(
                f"gaussian 2 groups +{'+'.join(views)}{' oas' if rule == 'oas' else ''}",
                replace(gauss, groups=2, augment=views, shrinkage_rule=rule),
                augment_upto,
                keep_groups=True,
            )
            for views in (("flips",), ("flips", "rotations"), ("flips", "shifts"))
            for rule in ("fixed", "oas")
        ]
        out += [
            Lever(
                f"gaussian 2 groups +flips oas {dim}-d",
                replace(
                    gauss,
                    groups=2,
                    augment=("flips",),
                    shrinkage_rule="oas",
                    projection_dim=dim,
                ),
                augment_upto,
                keep_groups=True,
            )
            for dim in (48, 64)
        ]
        # fewer dimensions: fewer parameters to estimate from few parts
        out += [
            Lever(f"gaussian {dim}-d", replace(gauss, projection_dim=dim)) for dim in (32, 48, 64)
        ]
    return out


def table(points: Sequence[Point]) -> str:
    """A markdown table: one row per lever, one column per size (median and range)."""
    sizes = sorted({p.size for p in points})
    levers = list(dict.fromkeys(p.lever for p in points))
    lines = [
        "| lever | " + " | ".join(str(s) for s in sizes) + " |",
        "| --- |" + " --- |" * len(sizes),
    ]
    for lever in levers:
        cells = []
        for s in sizes:
            hit = [p for p in points if p.lever == lever and p.size == s]
            if not hit:
                cells.append("-")
            elif hit[0].refused:
                cells.append("refused")
            else:
                r = hit[0].row()
                cells.append(f"{r['median']:.3f} ({r['min']:.3f}-{r['max']:.3f})")
        lines.append(f"| {lever} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cached(cache: Path | None, key: str, make: Callable[[], FeatureSet]) -> FeatureSet:
    """Features from `cache/key.npz` when there, else made and stored there (a rerun of other
    levers on the same images skips the backbone)."""
    if cache is None:
        return make()
    path = cache / f"{key}.npz"
    if path.exists():
        z = np.load(path, allow_pickle=False)
        views = AugmentedPatches(z["views"], z["sources"]) if "views" in z else None
        note = json.loads(str(z["note"]))
        return FeatureSet(note.pop("name"), z["pool"], z["test"], z["defective"], views, note)
    features = make()
    cache.mkdir(parents=True, exist_ok=True)
    extra: dict[str, npt.NDArray[Any]] = (
        {"views": features.views.patches, "sources": features.views.source}
        if features.views is not None
        else {}
    )
    note = json.dumps({"name": features.name, **features.note})
    arrays: dict[str, npt.NDArray[Any]] = {
        "pool": features.pool,
        "test": features.test,
        "defective": features.defective,
        "note": np.array(note),
        **extra,
    }
    np.savez(path, allow_pickle=False, **arrays)
    return features


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m benchmarks.few_shot", description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("runs/few-shot"))
    ap.add_argument("--data", default="elpv,flange", help="elpv, flange or both")
    ap.add_argument("--detectors", default="patchcore,gaussian")
    ap.add_argument("--sizes", default="10,25,50,100,200,all")
    ap.add_argument("--draws", type=int, default=DRAWS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backbone", type=Path, default=BACKBONE)
    ap.add_argument("--no-augment", action="store_true", help="baselines and shrinkage only")
    ap.add_argument(
        "--augment-views",
        default="flips,shifts",
        help="the augments whose views are extracted (rotations: square parts only)",
    )
    ap.add_argument("--levers", default=None, help="comma-separated lever names (default all)")
    ap.add_argument(
        "--augment-upto", type=int, default=200, help="largest size fitted with augmentation"
    )
    ap.add_argument(
        "--fit-augmented-upto",
        type=int,
        default=None,
        help="largest size an augmented lever is fitted at (default --augment-upto); views "
        "are still extracted up to --augment-upto, so the feature cache stays the same",
    )
    ap.add_argument("--elpv-test-per-class", type=int, default=150)
    ap.add_argument("--flange-pool", type=int, default=300)
    ap.add_argument("--flange-test", type=int, default=120)
    ap.add_argument("--cache", type=Path, default=None, help="keep extracted features here")
    ap.add_argument("--gaussian-dim", type=int, default=None, help="gaussian projection (0: none)")
    args = ap.parse_args(argv)
    sizes: list[int | None] = [None if s == "all" else int(s) for s in args.sizes.split(",")]
    detectors = args.detectors.split(",")
    augment: tuple[str, ...] = () if args.no_augment else parse_views(args.augment_views)
    largest = None if None in sizes else max(s for s in sizes if s is not None)
    upto = args.augment_upto
    if largest is not None and args.fit_augmented_upto is None:
        upto = min(upto, largest)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"backbone": str(args.backbone), "draws": args.draws, "sets": {}}
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="few-shot-") as tmp:
            extract = Extractor(args.backbone, Path(tmp))
            for data in args.data.split(","):
                key = f"{data}-{args.backbone.parent.parent.name}-{'-'.join(augment)}-{upto}"
                if data == "elpv":
                    key += f"-{args.elpv_test_per_class}-{args.draws}-{args.seed}"
                    features = _cached(
                        args.cache,
                        key,
                        lambda: elpv_features(
                            extract, args.elpv_test_per_class, augment, upto, args.draws, args.seed
                        ),
                    )
                elif data == "flange":
                    key += f"-{args.flange_pool}-{args.flange_test}-{args.draws}-{args.seed}"
                    features = _cached(
                        args.cache,
                        key,
                        lambda: flange_features(
                            extract,
                            args.flange_pool,
                            args.flange_test,
                            augment,
                            upto,
                            args.draws,
                            args.seed,
                        ),
                    )
                else:
                    raise ModelError(f"--data: unknown {data!r}; choose elpv or flange")
                features = replace(features, augments=augment)
                levers = [
                    lever
                    for lever in levers_for(
                        data, detectors, args.fit_augmented_upto or upto, args.gaussian_dim
                    )
                    if set(lever.params.augment) <= set(augment)
                    and (args.levers is None or lever.name in args.levers.split(","))
                ]
                points = curve(features, levers, sizes, args.draws, args.seed)
                report["sets"][data] = {
                    **features.note,
                    "pool_size": len(features.pool),
                    "test_size": len(features.test),
                    "points": [p.row() for p in points],
                }
                md = table(points)
                print(f"\n## {data}\n\n{md}\n", flush=True)
                (args.out / f"{data}.md").write_text(md + "\n", encoding="utf-8")
                (args.out / "report.json").write_text(
                    json.dumps(report, indent=2) + "\n", encoding="utf-8"
                )
    except CellInspectError as err:
        print(f"few-shot: {err}", file=sys.stderr)
        return 1
    report["seconds"] = time.perf_counter() - started
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    _print(f"[few-shot] done in {report['seconds']:.0f} s; wrote {args.out / 'report.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
