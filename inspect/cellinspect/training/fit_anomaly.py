"""Teach an anomaly detector from good parts only (no torch): the `fit-anomaly` command.

Good images are cut the way the station cuts them, run through the backbone's feature head,
and their patches reduced to a greedy coreset bank (PatchCore) or to a Gaussian per patch
position (`detector="gaussian"`, PaDiM-style, optionally one set per texture group). A fifth
of the good images is held back to put the score on a scale where 1.0 is the worst held-out
good part, so thresholds read the same for every station. Those held-out parts shape the score,
so they count as fitted: the manifest records every image given here (fitted_images.py), and
thresholds are calibrated on other images (fit_calibration.py). The result is one ONNX graph
plus its manifest. `detector="auto"` fits the candidates on the same features first and keeps
the one that best finds synthetic anomalies on held-back parts (detector_choice.py).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from cellinspect.entities import ImageU8, Task
from cellinspect.errors import ModelError
from cellinspect.inference.gaussian import MIN_GROUP_IMAGES, build_gaussian_graph
from cellinspect.inference.manifest import (
    Manifest,
    OutputMeaning,
    OutputSpec,
    ResizeMode,
    Thresholds,
    TileSpec,
    load_manifest,
    write_manifest,
)
from cellinspect.inference.patchcore import (
    MAP_OUTPUT,
    MIN_POSITION_IMAGES,
    PATCHES_OUTPUT,
    SCORE_OUTPUT,
    PatchCoreParams,
    build_patch_feature_graph,
    build_patchcore_graph,
    greedy_coreset,
    position_stats,
    random_projection,
)
from cellinspect.inference.preprocess_contract import preprocess_record
from cellinspect.inference.tiling import fit_units, fitted_input
from cellinspect.preprocess.model_input import prepare_batch
from cellinspect.training.anomaly_params import AUTO, AnomalyFitParams
from cellinspect.training.bank_augment import AugmentedPatches, augment_features, view_names
from cellinspect.training.dataset import (
    Dataset,
    LabelledImage,
    RoiReader,
    Stage,
    no_stage,
    read_images,
)
from cellinspect.training.detector_choice import DetectorChoice, choose_detector
from cellinspect.training.fit_gaussian import cross_fit_folds, fit_gaussian
from cellinspect.training.fitted_images import RECORD_KEY, image_id, image_record
from cellinspect.training.split import grouped_holdout, source_count

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class AnomalyFitReport:
    model_path: Path
    images_used: int
    bank_images: int
    holdout_images: int
    patches: int
    bank_size: int
    score_scale: float
    holdout_scores: tuple[float, ...]
    skipped: tuple[tuple[str, str], ...]
    summary: str  # what was fitted, in words


def backbone_provenance(backbone: Manifest) -> dict[str, str]:
    """How a model built on a backbone records which backbone it was."""
    return {"name": backbone.name, "version": backbone.version, "sha256": backbone.sha256}


def _session(path: Path, threads: int = 0) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def run_batched(
    session: ort.InferenceSession,
    output: str,
    images: Sequence[ImageU8],
    manifest: Manifest,
    batch_size: int,
    progress: Callable[[int, int], None] | None = None,
) -> F32:
    """Run one output over images in batches; concatenated along the batch axis."""
    chunks = []
    input_name = session.get_inputs()[0].name
    for start in range(0, len(images), batch_size):
        batch = prepare_batch(images[start : start + batch_size], manifest.input)
        chunks.append(np.asarray(session.run([output], {input_name: batch})[0], dtype=np.float32))
        if progress is not None:
            progress(min(start + batch_size, len(images)), len(images))
    return np.concatenate(chunks, axis=0)


def _patches_of(
    session: ort.InferenceSession, manifest: Manifest, batch_size: int, images: Sequence[ImageU8]
) -> F32:
    """Patch features of images (augmented views), as the fit extracts them."""
    return run_batched(session, PATCHES_OUTPUT, images, manifest, batch_size)


@dataclass(frozen=True)
class _Bag:
    """One draw of bank and held-out parts, fitted: what the graph needs and what it held out."""

    params: PatchCoreParams
    bank_idx: npt.NDArray[np.int64]
    hold_idx: npt.NDArray[np.int64]
    raw_scores: F32  # held-out good image scores before scaling


def _fit_bag(
    patches: F32,
    images: Sequence[ImageU8],
    seed: int,
    n_hold: int,
    params: AnomalyFitParams,
    backbone_path: Path,
    backbone: Manifest,
    tmp: str,
    stage: Stage,
    aug: AugmentedPatches | None = None,
    sources: npt.NDArray[np.int64] | None = None,
) -> _Bag:
    """Split (`n_hold` whole images: a frame's tiles stay together), project, pick the
    coreset, and scale (and z-score) on the held-out parts."""
    if sources is None:
        sources = np.arange(len(images), dtype=np.int64)
    hold_idx, bank_idx = grouped_holdout(sources, n_hold, seed)
    channels = patches.shape[2]
    # augmented views of the bank images only: held-out parts and their views stay out
    flat = (patches[bank_idx] if aug is None else aug.with_sources(patches, bank_idx)).reshape(
        -1, channels
    )
    projection = random_projection(channels, params.projection_dim, seed)
    projected = np.ascontiguousarray(flat @ projection, dtype=np.float32)
    picked = greedy_coreset(
        projected, params.coreset_size, seed, lambda d, t: stage("coreset", d, t)
    )
    bank = projected[picked]
    unscaled = PatchCoreParams(projection=projection, bank=bank, score_scale=1.0)
    raw_path = build_patchcore_graph(backbone_path, unscaled, Path(tmp) / f"raw{seed}.onnx")
    raw_maps = run_batched(
        _session(raw_path),
        MAP_OUTPUT,
        [images[i] for i in hold_idx],
        backbone,
        params.batch_size,
        lambda d, t: stage("holdout", d, t),
    ).reshape(len(hold_idx), -1)
    mean: F32 | None = None
    std: F32 | None = None
    if params.position_norm:
        mean, std = position_stats(raw_maps)
        raw_maps = (raw_maps - mean) / std
    raw_scores = raw_maps.max(axis=1)
    scale = float(np.quantile(raw_scores, params.scale_quantile))
    if not np.isfinite(scale) or scale <= 0:
        raise ModelError(f"held-out good scores give an unusable scale {scale}")
    fitted = PatchCoreParams(
        projection=projection, bank=bank, score_scale=scale, position_mean=mean, position_std=std
    )
    return _Bag(fitted, bank_idx, hold_idx, raw_scores)


def _source_ids(
    read: Sequence[tuple[LabelledImage, ImageU8]], sources: I64, rows: I64 | None
) -> list[str]:
    """Sorted ids of the images the given input rows (tiles) were cut from."""
    if rows is None:
        return []
    return sorted({image_id(read[int(s)][0].path) for s in np.unique(sources[rows])})


@dataclass(frozen=True)
class _Fitted:
    """What either detector hands to the manifest: the model and how it was fitted."""

    model_path: Path
    method: str
    measure: str
    score_note: str
    parameters: dict[str, object]
    bank_images: int
    holdout_images: int
    score_scale: float  # raw score that maps to 1.0 (the first bag's or group's)
    holdout_scores: F32  # on the model's scale
    summary: str
    extra: dict[str, object]
    bank_size: int = 0
    patches: int = 0
    holdout_idx: npt.NDArray[np.int64] | None = None  # rows held out (the first bag's)


def _patchcore_model(
    patches: F32,
    images: Sequence[ImageU8],
    n_hold: int,
    params: AnomalyFitParams,
    backbone_path: Path,
    backbone: Manifest,
    tmp: str,
    out_path: Path,
    stage: Stage,
    aug: AugmentedPatches | None = None,
    sources: npt.NDArray[np.int64] | None = None,
) -> _Fitted:
    fits = [
        _fit_bag(
            patches,
            images,
            params.seed + b,
            n_hold,
            params,
            backbone_path,
            backbone,
            tmp,
            stage,
            aug,
            sources,
        )
        for b in range(params.bags)
    ]
    first = fits[0]
    final: PatchCoreParams | list[PatchCoreParams] = (
        first.params if len(fits) == 1 else [f.params for f in fits]
    )
    model_path = build_patchcore_graph(backbone_path, final, out_path)
    # Counts, scale and held-out scores are the first bag's (the only one by default).
    bank = first.params.bank
    z_scored = first.params.position_mean is not None
    views = 1 + (aug.per_image() if aug is not None else 0)
    n_patches = int(len(first.bank_idx) * views * patches.shape[1])
    return _Fitted(
        model_path=model_path,
        method="PatchCore (stride-8 + stride-16 patches, 3x3 avg pool, greedy coreset)"
        + (", z-scored per patch position" if z_scored else "")
        + ("" if len(fits) == 1 else f", mean of {len(fits)} bags' scores"),
        measure="z-score of the patch distance against held-out good parts at its position"
        if z_scored
        else "patch distance to the good bank",
        score_note="Max {measure}; 1.0 = worst held-out good"
        + ("." if len(fits) == 1 else f" (each of {len(fits)} bags; their mean)."),
        parameters={
            "coreset_size": int(bank.shape[0]),
            "projection_dim": int(first.params.projection.shape[1]),
            "bags": params.bags,
        },
        bank_images=len(first.bank_idx),
        holdout_images=len(first.hold_idx),
        score_scale=first.params.score_scale,
        holdout_scores=first.raw_scores / first.params.score_scale,
        summary=f"bank {bank.shape[0]} of {n_patches} patches",
        extra={"bag_scales_raw": [f.params.score_scale for f in fits]},
        bank_size=int(bank.shape[0]),
        patches=n_patches,
        holdout_idx=first.hold_idx,
    )


def _gaussian_model(
    patches: F32,
    n_hold: int,
    params: AnomalyFitParams,
    backbone_path: Path,
    out_path: Path,
    stage: Stage,
    aug: AugmentedPatches | None = None,
    sources: npt.NDArray[np.int64] | None = None,
) -> _Fitted:
    fit = fit_gaussian(patches, n_hold, params, stage, aug, sources)
    model_path = build_gaussian_graph(backbone_path, fit.params, out_path)
    z_scored = params.position_norm
    positions = patches.shape[1]
    grouped = (
        "" if params.groups == 1 else f", one set per texture group ({params.groups}, k-means)"
    )
    folds = cross_fit_folds(params.holdout_fraction) if params.cross_fitted else None
    held = "good parts held out by cross-fitting" if folds else "held-out good parts"
    return _Fitted(
        model_path=model_path,
        method="per-position Gaussians (PaDiM-style: stride-8 + stride-16 patches, 3x3 avg "
        f"pool, shrunk covariance){grouped}"
        + (", z-scored per patch position" if z_scored else "")
        + ("" if params.top_k == 1 else f", score = mean of the top {params.top_k} patches")
        + (f", {folds}-fold cross-fitted z-scores and scale" if folds else ""),
        measure=f"z-score of the patch's Mahalanobis distance against {held} at its position"
        if z_scored
        else "Mahalanobis distance of the patch to the good parts at its position",
        score_note=("Max" if params.top_k == 1 else f"Mean over the {params.top_k} highest patches")
        + " of the {measure}; 1.0 = worst held-out good"
        + ("." if params.groups == 1 else " of the image's texture group."),
        parameters={
            "projection_dim": int(fit.params.projection.shape[1]),
            "groups": params.groups,
            "shrinkage": params.shrinkage,
            # an estimated weight (training/shrinkage.py) is recorded as each group used it
            **(
                {}
                if params.shrinkage_rule == "fixed"
                else {"shrinkage_rule": params.shrinkage_rule, "shrinkage": list(fit.shrinkage)}
            ),
            "top_k": params.top_k,
            "cross_fit_folds": folds,
        },
        bank_images=len(fit.bank_idx),
        holdout_images=len(fit.hold_idx),
        score_scale=fit.params.groups[0].scale,
        holdout_scores=fit.holdout_scores,
        summary=f"{params.groups} group(s) x {positions} position Gaussians "
        + (
            f"(images per group: {[b for b, _ in fit.group_sizes]}, each held out once "
            f"over {folds} folds)"
            if folds
            else f"(bank / held-out images per group: {list(fit.group_sizes)})"
        ),
        extra={
            "group_sizes": [list(g) for g in fit.group_sizes],
            "group_scales_raw": [g.scale for g in fit.params.groups],
        },
        holdout_idx=fit.hold_idx,
    )


def choose_on_patches(
    patches: F32,
    images: Sequence[ImageU8],
    params: AnomalyFitParams,
    backbone_path: Path,
    work_dir: Path,
    stage: Stage = no_stage,
    sources: npt.NDArray[np.int64] | None = None,
) -> DetectorChoice:
    """`--detector auto` on extracted patches: each candidate fitted as it would ship and
    scored through its graph; candidate models are left in `work_dir`/<candidate>/."""
    backbone = load_manifest(backbone_path)
    work_dir.mkdir(parents=True, exist_ok=True)
    tmp = str(work_dir)

    def fit(
        part: F32, part_images: Sequence[ImageU8], cand: AnomalyFitParams, out: Path, src: I64
    ) -> Path:
        out.mkdir(parents=True, exist_ok=True)
        src = np.unique(src, return_inverse=True)[1].reshape(-1).astype(np.int64)  # 0..n-1
        n_hold = max(1, round(source_count(src) * cand.holdout_fraction))
        if cand.detector == "gaussian":
            model = out / "model.onnx"
            return _gaussian_model(
                part, n_hold, cand, backbone_path, model, no_stage, sources=src
            ).model_path
        return _patchcore_model(
            part,
            part_images,
            n_hold,
            cand,
            backbone_path,
            backbone,
            tmp,
            out / "model.onnx",
            no_stage,
            sources=src,
        ).model_path

    def score(model: Path, scored: Sequence[ImageU8]) -> F32:
        return run_batched(_session(model), SCORE_OUTPUT, scored, backbone, params.batch_size)

    return choose_detector(patches, images, params, fit, score, work_dir, stage, sources)


def fit_anomaly(
    dataset: Dataset,
    reader: RoiReader,
    backbone_path: Path,
    out_dir: Path,
    name: str,
    version: str,
    params: AnomalyFitParams = AnomalyFitParams(),
    stage: Stage = no_stage,
    extra_provenance: dict[str, object] | None = None,
    resize: ResizeMode = ResizeMode.LETTERBOX,
    tile: TileSpec | None = None,
) -> AnomalyFitReport:
    """Fit an anomaly detector on the good images of `dataset` and write it to `out_dir`.

    Images meet the input as `resize` says (recorded in the manifest; under tiling, every
    tile of a good image is a good image). Its thresholds are placeholders (1.0 / 1.15):
    `calibrate_fitted` sets them on images kept apart."""
    params.check()
    backbone = load_manifest(backbone_path)
    model_input = fitted_input(backbone.input, resize, tile)
    good = dataset.with_labels(["good"])
    read = list(read_images(good, reader, lambda d, t: stage("read", d, t)))
    # at the input size, as the station prepares them; sources: each input's image (tiles)
    images, sources = fit_units([img for _, img in read], model_input)
    if len(images) < 5:
        raise ModelError(
            f"{dataset.root}: {len(images)} readable good image(s); at least 5 are needed"
        )
    n_hold = max(1, round(len(read) * params.holdout_fraction))  # whole images, never tiles
    held_rows = len(grouped_holdout(sources, n_hold, params.seed)[0])  # their tiles
    if held_rows == len(images):
        raise ModelError(
            f"{dataset.root}: {len(read)} readable good image(s); holding out {n_hold} whole "
            "image(s) to set the score scale on leaves none to fit on"
        )
    held_out = len(images) if params.cross_fitted else held_rows
    if params.position_norm and held_out < MIN_POSITION_IMAGES:
        how = (
            "cross-fitting holds out each of them once"
            if params.cross_fitted
            else f"at holdout fraction {params.holdout_fraction} they give {held_out}"
        )
        raise ModelError(
            f"{dataset.root}: position normalisation needs at least {MIN_POSITION_IMAGES} "
            f"held-out good images; there are {len(images)} good image(s), and {how}. Add "
            "good images or turn it off."
        )
    views = 1 + len(view_names(params.augment))  # each fitted image and its augmented views
    fit_views = (len(images) - held_rows) * views
    if params.detector == "gaussian" and fit_views < params.groups * MIN_GROUP_IMAGES:
        raise ModelError(
            f"{dataset.root}: the gaussian detector needs at least {MIN_GROUP_IMAGES} good "
            f"images per group to fit on (an augmented view counts as one); {len(images)} good "
            f"image(s) leave {fit_views} ({views} view(s) each) after holding out {held_rows}, "
            f"for {params.groups} group(s)."
        )
    out_path = out_dir / "model.onnx"
    with tempfile.TemporaryDirectory(prefix="cellinspect-fit-") as tmp:
        feat_path = build_patch_feature_graph(backbone_path, Path(tmp) / "features.onnx")
        session = _session(feat_path)
        patches = run_batched(
            session,
            PATCHES_OUTPUT,
            images,
            backbone,
            params.batch_size,
            lambda d, t: stage("features", d, t),
        )
        aug = augment_features(
            images,
            params.augment,
            partial(_patches_of, session, backbone, params.batch_size),
            progress=lambda d, t: stage("augment", d, t),
        )
        del session
        choice = None
        if params.detector == AUTO:  # the candidates are fitted without augmented views
            choice = choose_on_patches(
                patches, images, params, backbone_path, Path(tmp) / "candidates", stage, sources
            )
            params = choice.params
        fitted = (
            _gaussian_model(patches, n_hold, params, backbone_path, out_path, stage, aug, sources)
            if params.detector == "gaussian"
            else _patchcore_model(
                patches,
                images,
                n_hold,
                params,
                backbone_path,
                backbone,
                tmp,
                out_path,
                stage,
                aug,
                sources,
            )
        )
    h = int(np.sqrt(patches.shape[1]))
    scale = fitted.score_scale
    manifest = Manifest(
        name=name,
        version=version,
        task=Task.ANOMALY,
        sha256="pending",
        input=model_input,
        outputs=[
            OutputSpec(
                name=SCORE_OUTPUT,
                meaning=OutputMeaning.ANOMALY_SCORE,
                shape=[None],
                description=fitted.score_note.format(measure=fitted.measure),
            ),
            OutputSpec(
                name=MAP_OUTPUT,
                meaning=OutputMeaning.ANOMALY_MAP,
                shape=[None, h, h],
                description=f"The {fitted.measure} on the stride-8 grid, same scale as the score.",
            ),
        ],
        labels=[],
        good_labels=["good"],
        thresholds=Thresholds(review_at=params.review_at, fail_at=params.fail_at),
        preprocess=preprocess_record(reader.ops),
        roi_size=reader.roi_size,
        provenance={
            "method": fitted.method,
            "backbone": backbone_provenance(backbone),
            "data": {
                "root": str(dataset.root),
                "fingerprint": good.fingerprint(),
                "good_images": len(images),
                "bank_images": fitted.bank_images,
                "holdout_images": fitted.holdout_images,
                # the images whose parts (all tiles of a frame) set the score scale
                "holdout_ids": _source_ids(read, sources, fitted.holdout_idx),
                # views that joined the bank / Gaussians (the first bag's), never held-out ones
                "augmented_views": fitted.bank_images * (views - 1),
                "skipped": len(good.skipped),
            },
            RECORD_KEY: image_record(good),
            "parameters": {
                "detector": params.detector,
                **fitted.parameters,
                "holdout_fraction": params.holdout_fraction,
                "scale_quantile": params.scale_quantile,
                "seed": params.seed,
                "position_norm": params.position_norm,
                "augment": list(params.augment),
            },
            "score_scale_raw": scale,
            **fitted.extra,
            "holdout_scores": [float(s) for s in fitted.holdout_scores],
            **({"detector_choice": choice.record()} if choice is not None else {}),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            **(extra_provenance or {}),
        },
    )
    write_manifest(manifest, fitted.model_path)
    return AnomalyFitReport(
        model_path=fitted.model_path,
        images_used=len(images),
        bank_images=fitted.bank_images,
        holdout_images=fitted.holdout_images,
        patches=fitted.patches,
        bank_size=fitted.bank_size,
        score_scale=scale,
        holdout_scores=tuple(float(s) for s in fitted.holdout_scores),
        skipped=tuple((str(p), r) for p, r in good.skipped),
        summary=fitted.summary,
    )
