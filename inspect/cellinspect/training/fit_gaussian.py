"""Fit per-position Gaussians (optionally per texture group) on good parts' patch features.

Called by `fit_anomaly` once the features are extracted; everything here is numpy, so the
held-out scores are computed directly instead of by a second ONNX pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cellinspect.errors import ModelError
from cellinspect.inference.gaussian import (
    MIN_GROUP_IMAGES,
    GaussianGroup,
    GaussianParams,
    GroupRouter,
    fit_position_gaussians,
    fit_router,
    mahalanobis,
    route,
    texture_descriptor,
    top_k_mean,
)
from cellinspect.inference.patchcore import (
    MIN_POSITION_IMAGES,
    is_identity,
    position_stats,
    random_projection,
)
from cellinspect.training.anomaly_params import AnomalyFitParams
from cellinspect.training.bank_augment import AugmentedPatches
from cellinspect.training.dataset import Stage
from cellinspect.training.shrinkage import estimate_shrinkage
from cellinspect.training.split import grouped_holdout, source_rank

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class GaussianFit:
    params: GaussianParams
    bank_idx: I64
    hold_idx: I64
    holdout_scores: F32  # held-out good image scores, each on its group's scale
    group_sizes: tuple[tuple[int, int], ...]  # (bank, held-out) images per group
    shrinkage: tuple[float, ...] = ()  # the covariance weight each group's final fit used


def shrinkage_for(fit_set: F32, shrinkage: float, rule: str) -> float:
    """The weight one fit shrinks its covariances by: `shrinkage` for the "fixed" rule, else
    estimated from `fit_set` itself (shrinkage.py)."""
    return shrinkage if rule == "fixed" else estimate_shrinkage(fit_set, rule)


def _groups(
    patches: F32, bank_idx: I64, hold_idx: I64, params: AnomalyFitParams
) -> tuple[GroupRouter | None, I64, I64]:
    """The router (None for one group) and each bank / held-out image's group.

    Cross-fitted, the held-out parts are the bank parts in the same order: no second routing.
    """
    same = params.cross_fitted
    if params.groups == 1:
        bank_groups = np.zeros(len(bank_idx), np.int64)
        return None, bank_groups, bank_groups if same else np.zeros(len(hold_idx), np.int64)
    router, bank_groups = fit_router(
        texture_descriptor(patches[bank_idx]), params.groups, params.seed
    )
    if same:
        return router, bank_groups, bank_groups
    return router, bank_groups, route(router, texture_descriptor(patches[hold_idx]))


def cross_fit_folds(holdout_fraction: float) -> int:
    """Folds of one holdout fraction each, so every fold model fits as many parts as a split."""
    return max(2, round(1.0 / holdout_fraction))


def _fit_set(projected: F32, members: I64, aug: AugmentedPatches | None) -> F32:
    """The features a fit on `members` sees: theirs, and their augmented views (if any)."""
    return projected[members] if aug is None else aug.with_sources(projected, members)


def cross_fit_maps(
    projected: F32,
    members: I64,
    folds: int,
    shrinkage: float,
    aug: AugmentedPatches | None = None,
    rule: str = "fixed",
    sources: I64 | None = None,
) -> F32:
    """Distance maps of every member, each under Gaussians fitted without its own fold.

    Members are dealt to folds in turn (the caller has shuffled them), so folds differ in size
    by one at most; `folds == len(members)` is leave-one-out. Augmented views (projected like
    `projected`) go with their source: a fold's fit never sees a view of a part it scores.
    An estimated `rule` sets each fold's weight from that fold's own fit set. `sources`
    (per patch row, its image: tiles of one image share it) deals images, not tiles, so a
    fold never fits a tile of an image it scores.
    """
    rank = np.arange(len(members)) if sources is None else source_rank(sources[members])
    images = int(rank.max()) + 1 if len(rank) else 0
    if not 2 <= folds <= images:
        raise ModelError(f"cross-fitting needs 2..{images} folds (one image each), got {folds}")
    fold_of = rank % folds
    maps = np.empty((len(members), projected.shape[1]), np.float32)
    for fold in range(folds):
        fit_set = _fit_set(projected, members[fold_of != fold], aug)
        mean, whiten = fit_position_gaussians(fit_set, shrinkage_for(fit_set, shrinkage, rule))
        maps[fold_of == fold] = mahalanobis(projected[members[fold_of == fold]], mean, whiten)
    return maps


def _check_fold_size(
    members: int, folds: int, params: AnomalyFitParams, group: int, views: int = 1
) -> None:
    # the smallest fit: all but the largest fold, each image with its `views`
    fold_fit = (members - -(-members // folds)) * views
    if fold_fit < MIN_GROUP_IMAGES:
        raise ModelError(
            f"texture group {group} of {params.groups}: cross-fitting over {folds} folds "
            f"leaves {fold_fit} good image(s) to fit a fold on; at least {MIN_GROUP_IMAGES} "
            "are needed. Add good images, use fewer groups, or turn cross-fitting off."
        )


def fit_gaussian(
    patches: F32,
    n_hold: int,
    params: AnomalyFitParams,
    stage: Stage,
    aug: AugmentedPatches | None = None,
    sources: I64 | None = None,
) -> GaussianFit:
    """Fit each group's Gaussians and set its z-scores and scale on held-out good parts.

    With `cross_fit` every good part is fitted by the final Gaussians and also held out once,
    by the model of the folds without it, instead of `n_hold` parts serving only one role.
    `aug` (views of the images of `patches`, bank_augment.py) joins the fits of its sources
    only; held-out scores are of original images alone. A view counts as an image towards
    the minimum a group needs to fit on. `sources` (per row, its image; tiles share one)
    keeps each image's tiles on one side of every split; `n_hold` counts images.
    """
    if params.groups < 1:
        raise ModelError(f"groups must be >= 1, got {params.groups}")
    if sources is None:
        sources = np.arange(len(patches), dtype=np.int64)
    hold_idx, bank_idx = grouped_holdout(sources, n_hold, params.seed)
    if params.cross_fitted:
        hold_idx = bank_idx = np.concatenate([hold_idx, bank_idx])
    folds = cross_fit_folds(params.holdout_fraction)
    projection = random_projection(patches.shape[2], params.projection_dim, params.seed)
    projected = patches if is_identity(projection) else np.asarray(patches @ projection, np.float32)
    if aug is not None and not is_identity(projection):
        aug = aug.project(projection)
    views = 1 + (aug.per_image() if aug is not None else 0)
    router, bank_groups, hold_groups = _groups(patches, bank_idx, hold_idx, params)
    groups: list[GaussianGroup] = []
    hold_scores = np.zeros(len(hold_idx), np.float32)
    sizes = []
    weights: list[float] = []
    for g in range(params.groups):
        bank_g, hold_g = bank_idx[bank_groups == g], np.flatnonzero(hold_groups == g)
        sizes.append((len(bank_g), len(hold_g)))
        if len(bank_g) * views < MIN_GROUP_IMAGES:
            raise ModelError(
                f"texture group {g} of {params.groups} holds {len(bank_g)} good image(s) to "
                f"fit on ({views} view(s) each); at least {MIN_GROUP_IMAGES} are needed. Add "
                "good images, augment, or use fewer groups."
            )
        fit_set = _fit_set(projected, bank_g, aug)
        weights.append(shrinkage_for(fit_set, params.shrinkage, params.shrinkage_rule))
        mean, whiten = fit_position_gaussians(fit_set, weights[-1])
        del fit_set
        if params.cross_fitted:
            _check_fold_size(len(bank_g), folds, params, g, views)
            maps = cross_fit_maps(
                projected, bank_g, folds, params.shrinkage, aug, params.shrinkage_rule, sources
            )
        else:
            maps = mahalanobis(projected[hold_idx[hold_g]], mean, whiten)
        pos_mean: F32 | None = None
        pos_std: F32 | None = None
        if params.position_norm:
            if len(hold_g) < MIN_POSITION_IMAGES:
                raise ModelError(
                    f"texture group {g} of {params.groups} has {len(hold_g)} held-out good "
                    f"image(s); position normalisation needs {MIN_POSITION_IMAGES}. Add good "
                    "images, use fewer groups, or turn it off."
                )
            pos_mean, pos_std = position_stats(maps)
            maps = (maps - pos_mean) / pos_std
        if len(hold_g) == 0:
            raise ModelError(
                f"texture group {g} of {params.groups} has no held-out good image to set its "
                "score scale by. Add good images or use fewer groups."
            )
        raw = top_k_mean(maps, params.top_k)
        scale = float(np.quantile(raw, params.scale_quantile))
        if not np.isfinite(scale) or scale <= 0:
            raise ModelError(
                f"texture group {g}: held-out good scores give an unusable scale {scale}"
            )
        hold_scores[hold_g] = raw / scale
        groups.append(GaussianGroup(mean, whiten, pos_mean, pos_std, scale))
        stage("gaussians", g + 1, params.groups)
    fitted = GaussianParams(
        projection=projection, groups=tuple(groups), router=router, top_k=params.top_k
    )
    return GaussianFit(fitted, bank_idx, hold_idx, hold_scores, tuple(sizes), tuple(weights))
